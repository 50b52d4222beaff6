//! `lobster-slave idle-watch`: one per VM (`lobster-idle.service`), not per slave: it decides
//! once for the whole VM whether its slaves are idle, and stops the VM through the cloud API.
//!
//! Activity is what the slaves write to their logs under load: a line of the
//! `lobster::activity` target at least once per statistics interval while they carry a share.
//! Heartbeats and reconnect chatter are not activity (or a VM whose master vanished would never
//! stop), and neither are the watcher's own lines (they go to the journal, not the slave log
//! directory). The log *directory* is watched with `notify` (inotify, so a rotated file is
//! followed), falling back to polling where inotify is unavailable.
//!
//! The watcher does not need the boot step: what it knows comes from [`crate::vm`] (the boot
//! step's env file, else the instance metadata, else defaults) and is learned again until the
//! env file appears. A VM whose boot failed has no slaves, so no activity, and stops after its
//! idle time like any other.
//!
//! After the idle time without activity (and past the boot grace, on the monotonic clock):
//! ask the master to drain this VM (when it knows one), re-check for a short window, tag the
//! instance `lobster:stop-reason=idle`, and call StopInstances on its own id, then exit 0. If
//! the API keeps failing, or the VM does not know its own id, it powers itself off. The
//! maximum lifetime is [`crate::lifetime`]'s, not the watcher's.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobster_fleet::proto::{DrainRequest, control_client::ControlClient};
use lobster_fleet::tags;
use lobster_provision::cloud::{Cloud, Tags};
use lobster_provision::imds::Imds;
use notify::{RecursiveMode, Watcher};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::agent::ACTIVITY;
use crate::vm::{Facts, MasterLink};

mod activity;

pub use activity::{Activity, watch};

/// How often the watcher learns its facts again while the boot step's env file is missing.
const RELEARN: Duration = Duration::from_secs(10);

/// What the watcher needs.
#[derive(Clone, Debug)]
pub struct IdleSettings {
    /// The slaves' log directory (`/var/log/lobster`).
    pub log_dir: PathBuf,
    /// No stop within this long after the watcher started (`LOBSTER_BOOT_GRACE`; by default
    /// the idle time, at most a minute).
    pub grace: Option<Duration>,
    /// `/`, or the instance root under the local cloud.
    pub root: PathBuf,
    /// What the VM knows (instance id, idle time, master).
    pub facts: Facts,
}

impl IdleSettings {
    /// Learns the facts ([`crate::vm::learn`]) and reads the watcher's own variables.
    pub async fn learn(imds: &Imds) -> Result<Self, String> {
        let root = crate::boot::root();
        let grace = match std::env::var("LOBSTER_BOOT_GRACE")
            .ok()
            .filter(|v| !v.is_empty())
        {
            Some(g) => Some(
                lobster_fleet::scenario::value::parse_duration(&g)
                    .map_err(|e| format!("LOBSTER_BOOT_GRACE: {e}"))?,
            ),
            None => None,
        };
        let facts = crate::vm::learn(&root, imds).await;
        Ok(IdleSettings {
            log_dir: std::env::var("LOBSTER_LOG_DIR")
                .ok()
                .filter(|v| !v.is_empty())
                .map_or_else(|| root.join("var/log/lobster"), PathBuf::from),
            grace,
            root,
            facts,
        })
    }

    fn grace(&self) -> Duration {
        self.grace
            .unwrap_or_else(|| self.facts.idle.min(Duration::from_secs(60)))
    }

    /// The short second look after the drain.
    fn recheck(&self) -> Duration {
        (self.facts.idle / 4).clamp(Duration::from_secs(2), Duration::from_secs(15))
    }
}

/// What to do now, from the clocks alone (pure, tested as a table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait,
    /// No activity for the idle time (and past the grace).
    Idle,
}

/// `since_start` and `since_activity` come from the monotonic clock.
pub fn decide(s: &IdleSettings, since_start: Duration, since_activity: Duration) -> Decision {
    if since_start >= s.grace() && since_activity >= s.facts.idle {
        return Decision::Idle;
    }
    Decision::Wait
}

/// Asks the master to drain (or undrain) this VM, saying why (shown in its fleet view);
/// `Ok(idle)` as the master sees it.
pub(crate) async fn drain(
    m: &MasterLink,
    instance_id: &str,
    reason: &str,
    undo: bool,
) -> Result<bool, String> {
    let channel = crate::tls::connect(&m.url, &m.fingerprint)
        .await
        .map_err(|e| format!("cannot reach the master: {}", crate::tls::chain(&e)))?;
    let reply = ControlClient::new(channel)
        .drain(DrainRequest {
            join_token: m.join_token.clone(),
            instance_id: instance_id.to_string(),
            reason: reason.to_string(),
            undo,
        })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
        .into_inner();
    Ok(reply.idle)
}

/// Asks the master to drain this VM, when it knows both; `Ok(true)` to go on stopping.
async fn ask_master(f: &Facts, undo: bool) -> Result<bool, String> {
    match (&f.master, &f.instance_id) {
        (Some(m), Some(id)) => {
            let reason = if undo {
                "busy again".to_string()
            } else {
                format!(
                    "idle for {} min: the VM stops itself",
                    f.idle.as_secs().div_ceil(60)
                )
            };
            drain(m, id, &reason, undo).await
        }
        _ => Ok(true),
    }
}

