//! Per-request records of a run (the scenario's `trace:`), kept on this slave's own disk and
//! read back in slices when the master asks (`lobster runs traces RUN`); never streamed during
//! the run.
//!
//! The engine offers every request to the [`Tracer`]; the sampled ones (and, with
//! `errors: all`, every failed one) go through a bounded channel to a writer thread, which
//! appends one JSON object per line to segment files under `<trace dir>/<run id>/` and drops
//! the oldest segments beyond the trace's `max_mb`. The request path never waits on the disk:
//! a record that finds the channel full is dropped and counted, and the count travels with the
//! trace. When the run ends the writer writes `done` (records kept, records dropped); only then
//! may the trace be read ([`read_chunk`]).

mod segments;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lobster_fleet::scenario::Trace;
use lobster_fleet::stats::{ErrorClass, failure_kind};
use serde::Serialize;

use crate::engine::recorder::Sample;
use segments::Segments;
pub use segments::read_chunk;

/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 65_536;
/// Runs whose traces a slave keeps; starting another deletes the oldest.
pub const RUNS_KEPT: usize = 10;

/// One request as the engine saw it, on its way to the writer.
struct Record {
    start: Instant,
    endpoint: u32,
    site: u32,
    status: Option<u16>,
    latency_us: Option<u64>,
    phases: [Option<Duration>; 4],
    sent: u64,
    received: u64,
    error: Option<(ErrorClass, Option<u16>)>,
    /// The values named in `trace.output`, as the request was sent.
    values: Vec<(String, String)>,
}

/// A run's trace on this slave: decides which requests are recorded and hands them to the
/// writer thread. Dropping it ends the trace (the writer flushes and writes `done`).
pub struct Tracer {
    settings: Trace,
    /// Requests offered so far (the sample's numbering).
    seen: AtomicU64,
    dropped: Arc<AtomicU64>,
    tx: SyncSender<Record>,
}

/// Names for the writer: endpoints by index, targets by index (empty with one target).
struct Names {
    endpoints: Vec<String>,
    targets: Vec<String>,
}

impl Tracer {
    /// Starts the trace of `run_id` under `dir` (created if needed), deleting the traces of
    /// older runs beyond [`RUNS_KEPT`].
    ///
    /// # Errors
    /// The run's folder cannot be made (the run goes on without a trace; the caller says so).
    pub fn start(
        dir: &Path,
        run_id: &str,
        settings: Trace,
        endpoints: Vec<String>,
        targets: Vec<String>,
    ) -> std::io::Result<Tracer> {
        segments::check_run_id(run_id).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(dir)?;
        segments::prune(dir, RUNS_KEPT - 1);
        // A run given to this slave again keeps what it wrote before (a new generation).
        let run_dir = dir.join(run_id);
        std::fs::create_dir_all(&run_dir)?;
        let segments = Segments::open(run_dir, settings.max_bytes)?;
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let origin = (
            Instant::now(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let writer = Writer {
            segments,
            names: Names { endpoints, targets },
            origin,
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("lobster-trace".into())
            .spawn(move || writer.run(rx))?;
        Ok(Tracer {
            settings,
            seen: AtomicU64::new(0),
            dropped,
            tx,
        })
    }

    /// The values each record carries (`trace.output`), by name.
    pub fn output(&self) -> &[String] {
        &self.settings.output
    }

    /// Offers one request: recorded when it is in the sample, or failed and `errors: all`.
    /// `values` are those of [`Tracer::output`] the request was sent with.
    pub fn offer(
        &self,
        endpoint: usize,
        site: usize,
        s: &Sample<'_>,
        start: Instant,
        values: &[(String, String)],
    ) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        let wanted = self.settings.samples(n) || (self.settings.all_errors && s.error.is_some());
        if !wanted {
            return;
        }
        let t = &s.timing;
        let record = Record {
            start,
            endpoint: endpoint as u32,
            site: site as u32,
            status: s.status,
            latency_us: s.latency_us,
            phases: [t.connecting, t.tls_handshaking, t.waiting, t.receiving],
            sent: s.bytes_sent,
            received: s.bytes_received,
            error: s.error.as_ref().map(|f| (f.class, f.status)),
            values: values.to_vec(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(record)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One line of a trace file (see `docs/results.md`, "Traces").
#[derive(Serialize)]
struct Line<'a> {
    /// When the request started (the open model: when it was due), microseconds since the
    /// Unix epoch.
    t_us: u64,
    endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    status: Option<u16>,
    latency_us: Option<u64>,
    connecting_us: Option<u64>,
    tls_handshaking_us: Option<u64>,
    waiting_us: Option<u64>,
    receiving_us: Option<u64>,
    bytes_sent: u64,
    bytes_received: u64,
    error: Option<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    values: std::collections::BTreeMap<&'a str, &'a str>,
}

struct Writer {
    segments: Segments,
    names: Names,
    /// The tracer's start on the monotonic clock and on the wall clock.
    origin: (Instant, Duration),
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Record>) {
        let mut line = Vec::with_capacity(512);
        let mut records = 0u64;
        let mut failed = None;
        for r in rx {
            line.clear();
            self.encode(&r, &mut line);
            match self.segments.append(&line) {
                Ok(()) => records += 1,
                Err(e) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "trace records could not be written (counted as dropped)");
        }
        let unwritten = self.dropped.load(Ordering::Relaxed);
        if let Err(e) = self.segments.finish(records, unwritten) {
            tracing::warn!(error = %e, "the trace could not be closed");
        }
    }

    fn encode(&self, r: &Record, out: &mut Vec<u8>) {
        let at = match r.start.checked_duration_since(self.origin.0) {
            Some(after) => self.origin.1 + after,
            None => self
                .origin
                .1
                .saturating_sub(self.origin.0.duration_since(r.start)),
        };
        let us = |d: Option<Duration>| d.map(|d| d.as_micros() as u64);
        let line = Line {
            t_us: at.as_micros() as u64,
            endpoint: self
                .names
                .endpoints
                .get(r.endpoint as usize)
                .map_or("?", String::as_str),
            target: self.names.targets.get(r.site as usize).map(String::as_str),
            status: r.status,
            latency_us: r.latency_us,
            connecting_us: us(r.phases[0]),
            tls_handshaking_us: us(r.phases[1]),
            waiting_us: us(r.phases[2]),
            receiving_us: us(r.phases[3]),
            bytes_sent: r.sent,
            bytes_received: r.received,
            error: r.error.map(|(class, status)| failure_kind(class, status)),
            values: r
                .values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        serde_json::to_writer(&mut *out, &line).expect("a trace line serializes");
        out.push(b'\n');
    }
}

/// Where this slave keeps traces when not told (`--trace-dir`): a folder of its own under the
/// system's temporary directory.
pub fn default_dir(slave_uid: &str) -> PathBuf {
    std::env::temp_dir()
        .join("lobster-traces")
        .join(slave_uid.replace(['/', '\\', '.'], "_"))
}

#[cfg(test)]
mod tests;
