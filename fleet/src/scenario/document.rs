//! A scenario as it travels to a master ([`Document`]): the text the user wrote and what that
//! text refers to outside itself. Whichever way a scenario arrives — `lobster run FILE`, the
//! API's `POST /api/runs`, the dashboard — it becomes a [`Scenario`] through the one validator
//! ([`Document::resolve`]), so the same text is accepted or refused the same way everywhere,
//! with the same `FILE:LINE:COLUMN` errors.
//!
//! Only [`Document::read`] touches the file system and the environment (on the user's
//! machine); a master resolves a document from what it carries and never reads its own files
//! or environment for a scenario.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MAX_FILE_BYTES, Scenario, ScenarioError, millis, validate, value};

/// A scenario's text with the files and environment values it uses, and the command line's
/// overrides: everything [`Document::resolve`] needs, as JSON in `POST /api/runs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// How errors name the scenario (`SOURCE:LINE:COLUMN: …`): the path the user gave.
    #[serde(default = "default_source")]
    pub source: String,
    /// The scenario as `docs/scenario.md` describes it, in YAML or in JSON (YAML 1.2 reads
    /// JSON), at most [`MAX_FILE_BYTES`].
    pub text: String,
    /// The text of each file the scenario names (`data.file`, `tls.ca_file`), keyed by the
    /// name as written in the scenario.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// The value of each `{{env.NAME}}` the scenario uses, keyed by `NAME`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Replaces the scenario's `target` and `targets` (`lobster run --target URL`).
    #[serde(default)]
    pub target: Option<String>,
    /// Replaces the scenario's duration (`lobster run --duration`); as JSON, milliseconds
    /// under `duration_ms`.
    #[serde(default, rename = "duration_ms", with = "millis::option")]
    pub duration: Option<Duration>,
}

fn default_source() -> String {
    "scenario".into()
}

impl Document {
    /// A document of `text` alone (no files, no environment), named `source` in errors.
    pub fn new(source: &str, text: &str) -> Self {
        Document {
            source: source.into(),
            text: text.into(),
            ..Document::default()
        }
    }

    /// Reads the scenario file at `path` with the files it names (relative to its folder,
    /// as editors save text: UTF-8 or UTF-16 with a byte order mark) and the values of the
    /// environment variables it uses (this process's), and validates it.
    ///
    /// Returns the document, ready to send, and the scenario it resolves to.
    ///
    /// # Errors
    /// [`ScenarioError::Read`] when the file cannot be read; [`ScenarioError::Invalid`] with
    /// the line and column at fault otherwise.
    pub fn read(path: &Path) -> Result<(Document, Scenario), ScenarioError> {
        let source = path.display().to_string();
        let read_err = |e| ScenarioError::Read {
            path: source.clone(),
            source: e,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(whole(&source, too_large(meta.len())));
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            whole(
                &source,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let files = RefCell::new(BTreeMap::new());
        let env = RefCell::new(BTreeMap::new());
        let scenario = validate::parse(
            &text,
            &source,
            &|name: &str| {
                let p = base.join(name);
                let bytes =
                    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                let text =
                    value::decode_text(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
                files.borrow_mut().insert(name.to_string(), text.clone());
                Ok(text)
            },
            &|key: &str| {
                let v = std::env::var(key).ok()?;
                env.borrow_mut().insert(key.to_string(), v.clone());
                Some(v)
            },
        )?;
        let document = Document {
            source,
            text,
            files: files.into_inner(),
            env: env.into_inner(),
            target: None,
            duration: None,
        };
        Ok((document, scenario))
    }

    /// Validates the document into the scenario it describes, overrides applied: the one
    /// way text becomes a [`Scenario`]. Pure: a file or variable the text names and the
    /// document does not carry is an error, never looked up.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`], with the line and column at fault when there is one.
    pub fn resolve(&self) -> Result<Scenario, ScenarioError> {
        if self.text.len() as u64 > MAX_FILE_BYTES {
            return Err(whole(&self.source, too_large(self.text.len() as u64)));
        }
        let mut scenario = validate::parse(
            &self.text,
            &self.source,
            &|name: &str| {
                self.files.get(name).cloned().ok_or_else(|| {
                    format!(
                        "`{name}` was not given with the scenario: `lobster run FILE` reads it beside FILE; through the API, give its text under `files` (or the data inline as `items`)"
                    )
                })
            },
            &|key: &str| self.env.get(key).cloned(),
        )?;
        if let Some(url) = &self.target {
            scenario
                .set_target(url)
                .map_err(|e| whole(&self.source, format!("target `{url}`: {e}")))?;
        }
        if let Some(d) = self.duration {
            scenario
                .set_duration(d)
                .map_err(|e| whole(&self.source, format!("duration: {e}")))?;
        }
        Ok(scenario)
    }
}

fn whole(source: &str, message: String) -> ScenarioError {
    ScenarioError::Invalid {
        path: source.to_string(),
        line: 0,
        column: 0,
        message,
    }
}

fn too_large(bytes: u64) -> String {
    format!("the scenario is {bytes} bytes, larger than the {MAX_FILE_BYTES} accepted")
}

/// Reads and validates a scenario file (see [`Document::read`]).
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    Document::read(path).map(|(_, s)| s)
}

/// Validates scenario text that names no file and no environment variable (see
/// [`Document::resolve`]); `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Scenario, ScenarioError> {
    Document::new(source, text).resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scenario with a data file, a CA file and an environment value, in its own folder.
    fn folder(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lobster-doc-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.csv"), "email,name\nann@x.io,Ann\n").unwrap();
        // A stand-in: the scenario checks PEM framing, the slave's TLS client the certificate.
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUJ2ZmY2Y1YjQ3ZGQ3YjJmMGQwCgYIKoZIzj0EAwIwHTEb\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.join("ca.pem"), pem).unwrap();
        let text = "name: doc
target: https://127.0.0.1:8443
tls: {ca_file: ca.pem}
duration: 5s
load: {users: 2}
data: {file: users.csv}
flows:
  - name: f
    steps:
      - name: s
        path: '/u/{{row.email}}'
        body: 'pkg={{env.CARGO_PKG_NAME}}&n={{row.name}}'
";
        std::fs::write(dir.join("s.yaml"), text).unwrap();
        dir
    }

