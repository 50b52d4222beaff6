//! The subset of systemd unit files the local cloud's runtime honours, so a local instance
//! boots the very units a real VM does: `Type`, `ExecStart`, `Environment`,
//! `EnvironmentFile`, `Restart`, `RestartSec`, `StartLimitIntervalSec`, `StartLimitBurst`,
//! `StandardOutput`/`StandardError` (`append:`/`file:`/`truncate:`, `null`, and `journal`, the
//! default, kept per unit in `/var/log/journal/<unit>.log` of the instance root: the emulated
//! journal), `TimeoutStopSec`, `WantedBy`, and the specifiers `%i`, `%I`, `%n`, `%%`.

use std::collections::BTreeMap;
use std::time::Duration;

/// A parsed unit file (template or plain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// File name, e.g. `lobster-slave@.service`.
    pub name: String,
    /// `[Section] key` → values in order (a key may repeat).
    entries: BTreeMap<(String, String), Vec<String>>,
}

/// How a unit restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

/// Where a stream of a unit goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Discarded (`null`).
    Null,
    /// Appended to this file (unit path; the emulated journal is a file too).
    File(String),
}

/// A unit instance ready to run: the command line and its settings, specifiers resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Instance name, e.g. `lobster-slave@2.service`.
    pub name: String,
    pub oneshot: bool,
    pub exec: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// Paths, with `optional` for a leading `-`.
    pub environment_files: Vec<(String, bool)>,
    pub restart: Restart,
    pub restart_sec: Duration,
    pub start_limit_interval: Duration,
    pub start_limit_burst: u32,
    /// Where standard output goes.
    pub stdout: Output,
    /// Where standard error goes (`None`: where standard output goes).
    pub stderr: Option<Output>,
    pub timeout_stop: Duration,
}

impl Unit {
    pub fn parse(name: &str, text: &str) -> Result<Unit, String> {
        let mut entries: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut section = String::new();
        let mut pending = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty()
                && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
            {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            let full = format!("{pending}{line}");
            pending.clear();
            if let Some(s) = full.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            let (k, v) = full
                .split_once('=')
                .ok_or_else(|| format!("{name}:{}: expected `Key=Value`", n + 1))?;
            if section.is_empty() {
                return Err(format!("{name}:{}: setting outside a section", n + 1));
            }
            entries
                .entry((section.clone(), k.trim().to_string()))
                .or_default()
                .push(v.trim().to_string());
        }
        Ok(Unit {
            name: name.to_string(),
            entries,
        })
    }

