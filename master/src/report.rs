//! The run report: what `--json` writes, what the API serves and what the summary prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lobster_fleet::stats::{EndpointStats, IntervalStats, LatencySummary};
use serde::{Deserialize, Serialize};

use crate::aggregate::Point;
use crate::sla::{RuleResult, Verdict};

mod checks;
mod compare;
mod csv_files;
mod flows;
mod html;
mod junit;
mod live;
mod phases;

#[cfg(test)]
pub(crate) mod test_support;

pub use checks::{CheckRow, failed_checks_reason};
pub use compare::{Comparison, Tolerances};
pub use csv_files::write_csv;
pub use flows::FlowRow;
pub use html::html;
pub use junit::junit;
pub use live::{live_endpoints, live_header, live_line};
pub use phases::PhaseOut;
use phases::phases_out;

/// How a run ended (the verdict rules are in `docs/scenario.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran to its end, every SLA rule was judged and held, and the failed requests are within
    /// what the scenario accepts.
    Passed,
    /// Ran to its end but an SLA rule was violated or never judged, or too many requests
    /// failed.
    Failed,
    /// Stopped before its end: an aborting SLA rule, a person (Ctrl-C, the API), a signal to
    /// the master, no slaves left, a quorum never reached. `stop.reason` says which.
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
        }
    }
}

/// Fleet-wide totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub failures: u64,
    /// Requests per second of load time.
    pub rps: f64,
    pub error_rate_percent: f64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Failures by class.
    pub errors: BTreeMap<String, u64>,
    /// Open model: arrivals due but never sent.
    pub dropped: u64,
    pub latency_ms: LatencyOut,
    /// Where the time went, by phase (`connecting`, `tls_handshaking`, `waiting`,
    /// `receiving`); only phases that happened.
    #[serde(default)]
    pub phases_ms: BTreeMap<String, PhaseOut>,
    /// Flow steps' checks in the scenario's order, each with its passes and fails.
    #[serde(default)]
    pub checks: Vec<CheckRow>,
    /// Flows in the scenario's order: instances completed and failed, their durations.
    #[serde(default)]
    pub flows: Vec<FlowRow>,
}

/// Latency as serialized in reports (same fields as [`LatencySummary`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyOut {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl From<LatencySummary> for LatencyOut {
    fn from(s: LatencySummary) -> Self {
        LatencyOut {
            min: s.min,
            mean: s.mean,
            p50: s.p50,
            p90: s.p90,
            p95: s.p95,
            p99: s.p99,
            p99_9: s.p999,
            max: s.max,
        }
    }
}

/// One request of the mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub errors: BTreeMap<String, u64>,
    /// Failures by kind (exact status or class), most frequent first, with one message each.
    #[serde(default)]
    pub failure_kinds: Vec<FailureRow>,
    pub latency_ms: LatencyOut,
    /// As in [`Totals::phases_ms`], for this endpoint.
    #[serde(default)]
    pub phases_ms: BTreeMap<String, PhaseOut>,
}

/// One line of the failures table (as Locust's): a kind of failure of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRow {
    /// `status_503`, `timeout`, `connect`, `io`, `protocol` (or `other` past 32 kinds).
    pub kind: String,
    /// The unexpected status, when the kind is one.
    pub status: Option<u16>,
    pub count: u64,
    /// The message of one failure of this kind.
    pub sample: String,
}

fn failure_rows(e: &EndpointStats) -> Vec<FailureRow> {
    let mut rows: Vec<FailureRow> = e
        .failure_kinds
        .iter()
        .map(|(kind, f)| FailureRow {
            kind: kind.clone(),
            status: kind.strip_prefix("status_").and_then(|c| c.parse().ok()),
            count: f.count,
            sample: f.sample.clone(),
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    rows
}

/// A slave that left the run before its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LostSlave {
    pub slave_id: String,
    pub instance_id: String,
    pub slave_index: u32,
    /// Run second at which it was declared lost.
    pub at_s: f64,
    pub reason: String,
    /// Milliseconds from the loss to the rescale sent to the others.
    pub redistributed_after_ms: Option<u64>,
}

/// A slave that took part in the run (an injector of its load).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Injector {
    pub slave_id: String,
    pub instance_id: String,
    /// Its index among the slaves of its instance (1-based).
    pub slave_index: u32,
    /// Its share of a core, in thousandths.
    pub millicores: u32,
    /// Whether it was lost before the end.
    pub lost: bool,
    /// The peak of each of its resources over the run (absent when it reported none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<lobster_fleet::stats::Resources>,
    /// Seconds it spent saturated (above 90 % CPU for 5 s or more in a row).
    #[serde(default)]
    pub saturated_s: u64,
    /// Requests it sent (its intervals' totals; the injectors' add up to `totals.requests`).
    #[serde(default)]
    pub requests: u64,
    /// The first second of the run it reported (later than 0 for a slave that joined
    /// mid-run); absent when it reported nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_s: Option<u64>,
}

