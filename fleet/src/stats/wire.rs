//! Intervals read in place from the wire, and merged without decoding their histograms whole.
//!
//! A slave's interval holds a few dozen samples per histogram, but an HDR histogram's counts
//! array has thousands of buckets (8192 for latencies up to 200 ms at 3 significant digits).
//! Decoding it into a [`Histogram`] allocates and zeroes that array, and adding it to a merged
//! histogram walks it: at 10,000 slaves with 10 endpoints that was most of the master's CPU.
//! Here an interval is checked once ([`CheckedInterval::check`]: every rule the decoder ever
//! enforced) and each histogram's non-zero buckets are added straight from its encoding:
//! Lobster's sparse words ([`super::sparse`], what slaves and the run store write now) or
//! HdrHistogram's uncompressed V2 format (what they wrote before: a 40-byte header, then
//! counts as zig-zag LEB128 numbers, a negative number being a run of empty buckets; runs
//! stored by earlier versions hold it). Adding bucket `i`'s count at the
//! lowest value of that bucket lands it in the same bucket of a histogram of the same
//! configuration, so the merge is the same as decoding and adding (proptested in `tests.rs`).
//!
//! The check reads every number anyway (to bound the indexes and count the samples), so it
//! keeps what it read: each non-empty bucket as one word ([`Decoded`]), up to
//! [`DECODED_LIMIT`] words per interval, and the merge adds those instead of reading the
//! encoding a second time (at thousands of slaves, the two passes were a third of the
//! master's core).

use std::collections::HashSet;

use hdrhistogram::Histogram;

use super::fused::{Adding, EntrySinks, Map, Taken};
use super::pending::Pending;
use super::{
    CheckCount, FlowCount, IntervalStats, MAX_SAMPLE_BYTES, MAX_WIRE_CHECKS, MAX_WIRE_ENDPOINTS,
    MAX_WIRE_ERROR_KEYS, MAX_WIRE_HIGHEST, Resources, SIGFIG, StatsError, V2_COOKIE,
};
use crate::proto;

/// Bytes of a V2 header.
const HEADER: usize = 40;
/// log2 of half the sub-buckets per bucket for 3 significant digits and lowest value 1
/// (2048 sub-buckets: the smallest power of two ≥ 2 × 10³).
const HALF_MAGNITUDE: u32 = 10;
const HALF_COUNT: usize = 1 << HALF_MAGNITUDE;

/// The lowest value of bucket `index` of a histogram with our configuration.
pub(super) fn value_at(index: usize) -> u64 {
    let bucket = (index >> HALF_MAGNITUDE) as i64 - 1;
    let sub = (index & (HALF_COUNT - 1)) + HALF_COUNT;
    if bucket < 0 {
        (sub - HALF_COUNT) as u64
    } else {
        (sub as u64) << bucket
    }
}

/// Buckets of a histogram of our configuration whose highest trackable value is `highest`
/// (as HdrHistogram sizes its counts array: enough buckets that the untrackable starts above
/// `highest`, each of half the sub-buckets, plus the first half).
pub(super) fn counts_len(highest: u64) -> usize {
    let mut smallest_untrackable: u64 = (HALF_COUNT as u64) * 2;
    let mut buckets = 1usize;
    while smallest_untrackable <= highest {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * HALF_COUNT
}

/// A histogram's encoding whose header is ours and whose counts decode.
#[derive(Clone, Copy, Debug)]
pub struct WireHistogram<'a> {
    /// Its buckets: V2's numbers after its header, or the sparse encoding's words after its
    /// cookie.
    payload: &'a [u8],
    /// Whether `payload` is sparse ([`super::sparse`]) rather than V2.
    sparse: bool,
    /// Samples it holds.
    len: u64,
    /// Where its non-empty buckets are in its interval's [`Decoded`] words (start, end), when
    /// the check kept them.
    decoded: Option<(u32, u32)>,
}

/// Most words an interval's check keeps ([`Decoded`]): 512 KiB. Past it the rest of its
/// histograms are read from their encoding again when merged (a slave's second holds a few
/// thousand non-empty buckets; an encoding of up to 16 MiB could hold millions).
const DECODED_LIMIT: usize = 1 << 16;
/// Bits of a [`Decoded`] word that hold the count; the bucket index is above them.
const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The non-empty buckets an interval's check read, each a word `index << 48 | count`
/// (indexes are below 2¹⁶; a count of 2⁴⁸ or more is split over several words of the same
/// index, which add up to it).
#[derive(Debug, Default)]
pub(super) struct Decoded {
    words: Vec<u64>,
}

