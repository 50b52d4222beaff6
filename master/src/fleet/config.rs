//! Fleet settings: `$LOBSTER_HOME/config.yaml` (or `--config`), overridden by flags, resolved
//! into [`FleetSettings`] before any I/O. Unknown keys are errors with file, line and column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Which cloud a fleet lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    /// The built-in local cloud (the default).
    Local,
    /// Amazon EC2 (or anything speaking its API, such as moto).
    Aws,
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub cloud: Option<CloudKind>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub fleet: Option<String>,
    pub instance_type: Option<String>,
    /// Tried in order after capacity errors.
    #[serde(default)]
    pub fallback_instance_types: Vec<String>,
    /// Tried in order after capacity errors.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
    /// `KEY=VALUE` of the template image tag.
    pub template_tag: Option<String>,
    pub idle_minutes: Option<f64>,
    pub slaves_per_core: Option<u32>,
    /// e.g. `8h`.
    pub max_lifetime: Option<String>,
    /// The gRPC URL slaves dial (required on AWS: a private or public address of the master).
    pub master_url: Option<String>,
    pub batch_size: Option<u32>,
    /// How long `fleet up` waits for slaves to register, e.g. `5m`.
    pub register_timeout: Option<String>,
}

/// Everything a fleet command needs.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetSettings {
    pub cloud: CloudKind,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub fleet: String,
    pub instance_types: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
    pub template_tag: (String, String),
    pub idle_minutes: f64,
    pub slaves_per_core: u32,
    pub max_lifetime: Duration,
    pub master_url: Option<String>,
    pub batch_size: u32,
    pub register_timeout: Duration,
}

/// Flags that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub cloud: Option<CloudKind>,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub fleet: Option<String>,
    pub instance_type: Option<String>,
    pub template_tag: Option<String>,
    pub idle_minutes: Option<f64>,
    pub slaves_per_core: Option<u32>,
    pub max_lifetime: Option<Duration>,
}

/// Reads the config file (absent is fine unless named explicitly).
pub fn read(path: &Path, explicit: bool) -> Result<ConfigFile, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(ConfigFile::default());
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map_or(String::new(), |l| format!(":{}:{}", l.line(), l.column()));
        let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        let msg = e.render_with_options(opts);
        let msg = msg
            .rfind(" at line ")
            .map_or(msg.clone(), |i| msg[..i].to_string());
        format!("{}{at}: {}", path.display(), msg.trim())
    })
}

/// `KEY=VALUE`.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "tag `{s}` must be KEY=VALUE, e.g. lobster:role=slave-template"
        )),
    }
}

