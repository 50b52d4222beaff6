//! Aggregation: merging the slaves' statistics intervals into fleet-wide ones.
//!
//! Intervals are keyed by (slave, index) and merged exactly once (a resent interval is a
//! no-op). Second `k` of the fleet closes when every active participant has reported it, or
//! at the latest a bounded wait (the caller's, the slaves' lease) after it ended; only closed
//! seconds are judged by the SLA rules, so they are judged on complete data unless a slave
//! was silent that long. An interval that still arrives after its second closed is merged
//! into its own second all the same (the series and the totals stay equal; the percentiles
//! of the [`KEPT`] most recent seconds are recomputed, older seconds get its counts) and
//! counted in `late_requests`, which the report shows.
//!
//! A closed second that holds a slave's own interval is handed out as a [`Compaction`] (its
//! merged statistics and who reported what), for the store to keep in place of the slaves'
//! own intervals (`compaction.rs`): the master stores an open second's intervals only that
//! way, merged (`control/held.rs`), so every such second is handed out, one reporter or many.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use lobster_fleet::proto;
use lobster_fleet::stats::{
    CheckRoom, CheckedInterval, IntervalStats, LatencySummary, Mergeable, Pending, StatsError,
};
use rangemap::RangeInclusiveSet;
use serde::{Deserialize, Serialize};

mod compaction;
pub use compaction::Compaction;

/// Closed seconds whose merged statistics are kept, so a late interval still updates their
/// percentiles.
pub const KEPT: usize = 60;

/// One closed fleet-wide second, as shown in the live table and kept in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub index: u64,
    pub requests: u64,
    pub failures: u64,
    /// Slaves that reported this second.
    pub slaves: u32,
    pub latency_ms: Latency,
    /// p95 of each request phase that happened this second (`connecting`,
    /// `tls_handshaking`, `waiting`, `receiving`), in milliseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases_p95_ms: BTreeMap<String, f64>,
    /// Failures of this second by class (`status`, `timeout`, `connect`, `io`, `tls`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
    /// The load the scenario asked for in this second: users (closed model) or arrivals per
    /// second (open model); 0 while suspended. Set by the run when the second closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// The busiest injector's CPU this second, percent (`Resources::injector_cpu`); absent
    /// when no slave reported its resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injector_cpu: Option<f64>,
}

/// Latency figures of a point (milliseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<LatencySummary> for Latency {
    fn from(s: LatencySummary) -> Self {
        Latency {
            p50: s.p50,
            p95: s.p95,
            p99: s.p99,
            max: s.max,
        }
    }
}

#[derive(Default)]
struct Bucket {
    stats: IntervalStats,
    /// An open second's histograms as bucket counts, recorded into `stats` when it closes.
    pending: Pending,
    /// The slaves that reported this second, with the requests each reported in it. A hash
    /// map: one insert per slave per second (a B-tree of thousands of uids compared dozens
    /// of strings per insert); sorted into the [`Compaction`] when the second is stored.
    reporters: HashMap<String, u64>,
    /// Holds a slave's own interval (not only stored merged seconds, `add_merged`): its
    /// compaction is not in the store yet.
    fresh: bool,
    /// Took a late interval since it was last handed out as a [`Compaction`].
    late: bool,
}

impl Bucket {
    /// Its reporters sorted by uid, as a [`Compaction`] keeps them.
    fn sorted_reporters(&self) -> BTreeMap<String, u64> {
        self.reporters
            .iter()
            .map(|(u, &n)| (u.clone(), n))
            .collect()
    }
}

/// What one slave sent over a run, from its own intervals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlaveTotals {
    /// Requests it sent (failed ones included).
    pub requests: u64,
    /// The first second it reported (a slave that joined mid-run starts late).
    pub first_index: u64,
}

/// A fleet-wide interval just closed.
pub struct Closed {
    pub index: u64,
    pub stats: IntervalStats,
    pub point: Point,
}

