//! `lobster runs compare BASE RUN`: per-endpoint deltas of two reports and a regression
//! verdict from stated tolerances (pure: reports in, a [`Comparison`] out).
//!
//! Rules (each endpoint by name, each of `targets:` by base URL as `target URL`, and `all` for
//! the fleet totals):
//! - latency: p50, p95 and p99 each regress when the run's value exceeds the baseline's by
//!   more than `latency` (a fraction of the baseline) **and** by more than `latency_floor`
//!   (so sub-millisecond jitter of a fast endpoint is not a regression);
//! - throughput: requests per second regress when the run's is below the baseline's by more
//!   than `throughput` (a fraction);
//! - error rate: regresses when it rises by more than `error_rate_points` percentage points;
//! - verdict: a run that did not pass when its baseline did is a regression.
//!
//! An endpoint or target of the baseline missing from the run (or with no requests there) is
//! a regression: it cannot be compared, and a CI gate must not pass on silence.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{EndpointReport, LatencyOut, Report, Status};

/// What counts as a regression (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerances {
    /// Allowed rise of p50/p95/p99, as a fraction of the baseline (0.2 = 20 %).
    pub latency: f64,
    /// A latency rise at most this large is never a regression.
    #[serde(serialize_with = "millis")]
    pub latency_floor: Duration,
    /// Allowed fall of requests per second, as a fraction of the baseline.
    pub throughput: f64,
    /// Allowed rise of the error rate, in percentage points.
    pub error_rate_points: f64,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            latency: 0.2,
            latency_floor: Duration::from_millis(2),
            throughput: 0.1,
            error_rate_points: 1.0,
        }
    }
}

/// The compared figures of one endpoint in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub rps: f64,
    pub error_rate_percent: f64,
}

impl Figures {
    fn of(requests: u64, failures: u64, rps: f64, l: &LatencyOut) -> Self {
        Figures {
            requests,
            p50_ms: l.p50,
            p95_ms: l.p95,
            p99_ms: l.p99,
            rps,
            error_rate_percent: if requests == 0 {
                0.0
            } else {
                failures as f64 * 100.0 / requests as f64
            },
        }
    }
}

/// One endpoint (or `all`) of both runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompareRow {
    pub name: String,
    pub base: Figures,
    /// `None` when the run has no such endpoint.
    pub run: Option<Figures>,
    /// The regressions of this row, e.g. `p95 20.4 ms -> 41.0 ms (+101%)`.
    pub regressions: Vec<String>,
}

/// The comparison of a run with its baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub base: String,
    pub run: String,
    pub tolerances: Tolerances,
    /// `all` first, then the baseline's endpoints in its order, then its targets (`target
    /// URL`) in its order.
    pub rows: Vec<CompareRow>,
    /// Endpoints and targets of the run that the baseline does not have (shown, not judged).
    pub new_endpoints: Vec<String>,
    /// Every regression, row by row, and a verdict that got worse.
    pub regressions: Vec<String>,
}

impl Comparison {
    /// Compares `run` with `base` under `tol`.
    pub fn of(base: &Report, run: &Report, tol: Tolerances) -> Self {
        let total = |r: &Report| {
            let t = &r.totals;
            Figures::of(t.requests, t.failures, t.rps, &t.latency_ms)
        };
        let mut rows = vec![row("all", total(base), Some(total(run)), &tol)];
        let mut new_endpoints = Vec::new();
        let by_name = [
            (&base.endpoints, &run.endpoints, ""),
            (&base.targets, &run.targets, "target "),
        ];
        for (in_base, in_run, prefix) in by_name {
            let figures =
                |e: &EndpointReport| Figures::of(e.requests, e.failures, e.rps, &e.latency_ms);
            for e in in_base {
                let r = in_run.iter().find(|x| x.name == e.name).map(figures);
                rows.push(row(&format!("{prefix}{}", e.name), figures(e), r, &tol));
            }
            new_endpoints.extend(
                in_run
                    .iter()
                    .filter(|x| !in_base.iter().any(|e| e.name == x.name))
                    .map(|x| format!("{prefix}{}", x.name)),
            );
        }
        let mut regressions = Vec::new();
        if base.status == Status::Passed && run.status != Status::Passed {
            regressions.push(format!(
                "verdict: the baseline passed, this run {}",
                run.status.as_str()
            ));
        }
        for r in &rows {
            regressions.extend(r.regressions.iter().map(|x| format!("{}: {x}", r.name)));
        }
        Comparison {
            base: base.run_id.clone(),
            run: run.run_id.clone(),
            tolerances: tol,
            rows,
            new_endpoints,
            regressions,
        }
    }

