//! The image under a real systemd: the recipe baked into a Debian root file system
//! (`scripts/rootfs`, cached between runs) by the EC2 builder's own script, booted with
//! `systemd-nspawn --boot` as local-cloud instances (`lobster cloud local --runtime nspawn`:
//! the same IMDS, the user-data `fleet up` renders, nothing added to the image). Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The cached base tree (`LOBSTER_TEST_ROOTFS`, set by scripts/test from scripts/rootfs).
fn rootfs() -> PathBuf {
    let p = std::env::var_os("LOBSTER_TEST_ROOTFS").map(PathBuf::from).expect(
        "LOBSTER_TEST_ROOTFS is not set: scripts/test builds the tree (scripts/rootfs) and sets it",
    );
    assert!(
        p.join(".lobster-rootfs-done").is_file(),
        "{} is not a finished tree (scripts/rootfs makes it)",
        p.display()
    );
    p
}

/// Kills whatever containers of this home are left (a failed assertion mid-test) and
/// unmounts their disks, so no test leaves a container behind.
struct Containers(PathBuf);

impl Drop for Containers {
    fn drop(&mut self) {
        let marker = format!("LOBSTER_ROOT={}", self.0.display());
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
            if environ
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(marker.as_bytes()))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let home = self.0.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for target in mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|t| t.starts_with(&home))
        {
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
    }
}

/// The pid of the container's systemd (the child of its `systemd-nspawn`), if it runs.
fn container(id: &str) -> Option<i32> {
    let machine = format!("--machine={id}");
    let nspawn = std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid = p.file_name().to_str()?.parse::<i32>().ok()?;
        let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|a| a == machine.as_bytes())
            .then_some(pid)
    })?;
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Runs a command inside the container; returns (success, stdout + stderr).
fn inside(pid: i32, args: &[&str]) -> (bool, String) {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-u", "-i", "-n", "-p", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `systemctl is-system-running` inside, once the boot has settled (not `starting`).
fn system_state(pid: i32) -> String {
    eventually("the boot to settle", Duration::from_secs(60), || {
        let (_, s) = inside(pid, &["systemctl", "is-system-running"]);
        let s = s.trim().to_string();
        // Anything else (`starting`, or no bus yet) is a boot still under way.
        ["running", "degraded", "maintenance", "stopping", "offline"]
            .contains(&s.as_str())
            .then_some(s)
    })
}

fn faults(endpoint: &str, json: &str) {
    let (status, body) = http_request(
        addr_of(endpoint),
        "POST",
        "/__lobster/faults",
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    );
    assert_eq!(status, 204, "{body}");
}

fn instance(endpoint: &str, id: &str) -> serde_json::Value {
    let d = aws(
        endpoint,
        &["ec2", "describe-instances", "--instance-ids", id],
    )
    .unwrap();
    d["Reservations"][0]["Instances"][0].clone()
}

fn tag(i: &serde_json::Value, key: &str) -> Option<String> {
    i["Tags"]
        .as_array()?
        .iter()
        .find(|t| t["Key"] == key)
        .and_then(|t| t["Value"].as_str().map(str::to_string))
}

/// Waits until the instance is stopped and its container gone; returns the instance.
fn stopped(endpoint: &str, id: &str, within: Duration) -> serde_json::Value {
    let i = eventually(&format!("{id} stopped"), within, || {
        let i = instance(endpoint, id);
        (i["State"]["Name"] == "stopped").then_some(i)
    });
    assert!(container(id).is_none(), "the container of {id} still runs");
    i
}

fn image_rootfs(home: &Path) -> PathBuf {
    let images = home.join("cloud/images");
    std::fs::read_dir(&images)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("rootfs"))
        .find(|p| p.is_dir())
        .expect("a baked root file system")
}