/// How the stop went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StopInfo {
    pub reason: String,
    /// Run second at which the stop was sent.
    pub at_s: f64,
    /// Longest time from sending `Stop` to a slave's acknowledgement.
    pub propagation_ms: Option<u64>,
    /// Slaves whose last interval never arrived (their last second is missing).
    pub missing_final: Vec<String>,
}

/// Everything about a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub name: String,
    pub status: Status,
    /// Why the run did not pass (empty when it passed): violated or unjudged SLA rules, too
    /// many failed requests, the reason of an abort.
    #[serde(default)]
    pub reasons: Vec<String>,
    pub target: String,
    /// What the user was told before the run (e.g. a certificate not verified).
    #[serde(default)]
    pub warnings: Vec<String>,
    pub model: String,
    pub started_at: String,
    pub ended_at: String,
    /// Load time (suspended time excluded), seconds.
    pub duration_s: f64,
    /// Slaves that took part.
    pub slaves: u32,
    pub lost_slaves: Vec<LostSlave>,
    /// Every slave that took part, by instance.
    #[serde(default)]
    pub injectors: Vec<Injector>,
    /// Stretches of 5 s or more an injector spent above 90 % CPU (each also a warning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saturated_injectors: Vec<crate::saturation::Saturated>,
    pub totals: Totals,
    pub endpoints: Vec<EndpointReport>,
    /// A scenario with `targets:`: the same requests by target base URL (`name`), in the
    /// scenario's order; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<EndpointReport>,
    pub sla: Vec<RuleResult>,
    pub stop: StopInfo,
    /// Requests whose interval arrived after its second had closed (in the totals and the
    /// series, but not judged by the SLA rules).
    pub late_requests: u64,
    pub series: Vec<Point>,
}

fn errors(e: &EndpointStats) -> BTreeMap<String, u64> {
    e.errors.clone()
}

/// Which names a report lists, in the scenario's order.
#[derive(Debug, Default)]
pub struct Names {
    pub endpoints: Vec<String>,
    /// The base URLs of `targets:` (empty with one `target`).
    pub targets: Vec<String>,
    pub checks: Vec<String>,
    pub flows: Vec<String>,
}

impl Names {
    /// The endpoints (requests or steps), checks and flows of `scenario`.
    pub fn of(scenario: &lobster_fleet::scenario::Scenario) -> Self {
        Names {
            endpoints: scenario.endpoint_names(),
            targets: scenario
                .targets
                .iter()
                .map(|t| t.target.to_string())
                .collect(),
            checks: scenario
                .requests
                .iter()
                .flat_map(|r| r.check.iter().map(|c| c.label.clone()))
                .collect(),
            flows: scenario.flows.iter().map(|f| f.name.clone()).collect(),
        }
    }
}

/// Totals and per-endpoint figures of merged stats over `seconds` of load, listed as `names`
/// says.
pub fn figures(
    total: &IntervalStats,
    names: &Names,
    seconds: f64,
) -> (Totals, Vec<EndpointReport>) {
    let order = &names.endpoints;
    let t = total.total();
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let totals = Totals {
        requests: t.requests,
        failures: t.failures,
        rps: per_s(t.requests),
        error_rate_percent: t.error_rate(),
        bytes_received: t.bytes_received,
        bytes_sent: t.bytes_sent,
        errors: errors(&t),
        dropped: total.dropped,
        latency_ms: LatencySummary::of(&t.latency_us).into(),
        phases_ms: phases_out(&t.phases),
        checks: checks::check_rows(total, &names.checks),
        flows: flows::flow_rows(total, &names.flows),
    };
    let endpoints = order
        .iter()
        .map(|name| row(name, total.endpoints.get(name), seconds))
        .collect();
    (totals, endpoints)
}

/// Each target's figures (a scenario with `targets:`), in the scenario's order.
pub fn target_figures(total: &IntervalStats, names: &Names, seconds: f64) -> Vec<EndpointReport> {
    names
        .targets
        .iter()
        .map(|url| row(url, total.targets.get(url), seconds))
        .collect()
}

/// One row of the endpoints' (or targets') table: `e` over `seconds` of load.
fn row(name: &str, e: Option<&EndpointStats>, seconds: f64) -> EndpointReport {
    let e = e.cloned().unwrap_or_default();
    let rps = if seconds > 0.0 {
        e.requests as f64 / seconds
    } else {
        0.0
    };
    EndpointReport {
        name: name.to_string(),
        requests: e.requests,
        failures: e.failures,
        rps,
        errors: errors(&e),
        failure_kinds: failure_rows(&e),
        latency_ms: LatencySummary::of(&e.latency_us).into(),
        phases_ms: phases_out(&e.phases),
    }
}