    /// Whether the run regressed.
    pub fn regressed(&self) -> bool {
        !self.regressions.is_empty()
    }

    /// The table `lobster runs compare` prints.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let t = &self.tolerances;
        let _ = writeln!(
            o,
            "run {} against baseline {} (tolerances: latency +{:.0}% and +{:.1} ms, throughput -{:.0}%, error rate +{} points)",
            self.run,
            self.base,
            t.latency * 100.0,
            t.latency_floor.as_secs_f64() * 1000.0,
            t.throughput * 100.0,
            t.error_rate_points
        );
        // Wide enough for a target's URL (up to 60 characters), else the endpoints' 20.
        let w = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(20, 60);
        let _ = writeln!(
            o,
            "{:<w$} {:>21} {:>21} {:>21} {:>21} {:>17}",
            "endpoint", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors %"
        );
        for r in &self.rows {
            let Some(run) = &r.run else {
                let _ = writeln!(
                    o,
                    "{:<w$} missing from this run",
                    super::truncate(&r.name, w)
                );
                continue;
            };
            let b = &r.base;
            let _ = writeln!(
                o,
                "{:<w$} {:>21} {:>21} {:>21} {:>21} {:>17}",
                super::truncate(&r.name, w),
                delta(b.p50_ms, run.p50_ms),
                delta(b.p95_ms, run.p95_ms),
                delta(b.p99_ms, run.p99_ms),
                delta(b.rps, run.rps),
                format!(
                    "{:.2} -> {:.2}",
                    b.error_rate_percent, run.error_rate_percent
                ),
            );
        }
        if !self.new_endpoints.is_empty() {
            let _ = writeln!(o, "not in the baseline: {}", self.new_endpoints.join(", "));
        }
        if self.regressed() {
            let _ = writeln!(o, "REGRESSED:");
            for r in &self.regressions {
                let _ = writeln!(o, "  - {r}");
            }
        } else {
            let _ = writeln!(o, "no regression");
        }
        o
    }
}

/// `20.4 -> 41.0 (+101%)`.
fn delta(base: f64, run: f64) -> String {
    let pct = if base > 0.0 {
        format!("{:+.0}%", (run - base) * 100.0 / base)
    } else {
        "new".into()
    };
    format!("{base:.1}->{run:.1} ({pct})")
}

fn row(name: &str, base: Figures, run: Option<Figures>, tol: &Tolerances) -> CompareRow {
    let mut regressions = Vec::new();
    match &run {
        None => regressions.push("missing from this run".to_string()),
        Some(r) if r.requests == 0 && base.requests > 0 => {
            regressions.push("no requests in this run".to_string())
        }
        Some(r) => {
            let floor = tol.latency_floor.as_secs_f64() * 1000.0;
            for (label, b, x) in [
                ("p50", base.p50_ms, r.p50_ms),
                ("p95", base.p95_ms, r.p95_ms),
                ("p99", base.p99_ms, r.p99_ms),
            ] {
                if x - b > floor && x > b * (1.0 + tol.latency) {
                    regressions.push(format!("{label} {}", delta_ms(b, x)));
                }
            }
            if r.rps < base.rps * (1.0 - tol.throughput) {
                regressions.push(format!("throughput {}", delta(base.rps, r.rps)));
            }
            if r.error_rate_percent - base.error_rate_percent > tol.error_rate_points {
                regressions.push(format!(
                    "error rate {:.2}% -> {:.2}%",
                    base.error_rate_percent, r.error_rate_percent
                ));
            }
        }
    }
    CompareRow {
        name: name.to_string(),
        base,
        run,
        regressions,
    }
}

