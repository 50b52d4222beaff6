//! Mergeable statistics: per-interval, per-endpoint HDR histograms of latency, counts by error
//! class, and bytes.
//!
//! Invariant: statistics are merged, never averaged. Fleet-wide percentiles come from the sum of
//! every slave's histograms, so they equal the percentiles of all raw samples within the
//! histogram's precision ([`SIGFIG`] significant digits).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::proto;

mod fused;
mod latency;
mod pending;
mod phases;
mod resources;
mod sparse;
mod wire;

pub use latency::LatencySummary;
pub use pending::Pending;
pub use phases::Phases;
pub use resources::{Resources, SATURATED_PERCENT, SATURATED_SECONDS};
pub use wire::{CheckRoom, CheckedInterval, Mergeable, WireHistogram};

/// Significant decimal digits kept by every latency histogram (relative error ≤ 0.1 %).
pub const SIGFIG: u8 = 3;
/// Latencies above this (one hour, in microseconds) are recorded as this value.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Largest `highest trackable value` accepted in a histogram from the wire.
const MAX_WIRE_HIGHEST: u64 = 1 << 42;
/// Most endpoints accepted in one interval from the wire.
pub const MAX_WIRE_ENDPOINTS: usize = 1000;
/// Most error classes, and most failure kinds, accepted per endpoint from the wire.
const MAX_WIRE_ERROR_KEYS: usize = 64;
/// Most failure kinds an endpoint keeps; further kinds count under [`OTHER_FAILURES`].
pub const MAX_FAILURE_KINDS: usize = 32;
/// The failure kind that collects kinds beyond [`MAX_FAILURE_KINDS`].
pub const OTHER_FAILURES: &str = "other";
/// Longest sample message kept per failure kind, in bytes.
pub const MAX_SAMPLE_BYTES: usize = 256;
/// Cookie of an uncompressed V2 histogram (`0x1c849303 | 0x10`).
const V2_COOKIE: u32 = 0x1c84_9313;

/// A new, empty latency histogram (microseconds, auto-resizing).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("3 significant digits is a valid histogram configuration")
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// A 4xx status that the request did not expect.
    Status4xx,
    /// A 5xx status that the request did not expect.
    Status5xx,
    /// Any other status that the request did not expect.
    StatusOther,
    /// No complete response within the request timeout.
    Timeout,
    /// The connection could not be opened.
    Connect,
    /// The connection broke while sending or receiving.
    Io,
    /// The server's response was not valid HTTP/1.1.
    Protocol,
    /// The TLS handshake failed: a certificate not trusted or not for this host, no
    /// protocol version or cipher in common.
    Tls,
    /// A flow step's capture found nothing in an otherwise expected response.
    Capture,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Status4xx,
        ErrorClass::Status5xx,
        ErrorClass::StatusOther,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::Io,
        ErrorClass::Protocol,
        ErrorClass::Tls,
        ErrorClass::Capture,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Status4xx => "status_4xx",
            ErrorClass::Status5xx => "status_5xx",
            ErrorClass::StatusOther => "status_other",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Io => "io",
            ErrorClass::Protocol => "protocol",
            ErrorClass::Tls => "tls",
            ErrorClass::Capture => "capture",
        }
    }

    /// The class of an unexpected status.
    pub fn of_status(status: u16) -> ErrorClass {
        match status {
            400..=499 => ErrorClass::Status4xx,
            500..=599 => ErrorClass::Status5xx,
            _ => ErrorClass::StatusOther,
        }
    }
}

/// Statistics of one endpoint (request name) over some time.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    pub requests: u64,
    pub failures: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Failures by [`ErrorClass::as_str`].
    pub errors: BTreeMap<String, u64>,
    /// Failures by kind ([`failure_kind`]), each with its count and one sample message.
    pub failure_kinds: BTreeMap<String, FailureKind>,
    /// Latency in microseconds of every request that got a response or timed out.
    pub latency_us: Histogram<u64>,
    /// Where the time went: connecting, TLS handshaking, waiting, receiving.
    pub phases: Phases,
}

/// Failures of one kind: how many, and the message of one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailureKind {
    pub count: u64,
    pub sample: String,
}

/// The kind of a failure: `status_503` for an unexpected status, else the class
/// (`timeout`, `connect`, `io`, `protocol`).
pub fn failure_kind(class: ErrorClass, status: Option<u16>) -> String {
    match status {
        Some(code) => format!("status_{code}"),
        None => class.as_str().to_string(),
    }
}

/// Cuts a sample message to [`MAX_SAMPLE_BYTES`] on a character boundary.
pub fn clip_sample(mut s: String) -> String {
    if s.len() > MAX_SAMPLE_BYTES {
        let mut end = MAX_SAMPLE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats {
            requests: 0,
            failures: 0,
            bytes_received: 0,
            bytes_sent: 0,
            errors: BTreeMap::new(),
            failure_kinds: BTreeMap::new(),
            latency_us: new_histogram(),
            phases: Phases::default(),
        }
    }
}