impl Decoded {
    /// Keeps `count` samples of bucket `index`; false once [`DECODED_LIMIT`] is reached.
    #[inline]
    fn keep(&mut self, index: usize, mut count: u64) -> bool {
        loop {
            if self.words.len() >= DECODED_LIMIT {
                return false;
            }
            let part = count.min(COUNT_MASK);
            self.words.push(((index as u64) << COUNT_BITS) | part);
            count -= part;
            if count == 0 {
                return true;
            }
        }
    }

    /// The buckets kept for `range`: (index, count) pairs.
    #[inline]
    fn buckets(&self, (start, end): (u32, u32)) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.words[start as usize..end as usize]
            .iter()
            .map(|w| ((w >> COUNT_BITS) as usize, w & COUNT_MASK))
    }
}

/// Where a histogram's check puts the buckets it reads.
pub(super) enum Sink<'d> {
    /// Nowhere.
    Nowhere,
    /// Kept as words, while there is room (then nowhere: the merge reads the encoding again).
    Keep(&'d mut Decoded),
    /// Added into counts at once (the single pass of `fused.rs`, which takes them back out if
    /// the interval is refused).
    Add(&'d mut super::pending::Counts),
}

/// What a histogram's check counts as it reads its buckets.
struct Tally<'d> {
    /// The highest bucket index its configuration has.
    last: usize,
    /// Samples so far.
    len: u64,
    /// Buckets passed to `sink` so far.
    taken: u32,
    sink: Sink<'d>,
}

impl Tally<'_> {
    /// Counts bucket `index`'s samples, refusing an index beyond its highest value and a sum
    /// past 2⁶⁴, and passes the bucket to its sink.
    #[inline(always)]
    fn add(&mut self, index: usize, count: u64) -> Result<(), String> {
        if index > self.last {
            return Err("histogram counts beyond its highest value".to_string());
        }
        self.len = self
            .len
            .checked_add(count)
            .ok_or("histogram counts overflow")?;
        match &mut self.sink {
            Sink::Nowhere => {}
            Sink::Keep(d) => {
                if !d.keep(index, count) {
                    self.sink = Sink::Nowhere;
                }
            }
            Sink::Add(c) => c.add(index, count),
        }
        self.taken += 1;
        Ok(())
    }
}

impl<'a> WireHistogram<'a> {
    /// Checks an encoding: empty (no samples), sparse ([`super::sparse`]: what Lobster
    /// writes), or an uncompressed V2 histogram (what earlier versions wrote, still in stored
    /// runs) with 3 significant digits, lowest value 1, a highest value up to 2⁴² and counts
    /// that decode within it (a foreign configuration could make a decoder allocate without
    /// bound).
    pub fn check(bytes: &'a [u8]) -> Result<Self, String> {
        Self::check_keeping(bytes, None)
    }

    /// As [`WireHistogram::check`], keeping its non-empty buckets in `decoded` while there is
    /// room.
    fn check_keeping(bytes: &'a [u8], decoded: Option<&mut Decoded>) -> Result<Self, String> {
        Self::check_into(bytes, decoded.map_or(Sink::Nowhere, Sink::Keep)).0
    }

    /// As [`WireHistogram::check`], passing its non-empty buckets to `sink` as it reads them;
    /// with how many it passed, also when it is refused (`fused.rs` takes back that many).
    pub(super) fn check_into(bytes: &'a [u8], sink: Sink<'_>) -> (Result<Self, String>, u32) {
        if bytes.is_empty() {
            let empty = WireHistogram {
                payload: bytes,
                sparse: false,
                len: 0,
                decoded: None,
            };
            return (Ok(empty), 0);
        }
        let (payload, last, sparse) = match Self::header(bytes) {
            Ok(Some(highest)) => (&bytes[HEADER..], counts_len(highest) - 1, false),
            Ok(None) => (&bytes[4..], counts_len(MAX_WIRE_HIGHEST) - 1, true),
            Err(e) => return (Err(e), 0),
        };
        let start = match &sink {
            Sink::Keep(d) => Some(d.words.len()),
            _ => None,
        };
        let mut tally = Tally {
            last,
            len: 0,
            taken: 0,
            sink,
        };
        // Each reader with a call of its own, so that each inlines it.
        let read = if sparse {
            super::sparse::buckets(payload, |index, count| tally.add(index, count))
        } else {
            indexed(payload, |index, count| tally.add(index, count))
        };
        let Tally {
            len, taken, sink, ..
        } = tally;
        // Kept whole, or not at all (a histogram partly kept is read from its encoding).
        let decoded = match (sink, start) {
            (Sink::Keep(d), Some(start)) if read.is_ok() => {
                Some((start as u32, d.words.len() as u32))
            }
            _ => None,
        };
        let checked = read.map(|()| WireHistogram {
            payload,
            sparse,
            len,
            decoded,
        });
        (checked, taken)
    }

