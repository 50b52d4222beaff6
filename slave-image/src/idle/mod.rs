//! `lobster-slave idle-watch`: one per VM (`lobster-idle.service`), not per slave: it decides
//! once for the whole VM whether its slaves are idle, and stops the VM through the cloud API.
//!
//! Activity is what the slaves write to their logs under load: a line of the
//! `lobster::activity` target at least once per statistics interval while they carry a share.
//! Heartbeats and reconnect chatter are not activity (or a VM whose master vanished would never
//! stop). The log *directory* is watched with `notify` (inotify, so a rotated file is followed),
//! falling back to polling where inotify is unavailable.
//!
//! After `idle_minutes` without activity (and past the boot grace, on the monotonic clock):
//! ask the master to drain this VM, re-check for a short window, tag the instance
//! `lobster:stop-reason=idle`, and call StopInstances on its own id. The maximum lifetime
//! (`lobster:expires-at`) stops the VM whatever its logs say. If the API keeps failing, the VM
//! powers itself off (EC2 stops an instance that shuts down; the local cloud emulates that).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lobster_fleet::proto::{DrainRequest, control_client::ControlClient};
use lobster_fleet::tags;
use lobster_provision::cloud::{Cloud, Tags};
use notify::{RecursiveMode, Watcher};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::agent::ACTIVITY;

mod activity;

pub use activity::{Activity, watch};

/// What the watcher needs, from the env file the boot step wrote.
#[derive(Clone)]
pub struct IdleSettings {
    pub log_dir: PathBuf,
    pub idle: Duration,
    /// No stop within this long after boot.
    pub grace: Duration,
    /// The short second look after the drain.
    pub recheck: Duration,
    pub expires_at: Option<SystemTime>,
    pub instance_id: String,
    pub region: String,
    pub master: String,
    /// Secret; never logged.
    pub join_token: String,
    /// The master's certificate fingerprint (empty for plaintext).
    pub fingerprint: String,
    /// Under the local cloud's emulated init (poweroff is a request file).
    pub emulated: bool,
    pub root: PathBuf,
}

impl std::fmt::Debug for IdleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleSettings")
            .field("log_dir", &self.log_dir)
            .field("idle", &self.idle)
            .field("grace", &self.grace)
            .field("recheck", &self.recheck)
            .field("expires_at", &self.expires_at)
            .field("instance_id", &self.instance_id)
            .field("master", &self.master)
            .finish()
    }
}

impl IdleSettings {
    /// Reads `LOBSTER_*` from the environment (lobster-idle.service's EnvironmentFile).
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let need = |k: &str| {
            var(k).ok_or_else(|| {
                format!("{k} is not set (is /run/lobster/slave.env written by lobster-boot?)")
            })
        };
        let idle_minutes: f64 = need("LOBSTER_IDLE_MINUTES")?
            .parse()
            .map_err(|_| "LOBSTER_IDLE_MINUTES is not a number".to_string())?;
        if !(idle_minutes.is_finite() && idle_minutes > 0.0) {
            return Err("LOBSTER_IDLE_MINUTES must be above 0".into());
        }
        let idle = Duration::from_secs_f64(idle_minutes * 60.0);
        let grace = match var("LOBSTER_BOOT_GRACE") {
            Some(g) => lobster_fleet::scenario::value::parse_duration(&g)?,
            None => idle.min(Duration::from_secs(60)),
        };
        let expires_at = match var("LOBSTER_EXPIRES_AT") {
            None => None,
            Some(t) => Some(
                humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
                    .map_err(|e| format!("LOBSTER_EXPIRES_AT `{t}`: {e}"))?,
            ),
        };
        let root = crate::boot::root();
        Ok(IdleSettings {
            log_dir: var("LOBSTER_LOG_DIR")
                .map_or_else(|| root.join("var/log/lobster"), PathBuf::from),
            idle,
            grace,
            recheck: (idle / 4).clamp(Duration::from_secs(2), Duration::from_secs(15)),
            expires_at,
            instance_id: need("LOBSTER_INSTANCE_ID")?,
            region: var("LOBSTER_REGION").unwrap_or_else(|| "us-east-1".into()),
            master: need("LOBSTER_MASTER")?,
            join_token: need("LOBSTER_JOIN_TOKEN")?,
            fingerprint: var("LOBSTER_MASTER_FINGERPRINT").unwrap_or_default(),
            emulated: var("LOBSTER_INIT").as_deref() == Some("emulated"),
            root,
        })
    }
}

/// What to do now, from the clocks alone (pure, tested as a table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait,
    /// Past `lobster:expires-at`.
    Expired,
    /// No activity for the idle time (and past the grace).
    Idle,
}

/// `since_boot` and `since_activity` come from the monotonic clock; `wall` from the real one.
pub fn decide(
    s: &IdleSettings,
    since_boot: Duration,
    since_activity: Duration,
    wall: SystemTime,
) -> Decision {
    if s.expires_at.is_some_and(|e| wall >= e) {
        return Decision::Expired;
    }
    if since_boot >= s.grace && since_activity >= s.idle {
        return Decision::Idle;
    }
    Decision::Wait
}

