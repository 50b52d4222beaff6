//! `lobster run` end to end: real slaves, a real target, exact counts, SLA outcomes.

use std::time::{Duration, Instant};

use crate::common::*;

/// Three local slaves against `lobster target`: the report's total is exactly what the server
/// counted, the stop reached every slave within a second, the run passed.
#[test]
fn three_local_slaves_count_exactly_what_the_target_saw() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let file = env.scenario(
        "smoke.yaml",
        &scenario_text(addr, "4s", "users: 12", "think: 1ms\n"),
    );
    let (code, stdout, stderr, r) = lobster_run(&env, &file, 3, &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = r.unwrap();
    assert_eq!(r["status"], "passed");
    assert_eq!(r["slaves"], 3);
    let total = r["totals"]["requests"].as_u64().unwrap();
    assert!(total > 100, "too few requests: {total}");
    assert_eq!(
        total,
        target_count(addr),
        "report total vs the target's own count"
    );
    let endpoints: u64 = r["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(endpoints, total);
    // Every request is in exactly one second of the series (late ones included).
    let series: u64 = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(series, total, "the series and the totals disagree");
    let propagation = r["stop"]["propagation_ms"]
        .as_u64()
        .expect("every slave acknowledged the stop");
    assert!(
        propagation <= 1000,
        "stop took {propagation} ms to reach the slaves"
    );
    for k in ["min", "p50", "p90", "p95", "p99", "max"] {
        assert!(
            r["totals"]["latency_ms"][k].as_f64().unwrap() > 0.0,
            "latency {k}"
        );
    }
    assert!(
        stdout.contains("second") && stdout.contains("PASSED"),
        "live table and summary: {stdout}"
    );
}

/// The open model against a slow endpoint: latency is measured from the intended send time.
#[test]
fn open_model_keeps_its_rate_and_counts_exactly() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: open\ntarget: http://{addr}\nduration: 3s\nload:\n  rate: 300\nrequests:\n  - {{name: slow, path: /delay/20}}\n"
    );
    let file = env.scenario("open.yaml", &text);
    let (code, stdout, stderr, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = r.unwrap();
    let total = r["totals"]["requests"].as_u64().unwrap();
    assert_eq!(total, target_count(addr));
    // 300/s for 3 s = 900 arrivals; allow for the start and end edges.
    assert!(
        (850..=905).contains(&total),
        "open model sent {total} requests, expected about 900"
    );
    // The target waits 20 ms: no latency below it, and the median near it (milliseconds, not
    // microseconds or seconds: a unit error is off by 1000).
    let l = &r["totals"]["latency_ms"];
    let (min, p50, p99) = (
        l["min"].as_f64().unwrap(),
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
    );
    assert!(min >= 20.0, "min {min} ms below the target's 20 ms delay");
    assert!(
        (20.0..=60.0).contains(&p50),
        "p50 {p50} ms for a 20 ms delay"
    );
    assert!(p99 < 1000.0, "p99 {p99} ms");
}

/// Closed-model latency against a known delay: every figure from the merged histograms of
/// three slaves lands at the target's 50 ms.
#[test]
fn closed_model_percentiles_match_the_targets_delay() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: delay\ntarget: http://{addr}\nduration: 3s\nload:\n  users: 6\nrequests:\n  - {{name: d, path: /delay/50}}\n"
    );
    let file = env.scenario("delay.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 3, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let l = &r.unwrap()["totals"]["latency_ms"];
    for k in ["min", "p50", "p90", "p95"] {
        let v = l[k].as_f64().unwrap();
        assert!((50.0..=80.0).contains(&v), "{k} = {v} ms for a 50 ms delay");
    }
    assert!(l["max"].as_f64().unwrap() < 1000.0);
}

/// A rule that must fail aborts the run within 2 s of the violating second; exit code 1.
#[test]
fn a_violated_sla_aborts_the_fleet_within_two_seconds() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: slow\ntarget: http://{addr}\nduration: 60s\nload:\n  users: 20\nrequests:\n  - {{name: slow, path: /delay/300}}\nsla:\n  - {{metric: p99, max: 100ms, window: 5s}}\n"
    );
    let file = env.scenario("slow.yaml", &text);
    let started = Instant::now();
    let (code, stdout, stderr, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 60 s run was not aborted"
    );
    let r = r.unwrap();
    assert_eq!(r["status"], "aborted");
    let sla = &r["sla"][0];
    assert_eq!(sla["passed"], false);
    assert_eq!(sla["aborted_run"], true);
    let violated_end = sla["violated_at_s"].as_f64().unwrap() + 1.0;
    let stop_at = r["stop"]["at_s"].as_f64().unwrap();
    assert!(
        stop_at - violated_end <= 2.0,
        "stop at {stop_at}s, violation visible at {violated_end}s"
    );
    assert!(r["stop"]["reason"].as_str().unwrap().contains("SLA"));
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr)
    );
}

/// Rules that hold: the run passes with exit code 0 and every rule reported as passed.
#[test]
fn a_kept_sla_passes() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let sla = "sla:\n  - {metric: p99, max: 2s, window: 2s}\n  - {metric: error_rate, max: 1%, window: 2s}\n  - {metric: rps, min: 10, window: 2s}\n";
    let file = env.scenario("ok.yaml", &scenario_text(addr, "3s", "users: 4", sla));
    let (code, stdout, stderr, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = r.unwrap();
    assert_eq!(r["status"], "passed");
    let rules = r["sla"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert!(rules.iter().all(|x| x["passed"] == true), "{rules:?}");
    assert!(rules.iter().all(|x| x["verdict"] == "passed"), "{rules:?}");
}

/// Unexpected statuses are failures, classed by status, and fail an error-rate rule.
#[test]
fn error_statuses_are_counted_and_classed() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: errors\ntarget: http://{addr}\nduration: 2s\nload:\n  users: 2\nrequests:\n  - {{name: ok, path: /}}\n  - {{name: broken, path: /status/503}}\nsla:\n  - {{metric: error_rate, max: 1%, abort: false}}\n"
    );
    let file = env.scenario("errors.yaml", &text);
    let (code, _, stderr, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 1, "{stderr}");
    let r = r.unwrap();
    assert_eq!(r["status"], "failed");
    let broken = &r["endpoints"][1];
    assert_eq!(broken["name"], "broken");
    assert_eq!(broken["failures"], broken["requests"]);
    assert_eq!(broken["errors"]["status_5xx"], broken["requests"]);
    assert_eq!(r["endpoints"][0]["failures"], 0);
}

/// `/metrics` read `lobster_slaves_connected 0` while 3 slaves were connected.
#[test]
fn metrics_count_the_connected_slaves() {
    let env = Env::new();
    let (_master, api, grpc) = env.master(None, &[]);
    let _slaves: Vec<Proc> = (1..=3).map(|i| env.slave(&grpc, i, 3)).collect();
    wait_slaves(&api, 3, Duration::from_secs(30));
    let addr = addr_of(&api);
    let line = eventually("the gauge follows", Duration::from_secs(5), || {
        let text = http_get(addr, "/metrics");
        text.lines()
            .find(|l| l.starts_with("lobster_slaves_connected "))
            .filter(|l| l.ends_with(" 3"))
            .map(str::to_string)
    });
    assert_eq!(line, "lobster_slaves_connected 3");
}
