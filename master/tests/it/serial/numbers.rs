//! Numbers you can trust: load shapes, totals and verdicts under real server behaviour. Each
//! test is a fault found by trying Lobster as a user would, with the right value.

use std::time::{Duration, Instant};

use crate::common::*;

fn gaps(stamps: &[(u64, Instant)]) -> Vec<f64> {
    stamps
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1).as_secs_f64())
        .collect()
}

/// `rate: 1` on 4 slaves for 10 s sent 12 requests in bursts of 4 every 4 s. The fleet is one
/// generator: 10 requests (±1), one per second.
#[test]
fn open_model_arrivals_of_more_slaves_than_the_rate_are_evenly_spread() {
    let env = Env::new();
    let server = StampServer::start();
    let text = format!(
        "name: sparse\ntarget: http://{}\nduration: 10s\nload: {{rate: 1}}\nrequests: [{{name: r, path: /}}]\nmax_error_rate: 100%\n",
        server.addr
    );
    let file = env.scenario("sparse.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 4, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let stamps = server.taken();
    let n = stamps.len() as i64;
    assert!((9..=11).contains(&n), "{n} requests for rate 1 over 10 s");
    assert_eq!(r["totals"]["requests"].as_i64().unwrap(), n);
    let g = gaps(&stamps);
    eprintln!(
        "NUMBERS rate 1 on 4 slaves for 10 s: {n} requests, gaps {:.3}..{:.3} s",
        g.iter().cloned().fold(f64::MAX, f64::min),
        g.iter().cloned().fold(0.0, f64::max)
    );
    for g in g {
        assert!(
            (0.75..=1.25).contains(&g),
            "arrivals {g:.3} s apart; expected 1 s: {:?}",
            gaps(&stamps)
        );
    }
}

/// `rate: 4` on 4 slaves sent 4 requests within ~20 ms each second. Right: 250 ms apart.
#[test]
fn open_model_arrivals_of_equal_slaves_interleave() {
    let env = Env::new();
    let server = StampServer::start();
    let text = format!(
        "name: four\ntarget: http://{}\nduration: 5s\nload: {{rate: 4}}\nrequests: [{{name: r, path: /}}]\n",
        server.addr
    );
    let file = env.scenario("four.yaml", &text);
    let (code, out, err, _) = lobster_run(&env, &file, 4, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let stamps = server.taken();
    assert!(
        (19..=21).contains(&stamps.len()),
        "{} requests for rate 4 over 5 s",
        stamps.len()
    );
    let g = gaps(&stamps);
    let close = g.iter().filter(|&&x| x < 0.125).count();
    let mut sorted = g.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        (0.2..=0.3).contains(&median),
        "median gap {median:.3} s, expected 0.25 s: {g:?}"
    );
    assert!(
        close <= 2,
        "{close} of {} gaps under half the spacing: {g:?}",
        g.len()
    );
    eprintln!(
        "NUMBERS rate 4 on 4 slaves for 5 s: {} requests, median gap {median:.3} s, {close} gaps under 125 ms",
        stamps.len()
    );
}

/// `users: 4, ramp: 8s` on 4 slaves: no load for 8 s, then a jump to 4 users. Right: the
/// fleet's users follow the profile, one more every 2 s, whatever the number of slaves.
#[test]
fn the_closed_model_ramp_does_not_depend_on_the_fleet_size() {
    for slaves in [4, 1] {
        let env = Env::new();
        let server = StampServer::start();
        let text = format!(
            "name: ramp\ntarget: http://{}\nduration: 12s\nload: {{users: 4, ramp: 8s}}\nthink: 1s\nrequests: [{{name: r, path: /}}]\n",
            server.addr
        );
        let file = env.scenario("ramp.yaml", &text);
        let (code, out, err, _) = lobster_run(&env, &file, slaves, &[]);
        assert_eq!(code, 0, "{slaves} slaves: {out}\n{err}");
        // Each user holds one connection: when each connection sent its first request is
        // when each user started.
        let stamps = server.taken();
        let mut starts: Vec<Instant> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (conn, at) in &stamps {
            if seen.insert(*conn) {
                starts.push(*at);
            }
        }
        assert_eq!(starts.len(), 4, "{slaves} slaves: users started {starts:?}");
        let gaps: Vec<String> = starts
            .windows(2)
            .map(|w| format!("{:.2}", w[1].duration_since(w[0]).as_secs_f64()))
            .collect();
        eprintln!(
            "NUMBERS ramp 0→4 users over 8 s on {slaves} slave(s): users started {gaps:?} s apart"
        );
        for w in starts.windows(2) {
            let gap = w[1].duration_since(w[0]).as_secs_f64();
            assert!(
                (1.5..=2.5).contains(&gap),
                "{slaves} slaves: users started {gap:.2} s apart, expected 2 s"
            );
        }
    }
}

/// `rate: 1000, max_connections: 1` against a 100 ms endpoint for 8 s: 79 requests and 4096
/// dropped, 3825 arrivals counted nowhere. Right: requests + dropped = arrivals due.
#[test]
fn every_due_arrival_is_sent_or_dropped() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: backlog\ntarget: http://{addr}\nduration: 8s\nload: {{rate: 1000, max_connections: 1}}\nrequests: [{{name: slow, path: /delay/100}}]\n"
    );
    let file = env.scenario("backlog.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let requests = r["totals"]["requests"].as_u64().unwrap();
    let dropped = r["totals"]["dropped"].as_u64().unwrap();
    assert_eq!(requests, target_count(addr));
    assert!(
        (30..=85).contains(&requests),
        "one connection at 100 ms makes at most 80 requests, not {requests}"
    );
    let due = requests + dropped;
    eprintln!(
        "NUMBERS rate 1000 with 1 connection to a 100 ms endpoint for 8 s: requests {requests} + dropped {dropped} = {due} (due 8000)"
    );
    assert!(
        (7999..=8001).contains(&due),
        "requests {requests} + dropped {dropped} = {due}, arrivals due 8000"
    );
}

