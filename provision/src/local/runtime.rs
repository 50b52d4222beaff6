//! The instance runtime: a local instance is a real process tree that boots its image's recipe.
//!
//! Boot: after the (fault-injectable) boot delay the instance gets its own IMDS endpoint and
//! becomes `running`; then the runtime does what systemd does on a VM with the image's unit
//! files: it runs the oneshot units wanted by `multi-user.target` (the image's boot step,
//! which reads the user-data from IMDS and asks for `lobster-slave@1..N`), then the unit
//! instances the boot step asked for (`$LOBSTER_ROOT/run/lobster/start-units`, the emulated
//! `systemctl start`), then the other wanted services. Each unit runs in its own process
//! group and is restarted per its `Restart=` policy within its start limit.
//!
//! Paths: `/usr/local/bin/…` in a unit maps to the image's `bin/`; every other absolute path
//! maps under the instance's root directory (`LOBSTER_ROOT`), so instances never share files.
//! Stop sends SIGTERM to every process group, waits `TimeoutStopSec` (at most 10 s), then
//! SIGKILL; the instance becomes `stopped` (or `terminated`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::cloud::InstanceState;

use super::Shared;
use super::api::Effect;
use super::imds;
use super::units::{Restart, Service, Unit, read_env_file};

/// A running instance's handle.
pub struct Handle {
    pub stop: CancellationToken,
    pub generation: u64,
}

/// Longest wait for a unit to stop before SIGKILL.
const MAX_STOP_WAIT: Duration = Duration::from_secs(10);

/// Carries out the effects of an API call.
pub fn apply(shared: &Arc<Shared>, effects: Vec<Effect>) {
    for e in effects {
        match e {
            Effect::Boot(id) => boot(shared, id),
            Effect::Stop(id) | Effect::Terminate(id) => {
                let handle = shared
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .map(|h| h.stop.clone());
                match handle {
                    Some(stop) => stop.cancel(),
                    // Nothing runs (e.g. the process died with the cloud): settle the state now.
                    None => finalize(shared, &id),
                }
            }
        }
    }
}

fn boot(shared: &Arc<Shared>, id: String) {
    let stop = CancellationToken::new();
    let generation = {
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        let generation = running.get(&id).map_or(1, |h| h.generation + 1);
        if let Some(old) = running.insert(
            id.clone(),
            Handle {
                stop: stop.clone(),
                generation,
            },
        ) {
            old.stop.cancel();
        }
        generation
    };
    let shared = shared.clone();
    let span = tracing::info_span!("instance", id = %id);
    tokio::spawn(
        async move {
            run_instance(&shared, &id, stop).await;
            let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.get(&id).is_some_and(|h| h.generation == generation) {
                running.remove(&id);
            }
        }
        .instrument(span),
    );
}

/// The instance's own directory.
pub fn instance_dir(shared: &Shared, id: &str) -> PathBuf {
    shared.dir.join("instances").join(id)
}

/// Appends a line to the instance's console log (what `get-console-output` would show).
fn console(dir: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("console.log"))
    {
        let _ = writeln!(f, "[{}] {line}", super::xml::iso8601(super::unix_ms()));
    }
}

async fn run_instance(shared: &Arc<Shared>, id: &str, stop: CancellationToken) {
    let dir = instance_dir(shared, id);
    let root = dir.join("root");
    for sub in ["run/lobster", "var/log/lobster", "etc/lobster", "home"] {
        let _ = std::fs::create_dir_all(root.join(sub));
    }
    let _ = std::fs::remove_file(root.join("run/lobster/start-units"));
    let delay = shared.faults().boot_delay_ms;
    console(&dir, &format!("power on (boot delay {delay} ms)"));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        _ = stop.cancelled() => return finalize(shared, id),
    }
    let imds_stop = CancellationToken::new();
    let port = match imds::serve(shared.clone(), id.to_string(), imds_stop.clone()).await {
        Ok(p) => p,
        Err(e) => {
            console(&dir, &format!("cannot start the metadata service: {e}"));
            return finalize(shared, id);
        }
    };
    let Some((image_dir, vcpus)) = shared.update(id, |i| {
        if i.state == InstanceState::Pending {
            i.state = InstanceState::Running;
            i.imds_port = Some(port);
        }
    }) else {
        imds_stop.cancel();
        return finalize(shared, id);
    };
    console(
        &dir,
        &format!("running; metadata at http://127.0.0.1:{port}"),
    );
    info!(instance = id, port, "instance running");
    let ctx = Boot {
        shared: shared.clone(),
        id: id.to_string(),
        dir: dir.clone(),
        root,
        image_dir,
        vcpus,
        imds_port: port,
    };
    let tasks = ctx.start_units(&stop).await;
    // Wait for a stop from the API, or a power-off from inside (the emulated `systemctl
    // poweroff`: EC2 stops an instance whose OS shuts down, shutdown behaviour `stop`).
    let poweroff = ctx.root.join("run/lobster/poweroff");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if poweroff.exists() {
                    let _ = std::fs::remove_file(&poweroff);
                    console(&dir, "instance-initiated shutdown");
                    shared.update(id, |i| {
                        if i.state == InstanceState::Running {
                            i.state = InstanceState::Stopping;
                            i.reason = "Client.InstanceInitiatedShutdown: Instance initiated shutdown".into();
                        }
                    });
                    stop.cancel();
                }
            }
        }
    }
    console(&dir, "stopping");
    for t in tasks {
        let _ = t.await;
    }
    imds_stop.cancel();
    finalize(shared, id);
}