    #[test]
    fn a_document_resolves_on_a_master_to_the_scenario_read_on_the_users_machine() {
        let dir = folder("same");
        let (doc, read) = Document::read(&dir.join("s.yaml")).unwrap();
        // It carries exactly what the text names: both files as read, the one variable.
        assert_eq!(
            doc.files.keys().collect::<Vec<_>>(),
            ["ca.pem", "users.csv"]
        );
        assert_eq!(doc.files["users.csv"], "email,name\nann@x.io,Ann\n");
        assert_eq!(
            doc.env,
            BTreeMap::from([("CARGO_PKG_NAME".into(), "lobster-fleet".into())])
        );
        assert_eq!(
            read.requests[0].body.as_deref(),
            Some("pkg=lobster-fleet&n={{row.name}}")
        );
        // Sent as JSON and resolved elsewhere (the folder gone): the same scenario.
        let sent: Document = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(sent.resolve().unwrap(), read);
        assert_eq!(
            load(&dir.join("s.yaml")).unwrap_err().to_string(),
            format!("cannot read {}", dir.join("s.yaml").display())
        );
    }

    #[test]
    fn a_document_missing_a_file_or_a_value_names_it_where_the_text_uses_it() {
        let dir = folder("missing");
        let (doc, _) = Document::read(&dir.join("s.yaml")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut no_file = doc.clone();
        no_file.files.remove("users.csv");
        let err = no_file.resolve().unwrap_err().to_string();
        assert!(
            err.contains(":6:") && err.contains("`users.csv` was not given with the scenario"),
            "{err}"
        );
        let mut no_env = doc.clone();
        no_env.env.clear();
        let err = no_env.resolve().unwrap_err().to_string();
        assert!(
            err.contains("CARGO_PKG_NAME is not set") && err.contains(":10:"),
            "{err}"
        );
    }

    /// The API's JSON is the file's format: a scenario written as JSON resolves to the
    /// scenario of the same YAML, and is refused with the same located messages.
    #[test]
    fn a_scenario_written_in_json_is_the_same_as_in_yaml() {
        let yaml = "name: j\ntarget: http://127.0.0.1:9\nduration: 2s\nload: {rate: 5.5}\nthink: 1s\nrequests:\n  - {name: a, path: /a, weight: 2}\n  - {name: b, method: POST, path: /b, body: x, expect: [201]}\nsla:\n  - {metric: p99, max: 250ms, window: 2s}\n";
        let json = r#"{
  "name": "j", "target": "http://127.0.0.1:9", "duration": "2s",
  "load": {"rate": 5.5}, "think": "1s",
  "requests": [
    {"name": "a", "path": "/a", "weight": 2},
    {"name": "b", "method": "POST", "path": "/b", "body": "x", "expect": [201]}
  ],
  "sla": [{"metric": "p99", "max": "250ms", "window": "2s"}]
}"#;
        let from_yaml = parse(yaml, "j.yaml").unwrap();
        assert_eq!(parse(json, "j.json").unwrap(), from_yaml);
        let bad = json.replace(r#""weight": 2"#, r#""weight": 0"#);
        let err = parse(&bad, "j.json").unwrap_err().to_string();
        assert!(
            err.starts_with("j.json:5:") && err.contains("weight"),
            "{err}"
        );
    }

    #[test]
    fn overrides_apply_after_validation_and_are_checked() {
        let mut doc = Document::new(
            "o.yaml",
            "name: o\ntarget: http://127.0.0.1:9\nduration: 2s\nload: {users: 1}\nrequests: [{name: a, path: /}]\n",
        );
        doc.target = Some("http://127.0.0.1:7/base".into());
        doc.duration = Some(Duration::from_secs(90));
        let s = doc.resolve().unwrap();
        assert_eq!(s.target.to_string(), "http://127.0.0.1:7/base");
        assert_eq!(s.duration, Duration::from_secs(90));
        doc.duration = Some(Duration::ZERO);
        let err = doc.resolve().unwrap_err().to_string();
        assert_eq!(err, "o.yaml: duration: duration must be longer than zero");
        doc.duration = None;
        doc.target = Some("ftp://x".into());
        assert!(
            doc.resolve()
                .unwrap_err()
                .to_string()
                .starts_with("o.yaml: target `ftp://x`: ")
        );
    }
}
