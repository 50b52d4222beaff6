//! Striping: how the fleet's numbered units of load are divided among its slaves so that the
//! fleet behaves as one generator, whatever the number of slaves.
//!
//! The fleet numbers its units of load: the closed model's users `0, 1, 2, …` (user `u` runs
//! while the fleet-wide profile is above `u`), and the open model's arrivals `0, 1, 2, …` (arrival
//! `k` is due when the fleet-wide schedule reaches `k`, see [`crate::scenario::Arrivals`]).
//! Every slave follows the *fleet's* profile and takes exactly the units its [`Stripe`] owns:
//! those whose index modulo the period is one of its offsets. The stripes of one run partition
//! the indexes, so
//!
//! - the fleet-wide number of active users is the profile's value at every moment (each user
//!   index is run by exactly one slave), and a ramp rises one user at a time on any fleet;
//! - the fleet's arrivals are the schedule's, each sent by exactly one slave, so the fleet total
//!   is rate × duration whatever the number of slaves (even more slaves than the rate), and
//!   consecutive arrivals go to different slaves, so they stay evenly spaced.
//!
//! This is the idea of k6's execution segments and their striped offsets
//! (<https://grafana.com/docs/k6/latest/using-k6/k6-options/reference/#execution-segment>):
//! within one period each slave owns a number of positions proportional to its weight, spread
//! by a divisor-method order (Sainte-Laguë: a slave's `j`-th position is ranked by
//! `(j + ½) / weight`), so equal weights give plain round robin.

use serde::{Deserialize, Serialize};

/// Longest period [`stripes`] builds; larger weight sums are scaled down (the stripes still
/// partition the indexes exactly, only the proportions are rounded).
pub const MAX_PERIOD: u64 = 1 << 20;

/// The load units one slave owns: index `k` is its own when `k % period` is in `offsets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stripe {
    period: u32,
    /// Sorted, distinct, each below `period`.
    offsets: Vec<u32>,
}

/// Why a stripe from the wire was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    #[error("stripe period must be between 1 and {MAX_PERIOD}, got {0}")]
    Period(u64),
    #[error("stripe offsets must be sorted, distinct and below the period {0}")]
    Offsets(u32),
}

impl Stripe {
    /// Every index: the stripe of a slave that runs the whole load alone.
    pub fn whole() -> Self {
        Stripe {
            period: 1,
            offsets: vec![0],
        }
    }

    /// A stripe from its parts (as carried by the wire); checked.
    pub fn new(period: u32, offsets: Vec<u32>) -> Result<Self, StripeError> {
        if period == 0 || u64::from(period) > MAX_PERIOD {
            return Err(StripeError::Period(period.into()));
        }
        let sorted = offsets.windows(2).all(|w| w[0] < w[1]);
        if !sorted || offsets.last().is_some_and(|&o| o >= period) {
            return Err(StripeError::Offsets(period));
        }
        Ok(Stripe { period, offsets })
    }

    pub fn period(&self) -> u32 {
        self.period
    }

    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// The share of all indexes this stripe owns, in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.offsets.len() as f64 / f64::from(self.period)
    }

    /// Whether index `k` is this stripe's.
    pub fn owns(&self, k: u64) -> bool {
        let r = (k % u64::from(self.period)) as u32;
        self.offsets.binary_search(&r).is_ok()
    }

    /// How many of the indexes `0..n` this stripe owns.
    pub fn count_below(&self, n: u64) -> u64 {
        let p = u64::from(self.period);
        let r = (n % p) as u32;
        let partial = self.offsets.partition_point(|&o| o < r) as u64;
        (n / p) * self.offsets.len() as u64 + partial
    }

    /// The `j`-th (0-based) index this stripe owns; `None` for an empty stripe.
    pub fn nth(&self, j: u64) -> Option<u64> {
        let m = self.offsets.len() as u64;
        if m == 0 {
            return None;
        }
        let cycle = j / m;
        let at = self.offsets[(j % m) as usize];
        cycle
            .checked_mul(u64::from(self.period))?
            .checked_add(u64::from(at))
    }

    /// The first index at or after `k` that this stripe owns.
    pub fn first_from(&self, k: u64) -> Option<u64> {
        self.nth(self.count_below(k))
    }
}

/// Stripes for slaves of these weights (e.g. thousandths of a core), in the same order. They
/// partition the indexes: every index is owned by exactly one stripe. Within a period, slave
/// `i` owns a number of positions proportional to `weights[i]`; zero weights own nothing
/// (unless every weight is zero: then all count as equal).
pub fn stripes(weights: &[u64]) -> Vec<Stripe> {
    if weights.is_empty() {
        return Vec::new();
    }
    let units = reduce(weights);
    let period: u64 = units.iter().sum();
    // Every slave's j-th position has rank (j + 1/2) / w; order by it, ties to the earlier
    // slave. Compared as fractions: (2j + 1) * w_other vs (2j_other + 1) * w.
    let mut events: Vec<(u64, u64, usize)> = Vec::with_capacity(period as usize);
    for (i, &w) in units.iter().enumerate() {
        for j in 0..w {
            events.push((2 * j + 1, w, i));
        }
    }
    events.sort_by(|a, b| {
        let left = u128::from(a.0) * u128::from(b.1);
        let right = u128::from(b.0) * u128::from(a.1);
        left.cmp(&right).then(a.2.cmp(&b.2))
    });
    let mut offsets = vec![Vec::new(); units.len()];
    for (position, &(_, _, i)) in events.iter().enumerate() {
        offsets[i].push(position as u32);
    }
    offsets
        .into_iter()
        .map(|offsets| Stripe {
            period: period as u32,
            offsets,
        })
        .collect()
}

