//! Elastic membership: slaves that join during a run take their share at once, and the fleet's
//! total load stays what the scenario asks.

use std::time::{Duration, SystemTime};

use crate::common::*;

/// A fleet grows from 2 to 4 slaves mid-run (open model): the rate holds before and after
/// the join, every due arrival is sent or dropped, and each newcomer sends a quarter of the
/// arrivals from its first second on.
#[test]
fn a_fleet_grown_from_two_to_four_slaves_mid_run_keeps_the_rate() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (_master, api, grpc, _first) = two_of_four_slaves(&env);
    let (rate, duration) = (300.0, 16u64);
    let text = scenario_text(addr, &format!("{duration}s"), &format!("rate: {rate}"), "");
    let file = env.scenario("grow.yaml", &text);
    let json = env.path("report.json");
    let mut run = background_run(&env, &api, &file, &json, 2);
    wait_running(&api);
    std::thread::sleep(Duration::from_secs(5));
    let grown_at = SystemTime::now();
    let _more: Vec<Proc> = (3..=4).map(|i| env.slave(&grpc, i, 4)).collect();
    let status = run
        .wait_exit(Duration::from_secs(60))
        .expect("the run finished");
    assert_eq!(status.code(), Some(0), "{}", run_output(&env));
    let r = report(&json);
    let started =
        humantime::parse_rfc3339_weak(r["started_at"].as_str().unwrap().trim_end_matches('Z'))
            .unwrap();
    let grown_s = grown_at.duration_since(started).unwrap().as_secs_f64();

    // Every slave took part; the newcomers from a second after they were started.
    let injectors = r["injectors"].as_array().unwrap();
    assert_eq!(injectors.len(), 4, "{injectors:?}");
    let by_index = |i: u64| {
        injectors
            .iter()
            .find(|j| j["slave_index"] == i)
            .unwrap_or_else(|| panic!("slave {i} in {injectors:?}"))
    };
    let (requests, dropped) = totals(&r);
    assert_eq!(
        injectors
            .iter()
            .map(|j| j["requests"].as_u64().unwrap())
            .sum::<u64>(),
        requests,
        "the injectors' requests add up to the total"
    );
    for i in 3..=4 {
        let j = by_index(i);
        let first = j["first_s"].as_u64().unwrap();
        assert!(
            (first as f64) >= grown_s.floor() && (first as f64) < grown_s + 3.0,
            "slave {i} started at {grown_s:.2} s reported from second {first}"
        );
        // Once four equal slaves share the stripes, each sends a quarter of the arrivals:
        // at least the whole seconds after its first, at most from its first second on.
        let sent = j["requests"].as_u64().unwrap() as f64;
        let quarter = rate / 4.0;
        let (low, high) = (
            quarter * (duration - first - 1) as f64,
            quarter * (duration - first) as f64,
        );
        assert!(
            sent >= low * 0.97 && sent <= high * 1.03,
            "slave {i} joined in second {first} and sent {sent}, a quarter of the arrivals after it is {low}–{high}"
        );
    }

    // The fleet's rate before and after the growth (whole seconds, first and last left out).
    let series = r["series"].as_array().unwrap();
    let mean = |from: u64, to: u64| {
        let v: Vec<f64> = series
            .iter()
            .filter(|p| (from..to).contains(&p["index"].as_u64().unwrap()))
            .map(|p| p["requests"].as_f64().unwrap())
            .collect();
        assert!(
            v.len() as u64 == to - from,
            "seconds {from}..{to} of {series:?}"
        );
        (v.iter().sum::<f64>() / v.len() as f64, v)
    };
    let join = grown_s.floor() as u64;
    let (before, before_points) = mean(1, join);
    let (after, after_points) = mean(join + 1, duration - 1);
    for (what, m, points) in [
        ("before", before, &before_points),
        ("after", after, &after_points),
    ] {
        let deviation = (m - rate) / rate * 100.0;
        assert!(
            deviation.abs() <= 5.0,
            "rate {what} the growth {m:.1}/s, {deviation:+.1} % off {rate}/s ({points:?})"
        );
    }
    // The growth neither loses nor repeats arrivals.
    let due = assert_every_due_arrival_counted(&r, addr, rate, duration);
    eprintln!(
        "ELASTIC 2→4 slaves at {grown_s:.2} s of {duration} s at {rate}/s: rate before {before:.1}/s, after {after:.1}/s; newcomers sent {} and {} (from seconds {} and {}); requests {requests} + dropped {dropped} of {due} due",
        by_index(3)["requests"],
        by_index(4)["requests"],
        by_index(3)["first_s"],
        by_index(4)["first_s"],
    );
}

