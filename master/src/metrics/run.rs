//! The run's figures as Prometheus metrics: a [`RunSnapshot`] taken from the merged fleet-wide
//! statistics when `/metrics` is scraped, encoded with Prometheus' naming conventions
//! (<https://prometheus.io/docs/practices/naming/>): base units (seconds), `_total` counters,
//! a `run` label on every series so runs stay apart in one time series database.
//!
//! Series (all prefixed `lobster_run_`):
//! - `requests_total{run,endpoint}`, `failures_total{run,endpoint,kind}`,
//!   `dropped_iterations_total{run}`: counters, moved once per closed second of the merge;
//! - `request_duration_seconds{run,endpoint}`: a histogram (`_bucket{le}`, `_sum`, `_count`) from
//!   the merged HDR histograms, so `histogram_quantile` works over any window;
//! - `request_duration_quantile_seconds{run,endpoint,quantile}`: the run's exact merged
//!   quantiles so far (0.5, 0.9, 0.95, 0.99), what the report will say;
//! - with `targets:`, the same four by target base URL, in families of their own so that a sum
//!   over either counts each request once: `requests_by_target_total{run,target}`,
//!   `failures_by_target_total{run,target,kind}`, `request_duration_by_target_seconds{run,target}`,
//!   `request_duration_quantile_by_target_seconds{run,target,quantile}`;
//! - `virtual_users{run}` (closed model) or `target_rate{run}` (open model, requests per
//!   second): the load the scenario asks for now; `slaves{run}`; `elapsed_seconds{run}` (load
//!   time); `info{run,name,phase}` = 1.

use std::time::Duration;

use hdrhistogram::Histogram;
use lobster_fleet::scenario::Model;
use lobster_fleet::stats::IntervalStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// Upper bounds of the histogram buckets, in seconds (`+Inf` is added).
const BUCKETS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Quantiles exported exactly.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// One endpoint's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSnapshot {
    pub name: String,
    pub requests: u64,
    /// Failures by kind (`status_503`, `timeout`, ...).
    pub failures: Vec<(String, u64)>,
    /// (upper bound in seconds, requests in this bucket only), the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the latencies (seconds) and their count (requests with a latency).
    pub sum_s: f64,
    pub count: u64,
    /// (quantile, seconds).
    pub quantiles: Vec<(f64, f64)>,
}

impl EndpointSnapshot {
    fn of(name: &str, requests: u64, failures: Vec<(String, u64)>, h: &Histogram<u64>) -> Self {
        let mut buckets = Vec::with_capacity(BUCKETS_S.len() + 1);
        let mut below = 0u64;
        for le in BUCKETS_S {
            let le_us = (le * 1e6) as u64;
            let upto = if h.is_empty() {
                0
            } else {
                h.count_between(0, le_us)
            };
            buckets.push((le, upto.saturating_sub(below)));
            below = below.max(upto);
        }
        buckets.push((f64::INFINITY, h.len().saturating_sub(below)));
        let quantiles = QUANTILES
            .iter()
            .map(|&q| {
                let v = if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(q) as f64 / 1e6
                };
                (q, v)
            })
            .collect();
        EndpointSnapshot {
            name: name.to_string(),
            requests,
            failures,
            buckets,
            sum_s: h.mean() * h.len() as f64 / 1e6,
            count: h.len(),
            quantiles,
        }
    }
}

/// The run as `/metrics` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSnapshot {
    pub run_id: String,
    pub name: String,
    /// `init`, `running`, `suspended`, `stopping`, `done`.
    pub phase: &'static str,
    /// Load time so far.
    pub elapsed: Duration,
    pub model: Model,
    /// Users (closed model) or requests per second (open model) asked for now.
    pub load: f64,
    pub slaves: u32,
    pub dropped: u64,
    /// In the scenario's order.
    pub endpoints: Vec<EndpointSnapshot>,
    /// Each of `targets:` (named by base URL), in the scenario's order; empty with one target.
    pub targets: Vec<EndpointSnapshot>,
}

/// What a snapshot is taken from (the controller's view of its run).
pub struct RunFacts<'a> {
    pub run_id: &'a str,
    pub name: &'a str,
    pub phase: &'static str,
    pub elapsed: Duration,
    pub model: Model,
    pub load: f64,
    pub slaves: u32,
    pub endpoint_names: &'a [String],
    /// The base URLs of `targets:` (empty with one `target`).
    pub target_names: &'a [String],
}

