//! The chaos suite: faults injected into real processes during runs and fleet changes. Each
//! test prints its figures (`CHAOS …` lines on stderr); docs/reliability.md keeps them.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use nix::sys::signal::Signal;

fn started_at(r: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339_weak(r["started_at"].as_str().unwrap().trim_end_matches('Z')).unwrap()
}

/// Chaos 1: kill -9 of 25 % of the slaves mid-run (open model).
#[test]
fn killing_a_quarter_of_the_slaves_keeps_the_rate() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (_master, api, grpc) = env.master(None, &["--heartbeat", "500ms", "--lease", "2s"]);
    let slaves: Vec<Proc> = (1..=8).map(|i| env.slave(&grpc, i, 8)).collect();
    wait_slaves(&api, 8, Duration::from_secs(30));
    let rate = 400.0;
    let text = format!(
        "name: kill\ntarget: http://{addr}\nduration: 14s\nload:\n  rate: {rate}\nrequests:\n  - {{name: item, path: /item/7}}\n"
    );
    let file = env.scenario("kill.yaml", &text);
    let json = env.path("report.json");
    let mut run = background_run(&env, &api, &file, &json, 8);
    wait_running(&api);
    std::thread::sleep(Duration::from_millis(4000));
    let killed_at = SystemTime::now();
    slaves[2].signal(Signal::SIGKILL);
    slaves[5].signal(Signal::SIGKILL);
    let status = run
        .wait_exit(Duration::from_secs(60))
        .expect("the run finished");
    assert_eq!(status.code(), Some(0), "{}", run_output(&env));
    let r = report(&json);
    let lost = r["lost_slaves"].as_array().unwrap();
    assert_eq!(
        lost.len(),
        2,
        "{lost:?}\nmaster log:\n{}",
        std::fs::read_to_string(env.path("master.log")).unwrap_or_default()
    );
    let kill_s = killed_at
        .duration_since(started_at(&r))
        .unwrap()
        .as_secs_f64();
    let mut worst_ms: f64 = 0.0;
    for l in lost {
        // Loss detection plus rescale, from the kill.
        let after = (l["at_s"].as_f64().unwrap() - kill_s) * 1000.0
            + l["redistributed_after_ms"].as_f64().unwrap();
        worst_ms = worst_ms.max(after);
    }
    assert!(
        worst_ms <= 1000.0,
        "redistributed {worst_ms:.0} ms after the kill: more than 2 heartbeats (500 ms)"
    );
    // The rate after redistribution, seconds [kill + 2, end - 1).
    let series = r["series"].as_array().unwrap();
    let from = kill_s.ceil() as u64 + 2;
    let points: Vec<f64> = series
        .iter()
        .filter(|p| p["index"].as_u64().unwrap() >= from && p["index"].as_u64().unwrap() < 13)
        .map(|p| p["requests"].as_f64().unwrap())
        .collect();
    assert!(points.len() >= 5, "{series:?}");
    let mean = points.iter().sum::<f64>() / points.len() as f64;
    let deviation = (mean - rate) / rate * 100.0;
    assert!(
        deviation.abs() <= 5.0,
        "rate after the kill {mean:.1}/s, {deviation:.1} % off {rate}/s ({points:?})"
    );
    let served = target_count(addr);
    let counted = r["totals"]["requests"].as_u64().unwrap();
    eprintln!(
        "CHAOS kill-25%: 2 of 8 slaves killed at {kill_s:.2}s; redistributed within {worst_ms:.0} ms; rate after {mean:.1}/s ({deviation:+.2} % of {rate}); report {counted} vs served {served} (the killed slaves' last partial second is lost with them)"
    );
}

