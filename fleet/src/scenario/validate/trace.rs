//! The `trace` section: which requests each slave records, and how much it keeps.

use super::*;
use crate::scenario::file::TraceFile;
use crate::scenario::{Request, Trace};

/// Default `max_mb`: what one slave keeps of one run's records.
const DEFAULT_MAX_MB: u64 = 64;
/// Largest `max_mb` (10 GB).
const MAX_MB: u64 = 10_000;
/// Most values in `output`.
const MAX_OUTPUT: usize = 32;

pub(super) fn resolve_trace(
    t: &Spanned<TraceFile>,
    requests: &[Request],
    items: &[String],
    columns: &[String],
) -> Res<Trace> {
    let sample_ppm = match &t.value.sample {
        None => 1_000_000,
        Some(s) => match s.value {
            Threshold::Percent(p) if (0.0..=100.0).contains(&p) => (p * 10_000.0).round() as u32,
            _ => {
                return Err(fault(
                    s.referenced,
                    "trace.sample must be a percentage from 0% to 100% (e.g. `1%`)",
                ));
            }
        },
    };
    let all_errors = match &t.value.errors {
        None => true,
        Some(e) => match e.value.trim() {
            "all" => true,
            "sampled" => false,
            other => {
                return Err(fault(
                    e.referenced,
                    format!(
                        "trace.errors must be `all` (every failed request) or `sampled` (failures in the sample only), not `{other}`"
                    ),
                ));
            }
        },
    };
    let max_mb = match &t.value.max_mb {
        None => DEFAULT_MAX_MB,
        Some(m) => m
            .value
            .in_range("trace.max_mb", 1, MAX_MB)
            .map_err(|e| fault(m.referenced, e))?,
    };
    if sample_ppm == 0 && !all_errors {
        return Err(fault(
            t.referenced,
            "this trace records nothing: with `sample: 0%`, keep `errors: all`",
        ));
    }
    if t.value.output.len() > MAX_OUTPUT {
        return Err(fault(
            t.referenced,
            format!("trace.output names at most {MAX_OUTPUT} values"),
        ));
    }
    let mut output: Vec<String> = Vec::new();
    for o in &t.value.output {
        let name = o.value.trim();
        let known = match name.strip_prefix("row.") {
            Some(col) => columns.iter().any(|c| c == col),
            None if name == "item" => !items.is_empty() && columns.is_empty(),
            None => requests
                .iter()
                .flat_map(|r| &r.capture)
                .any(|c| c.name == name),
        };
        if !known {
            return Err(fault(
                o.referenced,
                format!(
                    "trace.output: `{name}` is not a value of this scenario: give `item` (with data items), `row.NAME` (a column of the data file) or the name of a capture"
                ),
            ));
        }
        if output.iter().any(|n| n == name) {
            return Err(fault(
                o.referenced,
                format!("trace.output names `{name}` twice"),
            ));
        }
        output.push(name.to_string());
    }
    Ok(Trace {
        sample_ppm,
        all_errors,
        max_bytes: max_mb * 1_000_000,
        output,
    })
}