/// The merge state of one run.
#[derive(Default)]
pub struct Aggregator {
    open: BTreeMap<u64, Bucket>,
    /// Indexes below this are closed.
    next_to_close: u64,
    /// The interval indexes merged so far, per slave, as ranges: a slave's indexes arrive
    /// nearly in order, so this stays a few ranges per slave however long the run (a set of
    /// (slave, index) pairs would grow by one entry per slave per second of an overnight run).
    seen: HashMap<String, RangeInclusiveSet<u64>>,
    /// Everything received, exactly once, as of the closed seconds: an interval of an open
    /// second is added when its second closes (the whole merged second at once, so the
    /// master adds each slave's buckets once, not twice), a late one at once. After
    /// [`Aggregator::close_all`] it holds every interval.
    pub total: IntervalStats,
    /// Per slave (the key `add` was given): its requests and first second.
    pub per_slave: HashMap<String, SlaveTotals>,
    /// Closed seconds, in order (`series[k].index == k`).
    pub series: Vec<Point>,
    /// The merged statistics and reporters of the last [`KEPT`] closed seconds.
    recent: VecDeque<(u64, Bucket)>,
    /// Requests that arrived after their second had closed (merged into it, but after the
    /// SLA rules had judged it).
    pub late_requests: u64,
    /// Recent seconds that took a late interval since their percentiles were last computed
    /// (their counts are current; [`Aggregator::refresh`] recomputes the rest once).
    stale: BTreeSet<u64>,
    /// Late intervals' histograms on their way into `total`, as bucket counts (recorded by
    /// [`Aggregator::refresh`]): a master that fell behind gets mostly late intervals, and
    /// recording each bucket of each into a histogram at once doubled its cost per interval.
    late: Pending,
    /// Closed seconds merged since [`Aggregator::take_compactions`] last took them.
    compactions: Vec<Compaction>,
}

impl Aggregator {
    /// Adds one slave's interval; returns false if it was already merged.
    pub fn add<S: Mergeable + ?Sized>(&mut self, slave: &str, index: u64, stats: &S) -> bool {
        if self.has(slave, index) {
            return false;
        }
        let requests = stats.requests();
        self.note(slave, index, requests);
        if index < self.next_to_close {
            self.merge_late(index, stats, slave, &[(slave, requests)]);
        } else {
            let b = self.open.entry(index).or_default();
            stats.merge_deferred(&mut b.stats, &mut b.pending, slave);
            b.reporters.insert(slave.to_string(), requests);
            b.fresh = true;
        }
        true
    }

    /// Checks `slave`'s interval `index` of a second still open and merges it, in one pass
    /// over its histograms ([`CheckedInterval::check_and_merge`]); its requests, or `None`
    /// if it was merged already (nothing is checked then). A refused interval leaves the
    /// aggregator as it was (no second opened for it either).
    pub fn check_and_add_open(
        &mut self,
        slave: &str,
        index: u64,
        wire: &proto::StatsInterval,
        room: &mut CheckRoom,
    ) -> Result<Option<u64>, StatsError> {
        debug_assert!(self.is_open(index), "second {index} is closed");
        if self.has(slave, index) {
            return Ok(None);
        }
        let opened = !self.open.contains_key(&index);
        let b = self.open.entry(index).or_default();
        match CheckedInterval::check_and_merge(wire, room, &mut b.stats, &mut b.pending, slave) {
            Ok(requests) => {
                b.reporters.insert(slave.to_string(), requests);
                b.fresh = true;
                self.note(slave, index, requests);
                Ok(Some(requests))
            }
            Err(e) => {
                if opened {
                    self.open.remove(&index);
                }
                Err(e)
            }
        }
    }

