//! A second being merged on the master, its histograms kept as bucket counts until it closes.
//!
//! Recording a bucket into an HDR histogram finds its index from its value, checks its range
//! and updates the total, minimum and maximum: at 1,000 slaves with 10 endpoints that was the
//! master's largest cost (`record_n_inner`, 29 % of its busy time), paid once per slave per
//! bucket. Here each slave's wire buckets are added by index into a plain array
//! ([`Counts`]), and each non-empty bucket is recorded into the second's histogram once, when
//! the second closes ([`Pending::finish`]). A bucket's count recorded at the lowest value of
//! that bucket lands in the same bucket, so the result is the histogram the direct merge gives
//! (proptested in `tests.rs`).

use std::collections::HashMap;

use hdrhistogram::Histogram;

use super::{IntervalStats, wire::value_at};

/// One histogram's counts by bucket index (our configuration: see `wire.rs`).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    counts: Vec<u64>,
}

impl Counts {
    /// Adds `count` samples to bucket `index` (below 64 × 1024, as the wire check ensures).
    pub(super) fn add(&mut self, index: usize, count: u64) {
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(count);
    }

    /// Records every non-empty bucket into `h`.
    fn record_into(&self, h: &mut Histogram<u64>) {
        for (index, &count) in self.counts.iter().enumerate() {
            if count > 0 {
                let _ = h.record_n(value_at(index), count);
            }
        }
    }
}

/// The histograms of each named entry (an endpoint, a target, a flow): latency, then the
/// phases in the order of [`super::Phases::NAMES`] (a flow uses the first for its durations).
#[derive(Debug, Default)]
pub struct Histograms {
    by_name: HashMap<String, [Counts; 5]>,
}

impl Histograms {
    /// The counts of entry `name`.
    pub(super) fn slots(&mut self, name: &str) -> &mut [Counts; 5] {
        if !self.by_name.contains_key(name) {
            self.by_name.insert(name.to_string(), Default::default());
        }
        self.by_name.get_mut(name).expect("inserted above")
    }
}

/// The histograms of an open second, merged by [`super::Mergeable::merge_deferred`].
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) endpoints: Histograms,
    pub(super) targets: Histograms,
    pub(super) flows: Histograms,
}

impl Pending {
    /// Records the counts into `into`'s histograms (whose counters were merged already).
    pub fn finish(self, into: &mut IntervalStats) {
        for (views, map) in [
            (self.endpoints, &mut into.endpoints),
            (self.targets, &mut into.targets),
        ] {
            for (name, counts) in views.by_name {
                let e = map.entry(name).or_default();
                for (c, h) in counts.iter().zip(e.histograms_mut()) {
                    c.record_into(h);
                }
            }
        }
        for (name, [durations, ..]) in self.flows.by_name {
            durations.record_into(&mut into.flows.entry(name).or_default().duration_us);
        }
    }
}