/// Settles a stopping/shutting-down instance into stopped/terminated.
fn finalize(shared: &Arc<Shared>, id: &str) {
    let terminated = shared
        .update(id, |i| {
            i.imds_port = None;
            i.pgids.clear();
            match i.state {
                InstanceState::ShuttingDown => {
                    i.state = InstanceState::Terminated;
                    i.terminated_unix_ms = Some(super::unix_ms());
                }
                InstanceState::Stopping | InstanceState::Pending | InstanceState::Running => {
                    i.state = InstanceState::Stopped;
                }
                _ => {}
            }
        })
        .is_some_and(|_| shared.state_of(id) == Some(InstanceState::Terminated));
    let dir = instance_dir(shared, id);
    if terminated {
        let _ = std::fs::remove_dir_all(&dir);
        info!(instance = id, "instance terminated");
    } else {
        console(&dir, "stopped");
        info!(instance = id, "instance stopped");
    }
}

struct Boot {
    shared: Arc<Shared>,
    id: String,
    dir: PathBuf,
    root: PathBuf,
    image_dir: PathBuf,
    vcpus: u32,
    imds_port: u16,
}

impl Boot {
    fn map(&self, path: &str) -> PathBuf {
        match path.strip_prefix("/usr/local/bin/") {
            Some(rest) => self.image_dir.join("bin").join(rest),
            None => match path.strip_prefix('/') {
                Some(rel) => self.root.join(rel),
                None => self.root.join(path),
            },
        }
    }