/// Chaos 3: The master stopped (SIGSTOP) longer than the lease: slaves stop their load within
/// the lease, then resume when it is back, and the run ends cleanly.
#[test]
fn a_frozen_master_stops_the_load_within_the_lease() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (master, api, grpc) = env.master(None, &["--heartbeat", "300ms", "--lease", "1500ms"]);
    let _slaves: Vec<Proc> = (1..=3).map(|i| env.slave(&grpc, i, 3)).collect();
    wait_slaves(&api, 3, Duration::from_secs(30));
    let file = env.scenario(
        "s.yaml",
        &scenario_text(addr, "16s", "users: 6", "think: 5ms\n"),
    );
    let json = env.path("report.json");
    let mut run = background_run(&env, &api, &file, &json, 3);
    wait_running(&api);
    std::thread::sleep(Duration::from_secs(2));
    master.signal(Signal::SIGSTOP);
    let stopped_at = Instant::now();
    // Watch the target's count: when does it stop moving?
    let mut last = target_count(addr);
    let mut last_change = Instant::now();
    while stopped_at.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        let c = target_count(addr);
        if c != last {
            last = c;
            last_change = Instant::now();
        }
    }
    let quiet_after = last_change.duration_since(stopped_at);
    master.signal(Signal::SIGCONT);
    // Within the lease (1.5 s), plus the 50 ms sampling of the target's counter.
    assert!(
        quiet_after <= Duration::from_millis(1500 + 50),
        "load went on {} ms after the master froze (lease 1500 ms)",
        quiet_after.as_millis()
    );
    eventually("the load resuming", Duration::from_secs(10), || {
        (target_count(addr) > last).then_some(())
    });
    let status = run
        .wait_exit(Duration::from_secs(60))
        .expect("the run finished");
    // The freeze was the master's own: no slave is lost and the run passes.
    assert_eq!(status.code(), Some(0), "{}", run_output(&env));
    let r = report(&json);
    assert_eq!(r["status"], "passed");
    assert_eq!(r["slaves"], 3);
    assert_eq!(
        r["lost_slaves"].as_array().unwrap().len(),
        0,
        "{}",
        r["lost_slaves"]
    );
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr),
        "nothing lost across the freeze"
    );
    eprintln!(
        "CHAOS freeze: master frozen 5 s (lease 1.5 s); load stopped {} ms after the freeze; resumed after SIGCONT; run {} with {} requests = served",
        quiet_after.as_millis(),
        r["status"],
        r["totals"]["requests"]
    );
}

/// Chaos 6: SIGTERM to the master during a run: a clean stop, a final report, slaves told.
#[test]
fn sigterm_to_the_master_stops_the_run_cleanly() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (mut master, api, grpc) = env.master(None, &["--heartbeat", "300ms", "--lease", "2s"]);
    let _slaves: Vec<Proc> = (1..=2).map(|i| env.slave(&grpc, i, 2)).collect();
    wait_slaves(&api, 2, Duration::from_secs(30));
    let file = env.scenario(
        "s.yaml",
        &scenario_text(addr, "60s", "users: 4", "think: 5ms\n"),
    );
    let json = env.path("report.json");
    let mut run = background_run(&env, &api, &file, &json, 2);
    wait_running(&api);
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    master.signal(Signal::SIGTERM);
    let exit = master
        .wait_exit(Duration::from_secs(30))
        .expect("the master exited");
    assert!(exit.success(), "master exit {exit:?}");
    let took = t0.elapsed();
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("the run command finished");
    assert_eq!(
        status.code(),
        Some(1),
        "an aborted run exits 1: {}",
        run_output(&env)
    );
    let r = report(&json);
    assert_eq!(r["status"], "aborted");
    assert_eq!(r["stop"]["reason"], "the master received SIGTERM");
    assert!(r["stop"]["missing_final"].as_array().unwrap().is_empty());
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr)
    );
    for i in 1..=2 {
        let log = std::fs::read_to_string(env.path(&format!("slave-{i}.log"))).unwrap();
        assert!(
            log.contains("reason=the master received SIGTERM"),
            "slave {i} was not told:\n{log}"
        );
    }
    eprintln!(
        "CHAOS sigterm: master stopped the run and exited in {} ms; report aborted, total = served ({})",
        took.as_millis(),
        r["totals"]["requests"]
    );
}

fn post_faults(env: &Env, json: &str) {
    let (_, endpoint, _) = env.cli(&["cloud", "endpoint"]);
    let (status, body) = http_request(
        addr_of(endpoint.trim()),
        "POST",
        "/__lobster/faults",
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    );
    assert_eq!(status, 204, "{body}");
}

fn cloud_state(env: &Env) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(env.home().join("cloud/state.json")).unwrap())
        .unwrap()
}

fn all_tagged(env: &Env) -> usize {
    let st = cloud_state(env);
    let inst = st["instances"].as_object().unwrap();
    for (id, i) in inst {
        for k in [
            "lobster:managed",
            "lobster:fleet",
            "lobster:expires-at",
            "lobster:role",
        ] {
            assert!(
                i["tags"][k].is_string(),
                "instance {id} exists without {k}: {i}"
            );
        }
    }
    inst.len()
}

