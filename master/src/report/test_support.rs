//! Reports built by hand for the unit tests of the report's views.

use super::*;

/// A report with the given endpoints: (name, requests, failures, rps, p95 ms).
pub fn report(id: &str, status: Status, eps: &[(&str, u64, u64, f64, f64)]) -> Report {
    // (name, requests, failures, rps, p95)
    let lat = |p95: f64| LatencyOut {
        p50: p95 / 2.0,
        p95,
        p99: p95 * 1.1,
        ..Default::default()
    };
    let endpoints: Vec<EndpointReport> = eps
        .iter()
        .map(|&(name, requests, failures, rps, p95)| EndpointReport {
            name: name.into(),
            requests,
            failures,
            rps,
            errors: Default::default(),
            failure_kinds: vec![],
            latency_ms: lat(p95),
            phases_ms: Default::default(),
        })
        .collect();
    let requests = endpoints.iter().map(|e| e.requests).sum();
    let failures = endpoints.iter().map(|e| e.failures).sum();
    let rps = endpoints.iter().map(|e| e.rps).sum();
    let p95 = endpoints
        .iter()
        .map(|e| e.latency_ms.p95)
        .fold(0.0, f64::max);
    Report {
        run_id: id.into(),
        name: "n".into(),
        status,
        reasons: vec![],
        target: "http://x".into(),
        warnings: vec![],
        model: "open".into(),
        started_at: String::new(),
        ended_at: String::new(),
        duration_s: 10.0,
        slaves: 1,
        lost_slaves: vec![],
        injectors: vec![],
        saturated_injectors: vec![],
        totals: Totals {
            requests,
            failures,
            rps,
            error_rate_percent: 0.0,
            bytes_received: 0,
            bytes_sent: 0,
            errors: Default::default(),
            dropped: 0,
            latency_ms: lat(p95),
            phases_ms: Default::default(),
            checks: vec![],
            flows: vec![],
        },
        endpoints,
        targets: vec![],
        sla: vec![],
        stop: StopInfo::default(),
        late_requests: 0,
        series: vec![],
    }
}
