//! The live view of `lobster run`: one line per merged second (the load asked for, the
//! seconds left, the busiest injector's CPU) and, every few seconds, the endpoints so far.

use std::fmt::Write as _;

use super::{EndpointReport, truncate};
use crate::aggregate::Point;

/// Header of the live one-second table; `load` names the load column (`users` or `rate/s`).
pub fn live_header(load: &str) -> String {
    format!(
        "{:>6} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>7} {:>5}",
        "second",
        "req/s",
        "fail",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "slaves",
        load,
        "left s",
        "cpu%"
    )
}

/// One line of the live table: the merged second `p`, the load the scenario asked for in it
/// (when known), the seconds of load left after it and the busiest injector's CPU (`cpu%`).
pub fn live_line(p: &Point, load: Option<f64>, left_s: f64) -> String {
    format!(
        "{:>6} {:>9} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>8} {:>7.0} {:>5}",
        p.index + 1,
        p.requests,
        p.failures,
        p.latency_ms.p50,
        p.latency_ms.p95,
        p.latency_ms.p99,
        p.latency_ms.max,
        p.slaves,
        load.map_or("-".to_string(), |v| format!("{v:.0}")),
        left_s.max(0.0),
        p.injector_cpu
            .map_or("-".to_string(), |v| format!("{v:.0}"))
    )
}

/// The per-endpoint figures so far, printed in the live view every few seconds.
pub fn live_endpoints(endpoints: &[EndpointReport]) -> String {
    let mut o = String::from("  endpoints so far:\n");
    for e in endpoints {
        let _ = writeln!(
            o,
            "  {:<20} {:>9} req {:>7} fail {:>9.1} req/s  p95 {:>8.2} ms  p99 {:>8.2} ms",
            truncate(&e.name, 20),
            e.requests,
            e.failures,
            e.rps,
            e.latency_ms.p95,
            e.latency_ms.p99
        );
    }
    o
}