impl RunSnapshot {
    /// The snapshot of `total`, the run's merged statistics so far.
    pub fn of(facts: RunFacts<'_>, total: &IntervalStats) -> Self {
        let empty = lobster_fleet::stats::EndpointStats::default();
        let rows = |names: &[String], map: &std::collections::BTreeMap<_, _>| {
            names
                .iter()
                .map(|name| {
                    let e: &lobster_fleet::stats::EndpointStats = map.get(name).unwrap_or(&empty);
                    let failures = e
                        .failure_kinds
                        .iter()
                        .map(|(k, f)| (k.clone(), f.count))
                        .collect();
                    EndpointSnapshot::of(name, e.requests, failures, &e.latency_us)
                })
                .collect::<Vec<_>>()
        };
        let endpoints = rows(facts.endpoint_names, &total.endpoints);
        let targets = rows(facts.target_names, &total.targets);
        RunSnapshot {
            run_id: facts.run_id.to_string(),
            name: facts.name.to_string(),
            phase: facts.phase,
            elapsed: facts.elapsed,
            model: facts.model,
            load: facts.load,
            slaves: facts.slaves,
            dropped: total.dropped,
            endpoints,
            targets,
        }
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        m.encode_family(labels)?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

/// The four families of one view of the requests: by endpoint (`by` empty, label
/// `endpoint`) or by target (`by` = `_by_target`, label `target`).
fn families(
    enc: &mut DescriptorEncoder,
    run: &Labels,
    rows: &[EndpointSnapshot],
    label: &'static str,
    by: &str,
) -> Result<(), std::fmt::Error> {
    let view = if by.is_empty() { "endpoint" } else { "target" };
    let of = |e: &EndpointSnapshot| {
        let mut l = run.clone();
        l.push((label, e.name.clone()));
        l
    };
    let requests: Vec<(Labels, u64)> = rows.iter().map(|e| (of(e), e.requests)).collect();
    counter(
        enc,
        &format!("run_requests{by}"),
        &format!("Requests sent, fleet-wide, by {view} (merged closed seconds)"),
        &requests,
    )?;
    let failures: Vec<(Labels, u64)> = rows
        .iter()
        .flat_map(|e| {
            e.failures.iter().map(move |(k, n)| {
                let mut l = of(e);
                l.push(("kind", k.clone()));
                (l, *n)
            })
        })
        .collect();
    counter(
        enc,
        &format!("run_failures{by}"),
        &format!("Failed requests, fleet-wide, by {view} and kind"),
        &failures,
    )?;
    let (name, help) = (
        format!("run_request_duration{by}_seconds"),
        format!("Request latency, fleet-wide, by {view} (from the merged histograms)"),
    );
    let mut m = enc.encode_descriptor(&name, &help, None, MetricType::Histogram)?;
    for e in rows {
        m.encode_family(&of(e))?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                e.sum_s, e.count, &e.buckets, None,
            )?;
    }
    let quantiles: Vec<(Labels, f64)> = rows
        .iter()
        .flat_map(|e| {
            e.quantiles.iter().map(move |(q, v)| {
                let mut l = of(e);
                l.push(("quantile", q.to_string()));
                (l, *v)
            })
        })
        .collect();
    gauge(
        enc,
        &format!("run_request_duration_quantile{by}_seconds"),
        &format!("The run's exact merged latency quantiles so far, by {view}"),
        &quantiles,
    )
}

impl Collector for RunSnapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let run = || vec![("run", self.run_id.clone())];
        let mut info = run();
        info.push(("name", self.name.clone()));
        info.push(("phase", self.phase.to_string()));
        gauge(
            &mut enc,
            "run_info",
            "The run: its name and phase",
            &[(info, 1.0)],
        )?;
        families(&mut enc, &run(), &self.endpoints, "endpoint", "")?;
        if !self.targets.is_empty() {
            families(&mut enc, &run(), &self.targets, "target", "_by_target")?;
        }
        counter(
            &mut enc,
            "run_dropped_iterations",
            "Open model: arrivals due but never sent",
            &[(run(), self.dropped)],
        )?;
        let (name, help) = match self.model {
            Model::Closed => (
                "run_virtual_users",
                "Virtual users the scenario asks for now",
            ),
            Model::Open => (
                "run_target_rate",
                "Arrivals per second the scenario asks for now",
            ),
        };
        gauge(&mut enc, name, help, &[(run(), self.load)])?;
        gauge(
            &mut enc,
            "run_slaves",
            "Slaves taking part in the run",
            &[(run(), f64::from(self.slaves))],
        )?;
        gauge(
            &mut enc,
            "run_elapsed_seconds",
            "Load time so far (suspended time excluded)",
            &[(run(), self.elapsed.as_secs_f64())],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::stats::{EndpointStats, new_histogram};

    fn total() -> IntervalStats {
        let mut e = EndpointStats::default();
        let mut h = new_histogram();
        for ms in [1u64, 3, 3, 40, 700, 90_000] {
            h.record(ms * 1000).unwrap();
        }
        e.latency_us = h;
        e.requests = 6;
        e.failures = 2;
        e.add_failures("status_503", 2, "503 Service Unavailable");
        let mut t = IntervalStats::default();
        t.endpoints.insert("home \"x\"".into(), e);
        t.dropped = 3;
        t
    }

    fn render(s: RunSnapshot) -> String {
        let mut r = prometheus_client::registry::Registry::with_prefix("lobster");
        r.register_collector(Box::new(s));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn counters_histogram_and_quantiles_follow_the_merged_stats() {
        let names = vec!["home \"x\"".to_string(), "never".to_string()];
        let s = RunSnapshot::of(
            RunFacts {
                run_id: "r-1",
                name: "smoke",
                phase: "running",
                elapsed: Duration::from_millis(2500),
                model: Model::Open,
                load: 200.0,
                slaves: 3,
                endpoint_names: &names,
                target_names: &[],
            },
            &total(),
        );
        let text = render(s);
        let has = |line: &str| {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        };
        has(r#"lobster_run_requests_total{run="r-1",endpoint="home \"x\""} 6"#);
        has(r#"lobster_run_requests_total{run="r-1",endpoint="never"} 0"#);
        has(r#"lobster_run_failures_total{run="r-1",endpoint="home \"x\"",kind="status_503"} 2"#);
        has(r#"lobster_run_dropped_iterations_total{run="r-1"} 3"#);
        // Cumulative buckets: 1 ms, 3 ms ×2, 40 ms, 700 ms, 90 s.
        has(
            r#"lobster_run_request_duration_seconds_bucket{le="0.001",run="r-1",endpoint="home \"x\""} 1"#,
        );
        has(
            r#"lobster_run_request_duration_seconds_bucket{le="0.005",run="r-1",endpoint="home \"x\""} 3"#,
        );
        has(
            r#"lobster_run_request_duration_seconds_bucket{le="0.05",run="r-1",endpoint="home \"x\""} 4"#,
        );
        has(
            r#"lobster_run_request_duration_seconds_bucket{le="1.0",run="r-1",endpoint="home \"x\""} 5"#,
        );
        has(
            r#"lobster_run_request_duration_seconds_bucket{le="60.0",run="r-1",endpoint="home \"x\""} 5"#,
        );
        has(
            r#"lobster_run_request_duration_seconds_bucket{le="+Inf",run="r-1",endpoint="home \"x\""} 6"#,
        );
        has(r#"lobster_run_request_duration_seconds_count{run="r-1",endpoint="home \"x\""} 6"#);
        has(r#"lobster_run_target_rate{run="r-1"} 200.0"#);
        has(r#"lobster_run_slaves{run="r-1"} 3.0"#);
        has(r#"lobster_run_elapsed_seconds{run="r-1"} 2.5"#);
        has(r#"lobster_run_info{run="r-1",name="smoke",phase="running"} 1.0"#);
        let p50 = text
            .lines()
            .find(|l| l.starts_with(r#"lobster_run_request_duration_quantile_seconds{run="r-1",endpoint="home \"x\"",quantile="0.5"}"#))
            .unwrap();
        let v: f64 = p50.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - 0.003).abs() < 0.00001, "{p50}");
        assert!(
            !text.contains("by_target"),
            "one target: no by-target series\n{text}"
        );
    }

    /// With `targets:`, each target's requests, failures and latency are series of their own
    /// families (labelled `target`), so summing the by-endpoint family still counts each
    /// request once.
    #[test]
    fn targets_have_their_own_families() {
        let a = "http://10.0.0.1:8080";
        let b = "http://10.0.0.2:8080";
        let mut t = total();
        let home = t.endpoints["home \"x\""].clone();
        let mut h = new_histogram();
        h.record(2_000).unwrap();
        h.record(2_000).unwrap();
        let fast = EndpointStats {
            requests: 2,
            latency_us: h,
            ..Default::default()
        };
        t.targets.insert(a.into(), home);
        t.targets.insert(b.into(), fast);
        let names = vec!["home \"x\"".to_string()];
        let targets = vec![a.to_string(), b.to_string()];
        let s = RunSnapshot::of(
            RunFacts {
                run_id: "r-2",
                name: "two",
                phase: "running",
                elapsed: Duration::from_secs(1),
                model: Model::Closed,
                load: 4.0,
                slaves: 2,
                endpoint_names: &names,
                target_names: &targets,
            },
            &t,
        );
        let text = render(s);
        let has = |line: &str| {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        };
        has(r#"lobster_run_requests_total{run="r-2",endpoint="home \"x\""} 6"#);
        has(r#"lobster_run_requests_by_target_total{run="r-2",target="http://10.0.0.1:8080"} 6"#);
        has(r#"lobster_run_requests_by_target_total{run="r-2",target="http://10.0.0.2:8080"} 2"#);
        has(
            r#"lobster_run_failures_by_target_total{run="r-2",target="http://10.0.0.1:8080",kind="status_503"} 2"#,
        );
        has(
            r#"lobster_run_request_duration_by_target_seconds_bucket{le="0.0025",run="r-2",target="http://10.0.0.2:8080"} 2"#,
        );
        has(
            r#"lobster_run_request_duration_by_target_seconds_count{run="r-2",target="http://10.0.0.1:8080"} 6"#,
        );
        let p50 = text
            .lines()
            .find(|l| l.starts_with(r#"lobster_run_request_duration_quantile_by_target_seconds{run="r-2",target="http://10.0.0.2:8080",quantile="0.5"}"#))
            .unwrap();
        let v: f64 = p50.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - 0.002).abs() < 0.00001, "{p50}");
        // The by-endpoint family holds the endpoint alone: a sum over it counts 6, not 14.
        let endpoint_series = text
            .lines()
            .filter(|l| l.starts_with("lobster_run_requests_total{"))
            .count();
        assert_eq!(endpoint_series, 1, "{text}");
    }
}
