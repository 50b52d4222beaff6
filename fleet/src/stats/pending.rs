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
/// Each bucket is 8 bits, with whole multiples of 2⁸ in a second array made the first time
/// a bucket passes 2⁸ − 1: this array is the master's hottest memory (one random write per
/// bucket of every slave's second, about 1,500 a slave a second; at 10,000 slaves the load
/// of that write was over half of the check's samples, `perf annotate`), and the narrower
/// it is, the more of it stays in the core's cache (64 bits: a few MiB at thousands of
/// slaves; 16 bits: about 470 KiB for 10 endpoints of the control-plane bench, as much as
/// this VM's L2; 8 bits: half that). A bucket passes 2⁸ once per 256 samples, so the second
/// array is touched by well under 1 % of the adds of single samples. The counts stay
/// exact: a bucket holds `low + carries × 2⁸`.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    low: Vec<u8>,
    /// Multiples of 2⁸ by bucket index; empty until a bucket first needs one.
    carries: Vec<u64>,
}

impl Counts {
    /// Adds `count` samples to bucket `index` (below 64 × 1024, as the wire check ensures).
    #[inline]
    pub(super) fn add(&mut self, index: usize, count: u64) {
        if index >= self.low.len() {
            self.low.resize(index + 1, 0);
        }
        let sum = u64::from(self.low[index]) + (count & 0xff);
        self.low[index] = sum as u8;
        let carry = (sum >> 8) + (count >> 8);
        if carry > 0 {
            self.carry(index, carry);
        }
    }

    /// Takes back `count` samples of bucket `index` that [`Counts::add`] added (`fused.rs`: an
    /// interval refused after some of its buckets were added).
    pub(super) fn sub(&mut self, index: usize, count: u64) {
        let Some(low) = self.low.get_mut(index) else {
            return;
        };
        let (rest, borrow) = low.overflowing_sub((count & 0xff) as u8);
        *low = rest;
        let down = (count >> 8) + u64::from(borrow);
        if down > 0
            && let Some(c) = self.carries.get_mut(index)
        {
            *c = c.saturating_sub(down);
        }
    }

    #[cold]
    fn carry(&mut self, index: usize, carry: u64) {
        if index >= self.carries.len() {
            self.carries.resize(self.low.len().max(index + 1), 0);
        }
        self.carries[index] = self.carries[index].saturating_add(carry);
    }

    /// Samples in bucket `index` (saturating at `u64::MAX`).
    fn get(&self, index: usize) -> u64 {
        let low = u64::from(self.low.get(index).copied().unwrap_or(0));
        let high = self.carries.get(index).copied().unwrap_or(0);
        high.checked_mul(1 << 8)
            .and_then(|h| h.checked_add(low))
            .unwrap_or(u64::MAX)
    }

    /// Records every non-empty bucket into `h`.
    fn record_into(&self, h: &mut Histogram<u64>) {
        for index in 0..self.low.len() {
            let count = self.get(index);
            if count > 0 {
                let _ = h.record_n(value_at(index), count);
            }
        }
    }
}

/// The histograms of each named entry (an endpoint, a target, a flow): latency, then the
/// phases in the order of [`super::Phases::NAMES`] (a flow uses the first for its durations).
#[derive(Clone, Debug, Default)]
pub struct Histograms {
    by_name: HashMap<String, [Counts; 5]>,
}

impl Histograms {
    /// The counts of entry `name`.
    pub(super) fn slots(&mut self, name: &str) -> &mut [Counts; 5] {
        self.slots_new(name).0
    }

    /// The counts of entry `name`, and whether they were made now (the entry had none).
    pub(super) fn slots_new(&mut self, name: &str) -> (&mut [Counts; 5], bool) {
        let new = !self.by_name.contains_key(name);
        if new {
            self.by_name.insert(name.to_string(), Default::default());
        }
        (self.by_name.get_mut(name).expect("inserted above"), new)
    }

    /// The counts of entry `name`, if it has any.
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut [Counts; 5]> {
        self.by_name.get_mut(name)
    }

    /// Forgets entry `name`.
    pub(super) fn remove(&mut self, name: &str) {
        self.by_name.remove(name);
    }
}

/// The histograms of an open second, merged by [`super::Mergeable::merge_deferred`].
#[derive(Clone, Debug, Default)]
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

    /// A bucket past 2⁸ − 1 (or 2¹⁶, or 2³²) keeps every sample: its count is the exact sum.
    #[test]
    fn a_bucket_past_8_bits_counts_exactly() {
        let mut c = Counts::default();
        c.add(2, 0xff);
        c.add(2, 1);
        assert_eq!(c.get(2), 0x100);
        for _ in 0..300 {
            c.add(1, 1);
        }
        assert_eq!((c.get(1), c.get(2)), (300, 0x100));
        c.add(2, 0x1ff);
        assert_eq!(c.get(2), 0x2ff);
        c.add(7, 0xffff);
        c.add(7, 1);
        assert_eq!(c.get(7), 1 << 16);
        c.add(7, (5 << 32) + 3);
        assert_eq!(c.get(7), (5 << 32) + (1 << 16) + 3);
        c.add(7, 0xffff);
        assert_eq!(c.get(7), (5 << 32) + (2 << 16) + 2);
        for _ in 0..70_000 {
            c.add(9, 1);
        }
        assert_eq!(c.get(9), 70_000);
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

    /// What [`Counts::sub`] takes back of what [`Counts::add`] added leaves each bucket as it
    /// was, across the 8-bit boundary both ways (a borrow from the carries), past 2¹⁶ and
    /// past 2³².
    #[test]
    fn taking_back_an_add_restores_the_bucket() {
        let adds = [
            1,
            0xff,
            0x100,
            0x1ff,
            0xffff,
            0x1_0000,
            0x1_2345,
            (7 << 32) + 0xfffe,
            3,
        ];
        for start in [
            0u64,
            1,
            0xfe,
            0xff,
            0x100,
            0xfffe,
            0xffff,
            0x1_0000,
            (1 << 40) + 0x8001,
        ] {
            for &a in &adds {
                for &b in &adds {
                    let mut c = Counts::default();
                    if start > 0 {
                        c.add(5, start);
                    }
                    c.add(5, a);
                    c.add(5, b);
                    c.sub(5, b);
                    assert_eq!(c.get(5), start + a, "{start} + {a} + {b} − {b}");
                    c.sub(5, a);
                    assert_eq!(c.get(5), start, "{start} + {a} − {a}");
                }
            }
        }
    }
}