    fn all(&self, section: &str, key: &str) -> &[String] {
        self.entries
            .get(&(section.to_string(), key.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    fn last(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().map(String::as_str)
    }

    pub fn is_template(&self) -> bool {
        self.name.contains("@.")
    }

    /// Targets that want this unit (`[Install] WantedBy`).
    pub fn wanted_by(&self) -> Vec<String> {
        self.all("Install", "WantedBy")
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect()
    }

    /// The instance name for `instance` (`foo@.service` + `2` → `foo@2.service`).
    pub fn instance_name(&self, instance: &str) -> String {
        match self.name.split_once("@.") {
            Some((base, ext)) => format!("{base}@{instance}.{ext}"),
            None => self.name.clone(),
        }
    }

    /// The service for one instance (`instance` empty for a plain unit).
    pub fn service(&self, instance: &str) -> Result<Service, String> {
        let name = self.instance_name(instance);
        let spec = |s: &str| resolve(s, instance, &name);
        let exec_line = self
            .last("Service", "ExecStart")
            .ok_or_else(|| format!("{}: no ExecStart", self.name))?;
        let exec = split_words(&spec(exec_line.trim_start_matches(['-', '@', '+', '!'])))?;
        if exec.is_empty() {
            return Err(format!("{}: empty ExecStart", self.name));
        }
        let mut environment = Vec::new();
        for line in self.all("Service", "Environment") {
            for word in split_words(&spec(line))? {
                let (k, v) = word.split_once('=').ok_or_else(|| {
                    format!("{}: Environment `{word}` is not NAME=value", self.name)
                })?;
                environment.push((k.to_string(), v.to_string()));
            }
        }
        let environment_files = self
            .all("Service", "EnvironmentFile")
            .iter()
            .map(|f| match f.strip_prefix('-') {
                Some(p) => (spec(p), true),
                None => (spec(f), false),
            })
            .collect();
        let restart = match self.last("Service", "Restart").unwrap_or("no") {
            "no" => Restart::No,
            "on-failure" | "on-abnormal" => Restart::OnFailure,
            "always" => Restart::Always,
            other => return Err(format!("{}: Restart={other} is not supported", self.name)),
        };
        let secs = |section: &str, key: &str, default: u64| -> Result<Duration, String> {
            match self.last(section, key) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => parse_secs(v)
                    .ok_or_else(|| format!("{}: {key}={v} is not a time span", self.name)),
            }
        };
        // Where a stream goes; `None` when the unit does not say.
        let journal = Output::File(format!("/var/log/journal/{name}.log"));
        let output = |key: &str| -> Result<Option<Output>, String> {
            let Some(v) = self.last("Service", key) else {
                return Ok(None);
            };
            if let Some(path) = ["append:", "file:", "truncate:"]
                .iter()
                .find_map(|p| v.strip_prefix(p))
            {
                return Ok(Some(Output::File(spec(path))));
            }
            match v {
                // Standard error's `inherit` is "as standard output".
                "inherit" if key == "StandardError" => Ok(None),
                "journal" | "journal+console" | "kmsg" | "kmsg+console" | "inherit" | "tty" => {
                    Ok(Some(journal.clone()))
                }
                "null" => Ok(Some(Output::Null)),
                other => Err(format!("{}: {key}={other} is not supported", self.name)),
            }
        };
        // systemd's defaults: standard output to the journal, standard error where it goes.
        let stdout = output("StandardOutput")?.unwrap_or_else(|| journal.clone());
        let stderr = output("StandardError")?;
        Ok(Service {
            name: name.clone(),
            oneshot: match self.last("Service", "Type").unwrap_or("simple") {
                "oneshot" => true,
                "simple" | "exec" | "notify" | "forking" | "idle" => false,
                other => return Err(format!("{}: Type={other} is not supported", self.name)),
            },
            exec,
            environment,
            environment_files,
            restart,
            restart_sec: secs("Service", "RestartSec", 0)?.max(Duration::from_millis(100)),
            start_limit_interval: secs("Unit", "StartLimitIntervalSec", 10)?,
            start_limit_burst: self
                .last("Unit", "StartLimitBurst")
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{}: StartLimitBurst={v}", self.name))
                })
                .transpose()?
                .unwrap_or(5),
            stdout,
            stderr,
            timeout_stop: secs("Service", "TimeoutStopSec", 90)?,
        })
    }
}

fn resolve(text: &str, instance: &str, name: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') | Some('I') => out.push_str(instance),
            Some('n') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// systemd time spans: `5`, `5s`, `500ms`, `2min`, `infinity`.
fn parse_secs(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v == "infinity" {
        return Some(Duration::from_secs(u64::MAX / 4));
    }
    if let Ok(n) = v.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    for (unit, ms) in [
        ("ms", 1),
        ("min", 60_000),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
    ] {
        if let Some(n) = v
            .strip_suffix(unit)
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(n * ms));
        }
    }
    None
}