/// Tags the instance and stops it through the API; on repeated failure (or with no instance
/// id to stop), powers off.
async fn stop_self(s: &IdleSettings, cloud: &dyn Cloud, reason: &str) {
    let Some(id) = &s.facts.instance_id else {
        warn!("this VM does not know its instance id: powering off instead of StopInstances");
        crate::power::poweroff(&s.root, "idle watcher");
        return;
    };
    let ids = vec![id.clone()];
    let tag = Tags::from([(tags::STOP_REASON.to_string(), reason.to_string())]);
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=4 {
        if let Err(e) = cloud.tag(&ids, &tag).await {
            warn!(attempt, error = %e, "cannot tag this instance with its stop reason");
        }
        match cloud.stop(&ids, false).await {
            Ok(_) => {
                info!(instance = %id, reason, "StopInstances accepted: this VM is stopping");
                return;
            }
            Err(e) => {
                error!(attempt, error = %e, instance = %id, "StopInstances on this instance failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    crate::power::poweroff(&s.root, "idle watcher");
}

/// The watcher's life: a permission check, then watch and decide until it stopped the VM
/// (returns; the unit exits 0 and is not restarted) or `shutdown`.
pub async fn run(
    mut s: IdleSettings,
    imds: Imds,
    cloud: Arc<dyn Cloud>,
    shutdown: CancellationToken,
) {
    info!(facts = ?s.facts, grace = ?s.grace(), "idle watcher started");
    for p in &s.facts.problems {
        warn!("{p}");
    }
    if !s.facts.from_boot {
        warn!(
            "the boot step has not written its settings (yet): watching with what the instance metadata says"
        );
    }
    // Find a missing permission at boot, not at 3 a.m.
    if let Some(id) = &s.facts.instance_id {
        match cloud.stop(std::slice::from_ref(id), true).await {
            Ok(_) => info!(
                "permission check: this instance may stop itself (DryRun StopInstances succeeded)"
            ),
            Err(e) => {
                error!(error = %e, "permission check failed: this instance cannot stop itself through the API; it will power off instead when idle")
            }
        }
    }
    let _ = std::fs::create_dir_all(&s.log_dir);
    let activity = Arc::new(Activity::new());
    let _watcher = match watch(&s.log_dir, activity.clone()) {
        Ok((w, polling)) => {
            info!(dir = %s.log_dir.display(), polling, "watching slave logs");
            Some(w)
        }
        Err(e) => {
            error!(error = %e, "cannot watch the slave logs: relying on the maximum lifetime only");
            None
        }
    };
    let start = Instant::now();
    let mut learned = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !s.facts.from_boot && learned.elapsed() >= RELEARN {
            learned = Instant::now();
            if crate::vm::read_env_file(&s.root).is_some() {
                s.facts = crate::vm::learn(&s.root, &imds).await;
                info!(facts = ?s.facts, "the boot step's settings appeared: using them");
            }
        }
        let now = Instant::now();
        if decide(&s, now - start, now - activity.last()) == Decision::Wait {
            continue;
        }
        info!(
            idle_s = (now - activity.last()).as_secs(),
            "slaves idle: asking the master to drain this VM"
        );
        match ask_master(&s.facts, false).await {
            Ok(true) => {}
            Ok(false) => {
                info!("the master says a run still uses this VM: staying up");
                let _ = ask_master(&s.facts, true).await;
                activity.touch();
                continue;
            }
            Err(e) => warn!(error = %e, "drain failed; deciding from the logs alone"),
        }
        let mark = activity.last();
        tokio::select! {
            _ = tokio::time::sleep(s.recheck()) => {}
            _ = shutdown.cancelled() => return,
        }
        if activity.last() != mark {
            info!("activity during the re-check: staying up");
            let _ = ask_master(&s.facts, true).await;
            continue;
        }
        stop_self(&s, cloud.as_ref(), "idle").await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(idle: u64, grace: Option<u64>) -> IdleSettings {
        IdleSettings {
            log_dir: PathBuf::from("/tmp"),
            grace: grace.map(Duration::from_secs),
            root: PathBuf::from("/tmp"),
            facts: Facts {
                instance_id: Some("i-1".into()),
                region: None,
                idle: Duration::from_secs(idle),
                expires_at: None,
                master: None,
                from_boot: true,
                problems: vec![],
            },
        }
    }

    #[test]
    fn decisions() {
        let s = |sec| Duration::from_secs(sec);
        let rows = [
            (
                "fresh start",
                settings(60, Some(30)),
                s(1),
                s(1),
                Decision::Wait,
            ),
            (
                "idle but in the grace",
                settings(60, Some(120)),
                s(90),
                s(90),
                Decision::Wait,
            ),
            (
                "busy",
                settings(60, Some(30)),
                s(600),
                s(10),
                Decision::Wait,
            ),
            (
                "idle",
                settings(60, Some(30)),
                s(600),
                s(60),
                Decision::Idle,
            ),
            (
                "default grace is the idle time",
                settings(20, None),
                s(19),
                s(19),
                Decision::Wait,
            ),
            (
                "past the default grace",
                settings(20, None),
                s(20),
                s(20),
                Decision::Idle,
            ),
        ];
        for (what, st, start, act, want) in rows {
            assert_eq!(decide(&st, start, act), want, "{what}");
        }
        assert_eq!(settings(600, None).grace(), s(60));
        assert_eq!(settings(4, None).recheck(), s(2));
        assert_eq!(settings(600, None).recheck(), s(15));
    }
}