/// A valid 200 with 70 header lines failed every request as `protocol`.
#[test]
fn responses_with_many_headers_are_read() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: headers\ntarget: http://{addr}\nduration: 2s\nload: {{users: 2}}\nrequests:\n  - {{name: h70, path: /headers/70}}\n  - {{name: h900, path: /headers/900}}\n"
    );
    let file = env.scenario("headers.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["totals"]["failures"], 0, "{:?}", r["totals"]["errors"]);
    assert!(r["endpoints"][0]["requests"].as_u64().unwrap() > 10);
    assert!(r["endpoints"][1]["requests"].as_u64().unwrap() > 10);
}

/// `rps >= 1000` over the default 10 s window on a 5 s run making 5 req/s passed with exit 0.
/// Right: the rule is `not judged`, the run fails (exit 1), and a warning comes first.
#[test]
fn a_rule_that_was_never_judged_does_not_pass() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: unjudged\ntarget: http://{addr}\nduration: 5s\nload: {{rate: 5}}\nrequests: [{{name: r, path: /}}]\nsla:\n  - {{metric: rps, min: 1000}}\n"
    );
    let file = env.scenario("unjudged.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("warning: SLA rule `rps >= 1000 over 10s`: its window is longer than the run"),
        "{err}"
    );
    let r = r.unwrap();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["sla"][0]["verdict"], "not_judged");
    assert_eq!(r["sla"][0]["passed"], false);
    assert!(out.contains("NOT JUDGED"), "{out}");
    assert!(
        r["reasons"][0].as_str().unwrap().contains("never judged"),
        "{}",
        r["reasons"]
    );
}

/// A run whose every request failed, with no `sla:`, ended PASSED with exit 0. Right: failed
/// requests fail the run unless the scenario accepts them (`max_error_rate`).
#[test]
fn failed_requests_fail_a_run_unless_accepted() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let base = format!(
        "name: broken\ntarget: http://{addr}\nduration: 2s\nload: {{users: 2}}\nrequests: [{{name: down, path: /status/503}}]\n"
    );
    let file = env.scenario("broken.yaml", &base);
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["status"], "failed");
    let n = r["totals"]["requests"].as_u64().unwrap();
    assert!(n > 0);
    assert_eq!(r["totals"]["failures"].as_u64().unwrap(), n);
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains(&format!("{n} of {n} requests failed")),
        "{reason}"
    );
    assert!(out.contains("FAILED because:"), "{out}");
    // The failures table: the exact status with a sample message (as Locust's).
    let kinds = &r["endpoints"][0]["failure_kinds"];
    assert_eq!(kinds[0]["kind"], "status_503");
    assert_eq!(kinds[0]["status"], 503);
    assert_eq!(kinds[0]["count"].as_u64().unwrap(), n);
    assert_eq!(
        kinds[0]["sample"],
        "unexpected status 503 (expected 2xx or 3xx)"
    );
    assert!(out.contains("status_503"), "{out}");
    // Stated as accepted: the same run passes.
    let file = env.scenario("accepted.yaml", &format!("{base}max_error_rate: 100%\n"));
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(r.unwrap()["status"], "passed");
}

