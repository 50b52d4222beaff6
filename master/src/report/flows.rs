//! Flows in reports: how many instances of each flow completed or failed, and how long
//! completed ones took (see `docs/scenario.md`, "Flows").

use std::fmt::Write as _;

use lobster_fleet::stats::{IntervalStats, LatencySummary};
use serde::{Deserialize, Serialize};

use super::LatencyOut;

/// One flow over the whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    pub flow: String,
    /// Instances that ran to their last step.
    pub completed: u64,
    /// Instances ended by a failed step.
    pub failed: u64,
    /// Completed instances, first request to last response (think times between steps
    /// included), in milliseconds.
    pub duration_ms: LatencyOut,
}

/// The run's flows in the scenario's order (`names`).
pub fn flow_rows(total: &IntervalStats, names: &[String]) -> Vec<FlowRow> {
    names
        .iter()
        .map(|name| {
            let f = total.flows.get(name).cloned().unwrap_or_default();
            FlowRow {
                flow: name.clone(),
                completed: f.completed,
                failed: f.failed,
                duration_ms: LatencySummary::of(&f.duration_us).into(),
            }
        })
        .collect()
}

/// The summary's flows table (nothing when the scenario has no flows).
pub(super) fn render(o: &mut String, rows: &[FlowRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "{:<20} {:>10} {:>8} {:>11} {:>11} {:>11}",
        "flows", "completed", "failed", "p50 ms", "p95 ms", "max ms"
    );
    for r in rows {
        let d = &r.duration_ms;
        let _ = writeln!(
            o,
            "{:<20} {:>10} {:>8} {:>11.1} {:>11.1} {:>11.1}",
            r.flow, r.completed, r.failed, d.p50, d.p95, d.max
        );
    }
}
