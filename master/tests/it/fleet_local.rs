//! `lobster fleet up --count 20` on the local cloud, from nothing: instances boot their image,
//! slaves register, a second `up` changes nothing, `down` leaves 0 running, `up` again restarts
//! the same ids, and a run on the fleet counts exactly what the target served.

use std::time::Instant;

use crate::common::*;

fn ids(status: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn twenty_instances_up_down_up_and_a_run_on_them() {
    let env = Env::new();
    let t0 = Instant::now();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "20"]);
    let took = t0.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "20 instance(s) up (0 started, 20 launched, 0 stopped), 20 slave(s) registered"
        ),
        "{out}"
    );
    eprintln!(
        "fleet up --count 20 from nothing: {:.1} s ({out})",
        took.as_secs_f64()
    );
    let st = fleet_status(&env, &[]);
    let first = ids(&st);
    assert_eq!(first.len(), 20);
    for i in st["instances"].as_array().unwrap() {
        assert_eq!(i["state"], "running");
        assert_eq!(i["slaves"], 1, "{i}");
        assert_eq!(i["vcpus"], 1);
        assert!(i["expires_at"].as_str().is_some());
    }
    // The master's fleet view (the dashboard's) knows each VM's expiry from its slaves.
    let discovery: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("master/master.json")).unwrap(),
    )
    .unwrap();
    let slaves: serde_json::Value = serde_json::from_str(&http_get(
        addr_of(discovery["api"].as_str().unwrap()),
        "/api/slaves",
    ))
    .unwrap();
    for i in st["instances"].as_array().unwrap() {
        let told = slaves
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instance_id"] == i["id"])
            .unwrap_or_else(|| panic!("no slave of {i}"));
        let (a, b) = (
            told["expires_at"].as_str().unwrap(),
            i["expires_at"].as_str().unwrap(),
        );
        let parse = |t: &str| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).unwrap();
        assert_eq!(parse(a), parse(b), "{told}");
    }

    let (code, out, _) = env.cli(&["fleet", "up", "--count", "20"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("(0 started, 0 launched, 0 stopped)"),
        "a second up changes nothing: {out}"
    );
    assert_eq!(ids(&fleet_status(&env, &[])), first);

    // A run on that fleet: the report's total is the target's own count.
    let (_target, addr) = env.target();
    let file = env.scenario(
        "fleet.yaml",
        &scenario_text(addr, "3s", "users: 40", "think: 2ms\n"),
    );
    let json = env.path("report.json");
    let (code, out, err) = env.cli(&[
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--min-slaves",
        "20",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = report(&json);
    assert_eq!(r["slaves"], 20);
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr)
    );

    let (code, out, _) = env.cli(&["fleet", "down"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("stopping 20 instance(s); 0 running now"),
        "{out}"
    );
    let st = fleet_status(&env, &[]);
    assert_eq!(st["running"], 0);
    assert!(
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "stopped")
    );

    let t0 = Instant::now();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "20"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("(20 started, 0 launched, 0 stopped), 20 slave(s) registered"),
        "{out}"
    );
    eprintln!(
        "fleet up --count 20 restarting stopped instances: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        ids(&fleet_status(&env, &[])),
        first,
        "the same 20 instance ids"
    );

    let (code, _, _) = env.cli(&["fleet", "down", "--terminate"]);
    assert_eq!(code, 0);
    assert_eq!(
        fleet_status(&env, &[])["instances"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// Every file below `dir`.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// `fleet up --dry-run` ("change nothing") started a local cloud and built a 242 MB image.
/// Right: a dry run starts, writes and builds nothing, with or without a local cloud running.
#[test]
fn dry_run_starts_writes_and_builds_nothing() {
    let env = Env::new();
    let before = files(env.home());
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "3", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("launch 3 instance(s)"), "{out}");
    assert!(out.contains("would build one"), "{out}");
    assert_eq!(files(env.home()), before, "a dry run wrote to the home");
    let (code, _, err) = env.cli(&["cloud", "endpoint"]);
    assert_eq!(code, 3, "a dry run started a local cloud: {err}");
    // With a local cloud running: the plan against it, still nothing launched or built.
    let (code, endpoint, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "3", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 instance(s) observed") && out.contains("launch 3"),
        "{out}"
    );
    let v = aws(endpoint.trim(), &["ec2", "describe-instances"]).unwrap();
    assert_eq!(
        v["Reservations"].as_array().unwrap().len(),
        0,
        "a dry run launched"
    );
    let v = aws(
        endpoint.trim(),
        &["ec2", "describe-images", "--owners", "self"],
    )
    .unwrap();
    assert_eq!(
        v["Images"].as_array().unwrap().len(),
        0,
        "a dry run built an image"
    );
    assert!(
        !env.home().join("master/master.json").exists(),
        "a dry run started a master"
    );
    let (code, _, err) = env.cli(&["stop"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.cli(&["cloud", "endpoint"]);
    assert_eq!(code, 3, "no cloud after stop: {err}");
}

/// The README's `aws … ec2 describe-instances` failed in a fresh shell (no region, no
/// credentials). Right: the README's two lines work as written in a shell with no AWS settings.
#[test]
fn the_readmes_aws_example_works_in_a_fresh_shell() {
    let env = Env::new();
    let (code, _, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| l.contains("lobster cloud env") || l.starts_with("aws ec2 describe-instances"))
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(lines.len(), 2, "the README's example: {lines:?}");
    let aws_dir = tool("LOBSTER_TEST_AWS", "aws")
        .parent()
        .unwrap()
        .to_path_buf();
    let lobster_dir = lobster().parent().unwrap().to_path_buf();
    let out = std::process::Command::new("bash")
        .args(["-c", &lines.join("\n")])
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}:/usr/bin:/bin",
                lobster_dir.display(),
                aws_dir.display()
            ),
        )
        .env("HOME", env.path("fresh-home"))
        .env("LOBSTER_HOME", env.home())
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{lines:?}\n{so}\n{se}");
    assert!(so.contains("Reservations"), "{so}");
}