    /// Records that `slave`'s interval `index`, of `requests` requests, is merged: in the
    /// merged indexes and in the slave's own totals.
    fn note(&mut self, slave: &str, index: u64, requests: u64) {
        match self.seen.get_mut(slave) {
            Some(set) => set.insert(index..=index),
            None => {
                let mut set = RangeInclusiveSet::new();
                set.insert(index..=index);
                self.seen.insert(slave.to_string(), set);
            }
        }
        let mine = match self.per_slave.get_mut(slave) {
            Some(mine) => mine,
            None => self
                .per_slave
                .entry(slave.to_string())
                .or_insert(SlaveTotals {
                    requests: 0,
                    first_index: index,
                }),
        };
        mine.requests += requests;
        mine.first_index = mine.first_index.min(index);
    }

    /// Merges statistics of a closed second (one slave's interval, or the merge of several:
    /// `slaves` with the requests of each) into the totals and that second's point. The
    /// sender's own resources are filed under `reporter`.
    fn merge_late<S: Mergeable + ?Sized>(
        &mut self,
        index: u64,
        stats: &S,
        reporter: &str,
        slaves: &[(&str, u64)],
    ) {
        stats.merge_deferred(&mut self.total, &mut self.late, reporter);
        self.late_requests += stats.requests();
        let Some(point) = self.series.get_mut(index as usize) else {
            return;
        };
        // Counts now; a recent second's percentiles (which cost a walk of its histograms)
        // once per refresh, however many late intervals it took: when a saturated master
        // falls behind, most intervals are late, and recomputing per interval fed the
        // overload.
        point.requests += stats.requests();
        point.failures += stats.failures();
        point.slaves += slaves.len() as u32;
        let cpu = stats.injector_cpu();
        point.injector_cpu = point.injector_cpu.into_iter().chain(cpu).reduce(f64::max);
        if let Some((_, b)) = self.recent.iter_mut().find(|(k, _)| *k == index) {
            stats.merge_deferred(&mut b.stats, &mut b.pending, reporter);
            b.reporters
                .extend(slaves.iter().map(|&(uid, n)| (uid.to_string(), n)));
            b.late = true;
            self.stale.insert(index);
        }
    }

    /// Records late intervals' histograms into the totals and recomputes the points of
    /// recent seconds that took late intervals (percentiles, errors; their load stays).
    /// Called on every close, so a histogram or a point is at most one tick behind the
    /// counts.
    pub fn refresh(&mut self) {
        std::mem::take(&mut self.late).finish(&mut self.total);
        for index in std::mem::take(&mut self.stale) {
            let (Some((_, b)), Some(point)) = (
                self.recent.iter_mut().find(|(k, _)| *k == index),
                self.series.get_mut(index as usize),
            ) else {
                continue;
            };
            std::mem::take(&mut b.pending).finish(&mut b.stats);
            let load = point.load;
            *point = point_of(index, b);
            point.load = load;
        }
    }

    /// Whether second `index` is still open (an interval of it is merged into the second,
    /// not late).
    pub fn is_open(&self, index: u64) -> bool {
        index >= self.next_to_close
    }

    /// Whether second `index` is closed and still one of the [`KEPT`] recent seconds, whose
    /// merge is kept (a late interval of it is merged into it, and it can be stored again
    /// whole: [`Aggregator::snapshot`]).
    pub fn is_recent(&self, index: u64) -> bool {
        self.recent_bucket(index).is_some()
    }

    /// The merge of recent closed second `index`.
    fn recent_bucket(&self, index: u64) -> Option<&Bucket> {
        // Closed in order, so kept in order: the window is `front..next_to_close`.
        let (first, _) = self.recent.front()?;
        let at = usize::try_from(index.checked_sub(*first)?).ok()?;
        self.recent
            .get(at)
            .filter(|(k, _)| *k == index)
            .map(|(_, b)| b)
    }

    /// Seconds open now (holding intervals, not closed).
    #[cfg(test)]
    pub fn open_seconds(&self) -> usize {
        self.open.len()
    }

