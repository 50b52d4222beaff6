//! The slave image on the local cloud: one slave per core (× slaves_per_core), registration
//! from IMDS user-data, VMs that stop themselves when idle or expired, and units that pass
//! `systemd-analyze verify`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn slaves_by_instance(env: &Env) -> std::collections::BTreeMap<String, Vec<u64>> {
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("master/master.json")).unwrap(),
    )
    .unwrap();
    let body = http_get(addr_of(info["api"].as_str().unwrap()), "/api/slaves");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for s in v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["connected"] == true)
    {
        out.entry(s["instance_id"].as_str().unwrap().to_string())
            .or_default()
            .push(s["slave_index"].as_u64().unwrap());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[test]
fn one_slave_per_core_times_slaves_per_core() {
    let env = Env::new();
    let (code, out, err) = env.cli(&[
        "fleet",
        "up",
        "--count",
        "5",
        "--instance-type",
        "local.medium",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("10 slave(s) registered"), "{out}");
    let st = fleet_status(&env, &[]);
    let ids: Vec<String> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let by = slaves_by_instance(&env);
    for id in &ids {
        assert_eq!(by.get(id), Some(&vec![1, 2]), "slave indexes of {id}");
    }
    let (code, out, err) = env.cli(&[
        "fleet",
        "up",
        "--fleet",
        "dense",
        "--count",
        "5",
        "--instance-type",
        "local.medium",
        "--slaves-per-core",
        "2",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("20 slave(s) registered"), "{out}");
    let dense = fleet_status(&env, &["--fleet", "dense"]);
    assert_eq!(dense["slaves"], 20);

    // A bigger type after stop/start is followed: the boot step starts more slaves.
    let (code, _, _) = env.cli(&["fleet", "down"]);
    assert_eq!(code, 0);
    let (_, endpoint, _) = env.cli(&["cloud", "endpoint"]);
    aws(
        endpoint.trim(),
        &[
            "ec2",
            "modify-instance-attribute",
            "--instance-id",
            &ids[0],
            "--instance-type",
            "Value=local.large",
        ],
    )
    .unwrap();
    let (code, out, err) = env.cli(&[
        "fleet",
        "up",
        "--count",
        "5",
        "--instance-type",
        "local.medium",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(5 started, 0 launched"), "{out}");
    let by = eventually(
        "4 slaves on the larger instance",
        Duration::from_secs(30),
        || {
            let by = slaves_by_instance(&env);
            (by.get(&ids[0]).map(Vec::len) == Some(4)).then_some(by)
        },
    );
    assert_eq!(by[&ids[0]], vec![1, 2, 3, 4]);
}

fn stopped_with(env: &Env, fleet: &str, reason: &str) -> Option<()> {
    let st = fleet_status(env, &["--fleet", fleet]);
    let all = st["instances"].as_array()?;
    (!all.is_empty()
        && all
            .iter()
            .all(|i| i["state"] == "stopped" && i["stop_reason"] == reason))
    .then_some(())
}

/// The pid of the process whose command line holds `arg` and whose environment carries
/// `LOBSTER_ROOT=root`.
fn process_of(root: &std::path::Path, arg: &str) -> Option<i32> {
    let marker = format!("LOBSTER_ROOT={}", root.display());
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let has_arg = cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes());
        let ours = environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
        if has_arg && ours {
            return Some(pid);
        }
    }
    None
}

/// CPU time (user + system) a process has used.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    let getconf = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let hz: u64 = String::from_utf8_lossy(&getconf.stdout)
        .trim()
        .parse()
        .unwrap();
    Duration::from_millis(ticks * 1000 / hz)
}

/// The idle watcher spun at ~100 % of a core on an idle VM (its own reads of the log woke its
/// file watch). Right: at rest it uses under 1 % of a core: < 0.1 s of CPU in 10 s.
#[test]
fn an_idle_watcher_at_rest_uses_almost_no_cpu() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "1", "--idle-minutes", "10"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = fleet_status(&env, &[])["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let root = env.home().join(format!("cloud/instances/{id}/root"));
    let pid = eventually("the idle watcher", Duration::from_secs(30), || {
        process_of(&root, "idle-watch")
    });
    // Let it settle past start-up (reading the logs once, the permission check).
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_time(pid) - before;
    eprintln!(
        "IDLE watcher CPU over 10 idle seconds: {} ms",
        used.as_millis()
    );
    assert!(
        used < Duration::from_millis(100),
        "the idle watcher used {} ms of CPU in 10 s at rest",
        used.as_millis()
    );
}

#[test]
fn idle_vms_stop_themselves_after_a_run_and_come_back() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "3", "--idle-minutes", "0.25"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let before: Vec<String> = fleet_status(&env, &[])["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    // A run longer than the idle time: no VM may stop while it runs.
    let (_target, addr) = env.target();
    let file = env.scenario(
        "long.yaml",
        &scenario_text(addr, "30s", "users: 6", "think: 20ms\n"),
    );
    let json = env.path("report.json");
    let (code, out, err) = env.cli(&[
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--min-slaves",
        "3",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = report(&json);
    assert_eq!(
        r["lost_slaves"].as_array().unwrap().len(),
        0,
        "a VM stopped during the run"
    );
    assert_eq!(r["slaves"], 3);
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr)
    );
    let run_end = Instant::now();
    // Then every VM stops within idle + 30 s, tagged with the reason.
    eventually(
        "every VM stopped for idleness",
        Duration::from_secs(15 + 30),
        || stopped_with(&env, "default", "idle"),
    );
    eprintln!(
        "idle VMs stopped {:.1} s after the run (idle 15 s)",
        run_end.elapsed().as_secs_f64()
    );

    let (code, out, err) = env.cli(&["fleet", "up", "--count", "3", "--idle-minutes", "0.25"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("(3 started, 0 launched, 0 stopped), 3 slave(s) registered"),
        "{out}"
    );
    let st = fleet_status(&env, &[]);
    let mut after: Vec<String> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(after, before, "the same instances come back");
    assert!(
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["stop_reason"].is_null()),
        "the stop reason is cleared on start"
    );
}

#[test]
fn the_maximum_lifetime_stops_a_vm_whose_log_never_goes_quiet() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "1", "--max-lifetime", "15s"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let st = fleet_status(&env, &[]);
    let id = st["instances"][0]["id"].as_str().unwrap().to_string();
    let log = env.home().join(format!(
        "cloud/instances/{id}/root/var/log/lobster/slave-1.log"
    ));
    // Keep the slave log busy with activity lines the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) {
                    let _ = writeln!(f, "INFO lobster::activity: interval recorded requests=100");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    eventually(
        "the VM stopped at its expiry",
        Duration::from_secs(60),
        || stopped_with(&env, "default", "expired"),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let life = std::fs::read_to_string(env.home().join(format!(
        "cloud/instances/{id}/root/var/log/journal/lobster-lifetime.service.log"
    )))
    .unwrap();
    assert!(life.contains("maximum lifetime reached"), "{life}");
}

#[test]
fn a_watcher_that_cannot_call_the_api_powers_the_vm_off() {
    let env = Env::new();
    let (code, _, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    let (_, endpoint, _) = env.cli(&["cloud", "endpoint"]);
    let (status, body) = http_request(
        addr_of(endpoint.trim()),
        "POST",
        "/__lobster/faults",
        &[("Content-Type", "application/json")],
        br#"{"deny_instance_api": true}"#,
    );
    assert_eq!(status, 204, "{body}");
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "1", "--idle-minutes", "0.1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = fleet_status(&env, &[])["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the VM powered off", Duration::from_secs(60), || {
        let st = fleet_status(&env, &[]);
        (st["instances"][0]["state"] == "stopped").then_some(())
    });
    let idle = std::fs::read_to_string(env.home().join(format!(
        "cloud/instances/{id}/root/var/log/journal/lobster-idle.service.log"
    )))
    .unwrap();
    assert!(
        idle.contains("permission check failed"),
        "the missing permission is found at boot:\n{idle}"
    );
    assert!(
        idle.contains("powering off (emulated init)"),
        "a clear fallback line:\n{idle}"
    );
    let d = aws(
        endpoint.trim(),
        &["ec2", "describe-instances", "--instance-ids", &id],
    )
    .unwrap();
    let reason = d["Reservations"][0]["Instances"][0]["StateTransitionReason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(reason.contains("InstanceInitiatedShutdown"), "{reason}");
}

/// Every unit passes `systemd-analyze verify` with no output at all (instances such as
/// `lobster-slave@1.service` included), in a root holding the real binary and system units.
#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("systemd-analyze is not installed: scripts/test installs systemd");
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(root.path().join("usr/local/bin")).unwrap();
    std::fs::copy(slave_bin(), root.path().join("usr/local/bin/lobster-slave")).unwrap();
    std::fs::create_dir_all(root.path().join("usr/lib")).unwrap();
    // The system's own units (sysinit.target, …) under the root, as copies.
    let copy = Command::new("cp")
        .args(["-a", "/usr/lib/systemd"])
        .arg(root.path().join("usr/lib"))
        .status()
        .unwrap();
    assert!(copy.success());
    for (file, text) in lobster_fleet::recipe::UNITS {
        std::fs::write(units.join(file), text).unwrap();
    }
    // Every unit of the recipe (a new one is checked without touching this list), and
    // instances of the template.
    let mut names: Vec<String> = lobster_fleet::recipe::UNITS
        .iter()
        .map(|(f, _)| f.to_string())
        .filter(|f| !f.contains("@."))
        .collect();
    names.extend([
        "lobster-slave@1.service".into(),
        "lobster-slave@7.service".into(),
    ]);
    assert!(names.len() >= 6, "{names:?}");
    for unit in &names {
        let out = Command::new(analyze)
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(units.join(unit))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty() && out.stdout.is_empty(),
            "{unit}: {stderr}"
        );
    }
}
