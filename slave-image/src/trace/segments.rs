//! A run's trace on disk: numbered segment files (`00000000.jsonl`, …) of whole lines, the
//! oldest deleted once the records exceed the trace's size limit, and `done` (JSON: records
//! kept, records dropped) written when the run's trace is complete. Reading sees the segments
//! as one byte stream and hands it out in slices of whole lines.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use lobster_fleet::proto::TraceChunk;
use serde::{Deserialize, Serialize};

/// Segments a trace is cut into: the limit is kept to within one segment's size.
const SEGMENTS: u64 = 8;
/// Smallest segment.
const MIN_SEGMENT: u64 = 64 * 1024;
/// Largest slice sent in one answer.
pub const MAX_CHUNK: u32 = 1024 * 1024;
const DONE: &str = "done";

/// What `done` says.
#[derive(Serialize, Deserialize)]
struct Done {
    records: u64,
    dropped: u64,
}

/// The writer's side of a run's trace.
pub(super) struct Segments {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Open segment: its number, its writer, its bytes, its records.
    current: Option<(u64, BufWriter<File>, u64, u64)>,
    /// Closed segments still kept: (number, bytes, records).
    kept: std::collections::VecDeque<(u64, u64, u64)>,
    /// Records deleted with the oldest segments.
    deleted_records: u64,
}

impl Segments {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Segments {
            dir,
            max_bytes,
            segment_bytes: (max_bytes / SEGMENTS).max(MIN_SEGMENT),
            current: None,
            kept: Default::default(),
            deleted_records: 0,
        }
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:08}.jsonl"))
    }

    /// Appends one line (with its newline).
    pub(super) fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let full = self
            .current
            .as_ref()
            .is_some_and(|(_, _, bytes, _)| bytes + line.len() as u64 > self.segment_bytes);
        if full {
            self.close_current()?;
        }
        if self.current.is_none() {
            let n = self.kept.back().map_or(0, |k| k.0 + 1);
            let file = File::create(self.path(n))?;
            self.current = Some((n, BufWriter::with_capacity(64 * 1024, file), 0, 0));
        }
        let (_, w, bytes, records) = self.current.as_mut().expect("opened above");
        w.write_all(line)?;
        *bytes += line.len() as u64;
        *records += 1;
        Ok(())
    }

    fn close_current(&mut self) -> std::io::Result<()> {
        if let Some((n, mut w, bytes, records)) = self.current.take() {
            w.flush()?;
            self.kept.push_back((n, bytes, records));
        }
        // Keep the closed segments within the limit, less the room of the one to come.
        let limit = self.max_bytes.saturating_sub(self.segment_bytes);
        while self.kept.iter().map(|k| k.1).sum::<u64>() > limit {
            let Some((n, _, records)) = self.kept.pop_front() else {
                break;
            };
            std::fs::remove_file(self.path(n))?;
            self.deleted_records += records;
        }
        Ok(())
    }

    /// Closes the last segment and writes `done`: of `records` written, those deleted as the
    /// oldest beyond the limit join the `unwritten` ones as dropped.
    pub(super) fn finish(mut self, records: u64, unwritten: u64) -> std::io::Result<()> {
        self.close_current()?;
        let done = Done {
            records: records.saturating_sub(self.deleted_records),
            dropped: unwritten + self.deleted_records,
        };
        let tmp = self.dir.join("done.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&done).expect("serializes"))?;
        std::fs::rename(tmp, self.dir.join(DONE))
    }
}

/// A run id as a folder name: the master's ids are letters, digits, `-` and `_`.
pub(super) fn check_run_id(run_id: &str) -> Result<(), String> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 64
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{run_id}` is not a run id"))
    }
}

/// Deletes the traces of the oldest runs under `dir` so that at most `keep` remain.
pub(super) fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let at = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (at, e.path())
        })
        .collect();
    runs.sort();
    let excess = runs.len().saturating_sub(keep);
    for (_, path) in runs.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an old trace");
        }
    }
}

/// Up to `max_bytes` (at most [`MAX_CHUNK`]) of whole lines of run `run_id`'s trace under
/// `dir`, from byte `offset`. The answer's `error` says why there is nothing: no trace of
/// that run here, or one still being written.
pub fn read_chunk(dir: &Path, run_id: &str, offset: u64, max_bytes: u32) -> TraceChunk {
    let mut chunk = TraceChunk {
        run_id: run_id.to_string(),
        offset,
        ..TraceChunk::default()
    };
    if let Err(e) = read_into(dir, run_id, offset, max_bytes, &mut chunk) {
        chunk.error = e;
        chunk.data.clear();
    }
    chunk
}

fn read_into(
    dir: &Path,
    run_id: &str,
    offset: u64,
    max_bytes: u32,
    chunk: &mut TraceChunk,
) -> Result<(), String> {
    check_run_id(run_id)?;
    let run_dir = dir.join(run_id);
    let done: Done = match std::fs::read(run_dir.join(DONE)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("unreadable trace end: {e}"))?,
        Err(_) if run_dir.is_dir() => {
            return Err(format!("the trace of {run_id} is still being written"));
        }
        Err(_) => return Err(format!("no trace of {run_id} on this slave")),
    };
    chunk.dropped = done.dropped;
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(&run_dir)
        .map_err(|e| format!("cannot list the trace: {e}"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
        .collect();
    files.sort();
    chunk.total_bytes = files.iter().map(|f| f.1).sum();
    let want = u64::from(max_bytes.clamp(1, MAX_CHUNK));
    let mut skip = offset;
    let mut data = Vec::new();
    for (path, len) in &files {
        if skip >= *len {
            skip -= len;
            continue;
        }
        let mut f = File::open(path).map_err(|e| format!("cannot read the trace: {e}"))?;
        f.seek(SeekFrom::Start(skip))
            .map_err(|e| format!("cannot read the trace: {e}"))?;
        skip = 0;
        let room = want - data.len() as u64;
        f.take(room)
            .read_to_end(&mut data)
            .map_err(|e| format!("cannot read the trace: {e}"))?;
        if data.len() as u64 >= want {
            break;
        }
    }
    // Whole lines only: the rest comes with the next slice.
    if offset + (data.len() as u64) < chunk.total_bytes {
        let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        data.truncate(end);
    }
    chunk.data = data;
    Ok(())
}
