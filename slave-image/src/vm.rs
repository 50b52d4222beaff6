//! What this VM knows about itself and its fleet, from the best source that answers.
//!
//! The idle watcher and the lifetime backstop must work when the boot step failed (a VM
//! whose boot failed used to stay up past its `lobster:expires-at` forever), so they do not
//! depend on `lobster-boot.service`: they read
//!
//! 1. the env file the boot step wrote (`/run/lobster/slave.env`), with any `LOBSTER_*`
//!    variable of the process environment on top;
//! 2. else the instance metadata (IMDSv2): identity, the `lobster:expires-at` instance tag,
//!    and the `LOBSTER_*` lines of the user-data (even when they are not a complete set);
//! 3. else defaults: the fleet's default idle time, and no known expiry (the lifetime
//!    backstop then allows [`FALLBACK_LIFETIME`] from its first start in this boot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lobster_fleet::{tags, userdata};
use lobster_provision::imds::Imds;

/// The idle time when nothing says otherwise (the fleet's default `idle_minutes`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10 * 60);

/// How long a VM that knows no expiry at all may run in one boot.
pub const FALLBACK_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The master, as far as this VM knows (absent when the boot step never wrote its file).
#[derive(Clone)]
pub struct MasterLink {
    /// gRPC URL.
    pub url: String,
    /// Secret; never logged.
    pub join_token: String,
    /// The master's certificate fingerprint (empty for plaintext).
    pub fingerprint: String,
}

/// What this VM knows.
#[derive(Clone)]
pub struct Facts {
    pub instance_id: Option<String>,
    pub region: Option<String>,
    /// Time without slave activity before the VM stops itself.
    pub idle: Duration,
    /// `lobster:expires-at`: after it the VM stops whatever it is doing.
    pub expires_at: Option<SystemTime>,
    pub master: Option<MasterLink>,
    /// Whether these came from the boot step's env file (else metadata or defaults).
    pub from_boot: bool,
    /// Settings that were present but unusable, said once by the caller.
    pub problems: Vec<String>,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("instance_id", &self.instance_id)
            .field("region", &self.region)
            .field("idle", &self.idle)
            .field(
                "expires_at",
                &self.expires_at.map(humantime::format_rfc3339),
            )
            .field("master", &self.master.as_ref().map(|m| m.url.as_str()))
            .field("from_boot", &self.from_boot)
            .finish()
    }
}

/// The boot step's env file under `root`.
pub fn env_file(root: &Path) -> PathBuf {
    root.join("run/lobster/slave.env")
}

/// The `LOBSTER_*` settings of the env file, with the process environment's on top; `None`
/// when the file is not there.
pub fn read_env_file(root: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(env_file(root)).ok()?;
    let mut map = userdata::env_lines(&text);
    for (k, v) in std::env::vars() {
        if k.starts_with("LOBSTER_") && !v.is_empty() {
            map.insert(k, v);
        }
    }
    Some(map)
}

/// Parses an RFC 3339 time (`2026-11-22T10:00:00Z`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text.trim().trim_end_matches('Z'))
        .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
}

/// The facts in `map` (the env file or the user-data's lines), pure.
pub fn from_settings(map: &BTreeMap<String, String>, from_boot: bool) -> Facts {
    let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut problems = Vec::new();
    let idle = match get("LOBSTER_IDLE_MINUTES") {
        None => DEFAULT_IDLE,
        Some(v) => match v.parse::<f64>() {
            Ok(m) if m.is_finite() && m > 0.0 && m <= 7.0 * 24.0 * 60.0 => {
                Duration::from_secs_f64(m * 60.0)
            }
            _ => {
                problems.push(format!(
                    "LOBSTER_IDLE_MINUTES `{v}` is not a number of minutes from above 0 to 10080: using {} minutes",
                    DEFAULT_IDLE.as_secs() / 60
                ));
                DEFAULT_IDLE
            }
        },
    };
    let expires_at = get("LOBSTER_EXPIRES_AT").and_then(|t| {
        parse_time(t)
            .map_err(|e| problems.push(format!("LOBSTER_EXPIRES_AT {e}")))
            .ok()
    });
    let master = match (get("LOBSTER_MASTER"), get("LOBSTER_JOIN_TOKEN")) {
        (Some(url), Some(token)) => Some(MasterLink {
            url: url.to_string(),
            join_token: token.to_string(),
            fingerprint: get("LOBSTER_MASTER_FINGERPRINT")
                .unwrap_or_default()
                .to_string(),
        }),
        _ => None,
    };
    Facts {
        instance_id: get("LOBSTER_INSTANCE_ID").map(str::to_string),
        region: get("LOBSTER_REGION").map(str::to_string),
        idle,
        expires_at,
        master,
        from_boot,
        problems,
    }
}

