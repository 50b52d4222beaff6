//! Where requests' time went, in reports: k6's `http_req_connecting`, `_tls_handshaking`,
//! `_waiting` and `_receiving`, one entry per phase that happened (see
//! `lobster_fleet::stats::Phases` for which requests each phase counts).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lobster_fleet::stats::{LatencySummary, Phases};
use serde::{Deserialize, Serialize};

/// One phase over a run or an endpoint, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseOut {
    /// Requests in which the phase happened (for `connecting`: connections opened).
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// The phases that happened, by name.
pub fn phases_out(p: &Phases) -> BTreeMap<String, PhaseOut> {
    p.each()
        .into_iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let s = LatencySummary::of(h);
            let out = PhaseOut {
                count: h.len(),
                mean: s.mean,
                p50: s.p50,
                p90: s.p90,
                p95: s.p95,
                p99: s.p99,
                max: s.max,
            };
            (name.to_string(), out)
        })
        .collect()
}

/// The summary's phase table (nothing when no phase was measured).
pub(super) fn render(o: &mut String, phases: &BTreeMap<String, PhaseOut>) {
    if phases.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "{:<20} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "phases (ms)", "count", "mean", "p50", "p95", "p99", "max"
    );
    for name in Phases::NAMES {
        if let Some(p) = phases.get(name) {
            let _ = writeln!(
                o,
                "{:<20} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name, p.count, p.mean, p.p50, p.p95, p.p99, p.max
            );
        }
    }
}
