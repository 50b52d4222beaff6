//! Where a slave's log lines go: standard error (the journal, under systemd) and, when
//! `LOBSTER_LOG_FILE` names one, a size-rotated file (`file-rotate`: the file, then `.1` and
//! `.2`, at most [`ROTATE_AT`] each), which the idle watcher reads for activity. The path is
//! taken under `$LOBSTER_ROOT` when that is set (the local cloud's instance roots).

use std::path::PathBuf;

use file_rotate::{ContentLimit, FileRotate, compression::Compression, suffix::AppendCount};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Size after which the log file is rotated.
pub const ROTATE_AT: usize = 16 << 20;

/// Rotated files kept besides the live one.
pub const KEEP: usize = 2;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("LOBSTER_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The log file `LOBSTER_LOG_FILE` names, mapped under the VM's root.
pub fn file_path() -> Option<PathBuf> {
    let raw = std::env::var("LOBSTER_LOG_FILE")
        .ok()
        .filter(|p| !p.is_empty())?;
    let root = crate::boot::root();
    Some(match raw.strip_prefix('/') {
        Some(rel) => root.join(rel),
        None => root.join(raw),
    })
}

/// A writer that rotates `path` at `limit` bytes, keeping `keep` old files.
pub fn rotating(path: PathBuf, limit: usize, keep: usize) -> FileRotate<AppendCount> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    FileRotate::new(
        path,
        AppendCount::new(keep),
        ContentLimit::BytesSurpassed(limit),
        Compression::None,
        None,
    )
}

/// Installs the global subscriber.
pub fn init() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let file = file_path().map(|p| {
        fmt::layer()
            .with_writer(std::sync::Mutex::new(rotating(p, ROTATE_AT, KEEP)))
            .with_ansi(false)
    });
    tracing_subscriber::registry()
        .with(filter())
        .with(stderr)
        .with(file)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The live file keeps its name; old text moves to `.1`, then `.2`; nothing beyond.
    #[test]
    fn rotates_by_size_and_keeps_two() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slave-1.log");
        let mut w = rotating(path.clone(), 100, 2);
        for i in 0..40 {
            writeln!(w, "line {i:03} lobster::activity interval recorded").unwrap();
        }
        w.flush().unwrap();
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(
            size(&path) > 0 && size(&path) <= 100 + 60,
            "{}",
            size(&path)
        );
        assert!(size(&dir.path().join("slave-1.log.1")) > 0);
        assert!(size(&dir.path().join("slave-1.log.2")) > 0);
        assert!(!dir.path().join("slave-1.log.3").exists());
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.contains("line 039"), "{live}");
    }
}