    /// Whether `slave`'s interval `index` was already merged.
    pub fn has(&self, slave: &str, index: u64) -> bool {
        self.seen.get(slave).is_some_and(|set| set.contains(&index))
    }

    /// Closes every second that is complete (`complete` says so of its reporters: every
    /// slave still expected reported it) or ended more than `wait` ago: `elapsed` is the
    /// run's wall time now.
    pub fn close_ready(
        &mut self,
        elapsed: Duration,
        complete: impl Fn(&HashMap<String, u64>) -> bool,
        wait: Duration,
    ) -> Vec<Closed> {
        self.refresh();
        let mut out = Vec::new();
        loop {
            let k = self.next_to_close;
            let end = Duration::from_secs(k + 1);
            if elapsed < end {
                break;
            }
            let complete = self.open.get(&k).is_some_and(|b| complete(&b.reporters));
            if !(complete || elapsed >= end + wait) {
                break;
            }
            out.push(self.close(k));
        }
        out
    }

    /// Closes every second below `below` (a run rebuilt from the store, whose rows of those
    /// seconds are all merged).
    pub fn close_below(&mut self, below: u64) -> Vec<Closed> {
        self.refresh();
        let mut out = Vec::new();
        while self.next_to_close < below {
            let k = self.next_to_close;
            out.push(self.close(k));
        }
        out
    }

    /// Closes everything still open (the run is over).
    pub fn close_all(&mut self) -> Vec<Closed> {
        self.refresh();
        let last = self.open.keys().next_back().copied();
        let mut out = Vec::new();
        if let Some(last) = last {
            while self.next_to_close <= last {
                let k = self.next_to_close;
                out.push(self.close(k));
            }
        }
        // Kept seconds that took late intervals will not leave the window now: their
        // compactions are brought up to date here.
        for (k, b) in self.recent.iter_mut() {
            if b.late {
                b.late = false;
                self.compactions.push(Compaction {
                    index: *k,
                    stats: b.stats.clone(),
                    reporters: b.sorted_reporters(),
                });
            }
        }
        out
    }

    fn close(&mut self, k: u64) -> Closed {
        let mut b = self.open.remove(&k).unwrap_or_default();
        std::mem::take(&mut b.pending).finish(&mut b.stats);
        self.next_to_close = k + 1;
        let point = point_of(k, &b);
        self.total.merge(&b.stats);
        self.series.push(point.clone());
        let stats = b.stats.clone();
        if b.fresh && !b.reporters.is_empty() {
            self.compactions.push(Compaction {
                index: k,
                stats: stats.clone(),
                reporters: b.sorted_reporters(),
            });
        }
        self.recent.push_back((k, b));
        if self.recent.len() > KEPT
            && let Some((old, mut b)) = self.recent.pop_front()
            && b.late
        {
            // Late intervals went into it after its compaction: the store's copy is
            // replaced by the whole second. Later ones stay the slaves' own.
            std::mem::take(&mut b.pending).finish(&mut b.stats);
            let reporters = b.sorted_reporters();
            self.compactions.push(Compaction {
                index: old,
                stats: b.stats,
                reporters,
            });
        }
        Closed {
            index: k,
            stats,
            point,
        }
    }
}

fn point_of(k: u64, b: &Bucket) -> Point {
    let t = b.stats.total();
    Point {
        index: k,
        requests: t.requests,
        failures: t.failures,
        slaves: b.reporters.len() as u32,
        latency_ms: LatencySummary::of(&t.latency_us).into(),
        phases_p95_ms: t
            .phases
            .each()
            .into_iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(name, h)| (name.to_string(), h.value_at_quantile(0.95) as f64 / 1000.0))
            .collect(),
        errors: t.errors,
        load: None,
        injector_cpu: b
            .stats
            .injectors
            .values()
            .map(|r| r.injector_cpu())
            .reduce(f64::max),
    }
}

#[cfg(test)]
mod tests;