impl EndpointStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &EndpointStats) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        for (k, v) in &other.errors {
            let e = self.errors.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
        for (k, v) in &other.failure_kinds {
            self.add_failures(k, v.count, &v.sample);
        }
        // Both histograms share the configuration checked on decode, so addition only resizes.
        let _ = self.latency_us.add(&other.latency_us);
        self.phases.merge(&other.phases);
    }

    /// Counts `count` failures of `kind` (kinds beyond [`MAX_FAILURE_KINDS`] count as
    /// [`OTHER_FAILURES`]); the first sample of a kind is kept.
    pub fn add_failures(&mut self, kind: &str, count: u64, sample: &str) {
        let kind = if self.failure_kinds.contains_key(kind)
            || self.failure_kinds.len() < MAX_FAILURE_KINDS
        {
            kind
        } else {
            OTHER_FAILURES
        };
        let f = self.failure_kinds.entry(kind.to_string()).or_default();
        f.count = f.count.saturating_add(count);
        if f.sample.is_empty() {
            f.sample = clip_sample(sample.to_string());
        }
    }

    /// Its histograms in the wire's order: latency, then the phases in the order of
    /// [`Phases::NAMES`].
    pub(crate) fn histograms_mut(&mut self) -> [&mut Histogram<u64>; 5] {
        let p = &mut self.phases;
        [
            &mut self.latency_us,
            &mut p.connecting_us,
            &mut p.tls_handshaking_us,
            &mut p.waiting_us,
            &mut p.receiving_us,
        ]
    }

    /// Failed requests over all requests, in percent (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 * 100.0 / self.requests as f64
        }
    }

    fn to_proto(&self, name: &str) -> proto::EndpointStats {
        let latency = sparse::encode(&self.latency_us);
        let [connecting_us, tls_handshaking_us, waiting_us, receiving_us] = self.phases.encode();
        proto::EndpointStats {
            connecting_us,
            tls_handshaking_us,
            waiting_us,
            receiving_us,
            name: name.to_string(),
            requests: self.requests,
            failures: self.failures,
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            latency_us: latency.into(),
            errors: self.errors.clone().into_iter().collect(),
            failure_counts: self
                .failure_kinds
                .iter()
                .map(|(k, f)| (k.clone(), f.count))
                .collect(),
            failure_samples: self
                .failure_kinds
                .iter()
                .map(|(k, f)| (k.clone(), f.sample.clone()))
                .collect(),
        }
    }
}

/// Decodes a histogram from the wire, refusing configurations we never send (see
/// [`WireHistogram::check`]).
#[cfg(test)]
fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    WireHistogram::check(bytes).map(|w| w.to_histogram())
}

/// Most checks accepted in one interval from the wire.
const MAX_WIRE_CHECKS: usize = 10_000;

/// How often one check held and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckCount {
    pub passes: u64,
    pub fails: u64,
}

/// How the instances of one flow ended: run to their last step, or ended by a failed step
/// (instances cut by the end of the run are neither), and how long completed ones took.
#[derive(Clone, Debug)]
pub struct FlowCount {
    pub completed: u64,
    pub failed: u64,
    /// Microseconds from a completed instance's first request to its last response (think
    /// times included).
    pub duration_us: Histogram<u64>,
}

impl Default for FlowCount {
    fn default() -> Self {
        FlowCount {
            completed: 0,
            failed: 0,
            duration_us: new_histogram(),
        }
    }
}

/// Statistics of every endpoint over one interval (or a merge of many).
#[derive(Clone, Debug, Default)]
pub struct IntervalStats {
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// A scenario with `targets:`: the same requests by target base URL (its `Display`
    /// form); empty otherwise.
    pub targets: BTreeMap<String, EndpointStats>,
    /// Open model: arrivals that were due but never sent.
    pub dropped: u64,
    /// Flow steps' checks by label (`step: rule`).
    pub checks: BTreeMap<String, CheckCount>,
    /// Flows by name.
    pub flows: BTreeMap<String, FlowCount>,
    /// Each injector's resources over the interval, by slave id (merged: each field's peak).
    /// A slave sends its own under the empty key, [`IntervalStats::REPORTER`]; the master
    /// files it under the sender's id ([`IntervalStats::merge_from`]).
    pub injectors: BTreeMap<String, Resources>,
}