/// `lobster fleet up --count 4` during a run on a 2-VM local-cloud fleet: the two new VMs'
/// slaves join the running run, carry load, and the rate holds.
#[test]
fn fleet_up_during_a_run_spreads_the_run_over_the_grown_fleet() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let discovery: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("master/master.json")).unwrap(),
    )
    .unwrap();
    let api = discovery["api"].as_str().unwrap().to_string();
    let (_target, addr) = env.target();
    let (rate, duration) = (200.0, 24u64);
    let text = scenario_text(addr, &format!("{duration}s"), &format!("rate: {rate}"), "");
    let file = env.scenario("grow.yaml", &text);
    let json = env.path("report.json");
    let mut run = background_run(&env, &api, &file, &json, 2);
    wait_running(&api);
    std::thread::sleep(Duration::from_secs(4));
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "4"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(0 started, 2 launched, 0 stopped)"), "{out}");
    let status = run
        .wait_exit(Duration::from_secs(90))
        .expect("the run finished");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(env.path("run.err")).unwrap_or_default()
    );
    let r = report(&json);
    let injectors = r["injectors"].as_array().unwrap();
    assert_eq!(injectors.len(), 4, "{injectors:?}");
    let mut firsts: Vec<u64> = injectors
        .iter()
        .map(|j| j["first_s"].as_u64().unwrap())
        .collect();
    firsts.sort();
    let joined = firsts[3];
    assert_eq!(firsts[..2], [0, 0], "{injectors:?}");
    assert!(
        firsts[2] >= 3 && joined + 3 < duration,
        "the new VMs' slaves joined mid-run: {injectors:?}"
    );
    for j in injectors {
        let sent = j["requests"].as_u64().unwrap() as f64;
        let whole = duration - j["first_s"].as_u64().unwrap() - 1;
        assert!(
            sent >= rate / 4.0 * whole as f64 * 0.97,
            "every slave carries at least a quarter of the arrivals after its first second: {j}"
        );
    }
    let series = r["series"].as_array().unwrap();
    let after: Vec<f64> = series
        .iter()
        .filter(|p| (joined + 1..duration - 1).contains(&p["index"].as_u64().unwrap()))
        .map(|p| p["requests"].as_f64().unwrap())
        .collect();
    let mean = after.iter().sum::<f64>() / after.len() as f64;
    assert!(
        ((mean - rate) / rate).abs() <= 0.05,
        "rate on the grown fleet {mean:.1}/s, asked {rate}/s ({after:?})"
    );
    let (requests, dropped) = totals(&r);
    let due = assert_every_due_arrival_counted(&r, addr, rate, duration);
    eprintln!(
        "ELASTIC fleet up 2→4 VMs during a run: newcomers from seconds {:?}; rate on the grown fleet {mean:.1}/s of {rate}/s; requests {requests} + dropped {dropped} of {due} due",
        &firsts[2..]
    );
    let (code, _, _) = env.cli(&["fleet", "down", "--terminate"]);
    assert_eq!(code, 0);
}

/// A closed-model fleet grows from 2 to 4 slaves mid-run: the fleet's active users stay what
/// the scenario asks (8), the old slaves' users that the new stripes give away leave at the
/// switch, and each newcomer runs its quarter.
#[test]
fn a_closed_model_fleet_grown_mid_run_keeps_its_users() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (_master, api, grpc, _first) = two_of_four_slaves(&env);
    let text = scenario_text(addr, "16s", "users: 8", "think: 50ms\n");
    let file = env.scenario("grow-users.yaml", &text);
    let json = env.path("report.json");
    let mut run = background_run(&env, &api, &file, &json, 2);
    wait_running(&api);
    // Each slave's active users, by slave index, from its last heartbeat.
    let users = || -> Vec<(u64, u64)> {
        let body = http_get(addr_of(&api), "/api/slaves");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut u: Vec<(u64, u64)> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["connected"] == true)
            .map(|s| {
                (
                    s["slave_index"].as_u64().unwrap(),
                    s["active_users"].as_u64().unwrap(),
                )
            })
            .collect();
        u.sort();
        u
    };
    // Steady for 2 s (two heartbeats of every slave) after the first time `want` is seen.
    let holds = |what: &str, want: Vec<(u64, u64)>| {
        eventually(what, Duration::from_secs(15), || {
            (users() == want).then_some(())
        });
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(250));
            assert_eq!(users(), want, "{what}");
        }
    };
    holds("4 users on each of 2 slaves", vec![(1, 4), (2, 4)]);
    let _more: Vec<Proc> = (3..=4).map(|i| env.slave(&grpc, i, 4)).collect();
    holds(
        "2 users on each of 4 slaves",
        vec![(1, 2), (2, 2), (3, 2), (4, 2)],
    );
    let status = run
        .wait_exit(Duration::from_secs(60))
        .expect("the run finished");
    assert_eq!(status.code(), Some(0), "{}", run_output(&env));
    let r = report(&json);
    let injectors = r["injectors"].as_array().unwrap();
    assert_eq!(injectors.len(), 4, "{injectors:?}");
    for j in injectors {
        assert!(j["requests"].as_u64().unwrap() > 0, "{j}");
    }
    eprintln!(
        "ELASTIC closed model 2→4 slaves: 4+4 users, then 2+2+2+2; requests by slave {:?}",
        injectors
            .iter()
            .map(|j| j["requests"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
}

/// A master (heartbeat 500 ms, lease 2 s) and the first two of four equal slaves (a quarter of
/// a host's cores each), registered: (master, API, gRPC address, slaves).
fn two_of_four_slaves(env: &Env) -> (Proc, String, String, Vec<Proc>) {
    let (master, api, grpc) = env.master(None, &["--heartbeat", "500ms", "--lease", "2s"]);
    let first: Vec<Proc> = (1..=2).map(|i| env.slave(&grpc, i, 4)).collect();
    wait_slaves(&api, 2, Duration::from_secs(30));
    (master, api, grpc, first)
}

/// The report's requests and dropped arrivals.
fn totals(r: &serde_json::Value) -> (u64, u64) {
    let n = |k: &str| r["totals"][k].as_u64().unwrap();
    (n("requests"), n("dropped"))
}

/// Every arrival the schedule had due was sent once or counted dropped (the last one may fall
/// either side of the end), and the target served exactly what the report counts. Returns
/// the arrivals due.
fn assert_every_due_arrival_counted(
    r: &serde_json::Value,
    addr: std::net::SocketAddr,
    rate: f64,
    duration: u64,
) -> u64 {
    let (requests, dropped) = totals(r);
    let due = rate as u64 * duration;
    assert!(
        (due - 1..=due + 1).contains(&(requests + dropped)),
        "requests {requests} + dropped {dropped}, arrivals due {due}"
    );
    assert_eq!(requests, target_count(addr), "the target's own count");
    due
}
