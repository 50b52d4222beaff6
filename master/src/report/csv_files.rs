//! `--csv PREFIX`: the run as CSV files in the shape of Locust's `--csv`, written with the
//! `csv` crate (quoting as RFC 4180): `PREFIX_stats.csv` (per endpoint, then `Aggregated`),
//! `PREFIX_stats_history.csv` (per second), `PREFIX_failures.csv` (per endpoint and kind).
//! Times are milliseconds.

use std::path::{Path, PathBuf};

use super::{LatencyOut, Report};

/// Writes the three files; returns their paths.
pub fn write_csv(r: &Report, prefix: &Path) -> Result<Vec<PathBuf>, csv::Error> {
    let path = |suffix: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let stats = path("_stats.csv");
    let mut w = csv::Writer::from_path(&stats)?;
    w.write_record([
        "Type",
        "Name",
        "Request Count",
        "Failure Count",
        "Median Response Time",
        "Average Response Time",
        "Min Response Time",
        "Max Response Time",
        "Requests/s",
        "Failures/s",
        "90%",
        "95%",
        "99%",
        "99.9%",
    ])?;
    let per_s = |n: u64| {
        if r.duration_s > 0.0 {
            n as f64 / r.duration_s
        } else {
            0.0
        }
    };
    let row = |kind: &str, name: &str, requests: u64, failures: u64, l: &LatencyOut| {
        vec![
            kind.to_string(),
            name.to_string(),
            requests.to_string(),
            failures.to_string(),
            format!("{:.3}", l.p50),
            format!("{:.3}", l.mean),
            format!("{:.3}", l.min),
            format!("{:.3}", l.max),
            format!("{:.3}", per_s(requests)),
            format!("{:.3}", per_s(failures)),
            format!("{:.3}", l.p90),
            format!("{:.3}", l.p95),
            format!("{:.3}", l.p99),
            format!("{:.3}", l.p99_9),
        ]
    };
    for e in &r.endpoints {
        w.write_record(row("", &e.name, e.requests, e.failures, &e.latency_ms))?;
    }
    let t = &r.totals;
    w.write_record(row("", "Aggregated", t.requests, t.failures, &t.latency_ms))?;
    w.flush()?;

    let history = path("_stats_history.csv");
    let mut w = csv::Writer::from_path(&history)?;
    w.write_record([
        "Second", "Requests", "Failures", "50%", "95%", "99%", "Max", "Slaves",
    ])?;
    for p in &r.series {
        w.write_record([
            p.index.to_string(),
            p.requests.to_string(),
            p.failures.to_string(),
            format!("{:.3}", p.latency_ms.p50),
            format!("{:.3}", p.latency_ms.p95),
            format!("{:.3}", p.latency_ms.p99),
            format!("{:.3}", p.latency_ms.max),
            p.slaves.to_string(),
        ])?;
    }
    w.flush()?;

    let failures = path("_failures.csv");
    let mut w = csv::Writer::from_path(&failures)?;
    w.write_record(["Name", "Kind", "Status", "Occurrences", "Sample"])?;
    for e in &r.endpoints {
        for k in &e.failure_kinds {
            w.write_record([
                e.name.as_str(),
                k.kind.as_str(),
                &k.status.map_or(String::new(), |s| s.to_string()),
                &k.count.to_string(),
                k.sample.as_str(),
            ])?;
        }
    }
    w.flush()?;
    Ok(vec![stats, history, failures])
}
