//! The slave settings that travel in an instance's user-data: rendered by the master from the
//! image's cloud-init template, read back by the slave's boot step from IMDS on every boot.
//!
//! Only `LOBSTER_*=value` lines matter to the reader, wherever they sit in the document, so
//! the same parser reads the cloud-init template's `write_files` content and a plain env file.

use std::collections::BTreeMap;

/// Every setting a slave VM needs.
#[derive(Clone, PartialEq)]
pub struct SlaveSettings {
    pub fleet: String,
    /// gRPC URL of the master.
    pub master: String,
    /// The fleet's join token (secret).
    pub join_token: String,
    /// SHA-256 fingerprint of the master's certificate (`sha256:…`), empty for plaintext.
    pub fingerprint: String,
    /// Minutes without slave activity before the VM stops itself (fractions allowed).
    pub idle_minutes: f64,
    pub slaves_per_core: u32,
    /// Longest life of one boot, e.g. `8h`.
    pub max_lifetime: String,
    /// RFC 3339 time after which the VM stops itself whatever it is doing.
    pub expires_at: String,
}

impl std::fmt::Debug for SlaveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlaveSettings")
            .field("fleet", &self.fleet)
            .field("master", &self.master)
            .field("join_token", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .field("idle_minutes", &self.idle_minutes)
            .field("slaves_per_core", &self.slaves_per_core)
            .field("max_lifetime", &self.max_lifetime)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The user-data could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserDataError {
    #[error("user-data has no {0} line")]
    Missing(&'static str),
    #[error("user-data {0} has an invalid value `{1}`")]
    Invalid(&'static str, String),
}

/// Fills the template's `{{name}}` placeholders.
pub fn render(template: &str, s: &SlaveSettings) -> String {
    template
        .replace("{{fleet}}", &s.fleet)
        .replace("{{master}}", &s.master)
        .replace("{{join_token}}", &s.join_token)
        .replace("{{fingerprint}}", &s.fingerprint)
        .replace("{{idle_minutes}}", &s.idle_minutes.to_string())
        .replace("{{slaves_per_core}}", &s.slaves_per_core.to_string())
        .replace("{{max_lifetime}}", &s.max_lifetime)
        .replace("{{expires_at}}", &s.expires_at)
}

/// Every `LOBSTER_*=value` line of a document.
pub fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            k.starts_with("LOBSTER_")
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Reads the settings back from user-data.
pub fn parse(text: &str) -> Result<SlaveSettings, UserDataError> {
    let env = env_lines(text);
    let get = |k: &'static str| env.get(k).cloned().filter(|v| !v.is_empty());
    let master = get("LOBSTER_MASTER").ok_or(UserDataError::Missing("LOBSTER_MASTER"))?;
    if !(master.starts_with("http://") || master.starts_with("https://")) {
        return Err(UserDataError::Invalid("LOBSTER_MASTER", master));
    }
    let join_token =
        get("LOBSTER_JOIN_TOKEN").ok_or(UserDataError::Missing("LOBSTER_JOIN_TOKEN"))?;
    let idle_minutes = match get("LOBSTER_IDLE_MINUTES") {
        None => 10.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|m| m.is_finite() && *m > 0.0 && *m <= 7.0 * 24.0 * 60.0)
            .ok_or(UserDataError::Invalid("LOBSTER_IDLE_MINUTES", v))?,
    };
    let slaves_per_core = match get("LOBSTER_SLAVES_PER_CORE") {
        None => 1,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or(UserDataError::Invalid("LOBSTER_SLAVES_PER_CORE", v))?,
    };
    Ok(SlaveSettings {
        fleet: get("LOBSTER_FLEET").unwrap_or_else(|| "default".into()),
        master,
        join_token,
        fingerprint: get("LOBSTER_MASTER_FINGERPRINT").unwrap_or_default(),
        idle_minutes,
        slaves_per_core,
        max_lifetime: get("LOBSTER_MAX_LIFETIME").unwrap_or_else(|| "8h".into()),
        expires_at: get("LOBSTER_EXPIRES_AT").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "#cloud-config\nwrite_files:\n  - path: /etc/lobster/fleet.env\n    content: |\n      LOBSTER_FLEET={{fleet}}\n      LOBSTER_MASTER={{master}}\n      LOBSTER_JOIN_TOKEN={{join_token}}\n      LOBSTER_MASTER_FINGERPRINT={{fingerprint}}\n      LOBSTER_IDLE_MINUTES={{idle_minutes}}\n      LOBSTER_SLAVES_PER_CORE={{slaves_per_core}}\n      LOBSTER_MAX_LIFETIME={{max_lifetime}}\n      LOBSTER_EXPIRES_AT={{expires_at}}\n";

    fn settings() -> SlaveSettings {
        SlaveSettings {
            fleet: "f".into(),
            master: "http://127.0.0.1:7401".into(),
            join_token: "0123456789abcdef0123456789abcdef".into(),
            fingerprint: String::new(),
            idle_minutes: 0.25,
            slaves_per_core: 2,
            max_lifetime: "2h".into(),
            expires_at: "2026-11-22T10:00:00Z".into(),
        }
    }

    #[test]
    fn round_trip_through_the_template() {
        let s = settings();
        let text = render(TEMPLATE, &s);
        assert_eq!(parse(&text).unwrap(), s);
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "Debug redacts the token"
        );
    }

    #[test]
    fn bad_user_data() {
        assert_eq!(
            parse("").unwrap_err(),
            UserDataError::Missing("LOBSTER_MASTER")
        );
        assert_eq!(
            parse("LOBSTER_MASTER=http://x\n").unwrap_err(),
            UserDataError::Missing("LOBSTER_JOIN_TOKEN")
        );
        assert!(matches!(
            parse("LOBSTER_MASTER=ftp://x\n"),
            Err(UserDataError::Invalid(..))
        ));
        let base = "LOBSTER_MASTER=http://x\nLOBSTER_JOIN_TOKEN=t\n";
        assert!(parse(&format!("{base}LOBSTER_SLAVES_PER_CORE=0\n")).is_err());
        assert!(parse(&format!("{base}LOBSTER_IDLE_MINUTES=-1\n")).is_err());
        assert!(parse(&format!("{base}LOBSTER_IDLE_MINUTES=soon\n")).is_err());
        assert_eq!(parse(base).unwrap().slaves_per_core, 1);
    }
}