fn fleet_name_ok(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= 64
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Merges file and flags, checking every value.
pub fn resolve(file: ConfigFile, o: Overrides) -> Result<FleetSettings, String> {
    let cloud = o.cloud.or(file.cloud).unwrap_or(CloudKind::Local);
    let fleet = o.fleet.or(file.fleet).unwrap_or_else(|| "default".into());
    if !fleet_name_ok(&fleet) {
        return Err(format!(
            "fleet name `{fleet}` must be 1-64 letters, digits, - or _"
        ));
    }
    let default_type = match cloud {
        CloudKind::Local => lobster_provision::local::types::DEFAULT_TYPE,
        CloudKind::Aws => "c5.large",
    };
    let mut instance_types = vec![
        o.instance_type
            .or(file.instance_type)
            .unwrap_or_else(|| default_type.into()),
    ];
    instance_types.extend(file.fallback_instance_types);
    for t in &instance_types {
        if t.is_empty()
            || t.len() > 64
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!("invalid instance type `{t}`"));
        }
        if cloud == CloudKind::Local && lobster_provision::local::types::vcpus(t).is_none() {
            let known: Vec<_> = lobster_provision::local::types::names().collect();
            return Err(format!(
                "the local cloud has no instance type `{t}` (known: {})",
                known.join(", ")
            ));
        }
    }
    let template_tag = parse_tag(&o.template_tag.or(file.template_tag).unwrap_or_else(|| {
        format!(
            "{}={}",
            lobster_fleet::tags::ROLE,
            lobster_fleet::tags::ROLE_TEMPLATE
        )
    }))?;
    let idle_minutes = o.idle_minutes.or(file.idle_minutes).unwrap_or(10.0);
    if !idle_minutes.is_finite() || idle_minutes <= 0.0 || idle_minutes > 7.0 * 24.0 * 60.0 {
        return Err(format!(
            "idle minutes must be above 0 and at most a week, got {idle_minutes}"
        ));
    }
    let slaves_per_core = o.slaves_per_core.or(file.slaves_per_core).unwrap_or(1);
    if !(1..=64).contains(&slaves_per_core) {
        return Err(format!(
            "slaves per core must be between 1 and 64, got {slaves_per_core}"
        ));
    }
    let max_lifetime = match (o.max_lifetime, file.max_lifetime) {
        (Some(d), _) => d,
        (None, Some(s)) => lobster_fleet::scenario::value::parse_duration(&s)
            .map_err(|e| format!("max_lifetime: {e}"))?,
        (None, None) => Duration::from_secs(8 * 3600),
    };
    if max_lifetime < Duration::from_secs(10) || max_lifetime > Duration::from_secs(30 * 24 * 3600)
    {
        return Err("max lifetime must be between 10s and 30 days".into());
    }
    let register_timeout = match file.register_timeout {
        Some(s) => lobster_fleet::scenario::value::parse_duration(&s)
            .map_err(|e| format!("register_timeout: {e}"))?,
        None => Duration::from_secs(300),
    };
    let batch_size = file.batch_size.unwrap_or(50);
    if !(1..=1000).contains(&batch_size) {
        return Err(format!(
            "batch_size must be between 1 and 1000, got {batch_size}"
        ));
    }
    let endpoint_url = o.endpoint_url.or(file.endpoint_url);
    if let Some(u) = &endpoint_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(format!(
            "endpoint URL `{u}` must start with http:// or https://"
        ));
    }
    if let Some(m) = &file.master_url
        && !(m.starts_with("http://") || m.starts_with("https://"))
    {
        return Err(format!(
            "master_url `{m}` must start with http:// or https://"
        ));
    }
    Ok(FleetSettings {
        cloud,
        region: o.region.or(file.region),
        endpoint_url,
        profile: file.profile,
        fleet,
        instance_types,
        subnet_ids: file.subnet_ids,
        security_group_ids: file.security_group_ids,
        iam_instance_profile: file.iam_instance_profile,
        key_name: file.key_name,
        template_tag,
        idle_minutes,
        slaves_per_core,
        max_lifetime,
        master_url: file.master_url,
        batch_size,
        register_timeout,
    })
}

/// The config file of a home (`config.yaml`), unless `--config` names another.
pub fn path(home: &crate::home::Home, flag: Option<PathBuf>) -> (PathBuf, bool) {
    match flag {
        Some(p) => (p, true),
        None => (home.config_file(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let s = resolve(ConfigFile::default(), Overrides::default()).unwrap();
        assert_eq!(s.cloud, CloudKind::Local);
        assert_eq!(s.fleet, "default");
        assert_eq!(s.instance_types, vec!["local.small"]);
        assert_eq!(
            s.template_tag,
            ("lobster:role".into(), "slave-template".into())
        );
        let o = Overrides {
            instance_type: Some("local.medium".into()),
            slaves_per_core: Some(2),
            idle_minutes: Some(0.25),
            ..Default::default()
        };
        let s = resolve(ConfigFile::default(), o).unwrap();
        assert_eq!(
            (
                s.instance_types[0].as_str(),
                s.slaves_per_core,
                s.idle_minutes
            ),
            ("local.medium", 2, 0.25)
        );
    }

    #[test]
    fn bad_settings() {
        let bad = |o: Overrides| resolve(ConfigFile::default(), o).unwrap_err();
        assert!(
            bad(Overrides {
                fleet: Some("a b".into()),
                ..Default::default()
            })
            .contains("fleet")
        );
        assert!(
            bad(Overrides {
                instance_type: Some("huge.9000".into()),
                ..Default::default()
            })
            .contains("huge.9000")
        );
        assert!(
            bad(Overrides {
                slaves_per_core: Some(0),
                ..Default::default()
            })
            .contains("slaves per core")
        );
        assert!(
            bad(Overrides {
                idle_minutes: Some(-1.0),
                ..Default::default()
            })
            .contains("idle")
        );
        assert!(
            bad(Overrides {
                template_tag: Some("novalue".into()),
                ..Default::default()
            })
            .contains("KEY=VALUE")
        );
        assert!(
            bad(Overrides {
                endpoint_url: Some("localhost:1".into()),
                ..Default::default()
            })
            .contains("http")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, "cloud: local\ncolour: red\n").unwrap();
        let e = read(&p, true).unwrap_err();
        assert!(e.contains("config.yaml:2:1") && e.contains("colour"), "{e}");
        std::fs::write(&p, "cloud: gcp\n").unwrap();
        assert!(read(&p, true).is_err());
        assert!(read(&dir.path().join("none.yaml"), true).is_err());
        assert!(read(&dir.path().join("none.yaml"), false).is_ok());
    }
}
