//! Slaves started beside the master (`lobster run --local-slaves N`): real `lobster-slave`
//! processes on this host, so the entry node takes part in the load.
//!
//! Each slave runs in its own process group, so a Ctrl-C at the terminal reaches only
//! `lobster run`, which stops the run and then its slaves in order (a slave killed by the
//! terminal's signal would be reported lost). Slaves are told the parent's pid and shut down
//! if it goes away (a crashed or force-quit `lobster run` leaves no slave behind).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{info, warn};

/// Local slave processes; stopped (SIGTERM, then SIGKILL) by [`LocalSlaves::stop`] or on drop.
pub struct LocalSlaves {
    children: Vec<Child>,
}

/// Finds the `lobster-slave` binary: `$LOBSTER_SLAVE_BIN`, else next to this executable.
pub fn slave_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LOBSTER_SLAVE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = exe.parent().ok_or("executable has no directory")?;
    for candidate in [dir.join("lobster-slave"), dir.join("../lobster-slave")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no lobster-slave binary next to {} (build the workspace: cargo build --workspace, or set LOBSTER_SLAVE_BIN)",
        exe.display()
    ))
}

impl LocalSlaves {
    /// Starts `n` slaves that join `master` (gRPC URL) with `token`; logs go to `log_dir`.
    pub fn start(
        n: u32,
        master: &str,
        token: &str,
        fingerprint: &str,
        log_dir: &Path,
    ) -> Result<Self, String> {
        let bin = slave_binary()?;
        std::fs::create_dir_all(log_dir)
            .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let mut children = Vec::new();
        for i in 1..=n {
            let log_path = log_dir.join(format!("local-slave-{i}.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let child = Command::new(&bin)
                .env("LOBSTER_MASTER", master)
                .env("LOBSTER_JOIN_TOKEN", token)
                .env("LOBSTER_MASTER_FINGERPRINT", fingerprint)
                .env("LOBSTER_INSTANCE_ID", format!("local-{host}"))
                .env("LOBSTER_SLAVE_INDEX", i.to_string())
                .env("LOBSTER_SLAVES_ON_HOST", n.to_string())
                .env("LOBSTER_PARENT_PID", std::process::id().to_string())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            children.push(child);
        }
        info!(slaves = n, logs = %log_dir.display(), "local slaves started");
        Ok(LocalSlaves { children })
    }

    /// Asks every slave to stop (SIGTERM), waits up to `grace`, then kills what is left.
    pub async fn stop(mut self, grace: Duration) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                let _ = signal(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for c in &mut self.children {
            match tokio::time::timeout_at(deadline, c.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    warn!(pid = c.id(), "local slave did not stop in time: killing it");
                    let _ = c.kill().await;
                }
            }
        }
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
}