/// Learns the facts from the env file, else from the instance metadata (one attempt per
/// item, each bounded by the IMDS client's timeouts), else defaults.
pub async fn learn(root: &Path, imds: &Imds) -> Facts {
    if let Some(map) = read_env_file(root) {
        return from_settings(&map, true);
    }
    let user_data = imds.user_data().await.ok().flatten().unwrap_or_default();
    let mut facts = from_settings(&userdata::env_lines(&user_data), false);
    if let Ok(id) = imds.identity().await {
        facts.instance_id = Some(id.instance_id);
        facts.region = Some(id.region);
    }
    // The tag is what the fleet keeps current (refreshed when a stopped instance is started).
    let tag = imds
        .get(&format!(
            "/latest/meta-data/tags/instance/{}",
            tags::EXPIRES_AT
        ))
        .await
        .ok()
        .flatten();
    if let Some(t) = tag {
        match parse_time(&t) {
            Ok(at) => facts.expires_at = Some(at),
            Err(e) => facts
                .problems
                .push(format!("tag {}: {e}", tags::EXPIRES_AT)),
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
        rows.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_table() {
        let f = from_settings(
            &map(&[
                ("LOBSTER_IDLE_MINUTES", "0.5"),
                ("LOBSTER_EXPIRES_AT", "2026-11-22T10:00:00Z"),
                ("LOBSTER_INSTANCE_ID", "i-1"),
                ("LOBSTER_MASTER", "https://10.0.0.5:7401"),
                ("LOBSTER_JOIN_TOKEN", "secret-token"),
            ]),
            true,
        );
        assert_eq!(f.idle, Duration::from_secs(30));
        assert_eq!(
            f.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_341_600))
        );
        assert_eq!(f.instance_id.as_deref(), Some("i-1"));
        assert!(f.master.is_some() && f.problems.is_empty());
        assert!(!format!("{f:?}").contains("secret-token"));

        // Broken settings fall back, and say so; a master without a token is no master.
        let f = from_settings(
            &map(&[
                ("LOBSTER_IDLE_MINUTES", "soon"),
                ("LOBSTER_EXPIRES_AT", "tomorrow"),
                ("LOBSTER_MASTER", "https://10.0.0.5:7401"),
            ]),
            false,
        );
        assert_eq!(f.idle, DEFAULT_IDLE);
        assert_eq!(f.expires_at, None);
        assert!(f.master.is_none());
        assert_eq!(f.problems.len(), 2, "{:?}", f.problems);
        for bad in ["0", "-1", "NaN", "inf", "10081"] {
            let f = from_settings(&map(&[("LOBSTER_IDLE_MINUTES", bad)]), false);
            assert_eq!(f.idle, DEFAULT_IDLE, "{bad}");
            assert_eq!(f.problems.len(), 1, "{bad}");
        }
    }

    /// With no env file and no metadata service, the defaults hold.
    #[tokio::test]
    async fn nothing_answers() {
        let dir = tempfile::tempdir().unwrap();
        let f = learn(dir.path(), &Imds::new("http://127.0.0.1:9")).await;
        assert!(!f.from_boot);
        assert_eq!((f.idle, f.expires_at), (DEFAULT_IDLE, None));
        assert!(f.instance_id.is_none() && f.master.is_none());
    }
}