impl Report {
    /// The summary printed at the end of `lobster run`.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let t = &self.totals;
        let _ = writeln!(
            o,
            "\nrun {} ({}) {}: {} on {} slave(s), {:.1} s of load against {}",
            self.run_id,
            self.name,
            self.status.as_str().to_uppercase(),
            self.stop.reason,
            self.slaves,
            self.duration_s,
            self.target
        );
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        let _ = writeln!(
            o,
            "requests {}  failures {} ({:.2}%)  {:.1} req/s  received {} B  sent {} B{}",
            t.requests,
            t.failures,
            t.error_rate_percent,
            t.rps,
            t.bytes_received,
            t.bytes_sent,
            if t.dropped > 0 {
                format!("  dropped {}", t.dropped)
            } else {
                String::new()
            }
        );
        if !t.errors.is_empty() {
            let list: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "errors: {}", list.join(", "));
        }
        let busiest = self
            .injectors
            .iter()
            .filter_map(|i| Some((i, i.resources?)))
            .max_by(|a, b| a.1.injector_cpu().total_cmp(&b.1.injector_cpu()));
        if let Some((i, r)) = busiest {
            let _ = writeln!(
                o,
                "injectors: busiest {} at {:.0} % CPU (peak), memory {:.0} of {:.0} MiB, {} sockets",
                i.slave_id,
                r.injector_cpu(),
                r.memory_used_bytes as f64 / 1048576.0,
                r.memory_total_bytes as f64 / 1048576.0,
                r.sockets
            );
        }
        let _ = writeln!(
            o,
            "{:<20} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "requests", "fail", "min", "p50", "p90", "p95", "p99", "max"
        );
        let row = |o: &mut String, name: &str, req: u64, fail: u64, l: &LatencyOut| {
            let _ = writeln!(
                o,
                "{:<20} {:>10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                truncate(name, 20),
                req,
                fail,
                l.min,
                l.p50,
                l.p90,
                l.p95,
                l.p99,
                l.max
            );
        };
        row(&mut o, "all", t.requests, t.failures, &t.latency_ms);
        for e in &self.endpoints {
            row(&mut o, &e.name, e.requests, e.failures, &e.latency_ms);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(
                o,
                "{:<40} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
                "by target (ms)", "requests", "fail", "req/s", "p50", "p95", "p99"
            );
            for e in &self.targets {
                let _ = writeln!(
                    o,
                    "{:<40} {:>10} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
                    truncate(&e.name, 40),
                    e.requests,
                    e.failures,
                    e.rps,
                    e.latency_ms.p50,
                    e.latency_ms.p95,
                    e.latency_ms.p99
                );
            }
        }
        phases::render(&mut o, &t.phases_ms);
        flows::render(&mut o, &t.flows);
        checks::render(&mut o, &t.checks);
        let kinds: Vec<(&str, &FailureRow)> = self
            .endpoints
            .iter()
            .flat_map(|e| e.failure_kinds.iter().map(move |k| (e.name.as_str(), k)))
            .collect();
        if !kinds.is_empty() {
            let _ = writeln!(
                o,
                "failures\n  {:<20} {:<14} {:>10}  sample",
                "request", "kind", "count"
            );
            for (name, k) in kinds {
                let _ = writeln!(
                    o,
                    "  {:<20} {:<14} {:>10}  {}",
                    truncate(name, 20),
                    k.kind,
                    k.count,
                    k.sample
                );
            }
        }
        if !self.sla.is_empty() {
            let _ = writeln!(o, "SLA");
            for r in &self.sla {
                let mark = match r.verdict {
                    Verdict::Passed => "pass",
                    Verdict::Failed => "FAIL",
                    Verdict::NotJudged => "NOT JUDGED",
                };
                let worst = r
                    .worst
                    .map_or(String::new(), |w| format!(" (worst {w:.2})"));
                let when = r
                    .violated_at_s
                    .map_or(String::new(), |s| format!(", violated in second {s}"));
                let abort = if r.aborted_run {
                    ", aborted the run"
                } else {
                    ""
                };
                let _ = writeln!(o, "  {mark}  {}{worst}{when}{abort}", r.rule);
            }
        }
        if self.late_requests > 0 {
            let _ = writeln!(
                o,
                "{} request(s) were reported after their second had closed (a slow slave or network): counted in the totals and the series, not in the SLA windows",
                self.late_requests
            );
        }
        if !self.reasons.is_empty() {
            let _ = writeln!(o, "{} because:", self.status.as_str().to_uppercase());
            for r in &self.reasons {
                let _ = writeln!(o, "  - {r}");
            }
        }
        for l in &self.lost_slaves {
            let _ = writeln!(
                o,
                "lost slave {} ({} #{}) at {:.1}s: {}",
                l.slave_id, l.instance_id, l.slave_index, l.at_s, l.reason
            );
        }
        if !self.stop.missing_final.is_empty() {
            let _ = writeln!(
                o,
                "no final statistics from: {}",
                self.stop.missing_final.join(", ")
            );
        }
        o
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}