/// Chaos 4: The local cloud throttling 30 % of calls and refusing 30 % of launches for capacity.
#[test]
fn throttling_and_capacity_errors_converge_or_report_a_partial_fleet() {
    let env = Env::new();
    std::fs::write(env.home().join("config.yaml"), "batch_size: 3\n").unwrap();
    let (code, _, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    post_faults(&env, r#"{"throttle": 0.3, "capacity_errors": 0.3}"#);
    let mut attempts = 0;
    let mut partials = 0;
    loop {
        attempts += 1;
        let t = Instant::now();
        let (code, out, err) = env.cli(&["fleet", "up", "--count", "8"]);
        eprintln!(
            "fleet up attempt {attempts}: exit {code} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        match code {
            0 => break,
            1 => {
                assert!(
                    err.contains("partial fleet") && err.contains("InsufficientInstanceCapacity"),
                    "{err}"
                );
                partials += 1;
            }
            other => panic!("fleet up exited {other}: {out}\n{err}"),
        }
        assert!(attempts < 15, "no convergence after {attempts} attempts");
    }
    let st = fleet_status(&env, &[]);
    assert_eq!(st["running"], 8);
    let created = all_tagged(&env);
    assert_eq!(created, 8, "no instance beyond the count was ever created");
    // Capacity that runs out for good: a partial fleet, reported clearly, exit code 1.
    post_faults(&env, r#"{"throttle": 0.3, "capacity_limit": 10}"#);
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "12"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("partial fleet: 10 of 12 instances")
            && err.contains("InsufficientInstanceCapacity"),
        "{err}"
    );
    assert_eq!(all_tagged(&env), 10);
    let (code, out, err) = env.cli(&["fleet", "down"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 running now"), "{out}");
    eprintln!(
        "CHAOS faults: 30 % throttled + 30 % capacity errors: converged to 8 running after {attempts} fleet up(s) ({partials} reported partial); {created} instances created, all tagged; capacity 10 for 12 → partial fleet 10 of 12, exit 1; fleet down → 0 running, 0 untagged instances"
    );
}

/// Chaos 5: The local cloud killed and restarted during `fleet up`: a second `up` converges with
/// no duplicate launches.
#[test]
fn a_cloud_killed_during_fleet_up_leaves_no_duplicates() {
    let env = Env::new();
    std::fs::write(env.home().join("config.yaml"), "batch_size: 2\n").unwrap();
    let (code, _, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    // Every call takes 400 ms, so the batches of 2 are at least 800 ms apart (observe, then
    // launch) and the kill lands mid-way.
    post_faults(&env, r#"{"api_delay_ms": 400}"#);
    let mut cmd = env.lobster();
    cmd.args(["fleet", "up", "--count", "8", "--no-wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = Proc {
        child: cmd.spawn().unwrap(),
        name: "fleet-up".into(),
    };
    eventually("some instances launched", Duration::from_secs(60), || {
        let n = cloud_state(&env)["instances"]
            .as_object()
            .map_or(0, |m| m.len());
        (n >= 2).then_some(())
    });
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("cloud/cloud.json")).unwrap(),
    )
    .unwrap();
    let pid = info["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let before: Vec<String> = cloud_state(&env)["instances"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // The kill landed mid-launch: some, not all, of the 8 existed, and the first `up` failed.
    assert!(
        (2..8).contains(&before.len()),
        "the cloud died with {} of 8 instances: not mid-launch",
        before.len()
    );
    let first_exit = first
        .wait_exit(Duration::from_secs(60))
        .expect("the first fleet up ended");
    assert!(
        !first_exit.success(),
        "the first fleet up succeeded though its cloud died mid-launch"
    );
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "8"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let st = cloud_state(&env);
    let live: Vec<&String> = st["instances"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, i)| i["state"] != "terminated")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(live.len(), 8, "exactly the count, no duplicates: {live:?}");
    for id in &before {
        assert!(
            live.contains(&id),
            "{id}, launched before the crash, was replaced instead of kept"
        );
    }
    all_tagged(&env);
    assert_eq!(fleet_status(&env, &[])["running"], 8);
    eprintln!(
        "CHAOS cloud-crash: local cloud killed with {} of 8 instances launched; the second fleet up converged to exactly 8 (0 duplicates)",
        before.len()
    );
}