    /// Takes the first `taken` buckets of `bytes` (an encoding whose check passed that many
    /// to [`Sink::Add`]) back out of `counts`.
    pub(super) fn take_back(bytes: &[u8], taken: u32, counts: &mut super::pending::Counts) {
        let (payload, sparse) = match Self::header(bytes) {
            Ok(Some(_)) => (&bytes[HEADER..], false),
            Ok(None) => (&bytes[4..], true),
            Err(_) => return,
        };
        let mut left = taken;
        // Stops after the last bucket taken (the error only ends the read).
        let _ = read_buckets(payload, sparse, |index, count| {
            if left == 0 {
                return Err(String::new());
            }
            counts.sub(index, count);
            left -= 1;
            Ok(())
        });
    }

    /// Checks the start of a non-empty encoding: `Some(highest trackable value)` for a V2
    /// header of our configuration, `None` for a sparse encoding with at least one bucket.
    fn header(bytes: &[u8]) -> Result<Option<u64>, String> {
        if bytes.len() >= 4 && bytes[..4] == super::sparse::SPARSE_COOKIE.to_be_bytes() {
            if bytes.len() == 4 {
                return Err("sparse histogram without buckets".into());
            }
            return Ok(None);
        }
        if bytes.len() < HEADER {
            return Err("histogram shorter than its header".into());
        }
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(0) != V2_COOKIE {
            return Err(
                "not a histogram encoding: neither Lobster's sparse words nor an uncompressed V2 histogram"
                    .into(),
            );
        }
        if u32_at(4) as usize != bytes.len() - HEADER {
            return Err("histogram length does not match its payload".into());
        }
        if u32_at(8) != 0 || f64::from_bits(u64_at(32)) != 1.0 {
            return Err("histogram uses normalizing offsets or double ratios".into());
        }
        if u32_at(12) != u32::from(SIGFIG) || u64_at(16) != 1 {
            return Err(format!(
                "histogram must have {SIGFIG} significant digits and lowest value 1"
            ));
        }
        let highest = u64_at(24);
        if !(2..=MAX_WIRE_HIGHEST).contains(&highest) {
            return Err(format!("histogram highest value {highest} out of range"));
        }
        Ok(Some(highest))
    }

    /// Samples it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds its samples to `h` (a histogram of our configuration, auto-resizing).
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        let _ = read_buckets(self.payload, self.sparse, |index, count| {
            let _ = h.record_n(value_at(index), count);
            Ok(())
        });
    }

    /// Calls `f(bucket index, count)` for each non-empty bucket: from the words its check
    /// kept in `decoded` when it kept them, else from its encoding.
    #[inline]
    fn each_bucket(&self, decoded: &Decoded, mut f: impl FnMut(usize, u64)) {
        match self.decoded {
            Some(range) => decoded
                .buckets(range)
                .for_each(|(index, count)| f(index, count)),
            None => {
                let _ = read_buckets(self.payload, self.sparse, |index, count| {
                    f(index, count);
                    Ok(())
                });
            }
        }
    }

    /// Adds its samples to `h` (a histogram of our configuration), as
    /// [`WireHistogram::add_to`] does, from the words its check kept in `decoded`.
    fn add_kept_to(&self, decoded: &Decoded, h: &mut Histogram<u64>) {
        self.each_bucket(decoded, |index, count| {
            let _ = h.record_n(value_at(index), count);
        });
    }

    /// Adds its samples to `counts`, bucket by bucket (see [`super::pending`]), from the words
    /// its check kept in `decoded`.
    pub(super) fn add_to_counts(&self, decoded: &Decoded, counts: &mut super::pending::Counts) {
        self.each_bucket(decoded, |index, count| counts.add(index, count));
    }

    /// A histogram of its samples.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = super::new_histogram();
        self.add_to(&mut h);
        h
    }
}

/// Calls `f(bucket index, count)` for each non-empty bucket of a checked histogram's
/// payload: sparse words or V2 numbers.
#[inline(always)]
fn read_buckets(
    payload: &[u8],
    sparse: bool,
    f: impl FnMut(usize, u64) -> Result<(), String>,
) -> Result<(), String> {
    if sparse {
        super::sparse::buckets(payload, f)
    } else {
        indexed(payload, f)
    }
}