    fn units(&self) -> Vec<Unit> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.image_dir.join("systemd")) else {
            console(
                &self.dir,
                "image has no systemd/ directory: nothing to boot",
            );
            return out;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if !name.ends_with(".service") {
                continue;
            }
            match std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| Unit::parse(&name, &t))
            {
                Ok(u) => out.push(u),
                Err(e) => console(&self.dir, &format!("ignoring unit {name}: {e}")),
            }
        }
        out
    }

    /// Starts the boot sequence; returns the supervising tasks of long-running units.
    async fn start_units(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let units = self.units();
        let wanted: Vec<&Unit> = units
            .iter()
            .filter(|u| !u.is_template() && u.wanted_by().iter().any(|t| t == "multi-user.target"))
            .collect();
        let mut tasks = Vec::new();
        for u in wanted
            .iter()
            .filter(|u| u.service("").is_ok_and(|s| s.oneshot))
        {
            let Ok(svc) = u.service("") else { continue };
            console(&self.dir, &format!("starting {} (oneshot)", svc.name));
            let ok = self.supervise(svc, stop.clone()).await;
            if !ok {
                console(&self.dir, &format!("{} failed", u.name));
            }
            if stop.is_cancelled() {
                return tasks;
            }
        }
        // The units the boot step asked for (the emulated `systemctl start`).
        let requested =
            std::fs::read_to_string(self.root.join("run/lobster/start-units")).unwrap_or_default();
        for name in requested.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((base, rest)) = name.split_once('@') else {
                console(
                    &self.dir,
                    &format!("cannot start {name}: not a template instance"),
                );
                continue;
            };
            let Some((instance, ext)) = rest.rsplit_once('.') else {
                continue;
            };
            let template = format!("{base}@.{ext}");
            match units
                .iter()
                .find(|u| u.name == template)
                .map(|u| u.service(instance))
            {
                Some(Ok(svc)) => tasks.push(self.spawn(svc, stop.clone())),
                Some(Err(e)) => console(&self.dir, &format!("cannot start {name}: {e}")),
                None => console(
                    &self.dir,
                    &format!("cannot start {name}: no unit {template}"),
                ),
            }
        }
        for u in wanted {
            match u.service("") {
                Ok(svc) if !svc.oneshot => tasks.push(self.spawn(svc, stop.clone())),
                Ok(_) => {}
                Err(e) => console(&self.dir, &format!("cannot start {}: {e}", u.name)),
            }
        }
        tasks
    }

    fn spawn(&self, svc: Service, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = Boot {
            shared: self.shared.clone(),
            id: self.id.clone(),
            dir: self.dir.clone(),
            root: self.root.clone(),
            image_dir: self.image_dir.clone(),
            vcpus: self.vcpus,
            imds_port: self.imds_port,
        };
        tokio::spawn(async move {
            me.supervise(svc, stop).await;
        })
    }

    fn command(&self, svc: &Service) -> Result<Command, String> {
        let program = self.map(&svc.exec[0]);
        let mut cmd = Command::new(&program);
        cmd.args(&svc.exec[1..]);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.root.join("home"))
            .env("LANG", "C.UTF-8")
            .env("LOBSTER_ROOT", &self.root)
            .env("LOBSTER_INIT", "emulated")
            .env("LOBSTER_CORES", self.vcpus.to_string())
            .env(
                "LOBSTER_BOOT_ID",
                format!("{}-{}", self.id, super::unix_ms()),
            )
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://127.0.0.1:{}", self.imds_port),
            )
            .env("AWS_ENDPOINT_URL_EC2", self.shared.endpoint());
        if let Ok(filter) = std::env::var("LOBSTER_LOG") {
            cmd.env("LOBSTER_LOG", filter);
        }
        for (file, optional) in &svc.environment_files {
            match std::fs::read_to_string(self.map(file)) {
                Ok(text) => {
                    cmd.envs(read_env_file(&text));
                }
                Err(_) if *optional => {}
                Err(e) => return Err(format!("EnvironmentFile {file}: {e}")),
            }
        }
        cmd.envs(svc.environment.iter().cloned());
        let output = |path: &Option<String>| -> Result<Stdio, String> {
            match path {
                None => Ok(Stdio::null()),
                Some(p) => {
                    let mapped = self.map(p);
                    if let Some(parent) = mapped.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&mapped)
                        .map(Stdio::from)
                        .map_err(|e| format!("{p}: {e}"))
                }
            }
        };
        // As systemd: standard error goes where standard output goes unless set apart.
        let stderr = if svc.stderr.is_some() {
            &svc.stderr
        } else {
            &svc.stdout
        };
        cmd.stdin(Stdio::null())
            .stdout(output(&svc.stdout)?)
            .stderr(output(stderr)?)
            .current_dir(&self.root)
            .process_group(0)
            .kill_on_drop(false);
        Ok(cmd)
    }

    /// Runs a unit until it ends for good or `stop`; returns whether its last run succeeded.
    async fn supervise(&self, svc: Service, stop: CancellationToken) -> bool {
        let mut starts: Vec<Instant> = Vec::new();
        loop {
            let now = Instant::now();
            starts.retain(|t| now.duration_since(*t) < svc.start_limit_interval);
            if starts.len() as u32 >= svc.start_limit_burst {
                console(
                    &self.dir,
                    &format!(
                        "{}: start request repeated too quickly, refusing to start",
                        svc.name
                    ),
                );
                return false;
            }
            starts.push(now);
            let mut child = match self
                .command(&svc)
                .and_then(|mut c| c.spawn().map_err(|e| format!("{}: {e}", svc.exec[0])))
            {
                Ok(c) => c,
                Err(e) => {
                    console(&self.dir, &format!("{}: failed to start: {e}", svc.name));
                    return false;
                }
            };
            let pid = child.id().unwrap_or(0) as i32;
            console(&self.dir, &format!("started {} (pid {pid})", svc.name));
            self.shared.update(&self.id, |i| i.pgids.push(pid));
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = stop.cancelled() => {
                    terminate_group(pid, svc.timeout_stop.min(MAX_STOP_WAIT), &mut child).await;
                    console(&self.dir, &format!("stopped {}", svc.name));
                    self.shared.update(&self.id, |i| i.pgids.retain(|p| *p != pid));
                    return true;
                }
            };
            self.shared
                .update(&self.id, |i| i.pgids.retain(|p| *p != pid));
            let ok = status.is_some_and(|s| s.success());
            console(
                &self.dir,
                &format!(
                    "{} exited ({})",
                    svc.name,
                    status.map_or("unknown".into(), |s| s.to_string())
                ),
            );
            let again = match svc.restart {
                Restart::Always => !svc.oneshot,
                Restart::OnFailure => !ok && !svc.oneshot,
                Restart::No => false,
            };
            if !again {
                return ok;
            }
            tokio::select! {
                _ = tokio::time::sleep(svc.restart_sec) => {}
                _ = stop.cancelled() => return ok,
            }
        }
    }
}

/// SIGTERM to the process group, then SIGKILL after `wait`.
async fn terminate_group(pgid: i32, wait: Duration, child: &mut tokio::process::Child) {
    if pgid <= 0 {
        let _ = child.kill().await;
        return;
    }
    let group = nix::unistd::Pid::from_raw(pgid);
    let _ = nix::sys::signal::killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(wait, child.wait()).await.is_err() {
        warn!(pgid, "unit did not stop in time: SIGKILL");
    }
    // Whatever the unit left behind in its group goes too.
    let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}

/// Kills process groups left over from a previous run of the local cloud, but only those that
/// still carry this instance's root in their environment (a recycled pid is left alone).
pub fn kill_leftovers(root: &Path, pgids: &[i32]) {
    let marker = format!("LOBSTER_ROOT={}", root.display());
    for &pgid in pgids {
        let environ = std::fs::read(format!("/proc/{pgid}/environ")).unwrap_or_default();
        let ours = environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
        if ours {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}