/// One Ctrl-C 4.6 s into a 15 s run gave `passed`, exit 0, and the terminal's SIGINT (sent to
/// the whole process group) killed the local slaves, reported lost. Right: `aborted`, who
/// stopped it, exit 1, exact totals, no lost slave.
#[test]
fn a_ctrl_c_is_an_abort_with_exact_totals_and_no_lost_slave() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let (_target, addr) = env.target();
    let file = env.scenario(
        "long.yaml",
        &scenario_text(addr, "15s", "users: 4", "think: 10ms\n"),
    );
    let json = env.path("report.json");
    let mut cmd = env.lobster();
    cmd.args([
        "run",
        file.to_str().unwrap(),
        "--local-slaves",
        "2",
        "--json",
        json.to_str().unwrap(),
    ])
    .process_group(0)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Wait until load flows, then press Ctrl-C: the terminal signals the foreground group.
    eventually("load on the target", Duration::from_secs(30), || {
        (target_count(addr) > 200).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
    let r = report(&json);
    assert_eq!(r["status"], "aborted", "{so}");
    let reason = r["stop"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("Ctrl-C") && reason.contains("SIGINT"),
        "{reason}"
    );
    assert_eq!(
        r["lost_slaves"].as_array().unwrap().len(),
        0,
        "{}",
        r["lost_slaves"]
    );
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr)
    );
    assert!(r["stop"]["at_s"].as_f64().unwrap() < 14.0);
}

/// `lobster run` with no fleet and no local slaves waited 60 s in silence. Right: it fails
/// within seconds, with the way out, and exit 3.
#[test]
fn no_slaves_fails_at_once_with_the_way_out() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let file = env.scenario("alone.yaml", &scenario_text(addr, "5s", "users: 1", ""));
    let started = Instant::now();
    let (code, out, err, _) = lobster_run(&env, &file, 0, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("no slaves to run on")
            && err.contains("--local-slaves N")
            && err.contains("lobster fleet up"),
        "{err}"
    );
    assert_eq!(target_count(addr), 0);
}

/// After a crashed or twice-interrupted `lobster run`, the next run failed once with `409 …
/// still in progress`. Right: the stale run is closed (aborted, with the reason) and the next
/// run starts at once.
#[test]
fn a_stale_run_does_not_block_the_next() {
    use std::os::unix::process::CommandExt;
    for (how, reason) in [
        ("crashed", "its master ended before the run did"),
        ("interrupted twice", "Ctrl-C"),
    ] {
        let env = Env::new();
        let (_target, addr) = env.target();
        // Slow answers keep requests in flight, so the stop after the first Ctrl-C is still
        // draining when the second arrives 50 ms later (a quick drain let the run end first).
        let long = env.scenario(
            "long.yaml",
            &scenario_text(addr, "60s", "users: 20", "think: 10ms\n")
                .replace("path: /\n", "path: /delay/500\n")
                .replace("path: /item/42\n", "path: /delay/500\n"),
        );
        let mut cmd = env.lobster();
        cmd.args(["run", long.to_str().unwrap(), "--local-slaves", "1"])
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut first = Proc {
            child: cmd.spawn().unwrap(),
            name: "first run".into(),
        };
        eventually("load on the target", Duration::from_secs(30), || {
            (target_count(addr) > 50).then_some(())
        });
        if how == "crashed" {
            first.signal(nix::sys::signal::Signal::SIGKILL);
        } else {
            first.signal(nix::sys::signal::Signal::SIGINT);
            // The second Ctrl-C comes once the first one's stop is in the store (the slow
            // answers keep the drain going well past it); a fixed 50 ms let a loaded machine
            // send it before the stop was stored, and the run was closed as crashed.
            let db = env.home().join("master/lobster.db");
            eventually("the stop in the store", Duration::from_secs(20), || {
                let db = rusqlite::Connection::open(&db).ok()?;
                let state: String = db
                    .query_row(
                        "SELECT state_json FROM runs WHERE name = 'test'",
                        [],
                        |row| row.get(0),
                    )
                    .ok()?;
                state.contains("Ctrl-C").then_some(())
            });
            first.signal(nix::sys::signal::Signal::SIGINT);
        }
        let status = first.wait_exit(Duration::from_secs(20)).expect("exited");
        if how != "crashed" {
            assert_eq!(status.code(), Some(130));
        }
        let short = env.scenario(
            "short.yaml",
            &scenario_text(addr, "2s", "users: 1", "think: 10ms\n")
                .replace("name: test", "name: next"),
        );
        let (code, out, err, r) = lobster_run(&env, &short, 1, &[]);
        assert_eq!(
            code, 0,
            "{how}: the next run must start at once:\n{out}\n{err}"
        );
        assert_eq!(r.unwrap()["status"], "passed");
        // The stale run was closed, with the reason.
        let db = rusqlite::Connection::open(env.home().join("master/lobster.db")).unwrap();
        let (status, report): (String, String) = db
            .query_row(
                "SELECT status, report_json FROM runs WHERE name = 'test'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(status, "aborted", "{how}");
        assert!(report.contains(reason), "{how}: {report}");
        // Its seconds end with the data the store holds (none, or a few: a 60 s run ended
        // within seconds), not a day of empty seconds after it was closed.
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let seconds = report["series"].as_array().unwrap().len();
        assert!(seconds <= 61, "{how}: {seconds} seconds in the series");
    }
}