/// Calls `f(bucket index, count)` for each non-empty bucket of a V2 payload (indexes below
/// 64 × 1024).
///
/// The master's hottest loop (every bucket of every slave's second, twice: checked, then
/// added), so the one- and two-byte numbers that make up nearly all of a slave's second are
/// read inline.
#[inline(always)]
fn indexed(
    payload: &[u8],
    mut f: impl FnMut(usize, u64) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0;
    let mut index: usize = 0;
    while let Some(&b0) = payload.get(at) {
        // One or two bytes without a branch on which: counts and runs of empty buckets mix
        // both at random, and a mispredicted branch per number was most of this loop.
        let b0 = u64::from(b0);
        let b1 = u64::from(payload.get(at + 1).copied().unwrap_or(0x80));
        let two = b0 >> 7;
        let raw = if two & (b1 >> 7) == 0 {
            at += 1 + two as usize;
            (b0 & 0x7f) | ((b1 * two) << 7)
        } else {
            // Three bytes or more, or a number cut off by the payload's end.
            let (raw, used) = varint(&payload[at..]).ok_or("histogram counts end mid-number")?;
            at += used;
            raw
        };
        let n = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if n < 0 {
            index = index
                .checked_add(n.unsigned_abs() as usize)
                .filter(|&i| i < (64 << HALF_MAGNITUDE))
                .ok_or("histogram counts beyond any value")?;
            continue;
        }
        if index >= (64 << HALF_MAGNITUDE) {
            return Err("histogram counts beyond any value".into());
        }
        if n > 0 {
            f(index, n as u64)?;
        }
        index += 1;
    }
    Ok(())
}

/// HdrHistogram's LEB128 variant: up to 8 bytes of 7 bits, a 9th byte of 8 bits.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Some((value | (u64::from(b) << 56), 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// One endpoint of a checked interval: its histograms, latency first, then the phases in the
/// order of [`super::Phases::NAMES`].
#[derive(Debug)]
struct CheckedEndpoint<'a> {
    wire: &'a proto::EndpointStats,
    histograms: [WireHistogram<'a>; 5],
}

impl CheckedEndpoint<'_> {
    /// Adds it into its entry of `into` (by its name).
    fn merge_into(
        &self,
        into: &mut std::collections::BTreeMap<String, super::EndpointStats>,
        decoded: &Decoded,
    ) {
        let mine = self.merge_counters(into);
        for (wire, h) in self.histograms.iter().zip(mine.histograms_mut()) {
            wire.add_kept_to(decoded, h);
        }
    }

    /// As [`CheckedEndpoint::merge_into`], its histograms added to `pending` instead (from
    /// the words its check kept in `decoded`).
    fn merge_deferred(
        &self,
        into: &mut std::collections::BTreeMap<String, super::EndpointStats>,
        pending: &mut super::pending::Histograms,
        decoded: &Decoded,
    ) {
        self.merge_counters(into);
        let slots = pending.slots(&self.wire.name);
        for (h, slot) in self.histograms.iter().zip(slots.iter_mut()) {
            h.add_to_counts(decoded, slot);
        }
    }

    /// Adds its counters (not its histograms) into its entry of `into`, which it returns.
    fn merge_counters<'m>(
        &self,
        into: &'m mut std::collections::BTreeMap<String, super::EndpointStats>,
    ) -> &'m mut super::EndpointStats {
        let w = self.wire;
        // Looked up before inserting, so the common case does not allocate the name.
        if !into.contains_key(&w.name) {
            into.insert(w.name.clone(), Default::default());
        }
        let mine = into.get_mut(&w.name).expect("inserted above");
        mine.requests = mine.requests.saturating_add(w.requests);
        mine.failures = mine.failures.saturating_add(w.failures.min(w.requests));
        mine.bytes_received = mine.bytes_received.saturating_add(w.bytes_received);
        mine.bytes_sent = mine.bytes_sent.saturating_add(w.bytes_sent);
        for (k, v) in &w.errors {
            let c = mine.errors.entry(k.clone()).or_default();
            *c = c.saturating_add(*v);
        }
        for (k, &count) in &w.failure_counts {
            let sample = w.failure_samples.get(k).map_or("", String::as_str);
            mine.add_failures(k, count, sample);
        }
        mine
    }
}

/// Checks an interval's per-target entries: at most [`crate::scenario::MAX_TARGETS`], each
/// URL once, 1 to 1000 bytes, each entry as an endpoint's.
fn check_targets<'a>(
    wire: &'a [proto::EndpointStats],
    decoded: &mut Decoded,
    mut adding: Option<&mut Adding<'_>>,
) -> Result<Vec<CheckedEndpoint<'a>>, StatsError> {
    let bad = || StatsError::BadTargets(wire.len());
    if wire.len() > crate::scenario::MAX_TARGETS {
        return Err(bad());
    }
    let mut urls = HashSet::with_capacity(wire.len());
    let mut out = Vec::with_capacity(wire.len());
    for (at, t) in wire.iter().enumerate() {
        if t.name.is_empty() || t.name.len() > 1000 || !urls.insert(t.name.as_str()) {
            return Err(bad());
        }
        let sinks = adding
            .as_deref_mut()
            .map(|a| a.entry(Map::Targets, at, &t.name));
        out.push(check_endpoint(t, decoded, sinks)?);
    }
    Ok(out)
}

