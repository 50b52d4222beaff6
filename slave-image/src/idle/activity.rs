//! Activity in the slaves' log directory: only `lobster::activity` lines written after the
//! watcher started count; the directory is watched with `notify` (so a rotated file is
//! followed), with a polling fallback where inotify is unavailable.
//!
//! Only the live files (`slave-N.log`) are read: a rotated one (`slave-N.log.1`) holds old
//! lines only. Offsets are kept per file *identity* (device and inode), so the fresh file
//! that replaces a rotated one is read from its start, whatever its size.
//!
//! Only events that can mean new text (a file created, written, renamed into place) make the
//! watcher read. Reading a log raises inotify events of its own (open, access, close, and an
//! atime change): acting on those made the watcher read again in a loop and burn a core
//! while the VM was idle.

use super::*;

/// A file's identity: (device, inode).
type FileId = (u64, u64);

/// Activity seen in the log directory.
pub struct Activity {
    last: Mutex<Instant>,
    /// Per path: the file's identity and how far it was read.
    offsets: Mutex<HashMap<PathBuf, (FileId, u64)>>,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            last: Mutex::new(Instant::now()),
            offsets: Mutex::new(HashMap::new()),
        }
    }

    pub fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Whether `path` is a live slave log (`slave-N.log`; not a rotated `slave-N.log.1`).
    pub(super) fn is_slave_log(path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("slave-") && n.ends_with(".log"))
    }

    fn identity(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    }

    /// Reads what was appended to `path` since last time; true if it holds an activity line.
    pub(super) fn scan(&self, path: &Path) -> bool {
        let Ok(mut f) = std::fs::File::open(path) else {
            return false;
        };
        let Ok(meta) = f.metadata() else {
            return false;
        };
        let (len, id) = (meta.len(), Self::identity(&meta));
        let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        let from = match offsets.get(path) {
            // The same file, not truncated: from where the last read ended.
            Some((seen, at)) if *seen == id && *at <= len => *at,
            // New, replaced by rotation, or truncated: from its start.
            _ => 0,
        };
        // Read at most the last 1 MiB of new text.
        let start = from.max(len.saturating_sub(1 << 20));
        if f.seek(SeekFrom::Start(start)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let _ = f.take(len - start).read_to_end(&mut buf);
        offsets.insert(path.to_path_buf(), (id, len));
        let needle = ACTIVITY.as_bytes();
        buf.windows(needle.len()).any(|w| w == needle)
    }

    /// Marks every existing log as read (what was written before the watcher started is old).
    pub(super) fn skip_existing(&self, dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
            for e in entries.flatten() {
                if let Ok(m) = e.metadata()
                    && Self::is_slave_log(&e.path())
                {
                    offsets.insert(e.path(), (Self::identity(&m), m.len()));
                }
            }
        }
    }
}

/// Watches `dir`; returns the watcher (keep it alive) and whether it had to poll.
pub fn watch(
    dir: &Path,
    activity: Arc<Activity>,
) -> notify::Result<(Box<dyn Watcher + Send>, bool)> {
    activity.skip_existing(dir);
    let handler = {
        let activity = activity.clone();
        move |res: notify::Result<notify::Event>| {
            if let Some(ev) = res.as_ref().ok().filter(|ev| may_add_text(&ev.kind)) {
                for p in ev.paths.iter().filter(|p| Activity::is_slave_log(p)) {
                    if activity.scan(p) {
                        activity.touch();
                    }
                }
            }
        }
    };
    match notify::RecommendedWatcher::new(handler.clone(), notify::Config::default()) {
        Ok(mut w) => match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => Ok((Box::new(w), false)),
            Err(e) => {
                warn!(error = %e, "inotify unavailable: polling the log directory instead");
                poll(dir, handler)
            }
        },
        Err(e) => {
            warn!(error = %e, "inotify unavailable: polling the log directory instead");
            poll(dir, handler)
        }
    }
}

/// Whether an event can mean new text in a file: never the watcher's own reads (open, access,
/// close without writing) or metadata changes such as the atime a read updates.
fn may_add_text(kind: &notify::EventKind) -> bool {
    use notify::EventKind as K;
    use notify::event::ModifyKind as M;
    match kind {
        K::Access(_) | K::Remove(_) => false,
        K::Modify(M::Metadata(_)) => false,
        K::Create(_) | K::Modify(_) | K::Any | K::Other => true,
    }
}

