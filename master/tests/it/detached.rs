//! Unattended runs: `lobster run --detach` returns at once and the run goes on in the master
//! when its terminal hangs up; `runs wait` gives the verdict, a background waiter writes the
//! report files and runs `--on-finish`; `runs stop` ends a detached run with its reason; a
//! run followed by `lobster run` that loses its terminal (SIGHUP) is stopped, not orphaned.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::common::*;

/// A target, a master with one slave, and a scenario `name` of `rate` arrivals per second
/// for `duration` against the target: (target, master, slave, its address, API, file).
fn fleet_of_one(
    env: &Env,
    name: &str,
    duration: &str,
    rate: u32,
) -> (
    Proc,
    Proc,
    Proc,
    std::net::SocketAddr,
    String,
    std::path::PathBuf,
) {
    let (target, addr) = env.target();
    let (master, api, grpc) = env.master(None, &[]);
    let slave = env.slave(&grpc, 1, 1);
    wait_slaves(&api, 1, Duration::from_secs(60));
    let file = env.scenario(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\ntarget: http://{addr}\nduration: {duration}\nload: {{rate: {rate}}}\nrequests:\n  - {{name: home, path: /}}\n"
        ),
    );
    (target, master, slave, addr, api, file)
}

#[test]
fn a_detached_run_outlives_its_terminal_and_runs_wait_gives_its_verdict() {
    let env = Env::new();
    let (_target, _master, _slave, addr, api, file) = fleet_of_one(&env, "night", "4s", 25);
    let (html, hook) = (env.path("night.html"), env.path("hook.txt"));
    // A "terminal": a shell in its own process group that runs the detached command and then
    // stays, as a login shell would; the hang-up goes to the whole group.
    let out = env.path("terminal.out");
    let script = format!(
        "{} --home {} run {} --detach --master {api} --html {} --on-finish 'echo \"$LOBSTER_RUN_STATUS $LOBSTER_RUN_ID $1\" > {}'; sleep 60",
        lobster().display(),
        env.home().display(),
        file.display(),
        html.display(),
        hook.display()
    );
    let mut terminal = Proc {
        // `env --default-signal=HUP`: the shell dies of the hang-up even when this test runs
        // under `nohup` (an ignored signal stays ignored across exec).
        child: std::process::Command::new("env")
            .args(["--default-signal=HUP", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(env.path("terminal.err")).unwrap())
            .process_group(0)
            .spawn()
            .unwrap(),
        name: "terminal".into(),
    };
    let printed = eventually("the run id", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&out).ok()?;
        text.contains("detached").then_some(text)
    });
    let id = printed
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(id.starts_with("r-"), "{printed}");
    assert!(
        printed.contains(&format!("lobster runs wait {id}")),
        "{printed}"
    );
    // The terminal closes while the run is young.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(terminal.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    terminal
        .wait_exit(Duration::from_secs(10))
        .expect("the terminal's group hung up");

    let (code, r) = wait_report(&env, &api, &id, "waited.json");
    assert_eq!(code, 0);
    assert_eq!(r["status"], "passed");
    assert_eq!(r["stop"]["reason"], "duration reached");
    assert_eq!(r["totals"]["requests"].as_u64(), Some(target_count(addr)));
    assert_eq!(r["totals"]["requests"], 100, "4 s at 25/s");

    // The background waiter wrote the page and ran the hook with the report's path.
    let line = eventually("the hook", Duration::from_secs(30), || {
        std::fs::read_to_string(&hook)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[..2], ["passed", id.as_str()], "{line}");
    let hooked: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(words[2]).unwrap()).unwrap();
    assert_eq!(hooked["run_id"], id.as_str());
    assert!(std::fs::read_to_string(&html).unwrap().contains(&id));

    // Attaching to a finished run prints its summary and its verdict.
    let (code, out, _) = env.cli(&["runs", "attach", &id, "--master", &api]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("run {id} (night) PASSED")), "{out}");
}

