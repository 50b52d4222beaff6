//! Aggregation: merging the slaves' statistics intervals into fleet-wide ones.
//!
//! Intervals are keyed by (slave, index) and merged exactly once (a resent interval is a
//! no-op). Interval `k` of the fleet closes when every active participant has reported it, or
//! at the latest [`GRACE`] after it ended; what arrives later still counts in the run's totals
//! (never lost) but not in the per-second series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use lobster_fleet::stats::{IntervalStats, LatencySummary};
use rangemap::RangeInclusiveSet;
use serde::{Deserialize, Serialize};

/// How long after its end an interval waits for slow reporters.
pub const GRACE: Duration = Duration::from_millis(1000);

/// One closed fleet-wide second, as shown in the live table and kept in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub index: u64,
    pub requests: u64,
    pub failures: u64,
    /// Slaves that reported this second.
    pub slaves: u32,
    pub latency_ms: Latency,
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
    reporters: BTreeSet<String>,
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
    /// Everything received, exactly once.
    pub total: IntervalStats,
    /// Closed seconds, in order.
    pub series: Vec<Point>,
    /// Requests that arrived after their second had closed (in totals, not in the series).
    pub late_requests: u64,
}

impl Aggregator {
    /// Adds one slave's interval; returns false if it was already merged.
    pub fn add(&mut self, slave: &str, index: u64, stats: &IntervalStats) -> bool {
        if self.has(slave, index) {
            return false;
        }
        match self.seen.get_mut(slave) {
            Some(set) => set.insert(index..=index),
            None => {
                let mut set = RangeInclusiveSet::new();
                set.insert(index..=index);
                self.seen.insert(slave.to_string(), set);
            }
        }
        self.total.merge(stats);
        if index < self.next_to_close {
            self.late_requests += stats.requests();
        } else {
            let b = self.open.entry(index).or_default();
            b.stats.merge(stats);
            b.reporters.insert(slave.to_string());
        }
        true
    }

    /// Whether `slave`'s interval `index` was already merged.
    pub fn has(&self, slave: &str, index: u64) -> bool {
        self.seen.get(slave).is_some_and(|set| set.contains(&index))
    }

    /// Closes every interval that is complete (all of `expected` reported it) or whose grace
    /// has passed: `elapsed` is the run's wall time now.
    pub fn close_ready(&mut self, elapsed: Duration, expected: &BTreeSet<String>) -> Vec<Closed> {
        let mut out = Vec::new();
        loop {
            let k = self.next_to_close;
            let end = Duration::from_secs(k + 1);
            if elapsed < end {
                break;
            }
            let complete = self
                .open
                .get(&k)
                .is_some_and(|b| expected.iter().all(|s| b.reporters.contains(s)));
            if !(complete || elapsed >= end + GRACE) {
                break;
            }
            out.push(self.close(k));
        }
        out
    }

    /// Closes everything still open (the run is over).
    pub fn close_all(&mut self) -> Vec<Closed> {
        let last = self.open.keys().next_back().copied();
        let mut out = Vec::new();
        if let Some(last) = last {
            while self.next_to_close <= last {
                let k = self.next_to_close;
                out.push(self.close(k));
            }
        }
        out
    }

    fn close(&mut self, k: u64) -> Closed {
        let b = self.open.remove(&k).unwrap_or_default();
        self.next_to_close = k + 1;
        let t = b.stats.total();
        let point = Point {
            index: k,
            requests: t.requests,
            failures: t.failures,
            slaves: b.reporters.len() as u32,
            latency_ms: LatencySummary::of(&t.latency_us).into(),
        };
        self.series.push(point.clone());
        Closed {
            index: k,
            stats: b.stats,
            point,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::stats::EndpointStats;

    fn stats(requests: u64) -> IntervalStats {
        let mut s = IntervalStats::default();
        let mut e = EndpointStats {
            requests,
            ..Default::default()
        };
        for _ in 0..requests {
            e.latency_us.record(1000).unwrap();
        }
        s.endpoints.insert("a".into(), e);
        s
    }

    #[test]
    fn closes_when_complete_or_late_and_never_loses() {
        let mut a = Aggregator::default();
        let expected: BTreeSet<String> = ["x".to_string(), "y".to_string()].into();
        assert!(a.add("x", 0, &stats(5)));
        assert!(!a.add("x", 0, &stats(5)), "a resend is a no-op");
        // Only x reported second 0: not closed before its grace.
        assert!(
            a.close_ready(Duration::from_millis(1200), &expected)
                .is_empty()
        );
        assert!(a.add("y", 0, &stats(7)));
        let closed = a.close_ready(Duration::from_millis(1200), &expected);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].point.requests, 12);
        assert_eq!(closed[0].point.slaves, 2);
        // Second 1: y never reports; it closes after the grace.
        a.add("x", 1, &stats(1));
        assert!(
            a.close_ready(Duration::from_millis(2500), &expected)
                .is_empty()
        );
        assert_eq!(
            a.close_ready(Duration::from_millis(3000), &expected).len(),
            1
        );
        // y's second 1 arrives late: counted in the totals only.
        a.add("y", 1, &stats(4));
        assert_eq!(a.late_requests, 4);
        assert_eq!(a.total.requests(), 17);
        assert_eq!(a.series.iter().map(|p| p.requests).sum::<u64>(), 13);
    }

    proptest::proptest! {
        /// Exactly once, whatever the order and the resends: `add` agrees with a plain set of
        /// (slave, index) pairs.
        #[test]
        fn merges_each_interval_exactly_once(
            arrivals in proptest::collection::vec((0u8..3, 0u64..40), 0..300)
        ) {
            let mut a = Aggregator::default();
            let mut reference = std::collections::HashSet::new();
            for (slave, index) in arrivals {
                let uid = format!("s{slave}");
                let fresh = reference.insert((uid.clone(), index));
                proptest::prop_assert_eq!(a.add(&uid, index, &stats(1)), fresh);
                proptest::prop_assert!(a.has(&uid, index));
            }
            proptest::prop_assert_eq!(a.total.requests(), reference.len() as u64);
        }
    }

    #[test]
    fn remembering_merged_intervals_does_not_grow_with_the_run() {
        let mut a = Aggregator::default();
        let one = stats(0);
        // An overnight run (10 h) of two slaves, one of which joined late and resent twice.
        for k in 0..36_000 {
            a.add("x", k, &one);
            if k >= 500 {
                a.add("y", k, &one);
                a.add("y", k - 3, &one);
            }
        }
        assert_eq!(a.seen["x"].iter().count(), 1);
        assert_eq!(a.seen["y"].iter().count(), 1);
    }
}