fn delta_ms(base: f64, run: f64) -> String {
    let d = delta(base, run);
    d.replacen("->", " ms -> ", 1).replacen(" (", " ms (", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::report;

    #[test]
    fn doubled_p95_regresses_and_equal_runs_pass() {
        let base = report("a", Status::Passed, &[("home", 500, 0, 50.0, 20.0)]);
        let same = report("b", Status::Passed, &[("home", 498, 0, 49.8, 21.0)]);
        assert!(!Comparison::of(&base, &same, Tolerances::default()).regressed());
        let slow = report("c", Status::Passed, &[("home", 500, 0, 50.0, 40.0)]);
        let c = Comparison::of(&base, &slow, Tolerances::default());
        assert!(c.regressed());
        assert!(
            c.regressions
                .iter()
                .any(|r| r.starts_with("home: p95 20.0 ms -> 40.0 ms (+100%)")),
            "{:?}",
            c.regressions
        );
    }

    #[test]
    fn the_floor_keeps_sub_millisecond_jitter_out() {
        let base = report("a", Status::Passed, &[("fast", 500, 0, 50.0, 0.3)]);
        let jitter = report("b", Status::Passed, &[("fast", 500, 0, 50.0, 0.9)]);
        assert!(!Comparison::of(&base, &jitter, Tolerances::default()).regressed());
        let no_floor = Tolerances {
            latency_floor: Duration::ZERO,
            ..Default::default()
        };
        assert!(Comparison::of(&base, &jitter, no_floor).regressed());
    }

    #[test]
    fn throughput_errors_verdict_and_missing_endpoints_regress() {
        let base = report(
            "a",
            Status::Passed,
            &[("x", 1000, 0, 100.0, 10.0), ("y", 100, 0, 10.0, 10.0)],
        );
        let run = report(
            "b",
            Status::Failed,
            &[("x", 850, 20, 85.0, 10.0), ("z", 5, 0, 1.0, 1.0)],
        );
        let c = Comparison::of(&base, &run, Tolerances::default());
        let text = c.regressions.join("\n");
        assert!(
            text.contains("verdict: the baseline passed, this run failed"),
            "{text}"
        );
        assert!(text.contains("x: throughput 100.0->85.0 (-15%)"), "{text}");
        assert!(text.contains("x: error rate 0.00% -> 2.35%"), "{text}");
        assert!(text.contains("y: missing from this run"), "{text}");
        assert_eq!(c.new_endpoints, ["z"]);
        // At 9 % less throughput and 0.9 points more errors: within the defaults.
        let near = report(
            "c",
            Status::Passed,
            &[("x", 910, 9, 91.0, 10.0), ("y", 100, 0, 10.0, 10.0)],
        );
        let c = Comparison::of(&base, &near, Tolerances::default());
        assert!(!c.regressed(), "{:?}", c.regressions);
    }

    /// With `targets:`, each target is judged like an endpoint: one slower target regresses
    /// even when the fleet's totals and every endpoint hold.
    #[test]
    fn each_target_is_compared_by_its_base_url() {
        let with_targets = |id, figures: &[(&str, u64, u64, f64, f64)]| {
            let mut r = report(id, Status::Passed, &[("home", 1000, 0, 100.0, 20.0)]);
            r.targets = report(id, Status::Passed, figures).endpoints;
            r
        };
        let a = "http://10.0.0.1:8080";
        let b = "http://10.0.0.2:8080";
        let base = with_targets("a", &[(a, 500, 0, 50.0, 20.0), (b, 500, 0, 50.0, 20.0)]);
        let same = with_targets("b", &[(a, 500, 0, 50.0, 21.0), (b, 500, 0, 50.0, 19.0)]);
        let c = Comparison::of(&base, &same, Tolerances::default());
        assert!(!c.regressed(), "{:?}", c.regressions);
        assert_eq!(c.rows.len(), 4, "all, home, and the two targets");
        let one_slow = with_targets("c", &[(a, 500, 0, 50.0, 20.0), (b, 500, 0, 50.0, 45.0)]);
        let c = Comparison::of(&base, &one_slow, Tolerances::default());
        // Its p50, p95 and p99 all doubled; nothing else moved.
        assert_eq!(c.regressions.len(), 3, "{:?}", c.regressions);
        assert!(
            c.regressions
                .iter()
                .all(|r| r.starts_with(&format!("target {b}: p")))
        );
        assert!(
            c.regressions
                .contains(&format!("target {b}: p95 20.0 ms -> 45.0 ms (+125%)"))
        );
        assert!(
            c.render().contains(&format!("target {b}  ")),
            "{}",
            c.render()
        );
        let moved = with_targets(
            "d",
            &[
                (a, 1000, 0, 100.0, 20.0),
                ("http://10.0.0.3:8080", 1, 0, 1.0, 1.0),
            ],
        );
        let c = Comparison::of(&base, &moved, Tolerances::default());
        assert!(
            c.regressions
                .contains(&format!("target {b}: missing from this run")),
            "{:?}",
            c.regressions
        );
        assert_eq!(c.new_endpoints, ["target http://10.0.0.3:8080"]);
    }
}