#[test]
fn the_image_boots_stops_and_expires_under_real_systemd() {
    let started = Instant::now();
    let base = rootfs();
    let env = Env::new();
    let _containers = Containers(env.home().to_path_buf());
    let (_cloud, endpoint) = env.cloud(&["--runtime", "nspawn"]);

    // The builder step: install.sh inside the tree, as on an EC2 builder.
    let (code, out, err) = env.cli(&[
        "image",
        "build",
        "--local",
        "--rootfs",
        base.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let tree = image_rootfs(env.home());
    assert_eq!(
        std::fs::metadata(tree.join("etc/machine-id"))
            .unwrap()
            .len(),
        0,
        "the image's machine id is reset"
    );
    for unit in ["lobster-boot", "lobster-idle", "lobster-lifetime"] {
        let link = tree.join(format!(
            "etc/systemd/system/multi-user.target.wants/{unit}.service"
        ));
        assert!(link.is_symlink(), "{unit} is not enabled");
    }

    // Boot with the metadata service down: the system still reaches `running`; the boot
    // step retries in the background.
    faults(&endpoint, r#"{"imds_unavailable": true}"#);
    let up = [
        "fleet",
        "up",
        "--count",
        "1",
        "--instance-type",
        "local.medium",
        "--idle-minutes",
        "0.25",
    ];
    let mut no_wait = up.to_vec();
    no_wait.push("--no-wait");
    let (code, out, err) = env.cli(&no_wait);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = fleet_status(&env, &[])["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = eventually("the container", Duration::from_secs(30), || container(&id));
    assert_eq!(system_state(pid), "running", "boot held up the system");
    let (_, boot) = inside(pid, &["systemctl", "is-active", "lobster-boot.service"]);
    assert_eq!(boot.trim(), "active", "the boot step is still trying");
    let (_, journal) = inside(pid, &["journalctl", "-u", "lobster-boot", "--no-pager"]);
    assert!(
        journal.contains("instance metadata not answering yet"),
        "{journal}"
    );
    assert!(inside(pid, &["test", "!", "-e", "/run/lobster/slave.env"]).0);

    // The metadata comes back: one slave per core registers.
    faults(&endpoint, "{}");
    let (code, out, err) = env.cli(&up);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 slave(s) registered"), "{out}");
    assert_eq!(system_state(pid), "running");
    let names = "/etc/systemd/system/lobster-boot.service /etc/systemd/system/lobster-idle.service \
         /etc/systemd/system/lobster-lifetime.service /etc/systemd/system/lobster-slaves.target \
         /etc/systemd/system/lobster-slave@1.service";
    let mut verify = vec!["systemd-analyze", "verify"];
    verify.extend(names.split_whitespace());
    let (ok, said) = inside(pid, &verify);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let (_, target) = inside(pid, &["systemctl", "is-active", "lobster-slaves.target"]);
    assert_eq!(target.trim(), "active");
    let (_, slave) = inside(pid, &["journalctl", "-u", "lobster-slave@1", "--no-pager"]);
    assert!(slave.contains("joined the master"), "{slave}");
    let (_, machine_id) = inside(pid, &["cat", "/etc/machine-id"]);
    assert!(
        machine_id.trim().len() == 32 && machine_id.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "a machine id of its own: {machine_id}"
    );
    let (_, logs) = inside(pid, &["ls", "/var/log/lobster"]);
    let mut logs: Vec<&str> = logs.split_whitespace().collect();
    logs.sort();
    assert_eq!(logs, vec!["slave-1.log", "slave-2.log"]);

    // A short run uses both slaves.
    let (_target, addr) = env.target();
    let file = env.scenario("short.yaml", &scenario_text(addr, "3s", "users: 4", ""));
    let (code, out, err, r) = lobster_run(&env, &file, 0, &["--min-slaves", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["slaves"], 2);
    assert_eq!(
        r["totals"]["requests"].as_u64().unwrap(),
        target_count(addr)
    );

    // Idle: the watcher drains, calls StopInstances, and the container powers off.
    let i = stopped(&endpoint, &id, Duration::from_secs(90));
    assert_eq!(tag(&i, "lobster:stop-reason").as_deref(), Some("idle"));
    let root = env.home().join(format!("cloud/instances/{id}/root"));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&root.display().to_string()),
        "the disk is unmounted"
    );

    // Boot fails (user-data without Lobster settings): the lifetime backstop powers the VM
    // off at its expiry.
    let image = fleet_status(&env, &[])["instances"][0]["image_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| instance(&endpoint, &id)["ImageId"].as_str().unwrap().into());
    let expires =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(20))
            .to_string();
    let run = aws(
        &endpoint,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &image,
            "--count",
            "1",
            "--instance-type",
            "local.small",
            "--tag-specifications",
            &format!(
                "ResourceType=instance,Tags=[{{Key=lobster:managed,Value=true}},{{Key=lobster:expires-at,Value={expires}}}]"
            ),
            "--user-data",
            "#cloud-config\n",
        ],
    )
    .unwrap();
    let bad = run["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = eventually("the second container", Duration::from_secs(30), || {
        container(&bad)
    });
    assert_eq!(system_state(pid), "degraded", "the boot step failed");
    let (_, failed) = inside(pid, &["systemctl", "is-failed", "lobster-boot.service"]);
    assert_eq!(failed.trim(), "failed");
    let (_, life) = inside(pid, &["systemctl", "is-active", "lobster-lifetime.service"]);
    assert_eq!(life.trim(), "active");
    let i = stopped(&endpoint, &bad, Duration::from_secs(60));
    let reason = i["StateTransitionReason"].as_str().unwrap_or_default();
    assert!(reason.contains("InstanceInitiatedShutdown"), "{reason}");
    assert_eq!(tag(&i, "lobster:stop-reason").as_deref(), Some("expired"));

    // Terminate: the disks go.
    aws(
        &endpoint,
        &["ec2", "terminate-instances", "--instance-ids", &id, &bad],
    )
    .unwrap();
    eventually(
        "the instances' disks removed",
        Duration::from_secs(30),
        || {
            (!env.home().join(format!("cloud/instances/{id}")).exists()
                && !env.home().join(format!("cloud/instances/{bad}")).exists())
            .then_some(())
        },
    );
    eprintln!(
        "NSPAWN whole check {:.0} s; base tree {}",
        started.elapsed().as_secs_f64(),
        base.display()
    );
}
