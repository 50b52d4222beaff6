//! `lobster-slave boot`: the VM's boot step (`lobster-boot.service`).
//!
//! Reads who this instance is from IMDSv2 and the fleet settings from its user-data on every
//! boot (cloud-init runs only on the first one, and the master or token may have changed since),
//! writes `/run/lobster/slave.env` (owner-only: it holds the join token) for the slave and idle
//! units, and starts `lobster-slaves.target` and `lobster-slave@1..N` with N = cores ×
//! slaves_per_core (stopping any higher indexes left from a bigger instance type). Under the local cloud (`LOBSTER_INIT=emulated`)
//! the units to start are written to `/run/lobster/start-units` for the emulated init instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use lobster_fleet::userdata;
use lobster_provision::imds::{Identity, Imds};
use tracing::{info, warn};

/// Where the VM's files live: `/`, or `$LOBSTER_ROOT` under the local cloud.
pub fn root() -> PathBuf {
    std::env::var_os("LOBSTER_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// Most slaves one VM runs.
const MAX_SLAVES: u32 = 1024;

/// Reads identity and settings. An unreachable or failing metadata service is retried for as
/// long as it takes (the unit is `Type=exec`, so nothing waits on it: the system reaches its
/// target and the idle watcher and lifetime backstop run meanwhile); user-data without usable
/// Lobster settings fails at once, as no retry can fix it.
pub async fn fetch(imds: &Imds) -> anyhow::Result<(Identity, userdata::SlaveSettings)> {
    let mut delay = Duration::from_millis(200);
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let read = async {
            let id = imds.identity().await?;
            let text = imds.user_data().await?.unwrap_or_default();
            anyhow::Ok((id, text))
        };
        match read.await {
            Ok((id, text)) => {
                let settings = userdata::parse(&text)
                    .context("this instance's user-data has no usable Lobster settings")?;
                return Ok((id, settings));
            }
            Err(e) => {
                // Every attempt at first, then about once a minute.
                if attempt <= 5 || attempt.is_multiple_of(12) {
                    warn!(attempt, error = %format!("{e:#}"), "instance metadata not answering yet; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How many cores this VM has (`LOBSTER_CORES` under the local cloud).
pub fn cores() -> u32 {
    std::env::var("LOBSTER_CORES")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub async fn boot() -> anyhow::Result<()> {
    let imds = Imds::from_env();
    let (id, s) = fetch(&imds).await?;
    let cores = cores();
    let n = cores.saturating_mul(s.slaves_per_core).clamp(1, MAX_SLAVES);
    let root = root();
    let log_dir = root.join("var/log/lobster");
    let env = format!(
        "# Written by lobster-slave boot from instance metadata; read by lobster-slave@.service, lobster-idle and lobster-lifetime.\n\
LOBSTER_FLEET={}\nLOBSTER_MASTER={}\nLOBSTER_JOIN_TOKEN={}\nLOBSTER_MASTER_FINGERPRINT={}\n\
LOBSTER_INSTANCE_ID={}\nLOBSTER_INSTANCE_TYPE={}\nLOBSTER_REGION={}\nLOBSTER_CORES={cores}\nLOBSTER_SLAVES_ON_HOST={n}\n\
LOBSTER_IDLE_MINUTES={}\nLOBSTER_MAX_LIFETIME={}\nLOBSTER_EXPIRES_AT={}\nLOBSTER_LOG_DIR={}\n\
LOBSTER_MASTER_DISCOVERY=imds-tags\n",
        s.fleet,
        s.master,
        s.join_token,
        s.fingerprint,
        id.instance_id,
        id.instance_type,
        id.region,
        s.idle_minutes,
        s.max_lifetime,
        s.expires_at,
        log_dir.display(),
    );
    let env_path = root.join("run/lobster/slave.env");
    write_private(&env_path, &env)
        .with_context(|| format!("cannot write {}", env_path.display()))?;
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let units: Vec<String> = (1..=n)
        .map(|i| format!("lobster-slave@{i}.service"))
        .collect();
    info!(instance = %id.instance_id, instance_type = %id.instance_type, cores, slaves_per_core = s.slaves_per_core, slaves = n, master = %s.master, "boot: starting slaves");
    if std::env::var("LOBSTER_INIT").as_deref() == Ok("emulated") {
        let list = root.join("run/lobster/start-units");
        std::fs::write(&list, units.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", list.display()))?;
        return Ok(());
    }
    // A smaller instance type after stop/start: stop the slaves beyond N.
    let stale = std::process::Command::new("systemctl")
        .args([
            "list-units",
            "--plain",
            "--no-legend",
            "--all",
            "lobster-slave@*.service",
        ])
        .output();
    if let Ok(out) = stale {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let unit = line.split_whitespace().next().unwrap_or("");
            let index = unit
                .strip_prefix("lobster-slave@")
                .and_then(|r| r.strip_suffix(".service"))
                .and_then(|i| i.parse::<u32>().ok());
            if index.is_some_and(|i| i > n) {
                let _ = std::process::Command::new("systemctl")
                    .args(["stop", unit])
                    .status();
            }
        }
    }
    let status = std::process::Command::new("systemctl")
        .arg("start")
        .arg("--no-block")
        .arg("lobster-slaves.target")
        .args(&units)
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        bail!("systemctl start failed ({status})");
    }
    Ok(())
}