fn poll<F>(dir: &Path, handler: F) -> notify::Result<(Box<dyn Watcher + Send>, bool)>
where
    F: notify::EventHandler,
{
    let mut w = notify::PollWatcher::new(
        handler,
        notify::Config::default()
            .with_poll_interval(Duration::from_secs(1))
            .with_compare_contents(false),
    )?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((Box::new(w), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_activity_lines_count_and_rotation_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("slave-1.log");
        std::fs::write(&log, "old lobster::activity line before the watcher\n").unwrap();
        let a = Activity::new();
        a.skip_existing(dir.path());
        assert!(!a.scan(&log), "old lines are not activity");
        std::fs::write(
            &log,
            format!(
                "{}WARN master unreachable\n",
                std::fs::read_to_string(&log).unwrap()
            ),
        )
        .unwrap();
        assert!(!a.scan(&log), "chatter is not activity");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("INFO lobster::activity: interval recorded requests=5\n");
        std::fs::write(&log, &text).unwrap();
        assert!(a.scan(&log));
        // Truncated in place: read from the start again.
        std::fs::write(&log, "INFO lobster::activity: interval recorded\n").unwrap();
        assert!(a.scan(&log));
        assert!(!Activity::is_slave_log(&dir.path().join("slave-2.log.1")));
        assert!(!Activity::is_slave_log(&dir.path().join("idle.log")));
        assert!(Activity::is_slave_log(&dir.path().join("slave-12.log")));
    }

    /// Rotation by rename: the old file moves to `.1` (never read again: its lines are old)
    /// and a fresh file takes the name. The fresh file is read from its start even when it is
    /// already longer than the old one was when last read.
    #[test]
    fn a_rotated_file_is_followed_by_identity_not_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("slave-1.log");
        std::fs::write(&log, format!("{}\n", "x".repeat(199))).unwrap();
        let a = Activity::new();
        a.skip_existing(dir.path());
        std::fs::rename(&log, dir.path().join("slave-1.log.1")).unwrap();
        let fresh = format!(
            "INFO lobster::activity: interval recorded{}\n",
            " ".repeat(300)
        );
        std::fs::write(&log, &fresh).unwrap();
        assert!(a.scan(&log), "the fresh file's first line was missed");
        assert!(!a.scan(&log), "the same line counted twice");
    }

    #[test]
    fn reads_and_metadata_never_trigger_a_scan() {
        use notify::EventKind as K;
        use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, MetadataKind};
        use notify::event::{ModifyKind, RenameMode};
        assert!(!may_add_text(&K::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!may_add_text(&K::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!may_add_text(&K::Access(AccessKind::Read)));
        assert!(!may_add_text(&K::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(may_add_text(&K::Modify(ModifyKind::Data(DataChange::Any))));
        assert!(may_add_text(&K::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(may_add_text(&K::Create(CreateKind::File)));
    }

    /// The watcher's own reads must not wake it: after one append, it reads a bounded number
    /// of times, not in a loop.
    #[test]
    fn the_watchers_own_reads_do_not_wake_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("slave-1.log");
        std::fs::write(&log, "").unwrap();
        let scans = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let a = Arc::new(Activity::new());
        let counting = {
            let a = a.clone();
            let scans = scans.clone();
            move |res: notify::Result<notify::Event>| {
                if let Some(ev) = res.as_ref().ok().filter(|ev| may_add_text(&ev.kind)) {
                    for p in ev.paths.iter().filter(|p| Activity::is_slave_log(p)) {
                        scans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        a.scan(p);
                    }
                }
            }
        };
        let mut w = notify::RecommendedWatcher::new(counting, notify::Config::default()).unwrap();
        w.watch(dir.path(), RecursiveMode::NonRecursive).unwrap();
        std::fs::write(&log, "INFO lobster::activity: interval recorded\n").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let n = scans.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n >= 1, "the append was not seen");
        assert!(
            n <= 4,
            "{n} scans after one write: the watcher wakes itself"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_sees_appends_through_notify() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(Activity::new());
        let (_w, _polling) = watch(dir.path(), a.clone()).unwrap();
        let before = a.last();
        tokio::time::advance(Duration::from_secs(5)).await;
        std::fs::write(
            dir.path().join("slave-1.log"),
            "INFO lobster::activity: interval recorded\n",
        )
        .unwrap();
        // The notify thread runs in real time: give it a moment.
        for _ in 0..200 {
            if a.last() != before {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(a.last() > before, "activity was not noticed");
    }
}