#[test]
fn runs_stop_ends_a_detached_run_and_sighup_stops_a_followed_one() {
    let env = Env::new();
    let (_target, _master, _slave, _, api, file) = fleet_of_one(&env, "long", "60s", 10);
    let id = detach(&env, &api, &file);
    let (code, _, err) = env.cli(&[
        "runs",
        "stop",
        &id,
        "--master",
        &api,
        "--reason",
        "nightly cancelled",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, r) = wait_report(&env, &api, &id, "stopped.json");
    assert_eq!(code, 1);
    assert_eq!(
        (r["status"].as_str(), r["stop"]["reason"].as_str()),
        (
            Some("aborted"),
            Some("stopped by the operator: nightly cancelled")
        )
    );

    // Without --detach, a hang-up stops the run, with the reason.
    let json = env.path("hup.json");
    let mut run = background_run(&env, &api, &file, &json, 1);
    eventually("the live table", Duration::from_secs(60), || {
        std::fs::read_to_string(env.path("run.out"))
            .ok()?
            .contains("req/s")
            .then_some(())
    });
    run.signal(nix::sys::signal::Signal::SIGHUP);
    let status = run
        .wait_exit(Duration::from_secs(60))
        .expect("lobster run ends");
    assert_eq!(status.code(), Some(1));
    let r = report(&json);
    assert_eq!(r["status"], "aborted");
    let reason = r["stop"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("SIGHUP") && reason.contains("--detach"),
        "{reason}"
    );
}

/// `runs scale` changes a run's rate mid-run: the slaves send exactly the old rate up to the
/// change's load time and the new one after it (the target's count), the merged seconds carry
/// the load asked for, and users for an open-model run are refused as bad input.
#[test]
fn runs_scale_changes_the_rate_mid_run_exactly() {
    let env = Env::new();
    let (_target, _master, _slave, addr, api, file) = fleet_of_one(&env, "scaled", "10s", 20);
    let id = detach(&env, &api, &file);
    let api_addr = addr_of(&api);
    eventually("3 s of load", Duration::from_secs(60), || {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(api_addr, &format!("/api/runs/{id}"))).ok()?;
        (v["load_elapsed_s"].as_f64()? >= 3.0).then_some(())
    });
    let (code, _, err) = env.cli(&["runs", "scale", &id, "--master", &api, "--users", "5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("open-model: give `rate`"), "{err}");
    let (code, out, err) = env.cli(&["runs", "scale", &id, "--master", &api, "--rate", "50"]);
    assert_eq!(code, 0, "{err}");
    let at_s: f64 = out
        .split(" from ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // Followed from another terminal: the table's load column says what each second was
    // asked for, the new rate after the change.
    let (code, table, err) = env.cli(&["runs", "attach", &id, "--master", &api]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<f64>> = table
        .lines()
        .skip_while(|l| !l.contains("rate/s"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().map(|x| x.parse().ok()).collect())
        .collect();
    let after: Vec<f64> = rows
        .iter()
        .filter(|r| r[0] > at_s.ceil() + 1.0)
        .map(|r| r[8])
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|l| *l == 50.0),
        "{table}"
    );
    let (code, r) = wait_report(&env, &api, &id, "scaled.json");
    assert_eq!(code, 0);
    let total = r["totals"]["requests"].as_f64().unwrap();
    let want = 20.0 * at_s + 50.0 * (10.0 - at_s);
    eprintln!("scaled at {at_s} s: {total} requests, {want} due");
    assert!(
        (total - want).abs() <= 2.0,
        "{total} requests, {want} due (change at {at_s} s)"
    );
    assert_eq!(r["totals"]["requests"].as_u64(), Some(target_count(addr)));
    let loads: Vec<f64> = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["load"].as_f64().unwrap())
        .collect();
    let changed = at_s.ceil() as usize;
    assert!(loads[..changed - 1].iter().all(|l| *l == 20.0), "{loads:?}");
    assert!(loads[changed..10].iter().all(|l| *l == 50.0), "{loads:?}");
}