/// Splits a command line the way systemd does for the common cases (double and single quotes).
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unbalanced quote in `{line}`"));
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// Reads an environment file (`KEY=value` lines, `#` comments, optional quotes).
pub fn read_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLAVE: &str = "[Unit]\nDescription=Lobster slave %i\nStartLimitIntervalSec=60\nStartLimitBurst=3\n\n[Service]\nEnvironmentFile=-/run/lobster/slave.env\nEnvironment=LOBSTER_SLAVE_INDEX=%i \"A=b c\"\nExecStart=/usr/local/bin/lobster-slave \\\n  --log x\nRestart=on-failure\nRestartSec=2\nStandardError=append:/var/log/lobster/slave-%i.log\n\n[Install]\nWantedBy=lobster-slaves.target\n";

    #[test]
    fn template_instances_resolve_specifiers() {
        let u = Unit::parse("lobster-slave@.service", SLAVE).unwrap();
        assert!(u.is_template());
        let s = u.service("2").unwrap();
        assert_eq!(s.name, "lobster-slave@2.service");
        assert_eq!(s.exec, vec!["/usr/local/bin/lobster-slave", "--log", "x"]);
        assert_eq!(
            s.environment,
            vec![
                ("LOBSTER_SLAVE_INDEX".into(), "2".into()),
                ("A".into(), "b c".into())
            ]
        );
        assert_eq!(
            s.environment_files,
            vec![("/run/lobster/slave.env".into(), true)]
        );
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.restart_sec, Duration::from_secs(2));
        assert_eq!(
            (s.start_limit_burst, s.start_limit_interval),
            (3, Duration::from_secs(60))
        );
        assert_eq!(
            s.stderr,
            Some(Output::File("/var/log/lobster/slave-2.log".into()))
        );
        assert_eq!(u.wanted_by(), vec!["lobster-slaves.target"]);
    }

    /// Output as systemd routes it: the journal by default, standard error after standard
    /// output unless set apart, files for `append:`/`file:`, nothing for `null`.
    #[test]
    fn output_goes_where_systemd_sends_it() {
        let svc = |extra: &str| {
            Unit::parse(
                "a@.service",
                &format!("[Service]\nExecStart=/bin/true\n{extra}"),
            )
            .unwrap()
            .service("1")
        };
        let j = Output::File("/var/log/journal/a@1.service.log".to_string());
        let file = |p: &str| Output::File(p.to_string());
        let rows = [
            ("", j.clone(), None),
            (
                "StandardOutput=journal\nStandardError=journal\n",
                j.clone(),
                Some(j.clone()),
            ),
            (
                "StandardOutput=append:/var/log/x-%i.log\n",
                file("/var/log/x-1.log"),
                None,
            ),
            (
                "StandardOutput=null\nStandardError=inherit\n",
                Output::Null,
                None,
            ),
            ("StandardError=null\n", j.clone(), Some(Output::Null)),
            ("StandardOutput=inherit\n", j.clone(), None),
        ];
        for (unit, out, err) in rows {
            let s = svc(unit).unwrap();
            assert_eq!((s.stdout, s.stderr), (out, err), "{unit}");
        }
        assert!(svc("StandardOutput=socket\n").is_err());
        assert!(svc("Type=dbus\n").is_err());
        assert!(!svc("Type=exec\n").unwrap().oneshot);
        assert!(svc("Type=oneshot\n").unwrap().oneshot);
    }

    #[test]
    fn bad_units_are_errors() {
        assert!(Unit::parse("x.service", "ExecStart=/bin/true\n").is_err());
        assert!(Unit::parse("x.service", "[Service]\nnonsense\n").is_err());
        let u = Unit::parse("x.service", "[Service]\nType=simple\n").unwrap();
        assert!(u.service("").is_err());
        let u = Unit::parse("x.service", "[Service]\nExecStart=/bin/echo \"open\n").unwrap();
        assert!(u.service("").is_err());
        let u = Unit::parse(
            "x.service",
            "[Service]\nExecStart=/bin/true\nRestart=sometimes\n",
        )
        .unwrap();
        assert!(u.service("").is_err());
    }

    #[test]
    fn env_files() {
        let env = read_env_file("# c\nA=1\nB=\"two words\"\n\nC='3'\nbad line\n");
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "3".into())
            ]
        );
    }
}