/// Where [`CheckedInterval::merge_rest`] adds flow durations.
enum Durations<'p> {
    /// Into the merged statistics' histograms.
    Into,
    /// Into an open second's counts.
    Pending(&'p mut Pending),
    /// Nowhere: the check added them ([`Sink::Add`]).
    Added,
}

/// Memory for the buckets an interval's check keeps, kept from one check to the next
/// ([`CheckedInterval::check_in`]).
#[derive(Debug, Default)]
pub struct CheckRoom {
    pub(super) decoded: Decoded,
    /// What a single-pass check added so far (`fused.rs`).
    pub(super) journal: Vec<Taken>,
}

/// An interval from the wire that passed every check, ready to merge.
#[derive(Debug)]
pub struct CheckedInterval<'a> {
    wire: &'a proto::StatsInterval,
    endpoints: Vec<CheckedEndpoint<'a>>,
    /// The same requests by target (a scenario with `targets:`).
    targets: Vec<CheckedEndpoint<'a>>,
    flows: Vec<(&'a str, WireHistogram<'a>)>,
    /// The non-empty buckets of its histograms, as the check read them.
    decoded: Decoded,
}

impl<'a> CheckedInterval<'a> {
    /// Checks an interval: bounded endpoints, names, error keys, samples, checks and flows;
    /// histograms of our configuration; no more samples than requests (or completed flows).
    pub fn check(p: &'a proto::StatsInterval) -> Result<Self, StatsError> {
        Self::check_in(p, &mut CheckRoom::default())
    }

    /// As [`CheckedInterval::check`], keeping the buckets it reads in `room`'s memory, which
    /// [`CheckedInterval::give_back`] returns (an interval's check needs up to 512 KiB: a
    /// slave's second with 10 endpoints about 48 KiB, allocated and freed for each of
    /// thousands of intervals a second; glibc's `malloc` was 13.8 % of the master's samples
    /// at 10,000 slaves before this and `control/held.rs` holding less).
    pub fn check_in(p: &'a proto::StatsInterval, room: &mut CheckRoom) -> Result<Self, StatsError> {
        Self::check_with(p, &mut room.decoded, None)
    }

    /// The check, keeping the buckets it reads in `room`'s words or, when `adding`, adding
    /// them into its open second's counts at once (`fused.rs`).
    pub(super) fn check_with(
        p: &'a proto::StatsInterval,
        room: &mut Decoded,
        mut adding: Option<&mut Adding<'_>>,
    ) -> Result<Self, StatsError> {
        if p.endpoints.len() > MAX_WIRE_ENDPOINTS {
            return Err(StatsError::TooManyEndpoints(p.endpoints.len()));
        }
        let mut names = HashSet::with_capacity(p.endpoints.len());
        let mut endpoints = Vec::with_capacity(p.endpoints.len());
        let mut decoded = std::mem::take(room);
        decoded.words.clear();
        if adding.is_none() {
            // Each non-empty bucket takes a byte of its encoding at least: room for them all.
            let bytes: usize = p
                .endpoints
                .iter()
                .chain(&p.targets)
                .map(|e| {
                    e.latency_us.len()
                        + e.connecting_us.len()
                        + e.tls_handshaking_us.len()
                        + e.waiting_us.len()
                        + e.receiving_us.len()
                })
                .sum();
            decoded.words.reserve(bytes.min(DECODED_LIMIT));
        }
        for (at, e) in p.endpoints.iter().enumerate() {
            if e.name.is_empty() || e.name.len() > 100 {
                return Err(StatsError::BadName);
            }
            if !names.insert(e.name.as_str()) {
                return Err(StatsError::DuplicateEndpoint(e.name.clone()));
            }
            let sinks = adding
                .as_deref_mut()
                .map(|a| a.entry(Map::Endpoints, at, &e.name));
            endpoints.push(check_endpoint(e, &mut decoded, sinks)?);
        }
        let targets = check_targets(&p.targets, &mut decoded, adding.as_deref_mut())?;
        if p.checks.len() > MAX_WIRE_CHECKS || p.checks.keys().any(|k| k.len() > 1024) {
            return Err(StatsError::TooManyChecks(p.checks.len()));
        }
        if p.flows.len() > MAX_WIRE_CHECKS || p.flows.keys().any(|k| k.len() > 1024) {
            return Err(StatsError::TooManyChecks(p.flows.len()));
        }
        let mut flows = Vec::with_capacity(p.flows.len());
        for (at, (name, f)) in p.flows.iter().enumerate() {
            let h = match adding.as_deref_mut() {
                None => WireHistogram::check_keeping(&f.duration_us, Some(&mut decoded)),
                Some(a) => a.entry(Map::Flows, at, name).check(0, &f.duration_us),
            }
            .map_err(|why| StatsError::Histogram(name.clone(), why))?;
            if h.len() > f.completed {
                return Err(StatsError::Inconsistent(name.clone()));
            }
            flows.push((name.as_str(), h));
        }
        Ok(CheckedInterval {
            wire: p,
            endpoints,
            targets,
            flows,
            decoded,
        })
    }