/// The README's main command: the whole loop once, from nothing, ending with nothing running.
#[test]
fn quickstart_runs_the_whole_loop_and_leaves_nothing_running() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["quickstart", "--duration", "2s", "--idle-minutes", "0.1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("PASSED"), "{out}");
    assert!(out.contains("every instance stopped itself"), "{out}");
    let r = report(&env.home().join("quickstart-report.json"));
    assert_eq!(r["slaves"], 3);
    assert!(
        !env.home().join("cloud/cloud.json").exists(),
        "the local cloud was stopped"
    );
    assert!(
        !env.home().join("master/master.json").exists(),
        "the master was stopped"
    );
    // It ends with what to try next, and those commands work as printed: the built-in target
    // again on the scenario's address, then the run with local slaves.
    let next = out.split("next:").nth(1).expect("the next steps");
    let target_line = next
        .lines()
        .find(|l| l.contains("lobster target --listen"))
        .unwrap();
    let listen = target_line
        .split("--listen ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let mut t = env.lobster();
    t.args(["target", "--listen", listen]);
    let (_target, _) = spawn_until(t, "target", "listening on", &env.path("target-again.log"));
    let run_line = next.lines().find(|l| l.contains("lobster run")).unwrap();
    let args: Vec<&str> = run_line
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let (code, out, err) = env.cli(&args);
    assert_eq!(code, 0, "`{run_line}` as printed:\n{out}\n{err}");
}

/// Each `image build --local` copied another 242 MB binary into the home. Right: the local
/// images share one copy of a binary.
#[test]
fn local_images_share_one_copy_of_the_slave_binary() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let (code, _, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    let mut inodes = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = env.cli(&["image", "build", "--local"]);
        assert_eq!(code, 0, "{err}");
        let (_, endpoint, _) = env.cli(&["cloud", "endpoint"]);
        let v = aws(
            endpoint.trim(),
            &["ec2", "describe-images", "--image-ids", out.trim()],
        )
        .unwrap();
        let dir = v["Images"][0]["ImageLocation"]
            .as_str()
            .unwrap()
            .to_string();
        let meta = std::fs::metadata(std::path::Path::new(&dir).join("bin/lobster-slave")).unwrap();
        inodes.push((meta.ino(), meta.len()));
    }
    assert_eq!(inodes[0], inodes[1], "two images, two copies of the binary");
    assert_eq!(inodes[0].1, std::fs::metadata(slave_bin()).unwrap().len());
}

