//! A run's trace on disk: numbered segment files of whole lines, the oldest deleted once the
//! records exceed the trace's size limit, and a `done` file (JSON: records kept, records
//! dropped) written when the writer ends. Reading sees the segments as one byte stream and
//! hands it out in slices of whole lines, once every writer is done.
//!
//! A slave given the same run again (it lost its session and was assigned the run anew) starts
//! a second writer while the first may still be closing: each writer is a *generation* of its
//! own (`0002-00000000.jsonl`, `done-0002`), so neither touches the other's files, and the
//! trace is whole once every generation that wrote is done.

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

/// What `done` says.
#[derive(Serialize, Deserialize)]
struct Done {
    records: u64,
    dropped: u64,
}

/// The writer's side of a run's trace.
pub(super) struct Segments {
    dir: PathBuf,
    /// This writer's generation in the run's folder (see the module doc).
    generation: u32,
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
    /// A new generation in `dir` (which exists), its first segment created at once so that a
    /// reader knows it is being written.
    pub(super) fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        let generation = last_generation(&dir)? + 1;
        let mut s = Segments {
            dir,
            generation,
            max_bytes,
            segment_bytes: (max_bytes / SEGMENTS).max(MIN_SEGMENT),
            current: None,
            kept: Default::default(),
            deleted_records: 0,
        };
        s.start_segment(0)?;
        Ok(s)
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir
            .join(format!("{:04}-{n:08}.jsonl", self.generation))
    }

    fn start_segment(&mut self, n: u64) -> std::io::Result<()> {
        let file = File::create(self.path(n))?;
        self.current = Some((n, BufWriter::with_capacity(64 * 1024, file), 0, 0));
        Ok(())
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
            self.start_segment(n)?;
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
        let name = format!("done-{:04}", self.generation);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&done).expect("serializes"))?;
        std::fs::rename(tmp, self.dir.join(name))
    }
}

/// What a run folder's file is: a segment of generation g, or generation g's `done`.
enum Entry {
    Segment(u32),
    Done(u32),
    Other,
}

fn entry(name: &str) -> Entry {
    let generation = |s: &str| s.parse::<u32>().ok();
    if let Some(g) = name.strip_prefix("done-").and_then(generation) {
        return Entry::Done(g);
    }
    match name.strip_suffix(".jsonl").and_then(|n| n.split_once('-')) {
        Some((g, _)) => generation(g).map_or(Entry::Other, Entry::Segment),
        None => Entry::Other,
    }
}

/// The highest generation in `dir` (0 when none).
fn last_generation(dir: &Path) -> std::io::Result<u32> {
    let mut last = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        if let Entry::Segment(g) | Entry::Done(g) = entry(&e.file_name().to_string_lossy()) {
            last = last.max(g);
        }
    }
    Ok(last)
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
/// that run here, or one still being written (then `writing` too).
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
    let Ok(listing) = std::fs::read_dir(&run_dir) else {
        return Err(format!("no trace of {run_id} on this slave"));
    };
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    let mut done = std::collections::BTreeMap::new();
    for e in listing.flatten() {
        match entry(&e.file_name().to_string_lossy()) {
            Entry::Segment(g) => {
                written.insert(g);
                files.push((e.path(), e.metadata().map_or(0, |m| m.len())));
            }
            Entry::Done(g) => {
                let d: Done = std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| format!("unreadable trace end {}", e.path().display()))?;
                done.insert(g, d);
            }
            Entry::Other => {}
        }
    }
    if done.is_empty() || written.iter().any(|g| !done.contains_key(g)) {
        chunk.writing = true;
        return Err(format!("the trace of {run_id} is still being written"));
    }
    chunk.dropped = done.values().map(|d| d.dropped).sum();
    // Zero-padded names: generation, then segment order.
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
