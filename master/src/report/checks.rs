//! Checks in reports: each flow step's check with how often it held and failed, like k6's
//! `checks` (see `docs/scenario.md`, "Flows"). A failed check fails the run (verdict).

use std::fmt::Write as _;

use lobster_fleet::stats::IntervalStats;
use serde::{Deserialize, Serialize};

/// One check over the whole run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRow {
    /// `step: rule`, e.g. `account: body_contains "Signed in"`.
    pub check: String,
    pub passes: u64,
    pub fails: u64,
}

/// The run's checks in the scenario's order (`labels`), then any other label seen.
pub fn check_rows(total: &IntervalStats, labels: &[String]) -> Vec<CheckRow> {
    let row = |label: &String| {
        let c = total.checks.get(label).copied().unwrap_or_default();
        CheckRow {
            check: label.clone(),
            passes: c.passes,
            fails: c.fails,
        }
    };
    let mut rows: Vec<CheckRow> = labels.iter().map(row).collect();
    for label in total.checks.keys() {
        if !labels.contains(label) {
            rows.push(row(label));
        }
    }
    rows
}

/// The verdict's reason when checks failed: `None` when every check held.
pub fn failed_checks_reason(rows: &[CheckRow]) -> Option<String> {
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.fails > 0)
        .map(|r| format!("`{}` {} of {}", r.check, r.fails, r.passes + r.fails))
        .collect();
    (!failed.is_empty()).then(|| format!("checks failed: {}", failed.join(", ")))
}

/// The summary's checks table (nothing when the scenario has none).
pub(super) fn render(o: &mut String, rows: &[CheckRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(o, "checks");
    for r in rows {
        let total = r.passes + r.fails;
        let mark = if r.fails == 0 { "ok  " } else { "FAIL" };
        let share = if total == 0 {
            0.0
        } else {
            r.passes as f64 * 100.0 / total as f64
        };
        let _ = writeln!(
            o,
            "  {mark} {:<50} {:>6.2}% ({} of {} held)",
            r.check, share, r.passes, total
        );
    }
}