/// Weights divided by their greatest common divisor, scaled down if their sum would exceed
/// [`MAX_PERIOD`]; every positive weight keeps at least one unit.
fn reduce(weights: &[u64]) -> Vec<u64> {
    let w: Vec<u64> = if weights.iter().all(|&w| w == 0) {
        vec![1; weights.len()]
    } else {
        weights.to_vec()
    };
    let g = w.iter().fold(0, |g, &x| gcd(g, x)).max(1);
    let mut w: Vec<u64> = w.iter().map(|&x| x / g).collect();
    let sum: u128 = w.iter().map(|&x| u128::from(x)).sum();
    if sum > u128::from(MAX_PERIOD) {
        let room = u128::from(MAX_PERIOD)
            .saturating_sub(w.len() as u128)
            .max(1);
        w = w
            .iter()
            .map(|&x| {
                if x == 0 {
                    0
                } else {
                    (u128::from(x) * room / sum).max(1) as u64
                }
            })
            .collect();
    }
    w
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn equal_weights_are_round_robin() {
        let s = stripes(&[1000, 1000, 1000, 1000]);
        for (i, st) in s.iter().enumerate() {
            assert_eq!(st.period(), 4);
            assert_eq!(st.offsets(), &[i as u32]);
        }
        assert_eq!(s[2].nth(0), Some(2));
        assert_eq!(s[2].nth(3), Some(14));
        assert_eq!(s[2].count_below(14), 3);
        assert_eq!(s[2].first_from(7), Some(10));
        assert_eq!(s[2].first_from(10), Some(10));
    }

    #[test]
    fn unequal_weights_interleave() {
        // 2:1:1 → slave 0's positions rank at ¼ and ¾ of the period, the others' at ½.
        let s = stripes(&[2000, 1000, 1000]);
        assert_eq!(s[0].period(), 4);
        assert_eq!(s[0].offsets(), &[0, 3]);
        assert_eq!(s[1].offsets(), &[1]);
        assert_eq!(s[2].offsets(), &[2]);
        // 3:1 → slave 1 in the middle of the period (ties go to the earlier slave).
        let s = stripes(&[3, 1]);
        assert_eq!(s[0].offsets(), &[0, 1, 3]);
        assert_eq!(s[1].offsets(), &[2]);
    }

    #[test]
    fn wire_stripes_are_checked() {
        assert!(Stripe::new(0, vec![]).is_err());
        assert!(Stripe::new(4, vec![1, 1]).is_err());
        assert!(Stripe::new(4, vec![2, 1]).is_err());
        assert!(Stripe::new(4, vec![4]).is_err());
        assert!(Stripe::new(u32::MAX, vec![0]).is_err());
        assert_eq!(Stripe::new(1, vec![0]).unwrap(), Stripe::whole());
        assert_eq!(Stripe::new(3, vec![]).unwrap().nth(0), None);
    }

    #[test]
    fn huge_weight_sums_are_scaled_and_still_partition() {
        let w = vec![u64::from(u32::MAX); 40];
        let s = stripes(&w);
        assert!(u64::from(s[0].period()) <= MAX_PERIOD);
        let owners = (0..5000u64)
            .map(|k| s.iter().filter(|st| st.owns(k)).count())
            .collect::<Vec<_>>();
        assert!(owners.iter().all(|&n| n == 1));
    }

    proptest! {
        /// The stripes partition the indexes, each owns its proportional count of every
        /// prefix within a small bound, and nth / count_below / owns agree.
        #[test]
        fn stripes_partition_and_spread(
            weights in proptest::collection::vec(0u64..5000, 1..24),
            n in 0u64..5000,
        ) {
            let s = stripes(&weights);
            let all_zero = weights.iter().all(|&w| w == 0);
            let total: u64 = if all_zero { weights.len() as u64 } else { weights.iter().sum() };
            let mut counts = vec![0u64; s.len()];
            for k in 0..n {
                let owners: Vec<usize> = (0..s.len()).filter(|&i| s[i].owns(k)).collect();
                prop_assert_eq!(owners.len(), 1, "index {} owned by {:?}", k, owners);
                counts[owners[0]] += 1;
            }
            for (i, st) in s.iter().enumerate() {
                prop_assert_eq!(st.count_below(n), counts[i]);
                let w = if all_zero { 1 } else { weights[i] };
                let ideal = n as f64 * w as f64 / total as f64;
                // Divisor-method order: within 2 of the ideal count for any prefix (the
                // equal-weight case is exact to 1, tested above).
                prop_assert!((counts[i] as f64 - ideal).abs() <= 2.0,
                    "slave {} owns {} of {} (ideal {})", i, counts[i], n, ideal);
                if counts[i] > 0 {
                    let last = st.nth(counts[i] - 1).unwrap();
                    prop_assert!(last < n && st.owns(last));
                }
            }
        }
    }
}
