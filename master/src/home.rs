//! `LOBSTER_HOME`: the one directory that holds all local state (master state and run store,
//! local cloud, logs, pid files), so independent set-ups can live side by side. Every path in
//! it comes from here ([`Home`] and the master's own [`MasterDir`]); nothing else builds one.
//!
//! ```text
//! LOBSTER_HOME/
//!   config.yaml                      fleet settings
//!   master/  lobster.db  master.json  master.lock  tokens/<fleet>  tls/
//!   cloud/   cloud.json  state.json  images/  instances/
//!   logs/    master.log  cloud.log  local-slave-N.log
//!   quickstart.yaml  quickstart-report.json
//! ```

use std::io;
use std::path::{Path, PathBuf};

/// The resolved state directory and its layout.
#[derive(Clone, Debug)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `--home`, else `$LOBSTER_HOME`, else `~/.lobster`.
    pub fn resolve(flag: Option<PathBuf>) -> Home {
        let root = flag
            .or_else(|| std::env::var_os("LOBSTER_HOME").map(PathBuf::from))
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".lobster")
            });
        Home { root }
    }

    /// The master's state: run store, join tokens, TLS identity, lock and discovery file.
    pub fn master(&self) -> MasterDir {
        MasterDir(self.root.join("master"))
    }

    /// The local cloud's directory (its own layout: `state.json`, `instances/`).
    pub fn cloud(&self) -> PathBuf {
        self.root.join("cloud")
    }

    /// Where a running local cloud announces itself.
    pub fn cloud_discovery(&self) -> PathBuf {
        self.cloud().join("cloud.json")
    }

    /// Local template images.
    pub fn images(&self) -> PathBuf {
        self.cloud().join("images")
    }

    /// The fleet settings file.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.yaml")
    }

    /// The scenario `lobster quickstart` writes.
    pub fn quickstart_scenario(&self) -> PathBuf {
        self.root.join("quickstart.yaml")
    }

    /// The report `lobster quickstart` writes by default.
    pub fn quickstart_report(&self) -> PathBuf {
        self.root.join("quickstart-report.json")
    }

    /// Logs of background processes and local slaves.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Creates `dir` (owner-only) if needed and returns it.
    pub fn ensure(dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(dir.to_path_buf())
    }
}

/// The master's state directory and its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterDir(PathBuf);

impl MasterDir {
    /// A master state directory at `path` (`lobster master` with another home).
    pub fn at(path: PathBuf) -> Self {
        MasterDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The run store (SQLite).
    pub fn store(&self) -> PathBuf {
        self.0.join("lobster.db")
    }

    /// Where a running master announces itself (never holds a token).
    pub fn discovery(&self) -> PathBuf {
        self.0.join("master.json")
    }

    /// The addresses the master listened on, kept so that a restart listens there again.
    pub fn kept_addresses(&self) -> PathBuf {
        self.0.join("listen.json")
    }

    /// One master per directory.
    pub fn lock(&self) -> PathBuf {
        self.0.join("master.lock")
    }

    /// One join token per fleet (`tokens/<fleet>`, 0600).
    pub fn tokens(&self) -> PathBuf {
        self.0.join("tokens")
    }

    /// The master's self-signed certificate and key (0600).
    pub fn tls(&self) -> PathBuf {
        self.0.join("tls")
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
