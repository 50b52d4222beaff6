//! A VM stops itself whatever else fails, on the local cloud's emulated init (the same unit
//! files as a real VM; `nspawn.rs` boots them under a real systemd): a VM whose boot step
//! failed stops when idle and is powered off at its expiry; unreachable metadata holds up
//! nothing but the boot step; the watcher is not started again after it stopped its VM; slave
//! logs reach the journal and the file the watcher reads; and `fleet up` stops instances
//! past their `lobster:expires-at`.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

/// A local cloud, a template image, and raw instances launched with the aws CLI.
struct Vm {
    env: Env,
    _cloud: Proc,
    endpoint: String,
    image: String,
}

impl Vm {
    fn new() -> Self {
        let env = Env::new();
        let (cloud, endpoint) = env.cloud(&[]);
        let (code, out, err) = env.cli(&["image", "build", "--local"]);
        assert_eq!(code, 0, "{err}");
        Vm {
            env,
            _cloud: cloud,
            endpoint,
            image: out.trim().to_string(),
        }
    }

    fn faults(&self, json: &str) {
        let (status, body) = http_request(
            addr_of(&self.endpoint),
            "POST",
            "/__lobster/faults",
            &[("Content-Type", "application/json")],
            json.as_bytes(),
        );
        assert_eq!(status, 204, "{body}");
    }

    /// Launches one instance with this user-data and these extra tags; returns its id.
    fn launch(&self, user_data: &str, tags: &[(&str, &str)]) -> String {
        let mut spec = String::from("ResourceType=instance,Tags=[{Key=lobster:managed,Value=true}");
        for (k, v) in tags {
            spec.push_str(&format!(",{{Key={k},Value={v}}}"));
        }
        spec.push(']');
        let run = aws(
            &self.endpoint,
            &[
                "ec2",
                "run-instances",
                "--image-id",
                &self.image,
                "--count",
                "1",
                "--instance-type",
                "local.small",
                "--tag-specifications",
                &spec,
                "--user-data",
                user_data,
            ],
        )
        .unwrap();
        run["Instances"][0]["InstanceId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn describe(&self, id: &str) -> serde_json::Value {
        let d = aws(
            &self.endpoint,
            &["ec2", "describe-instances", "--instance-ids", id],
        )
        .unwrap();
        d["Reservations"][0]["Instances"][0].clone()
    }

    fn tag(&self, id: &str, key: &str) -> Option<String> {
        self.describe(id)["Tags"]
            .as_array()?
            .iter()
            .find(|t| t["Key"] == key)
            .and_then(|t| t["Value"].as_str().map(str::to_string))
    }

    fn root(&self, id: &str) -> PathBuf {
        self.env.home().join(format!("cloud/instances/{id}/root"))
    }

    fn read(&self, id: &str, path: &str) -> String {
        std::fs::read_to_string(self.root(id).join(path)).unwrap_or_default()
    }

    fn console(&self, id: &str) -> String {
        std::fs::read_to_string(
            self.env
                .home()
                .join(format!("cloud/instances/{id}/console.log")),
        )
        .unwrap_or_default()
    }

    fn wait_state(&self, id: &str, state: &str, within: Duration) {
        eventually(&format!("{id} {state}"), within, || {
            (self.describe(id)["State"]["Name"] == state).then_some(())
        });
    }
}

/// RFC 3339 time `secs` from now.
fn in_secs(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Boot fails (user-data without a master), yet the watcher runs on what the metadata says
/// (an idle time of 6 s) and stops the VM through the API. Before: the watcher needed the
/// boot step's file, failed and restarted forever; the VM never stopped.
#[test]
fn a_vm_whose_boot_failed_still_stops_when_idle() {
    let vm = Vm::new();
    let id = vm.launch("LOBSTER_IDLE_MINUTES=0.1\n", &[]);
    vm.wait_state(&id, "stopped", Duration::from_secs(60));
    assert_eq!(vm.tag(&id, "lobster:stop-reason").as_deref(), Some("idle"));
    let console = vm.console(&id);
    assert!(
        console.contains("lobster-boot.service exited (exit status: 1)"),
        "the boot step failed:\n{console}"
    );
    let boot = vm.read(&id, "var/log/journal/lobster-boot.service.log");
    assert!(boot.contains("no LOBSTER_MASTER line"), "{boot}");
    let idle = vm.read(&id, "var/log/journal/lobster-idle.service.log");
    assert!(
        idle.contains("the boot step has not written its settings"),
        "{idle}"
    );
    assert!(idle.contains("StopInstances accepted"), "{idle}");
}

/// Nothing Lobster in the user-data, an idle time of 10 minutes by default, and an expiry
/// 8 s away: the lifetime backstop powers the VM off at its expiry (an instance-initiated
/// shutdown) and tags why. Before: nothing on the VM enforced the lifetime without the
/// watcher, and the watcher never ran.
#[test]
fn the_lifetime_backstop_powers_off_a_vm_whose_boot_failed() {
    let vm = Vm::new();
    let expires = in_secs(8);
    let id = vm.launch("#cloud-config\n", &[("lobster:expires-at", &expires)]);
    vm.wait_state(&id, "stopped", Duration::from_secs(60));
    let d = vm.describe(&id);
    let reason = d["StateTransitionReason"].as_str().unwrap_or_default();
    assert!(reason.contains("InstanceInitiatedShutdown"), "{reason}");
    assert_eq!(
        vm.tag(&id, "lobster:stop-reason").as_deref(),
        Some("expired")
    );
    let life = vm.read(&id, "var/log/journal/lobster-lifetime.service.log");
    assert!(life.contains("lifetime backstop armed"), "{life}");
    assert!(life.contains("maximum lifetime reached"), "{life}");
    // Not before its time: the stop came after the expiry.
    let stopped_at = vm
        .console(&id)
        .lines()
        .find(|l| l.contains("instance-initiated shutdown"))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(']').next())
        .map(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).unwrap())
        .expect("a shutdown line on the console");
    let expiry = humantime::parse_rfc3339_weak(expires.trim_end_matches('Z')).unwrap();
    assert!(stopped_at >= expiry, "stopped before its expiry");
}