/// Asks the master to drain (or undrain) this VM; `Ok(idle)` as the master sees it.
async fn drain(s: &IdleSettings, undo: bool) -> Result<bool, String> {
    let channel = crate::tls::connect(&s.master, &s.fingerprint)
        .await
        .map_err(|e| format!("cannot reach the master: {}", crate::tls::chain(&e)))?;
    let reply = ControlClient::new(channel)
        .drain(DrainRequest {
            join_token: s.join_token.clone(),
            instance_id: s.instance_id.clone(),
            reason: if undo {
                "busy again".into()
            } else {
                "idle".into()
            },
            undo,
        })
        .await
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
        .into_inner();
    Ok(reply.idle)
}

/// Powers the VM off: `systemctl poweroff`, or the emulated init's request file.
fn poweroff(s: &IdleSettings) {
    if s.emulated {
        let p = s.root.join("run/lobster/poweroff");
        match std::fs::write(&p, "idle watcher\n") {
            Ok(()) => error!(file = %p.display(), "falling back to power off (emulated init)"),
            Err(e) => error!(error = %e, "cannot request power off"),
        }
    } else {
        error!("falling back to `systemctl poweroff` (the instance's shutdown behaviour stops it)");
        let _ = std::process::Command::new("systemctl")
            .arg("poweroff")
            .status();
    }
}

/// Tags the instance and stops it through the API; on repeated failure, powers off.
async fn stop_self(s: &IdleSettings, cloud: &dyn Cloud, reason: &str) {
    let ids = vec![s.instance_id.clone()];
    let tag = Tags::from([(tags::STOP_REASON.to_string(), reason.to_string())]);
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=4 {
        if let Err(e) = cloud.tag(&ids, &tag).await {
            warn!(attempt, error = %e, "cannot tag this instance with its stop reason");
        }
        match cloud.stop(&ids, false).await {
            Ok(_) => {
                info!(instance = %s.instance_id, reason, "StopInstances accepted: this VM is stopping");
                return;
            }
            Err(e) => {
                error!(attempt, error = %e, instance = %s.instance_id, "StopInstances on this instance failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    poweroff(s);
}

/// The watcher's life: a permission check, then watch and decide until stopped.
pub async fn run(s: IdleSettings, cloud: Arc<dyn Cloud>, shutdown: CancellationToken) {
    info!(settings = ?s, "idle watcher started");
    // Find a missing permission at boot, not at 3 a.m.
    match cloud.stop(std::slice::from_ref(&s.instance_id), true).await {
        Ok(_) => info!(
            "permission check: this instance may stop itself (DryRun StopInstances succeeded)"
        ),
        Err(e) => {
            error!(error = %e, "permission check failed: this instance cannot stop itself through the API; it will power off instead when idle")
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
    let boot = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        match decide(&s, now - boot, now - activity.last(), SystemTime::now()) {
            Decision::Wait => continue,
            Decision::Expired => {
                warn!(
                    "maximum lifetime reached (lobster:expires-at): stopping this VM whatever it is doing"
                );
                stop_self(&s, cloud.as_ref(), "expired").await;
                return;
            }
            Decision::Idle => {
                info!(
                    idle_s = (now - activity.last()).as_secs(),
                    "slaves idle: asking the master to drain this VM"
                );
                match drain(&s, false).await {
                    Ok(true) => {}
                    Ok(false) => {
                        info!("the master says a run still uses this VM: staying up");
                        let _ = drain(&s, true).await;
                        activity.touch();
                        continue;
                    }
                    Err(e) => warn!(error = %e, "drain failed; deciding from the logs alone"),
                }
                let mark = activity.last();
                tokio::select! {
                    _ = tokio::time::sleep(s.recheck) => {}
                    _ = shutdown.cancelled() => return,
                }
                if activity.last() != mark {
                    info!("activity during the re-check: staying up");
                    let _ = drain(&s, true).await;
                    continue;
                }
                stop_self(&s, cloud.as_ref(), "idle").await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(expires_in: Option<i64>) -> IdleSettings {
        let now = SystemTime::now();
        IdleSettings {
            log_dir: PathBuf::from("/tmp"),
            idle: Duration::from_secs(60),
            grace: Duration::from_secs(30),
            recheck: Duration::from_secs(5),
            expires_at: expires_in.map(|s| {
                if s >= 0 {
                    now + Duration::from_secs(s as u64)
                } else {
                    now - Duration::from_secs((-s) as u64)
                }
            }),
            instance_id: "i-1".into(),
            region: "local".into(),
            master: "http://127.0.0.1:1".into(),
            join_token: "secret-token".into(),
            fingerprint: String::new(),
            emulated: true,
            root: PathBuf::from("/tmp"),
        }
    }

    #[test]
    fn decisions() {
        let s = |sec| Duration::from_secs(sec);
        let now = SystemTime::now();
        let rows = [
            ("fresh boot", settings(None), s(1), s(1), Decision::Wait),
            (
                "idle but in the boot grace",
                IdleSettings {
                    grace: s(120),
                    ..settings(None)
                },
                s(90),
                s(90),
                Decision::Wait,
            ),
            ("busy", settings(None), s(600), s(10), Decision::Wait),
            ("idle", settings(None), s(600), s(60), Decision::Idle),
            (
                "expired while busy",
                settings(Some(-1)),
                s(600),
                s(0),
                Decision::Expired,
            ),
            (
                "not yet expired",
                settings(Some(3600)),
                s(600),
                s(0),
                Decision::Wait,
            ),
        ];
        for (what, st, boot, act, want) in rows {
            assert_eq!(decide(&st, boot, act, now), want, "{what}");
        }
        assert!(!format!("{:?}", settings(None)).contains("secret-token"));
    }
}
