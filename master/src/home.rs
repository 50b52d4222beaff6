//! `LOBSTER_HOME`: the one directory that holds all local state (master state and run store,
//! local cloud, logs, pid files), so independent set-ups can live side by side.

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

    /// The master's state: run store, join token, lock and discovery file.
    pub fn master(&self) -> PathBuf {
        self.root.join("master")
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