    /// Returns the memory its check kept its buckets in to `room`, for the next check.
    pub fn give_back(self, room: &mut CheckRoom) {
        room.decoded = self.decoded;
    }

    /// Requests of every endpoint.
    pub fn requests(&self) -> u64 {
        self.endpoints.iter().map(|e| e.wire.requests).sum()
    }

    /// Failed requests of every endpoint (never more than its requests).
    pub fn failures(&self) -> u64 {
        self.endpoints
            .iter()
            .map(|e| e.wire.failures.min(e.wire.requests))
            .sum()
    }

    /// The sender's resources, when it sent them.
    pub fn resources(&self) -> Option<Resources> {
        self.wire.resources.as_ref().map(Resources::from_proto)
    }

    /// Adds the interval into `into`; its resources are filed under `reporter`.
    pub fn merge_into(&self, into: &mut IntervalStats, reporter: &str) {
        for e in &self.endpoints {
            e.merge_into(&mut into.endpoints, &self.decoded);
        }
        for t in &self.targets {
            t.merge_into(&mut into.targets, &self.decoded);
        }
        self.merge_rest(into, reporter, Durations::Into);
    }

    /// As [`CheckedInterval::merge_into`], but its histograms are added to `pending` bucket
    /// by bucket, to be recorded into `into` once, by [`Pending::finish`] (the master's open
    /// second: each slave's buckets land in an array, not a histogram).
    pub fn merge_deferred(&self, into: &mut IntervalStats, pending: &mut Pending, reporter: &str) {
        for e in &self.endpoints {
            e.merge_deferred(&mut into.endpoints, &mut pending.endpoints, &self.decoded);
        }
        for t in &self.targets {
            t.merge_deferred(&mut into.targets, &mut pending.targets, &self.decoded);
        }
        self.merge_rest(into, reporter, Durations::Pending(pending));
    }

    /// Its counters into `into` (resources under `reporter`), its histograms having been
    /// added by its check ([`Sink::Add`], `fused.rs`).
    pub(super) fn merge_counters_into(&self, into: &mut IntervalStats, reporter: &str) {
        for e in &self.endpoints {
            e.merge_counters(&mut into.endpoints);
        }
        for t in &self.targets {
            t.merge_counters(&mut into.targets);
        }
        self.merge_rest(into, reporter, Durations::Added);
    }

    /// Resources, dropped arrivals, checks and flows (their durations as `durations` says).
    fn merge_rest(&self, into: &mut IntervalStats, reporter: &str, durations: Durations<'_>) {
        if let Some(r) = self.resources() {
            into.add_resources(reporter, &r);
        }
        into.dropped = into.dropped.saturating_add(self.wire.dropped);
        for (label, c) in &self.wire.checks {
            let mine: &mut CheckCount = into.checks.entry(label.clone()).or_default();
            mine.passes = mine.passes.saturating_add(c.passes);
            mine.fails = mine.fails.saturating_add(c.fails);
        }
        let mut durations = durations;
        for (name, h) in &self.flows {
            let f = &self.wire.flows[*name];
            let mine: &mut FlowCount = into.flows.entry((*name).to_string()).or_default();
            mine.completed = mine.completed.saturating_add(f.completed);
            mine.failed = mine.failed.saturating_add(f.failed);
            match &mut durations {
                Durations::Into => h.add_kept_to(&self.decoded, &mut mine.duration_us),
                Durations::Pending(p) => {
                    h.add_to_counts(&self.decoded, &mut p.flows.slots(name)[0])
                }
                Durations::Added => {}
            }
        }
    }

    /// The interval as statistics of its own.
    pub fn to_stats(&self) -> IntervalStats {
        let mut s = IntervalStats::default();
        self.merge_into(&mut s, IntervalStats::REPORTER);
        s
    }
}