impl IntervalStats {
    /// The key of the sending slave's own entry in `injectors`, as it comes off the wire.
    pub const REPORTER: &'static str = "";

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &IntervalStats) {
        self.merge_from(other, Self::REPORTER);
    }

    /// Files an injector's resources under `key`, keeping each field's peak.
    pub(crate) fn add_resources(&mut self, key: &str, r: &Resources) {
        match self.injectors.get_mut(key) {
            Some(mine) => mine.peak(r),
            None => {
                self.injectors.insert(key.to_string(), *r);
            }
        }
    }

    /// Adds `other`, an interval `reporter` sent, into `self`: its own resources (under
    /// [`IntervalStats::REPORTER`]) are filed under `reporter`.
    pub fn merge_from(&mut self, other: &IntervalStats, reporter: &str) {
        for (slave, r) in &other.injectors {
            let key = if slave == Self::REPORTER {
                reporter
            } else {
                slave
            };
            self.add_resources(key, r);
        }
        for (name, e) in &other.endpoints {
            self.endpoints.entry(name.clone()).or_default().merge(e);
        }
        for (url, e) in &other.targets {
            self.targets.entry(url.clone()).or_default().merge(e);
        }
        self.dropped = self.dropped.saturating_add(other.dropped);
        for (label, c) in &other.checks {
            let mine = self.checks.entry(label.clone()).or_default();
            mine.passes = mine.passes.saturating_add(c.passes);
            mine.fails = mine.fails.saturating_add(c.fails);
        }
        for (name, f) in &other.flows {
            let mine = self.flows.entry(name.clone()).or_default();
            mine.completed = mine.completed.saturating_add(f.completed);
            mine.failed = mine.failed.saturating_add(f.failed);
            let _ = mine.duration_us.add(&f.duration_us);
        }
    }

    /// All endpoints merged into one.
    pub fn total(&self) -> EndpointStats {
        let mut t = EndpointStats::default();
        for e in self.endpoints.values() {
            t.merge(e);
        }
        t
    }

    /// Requests over all endpoints.
    pub fn requests(&self) -> u64 {
        self.endpoints.values().map(|e| e.requests).sum()
    }

    /// The wire form; the caller sets run id, index and `last`.
    pub fn to_proto(&self, run_id: &str, index: u64, last: bool) -> proto::StatsInterval {
        proto::StatsInterval {
            run_id: run_id.to_string(),
            index,
            last,
            endpoints: self
                .endpoints
                .iter()
                .map(|(name, e)| e.to_proto(name))
                .collect(),
            targets: self
                .targets
                .iter()
                .map(|(url, e)| e.to_proto(url))
                .collect(),
            dropped: self.dropped,
            checks: self
                .checks
                .iter()
                .map(|(label, c)| {
                    let counts = proto::CheckCounts {
                        passes: c.passes,
                        fails: c.fails,
                    };
                    (label.clone(), counts)
                })
                .collect(),
            flows: self
                .flows
                .iter()
                .map(|(name, f)| {
                    let duration_us = sparse::encode(&f.duration_us);
                    let counts = proto::FlowCounts {
                        completed: f.completed,
                        failed: f.failed,
                        duration_us: duration_us.into(),
                    };
                    (name.clone(), counts)
                })
                .collect(),
            resources: self.injectors.get(Self::REPORTER).map(Resources::to_proto),
            heartbeat: None,
        }
    }

    /// Reads and checks an interval from the wire.
    pub fn from_proto(p: &proto::StatsInterval) -> Result<Self, StatsError> {
        CheckedInterval::check(p).map(|c| c.to_stats())
    }
}

/// An interval from the wire that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    /// More (or longer-named) checks or flows than any scenario can have.
    #[error(
        "interval lists {0} checks or flows, more than {MAX_WIRE_CHECKS} or with overlong names"
    )]
    TooManyChecks(usize),
    /// More endpoints than any scenario can have.
    #[error("interval lists {0} endpoints, more than {MAX_WIRE_ENDPOINTS}")]
    TooManyEndpoints(usize),
    /// More targets than any scenario can have, one twice, or an empty or overlong URL.
    #[error("interval lists {0} targets: more than {MAX_TARGETS}, one twice or a bad URL", MAX_TARGETS = crate::scenario::MAX_TARGETS)]
    BadTargets(usize),
    /// The same endpoint twice.
    #[error("endpoint `{0}` appears twice in one interval")]
    DuplicateEndpoint(String),
    /// An empty or overlong endpoint name.
    #[error("endpoint name empty or longer than 100 bytes")]
    BadName,
    /// Too many or overlong error class keys.
    #[error("endpoint `{0}` has too many error classes")]
    TooManyErrorClasses(String),
    /// The latency histogram is malformed or of a foreign configuration.
    #[error("endpoint `{0}`: {1}")]
    Histogram(String, String),
    /// More latency samples than requests.
    #[error("endpoint `{0}` has more latency samples than requests")]
    Inconsistent(String),
}

#[cfg(test)]
mod tests;
