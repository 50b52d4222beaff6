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
///
/// Each bucket is 32 bits, with whole multiples of 2³² kept aside for the bucket that ever
/// needs them: the array is the master's hottest memory (one random write per slave's bucket,
/// an open second's arrays a few MiB at thousands of slaves), and at half the width more of
/// it stays in the core's cache. The counts stay exact: what a bucket holds is
/// `low + carries × 2³²`.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    low: Vec<u32>,
    /// Multiples of 2³² by bucket index, for the rare bucket that passed 2³² − 1.
    carries: HashMap<usize, u64>,
}

impl Counts {
    /// Adds `count` samples to bucket `index` (below 64 × 1024, as the wire check ensures).
    #[inline]
    pub(super) fn add(&mut self, index: usize, count: u64) {
        if index >= self.low.len() {
            self.low.resize(index + 1, 0);
        }
        let sum = u64::from(self.low[index]) + (count & u64::from(u32::MAX));
        self.low[index] = sum as u32;
        let carry = (sum >> 32) + (count >> 32);
        if carry > 0 {
            let c = self.carries.entry(index).or_default();
            *c = c.saturating_add(carry);
        }
    }

    /// Samples in bucket `index` (saturating at `u64::MAX`).
    fn get(&self, index: usize) -> u64 {
        let low = u64::from(self.low.get(index).copied().unwrap_or(0));
        match self.carries.get(&index) {
            None => low,
            Some(&c) => c
                .checked_mul(1 << 32)
                .and_then(|high| high.checked_add(low))
                .unwrap_or(u64::MAX),
        }
    }

    /// Records every non-empty bucket into `h`.
    fn record_into(&self, h: &mut Histogram<u64>) {
        for (index, &low) in self.low.iter().enumerate() {
            let count = if self.carries.is_empty() {
                u64::from(low)
            } else {
                self.get(index)
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket past 2³² − 1 keeps every sample: its count is the exact sum.
    #[test]
    fn a_bucket_past_32_bits_counts_exactly() {
        let mut c = Counts::default();
        c.add(7, u64::from(u32::MAX));
        c.add(7, 1);
        assert_eq!(c.get(7), 1 << 32);
        c.add(7, (5 << 32) + 3);
        assert_eq!(c.get(7), (6 << 32) + 3);
        c.add(7, u64::from(u32::MAX));
        assert_eq!(c.get(7), (7 << 32) + 2);
        c.add(3, 9);
        assert_eq!((c.get(3), c.get(4), c.get(100)), (9, 0, 0));
        c.add(7, u64::MAX);
        assert_eq!(c.get(7), u64::MAX, "saturates, as the histogram does");
        let mut h = crate::stats::new_histogram();
        let mut small = Counts::default();
        small.add(2000, (1 << 33) + 1);
        small.record_into(&mut h);
        assert_eq!(h.len(), (1 << 33) + 1);
        assert_eq!(h.count_at(value_at(2000)), (1 << 33) + 1);
    }
}