/// Statistics that add into an [`IntervalStats`]: an interval checked off the wire (the
/// master's path: no histogram is decoded whole) or decoded statistics.
pub trait Mergeable {
    /// Adds these statistics into `into`; the sender's own resources are filed under
    /// `reporter`.
    fn merge_into(&self, into: &mut IntervalStats, reporter: &str);
    /// As `merge_into`, histograms possibly deferred to `pending` (then recorded into `into`
    /// by [`Pending::finish`]).
    fn merge_deferred(&self, into: &mut IntervalStats, pending: &mut Pending, reporter: &str) {
        let _ = pending;
        self.merge_into(into, reporter);
    }
    /// Requests of every endpoint.
    fn requests(&self) -> u64;
    /// Failed requests of every endpoint.
    fn failures(&self) -> u64;
    /// The busiest injector's CPU in these statistics, percent ([`Resources::injector_cpu`]).
    fn injector_cpu(&self) -> Option<f64>;
}

impl Mergeable for CheckedInterval<'_> {
    fn merge_into(&self, into: &mut IntervalStats, reporter: &str) {
        CheckedInterval::merge_into(self, into, reporter);
    }
    fn merge_deferred(&self, into: &mut IntervalStats, pending: &mut Pending, reporter: &str) {
        CheckedInterval::merge_deferred(self, into, pending, reporter);
    }
    fn requests(&self) -> u64 {
        CheckedInterval::requests(self)
    }
    fn failures(&self) -> u64 {
        CheckedInterval::failures(self)
    }
    fn injector_cpu(&self) -> Option<f64> {
        self.resources().map(|r| r.injector_cpu())
    }
}

impl Mergeable for IntervalStats {
    fn merge_into(&self, into: &mut IntervalStats, reporter: &str) {
        into.merge_from(self, reporter);
    }
    fn requests(&self) -> u64 {
        IntervalStats::requests(self)
    }
    fn failures(&self) -> u64 {
        self.total().failures
    }
    fn injector_cpu(&self) -> Option<f64> {
        self.injectors
            .values()
            .map(|r| r.injector_cpu())
            .reduce(f64::max)
    }
}

