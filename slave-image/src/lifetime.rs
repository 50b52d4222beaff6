//! `lobster-slave lifetime`: the VM's lifetime backstop (`lobster-lifetime.service`).
//!
//! It depends on nothing else on the VM: not on the boot step, not on the idle watcher, not
//! on the master, and not on an API permission. It learns the expiry the way the watcher
//! learns its facts ([`crate::vm`]: the boot step's env file, else the `lobster:expires-at`
//! tag from the instance metadata, else the user-data), and at `expires-at` it tags the
//! instance `lobster:stop-reason=expired` (best effort) and powers the VM off, which stops it
//! (shutdown behaviour `stop`). A VM that knows no expiry at all powers off
//! [`crate::vm::FALLBACK_LIFETIME`] after the backstop first started in this boot (the time is
//! kept in `/run/lobster/lifetime-started`, which a reboot clears).
//!
//! The wall clock is read again every [`CHECK`], so a clock set forward by NTP after boot is
//! honoured within that time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lobster_fleet::tags;
use lobster_provision::cloud::{Cloud, Tags};
use lobster_provision::imds::Imds;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::vm::{FALLBACK_LIFETIME, Facts};

/// How often the clock and the expiry are looked at again.
pub const CHECK: Duration = Duration::from_secs(5);

/// When this VM must be off: its expiry, else the fallback lifetime after `started` (pure).
pub fn deadline(facts: &Facts, started: SystemTime) -> SystemTime {
    facts
        .expires_at
        .unwrap_or_else(|| started + FALLBACK_LIFETIME)
}

/// The time the backstop first started in this boot, recorded on first use.
pub fn first_start(root: &Path) -> SystemTime {
    let file = root.join("run/lobster/lifetime-started");
    let recorded = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    if let Some(t) = recorded {
        return t;
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&file, format!("{secs}\n")) {
        warn!(error = %e, file = %file.display(), "cannot record when the lifetime started");
    }
    now
}

/// Waits for the deadline, then powers the VM off (retrying until the init system takes the
/// request) or returns on `shutdown`. `connect` makes the cloud client for the reason tag.
pub async fn run<F, Fut>(root: &Path, imds: Imds, connect: F, shutdown: CancellationToken)
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Cloud>>,
{
    let started = first_start(root);
    let mut said: Option<SystemTime> = None;
    loop {
        let facts = crate::vm::learn(root, &imds).await;
        let at = deadline(&facts, started);
        if said != Some(at) {
            info!(
                deadline = %humantime::format_rfc3339_seconds(at),
                known_expiry = facts.expires_at.is_some(),
                from_boot = facts.from_boot,
                "lifetime backstop armed"
            );
            said = Some(at);
        }
        if SystemTime::now() >= at {
            warn!(
                "maximum lifetime reached (lobster:expires-at): powering this VM off whatever it is doing"
            );
            // Best effort, bounded: the master's fleet view says why this VM's slaves go.
            if let (Some(m), Some(id)) = (&facts.master, &facts.instance_id) {
                let why = "expired (lobster:expires-at): the VM powers itself off";
                let told = tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::idle::drain(m, id, why, false),
                );
                if let Ok(Err(e)) | Err(e) = told.await.map_err(|_| "timed out".to_string()) {
                    warn!(error = %e, "cannot tell the master this VM expires");
                }
            }
            if let Some(id) = facts.instance_id.clone() {
                let cloud = connect(facts.region.clone()).await;
                let tag = Tags::from([(tags::STOP_REASON.to_string(), "expired".to_string())]);
                let ids = [id];
                let tagged = tokio::time::timeout(Duration::from_secs(10), cloud.tag(&ids, &tag));
                match tagged.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "cannot tag this instance expired"),
                    Err(_) => warn!("tagging this instance expired timed out"),
                }
            }
            if crate::power::poweroff(root, "lifetime backstop") {
                // The init system is shutting the VM down; wait for its signal.
                shutdown.cancelled().await;
                return;
            }
        }
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(left.clamp(Duration::from_millis(200), CHECK)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(expires_at: Option<SystemTime>) -> Facts {
        Facts {
            instance_id: None,
            region: None,
            idle: crate::vm::DEFAULT_IDLE,
            expires_at,
            master: None,
            from_boot: false,
            problems: vec![],
        }
    }

    #[test]
    fn the_deadline_is_the_expiry_else_the_fallback() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let exp = t0 + Duration::from_secs(3600);
        assert_eq!(deadline(&facts(Some(exp)), t0), exp);
        // An expiry beyond the fallback is still the expiry (a 48 h fleet is allowed).
        let late = t0 + Duration::from_secs(48 * 3600);
        assert_eq!(deadline(&facts(Some(late)), t0), late);
        assert_eq!(deadline(&facts(None), t0), t0 + FALLBACK_LIFETIME);
    }

    #[test]
    fn the_first_start_survives_a_restart_of_the_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let a = first_start(dir.path());
        std::thread::sleep(Duration::from_millis(1100));
        let b = first_start(dir.path());
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(a), secs(b));
    }
}