/// While the metadata service answers only 503, the boot step keeps trying in the background
/// and the watcher and backstop run; once it answers, the slaves start. Before: the boot step
/// held every other unit back for up to 120 s, then gave up.
#[test]
fn unreachable_metadata_holds_up_nothing_but_the_boot_step() {
    let vm = Vm::new();
    vm.faults(r#"{"imds_unavailable": true}"#);
    let id = vm.launch(
        "LOBSTER_MASTER=http://127.0.0.1:9\nLOBSTER_JOIN_TOKEN=t\nLOBSTER_IDLE_MINUTES=30\n",
        &[],
    );
    vm.wait_state(&id, "running", Duration::from_secs(30));
    eventually(
        "the watcher and the backstop running",
        Duration::from_secs(30),
        || {
            let c = vm.console(&id);
            (c.contains("started lobster-idle.service")
                && c.contains("started lobster-lifetime.service"))
            .then_some(())
        },
    );
    eventually("the boot step retrying", Duration::from_secs(30), || {
        vm.read(&id, "var/log/journal/lobster-boot.service.log")
            .contains("instance metadata not answering yet; retrying")
            .then_some(())
    });
    assert!(
        !vm.root(&id).join("run/lobster/slave.env").exists(),
        "no settings while the metadata is down"
    );
    vm.faults("{}");
    eventually("the slaves started", Duration::from_secs(30), || {
        vm.console(&id)
            .contains("started lobster-slave@1.service")
            .then_some(())
    });
    let console = vm.console(&id);
    assert!(
        !console.contains("lobster-boot.service exited (exit status: 1)"),
        "{console}"
    );
}

/// EC2 shuts the guest down a while after StopInstances (here 12 s): the watcher that made
/// the call has exited 0 and is not started again meanwhile. Before (`Restart=always`): it
/// started again 5 s later. Also: the slave's lines reach the journal and its rotated log
/// file, and the watcher's own lines stay out of the directory it watches.
#[test]
fn the_watcher_is_not_started_again_after_it_stopped_its_vm() {
    let vm = Vm::new();
    vm.faults(r#"{"stop_delay_ms": 12000}"#);
    let id = vm.launch(
        "LOBSTER_MASTER=http://127.0.0.1:9\nLOBSTER_JOIN_TOKEN=t\nLOBSTER_IDLE_MINUTES=0.1\n",
        &[],
    );
    eventually("StopInstances", Duration::from_secs(60), || {
        (vm.describe(&id)["State"]["Name"] == "stopping").then_some(())
    });
    vm.wait_state(&id, "stopped", Duration::from_secs(60));
    let console = vm.console(&id);
    assert!(
        console.contains("stop requested; guest shutdown in 12000 ms"),
        "{console}"
    );
    assert!(
        console.contains("lobster-idle.service exited (exit status: 0)"),
        "{console}"
    );
    assert_eq!(
        console.matches("started lobster-idle.service").count(),
        1,
        "the watcher was started again:\n{console}"
    );
    let journal = vm.read(&id, "var/log/journal/lobster-slave@1.service.log");
    let file = vm.read(&id, "var/log/lobster/slave-1.log");
    assert!(journal.contains("master unreachable"), "journal: {journal}");
    assert!(file.contains("master unreachable"), "file: {file}");
    let watched: Vec<String> = std::fs::read_dir(vm.root(&id).join("var/log/lobster"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        watched.iter().all(|f| f.starts_with("slave-")),
        "{watched:?}"
    );
}

/// An instance up past its `lobster:expires-at` (its own VM thinks otherwise: its settings
/// say an hour) is stopped by the next `fleet up` pass, said, and started again with a fresh
/// expiry. Before: `fleet up` found the fleet converged and left it running.
#[test]
fn fleet_up_stops_instances_past_their_expiry() {
    let env = Env::new();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "1", "--max-lifetime", "1h"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, endpoint, _) = env.cli(&["cloud", "endpoint"]);
    let id = fleet_status(&env, &[])["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let past = "2020-01-01T00:00:00Z";
    aws(
        endpoint.trim(),
        &[
            "ec2",
            "create-tags",
            "--resources",
            &id,
            "--tags",
            &format!("Key=lobster:expires-at,Value={past}"),
        ],
    )
    .unwrap();
    let (code, out, err) = env.cli(&["fleet", "up", "--count", "1", "--max-lifetime", "1h"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "stopped 1 instance(s) past their lobster:expires-at: {id}"
        )),
        "{out}"
    );
    assert!(out.contains("(1 started, 0 launched, 0 stopped)"), "{out}");
    let st = fleet_status(&env, &[]);
    assert_eq!(st["instances"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["instances"][0]["id"], id.as_str());
    let fresh = st["instances"][0]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fresh.as_str() > "2026", "a fresh expiry: {fresh}");
}
