//! The instance runtime: a local instance is a real process tree that boots its image's recipe.
//!
//! Boot: after the (fault-injectable) boot delay the instance gets its own IMDS endpoint and
//! becomes `running`; then the runtime does what systemd does on a VM with the image's unit
//! files: it runs the oneshot units wanted by `multi-user.target`, then starts the other
//! wanted services together (the boot step, which reads the user-data from IMDS and asks for
//! `lobster-slave@1..N`; the idle watcher; the lifetime backstop), and the unit instances the
//! boot step asks for whenever it asks (`$LOBSTER_ROOT/run/lobster/start-units`, the emulated
//! `systemctl start`). Each unit runs in its own process group and is restarted per its
//! `Restart=` policy within its start limit; its output goes where the unit says (the
//! emulated journal is `/var/log/journal/<unit>.log`). `/run` is emptied at every boot.
//!
//! Paths: `/usr/local/bin/…` in a unit maps to the image's `bin/`; every other absolute path
//! maps under the instance's root directory (`LOBSTER_ROOT`), so instances never share files.
//! Stop sends SIGTERM to every process group, waits `TimeoutStopSec` (at most 10 s), then
//! SIGKILL; the instance becomes `stopped` (or `terminated`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::cloud::InstanceState;

use super::api::Effect;
use super::imds;
use super::{Runtime, Shared};

mod boot;
pub(crate) mod nspawn;

use boot::Boot;

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
    let _ = std::fs::create_dir_all(&dir);
    if shared.runtime == Runtime::Emulated {
        // `/run` is a tmpfs on a VM: every boot starts with it empty.
        let _ = std::fs::remove_dir_all(root.join("run"));
        for sub in ["run/lobster", "var/log/lobster", "etc/lobster", "home"] {
            let _ = std::fs::create_dir_all(root.join(sub));
        }
    }
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
    match shared.runtime {
        Runtime::Emulated => emulated(&ctx, &stop).await,
        Runtime::Nspawn => nspawn::run(&ctx, &stop).await,
    }
    imds_stop.cancel();
    finalize(shared, id);
}

/// Marks an instance whose OS powered itself off as stopping (EC2 stops an instance whose OS
/// shuts down, shutdown behaviour `stop`).
fn instance_initiated_shutdown(shared: &Arc<Shared>, id: &str) {
    shared.update(id, |i| {
        if i.state == InstanceState::Running {
            i.state = InstanceState::Stopping;
            i.reason = "Client.InstanceInitiatedShutdown: Instance initiated shutdown".into();
        }
    });
}

/// The emulated init: the image's units as process groups, until a stop or a power-off.
async fn emulated(ctx: &Boot, stop: &CancellationToken) {
    // The units stop when the guest shuts down, which may be a while after StopInstances.
    let shutdown = CancellationToken::new();
    let tasks = ctx.start_units(&shutdown).await;
    // Wait for a stop from the API, or a power-off from inside (the emulated `systemctl
    // poweroff`).
    let poweroff = ctx.root.join("run/lobster/poweroff");
    let mut from_inside = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if poweroff.exists() {
                    let _ = std::fs::remove_file(&poweroff);
                    console(&ctx.dir, "instance-initiated shutdown");
                    instance_initiated_shutdown(&ctx.shared, &ctx.id);
                    from_inside = true;
                    stop.cancel();
                }
            }
        }
    }
    let delay = ctx.shared.faults().stop_delay_ms;
    if !from_inside && delay > 0 {
        console(
            &ctx.dir,
            &format!("stop requested; guest shutdown in {delay} ms"),
        );
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    shutdown.cancel();
    console(&ctx.dir, "stopping");
    for t in tasks {
        let _ = t.await;
    }
}

/// Settles a stopping/shutting-down instance into stopped/terminated.
fn finalize(shared: &Arc<Shared>, id: &str) {
    let terminated = shared
        .update(id, |i| {
            i.imds_port = None;
            i.pgids.clear();
            i.units_started = false;
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
        // Never remove through a mounted overlay.
        nspawn::unmount(&dir.join("root"));
        let _ = std::fs::remove_dir_all(&dir);
        info!(instance = id, "instance terminated");
    } else {
        console(&dir, "stopped");
        info!(instance = id, "instance stopped");
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