/// There was no way to list or remove images. `image list` shows them with their tags;
/// `image rm` deregisters by id or by tag, removes a local image's directory, and the shared
/// binary once no image uses it.
#[test]
fn images_are_listed_and_removed() {
    let env = Env::new();
    let (code, _, err) = env.cli(&["cloud", "start"]);
    assert_eq!(code, 0, "{err}");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = env.cli(&["image", "build", "--local"]);
        assert_eq!(code, 0, "{err}");
        ids.push(out.trim().to_string());
    }
    let (code, out, err) = env.cli(&["image", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())));
    assert_eq!(list[0]["tags"]["lobster:role"], "slave-template");
    let dirs: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["location"].as_str().unwrap().to_string())
        .collect();
    // By id: one image and its directory; the shared binary stays (the other uses it).
    let (code, out, err) = env.cli(&["image", "rm", &ids[0]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("removed {}", ids[0])), "{out}");
    let gone = dirs
        .iter()
        .filter(|d| !std::path::Path::new(d).exists())
        .count();
    assert_eq!(gone, 1, "one image directory removed");
    let shared = env.home().join("cloud/images/.bin");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1);
    // By tag, dry run first: nothing removed; then everything tagged, binary included.
    let (code, out, _) = env.cli(&[
        "image",
        "rm",
        "--tag",
        "lobster:role=slave-template",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("would remove {}", ids[1])), "{out}");
    let (code, out, err) = env.cli(&["image", "rm", "--tag", "lobster:role=slave-template"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("removed {}", ids[1])), "{out}");
    assert!(dirs.iter().all(|d| !std::path::Path::new(d).exists()));
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "the unused binary stays"
    );
    let (_, out, _) = env.cli(&["image", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Bad input.
    let (code, _, err) = env.cli(&["image", "rm"]);
    assert_eq!(code, 2);
    assert!(err.contains("image ids, or --tag KEY=VALUE"), "{err}");
    let (code, _, err) = env.cli(&["image", "rm", "ami-0123456789abcdef0"]);
    assert_eq!(code, 2);
    assert!(err.contains("no image ami-0123456789abcdef0"), "{err}");
}

/// A VM that reaches its expiry tells the master why its slaves go before it powers off: the
/// master's fleet view (the dashboard's) shows the slave draining with that reason, and its
/// expiry.
#[test]
fn an_expiring_vm_tells_the_master_why_it_goes() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "1", "--max-lifetime", "10s"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let discovery: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("master/master.json")).unwrap(),
    )
    .unwrap();
    let api = addr_of(discovery["api"].as_str().unwrap());
    let slave = eventually(
        "the slave draining as its VM expires",
        std::time::Duration::from_secs(60),
        || {
            let v: serde_json::Value = serde_json::from_str(&http_get(api, "/api/slaves")).ok()?;
            v.as_array()?
                .iter()
                .find(|s| s["draining"] == true)
                .cloned()
        },
    );
    let reason = slave["drain_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("expired (lobster:expires-at)"),
        "{slave}"
    );
    assert!(!slave["expires_at"].as_str().unwrap().is_empty(), "{slave}");
}