fn check_endpoint<'a>(
    p: &'a proto::EndpointStats,
    decoded: &mut Decoded,
    mut adding: Option<EntrySinks<'_>>,
) -> Result<CheckedEndpoint<'a>, StatsError> {
    let keys_ok = |m: &std::collections::HashMap<String, u64>| {
        m.len() <= MAX_WIRE_ERROR_KEYS && m.keys().all(|k| k.len() <= 64)
    };
    if !keys_ok(&p.errors) || !keys_ok(&p.failure_counts) {
        return Err(StatsError::TooManyErrorClasses(p.name.clone()));
    }
    if p.failure_samples.len() > p.failure_counts.len()
        || p.failure_samples
            .iter()
            .any(|(k, v)| v.len() > MAX_SAMPLE_BYTES || !p.failure_counts.contains_key(k))
    {
        return Err(StatsError::TooManyErrorClasses(p.name.clone()));
    }
    let mut check = |slot: usize, bytes: &'a [u8]| match adding.as_mut() {
        None => WireHistogram::check_keeping(bytes, Some(decoded)),
        Some(sinks) => sinks.check(slot, bytes),
    };
    let latency =
        check(0, &p.latency_us).map_err(|why| StatsError::Histogram(p.name.clone(), why))?;
    if latency.len() > p.requests {
        return Err(StatsError::Inconsistent(p.name.clone()));
    }
    let phases = [
        &p.connecting_us[..],
        &p.tls_handshaking_us[..],
        &p.waiting_us[..],
        &p.receiving_us[..],
    ];
    let mut checked = [latency; 5];
    for (((slot, bytes), into), name) in (1..)
        .zip(phases)
        .zip(checked.iter_mut().skip(1))
        .zip(super::Phases::NAMES)
    {
        let h = check(slot, bytes)
            .map_err(|why| StatsError::Histogram(p.name.clone(), format!("{name}: {why}")))?;
        if h.len() > p.requests {
            return Err(StatsError::Histogram(
                p.name.clone(),
                format!("{name}: more samples than requests"),
            ));
        }
        *into = h;
    }
    Ok(CheckedEndpoint {
        wire: p,
        histograms: checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop `indexed` had before reading short numbers inline: every number through
    /// [`varint`].
    fn reference_indexed(payload: &[u8]) -> Result<Vec<(usize, u64)>, String> {
        let mut out = Vec::new();
        let (mut at, mut index) = (0, 0usize);
        while at < payload.len() {
            let (raw, used) = varint(&payload[at..]).ok_or("histogram counts end mid-number")?;
            at += used;
            let n = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            if n < 0 {
                index = index
                    .checked_add(n.unsigned_abs() as usize)
                    .filter(|&i| i < (64 << HALF_MAGNITUDE))
                    .ok_or("histogram counts beyond any value")?;
                continue;
            }
            if index >= (64 << HALF_MAGNITUDE) {
                return Err("histogram counts beyond any value".into());
            }
            if n > 0 {
                out.push((index, n as u64));
            }
            index += 1;
        }
        Ok(out)
    }

    proptest::proptest! {
        /// Numbers read inline (one or two bytes, without a branch on which) are what the
        /// LEB128 decoder reads, errors included (a number cut off by the end).
        #[test]
        fn inline_numbers_equal_the_reference_decoder(
            payload in proptest::collection::vec(
                proptest::prop_oneof![0u8..0x80, 0x80u8..=0xff, proptest::prelude::Just(0x80u8)],
                0..48,
            )
        ) {
            let mut got = Vec::new();
            let r = indexed(&payload, |i, c| {
                got.push((i, c));
                Ok(())
            });
            proptest::prop_assert_eq!(r.map(|()| got), reference_indexed(&payload));
        }
    }

    /// Our bucket layout is the hdrhistogram crate's: the same counts length for any highest
    /// value, and the same lowest value for every bucket.
    #[test]
    fn the_bucket_layout_is_the_crates() {
        for highest in [
            2,
            2047,
            2048,
            4095,
            4096,
            200_000,
            3_600_000_000,
            MAX_WIRE_HIGHEST,
        ] {
            let h: Histogram<u64> = Histogram::new_with_bounds(1, highest, SIGFIG).unwrap();
            assert_eq!(
                counts_len(highest),
                h.distinct_values(),
                "highest {highest}"
            );
        }
        let h: Histogram<u64> = Histogram::new_with_bounds(1, MAX_WIRE_HIGHEST, SIGFIG).unwrap();
        for index in (0..h.distinct_values()).step_by(7) {
            let v = value_at(index);
            assert_eq!(h.lowest_equivalent(v), v, "index {index}");
            let mut one = h.clone();
            one.record(v).unwrap();
            let recorded: Vec<u64> = one.iter_recorded().map(|r| r.value_iterated_to()).collect();
            assert_eq!(recorded, vec![h.highest_equivalent(v)], "index {index}");
            if index > 0 {
                assert!(value_at(index) > value_at(index - 1), "index {index}");
            }
        }
    }

    /// An interval past the words its check may keep, and a bucket whose count needs more
    /// than 48 bits: the histograms kept and the ones read again from their encoding merge
    /// exactly as the direct merge (decoding each encoding) does.
    #[test]
    fn past_the_kept_words_and_with_48_bit_counts_the_merge_is_the_same() {
        let mut st = IntervalStats::default();
        for name in ["a", "b", "c", "d", "e", "f"] {
            let mut e = super::super::EndpointStats::default();
            // About 6,800 distinct buckets each: six endpoints pass the 65,536 words.
            for v in 1..=50_000u64 {
                e.latency_us.record(v).unwrap();
                super::super::Phases::record(&mut e.phases.waiting_us, v);
            }
            e.latency_us.record_n(7, (1 << 50) + 3).unwrap();
            e.requests = e.latency_us.len();
            st.endpoints.insert(name.into(), e);
        }
        let wire = st.to_proto("r", 0, false);
        let c = CheckedInterval::check(&wire).unwrap();
        let kept = |e: usize, h: usize| c.endpoints[e].histograms[h].decoded.is_some();
        assert!(
            kept(0, 0) && kept(0, 3),
            "the first endpoint's buckets are kept"
        );
        assert!(
            !kept(5, 0) && !kept(5, 3),
            "the last endpoint's are past the limit"
        );
        assert!(c.decoded.words.len() <= DECODED_LIMIT);
        // The count past 48 bits is split over two words that add up to it.
        let seven: u64 = c
            .decoded
            .buckets(c.endpoints[0].histograms[0].decoded.unwrap())
            .filter(|&(i, _)| i == 7)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(seven, (1 << 50) + 4);

        let mut direct = IntervalStats::default();
        c.merge_into(&mut direct, "s");
        let mut deferred = IntervalStats::default();
        let mut pending = Pending::default();
        c.merge_deferred(&mut deferred, &mut pending, "s");
        pending.finish(&mut deferred);
        let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        for name in ["a", "f"] {
            let (d, m) = (&direct.endpoints[name], &deferred.endpoints[name]);
            assert_eq!(d.latency_us.len(), (1 << 50) + 50_003, "{name}");
            assert_eq!(buckets(&d.latency_us), buckets(&m.latency_us), "{name}");
            assert_eq!(
                buckets(&d.phases.waiting_us),
                buckets(&m.phases.waiting_us),
                "{name}"
            );
            assert_eq!(
                buckets(&st.endpoints[name].latency_us),
                buckets(&m.latency_us)
            );
        }
    }
}
