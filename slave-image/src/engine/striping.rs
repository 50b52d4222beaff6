//! Which of the fleet's load units this slave owns over load time: its stripes, each from the
//! load time the master gave it for.
//!
//! When the fleet changes during a run (a slave joins, one is lost) the master gives every
//! slave a new stripe. If each slave switched when the message reached it, the arrivals due
//! between two slaves' switches would be sent twice or by nobody: the old owner goes on until
//! its message arrives, the new owner may start before or after. So the master names the load
//! time a new stripe applies from, a little ahead of its own clock, and every slave switches at
//! that instant of the load clock: the old stripe owns the units due before it, the new one
//! those due from it on, on every slave alike, and the fleet's units stay a partition across
//! the switch (see `lobster_fleet::stripe`).

use lobster_fleet::scenario::Arrivals;
use lobster_fleet::stripe::Stripe;

/// How long a stripe that no longer applies is kept: longer than the open model's dispatcher
/// ever trails the load clock (it skips what the clock passed).
const KEEP_MS: u64 = 60_000;

/// The stripes of one share over load time: each applies from its `from_ms` until the next
/// one's; before the first, this slave owns nothing (a slave that joined mid-run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Striping {
    /// Sorted by `from_ms`, distinct; never empty.
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    /// Load time (ms) the stripe applies from.
    from_ms: u64,
    stripe: Stripe,
}

impl Striping {
    /// `stripe` from load time `from_ms` on, nothing before.
    pub fn from(from_ms: u64, stripe: Stripe) -> Self {
        Striping {
            steps: vec![Step { from_ms, stripe }],
        }
    }

    /// Every unit, for the whole run: a slave running a load alone.
    pub fn whole() -> Self {
        Self::from(0, Stripe::whole())
    }

    /// Gives `stripe` from load time `from_ms` on, replacing whatever was planned from then on
    /// (the master's latest word); stripes that stopped applying [`KEEP_MS`] before `load_ms`
    /// (now) are forgotten. Returns whether the stripes planned from `from_ms` on changed.
    pub fn switch(&mut self, from_ms: u64, stripe: Stripe, load_ms: u64) -> bool {
        let done = self
            .steps
            .iter()
            .skip(1)
            .take_while(|s| s.from_ms.saturating_add(KEEP_MS) <= load_ms)
            .count();
        self.steps.drain(..done);
        let before = self.steps.len();
        if self.last().is_some_and(|s| *s == stripe)
            && self.steps.last().is_some_and(|s| s.from_ms <= from_ms)
        {
            return false;
        }
        self.steps.retain(|s| s.from_ms < from_ms);
        if self.steps.last().is_some_and(|s| s.stripe == stripe) {
            return self.steps.len() != before;
        }
        self.steps.push(Step { from_ms, stripe });
        true
    }

    /// The earliest load time from which `self` and `older` (an earlier plan of the same share)
    /// may own different units; `None` when they agree. Before the later of their first
    /// stripes they are not compared: a plan that forgot a stripe long past does not differ.
    pub fn diverges_from(&self, older: &Striping) -> Option<u64> {
        let start = self.steps[0].from_ms.max(older.steps[0].from_ms);
        let mut times: Vec<u64> = self
            .steps
            .iter()
            .chain(&older.steps)
            .map(|s| s.from_ms.max(start))
            .collect();
        times.sort_unstable();
        times.dedup();
        times.into_iter().find(|&t| self.at(t) != older.at(t))
    }

    /// The stripe given last (the one that applies from the latest switch on).
    pub fn last(&self) -> Option<&Stripe> {
        self.steps.last().map(|s| &s.stripe)
    }

    /// The stripe in force at `load_ms`; `None` before the first.
    pub fn at(&self, load_ms: u64) -> Option<&Stripe> {
        let i = self.steps.partition_point(|s| s.from_ms <= load_ms);
        i.checked_sub(1).map(|i| &self.steps[i].stripe)
    }

    /// Closed model: whether user `index` is this slave's at `load_ms`, and the load time at
    /// which that changes next (`None`: not for the rest of the plan).
    pub fn owns_user(&self, index: u64, load_ms: u64) -> (bool, Option<u64>) {
        let mine = self.at(load_ms).is_some_and(|s| s.owns(index));
        let change = self
            .steps
            .iter()
            .filter(|s| s.from_ms > load_ms)
            .find(|s| s.stripe.owns(index) != mine)
            .map(|s| s.from_ms);
        (mine, change)
    }

    /// The next switch after `load_ms`, if one is planned.
    pub fn next_switch(&self, load_ms: u64) -> Option<u64> {
        self.steps.iter().map(|s| s.from_ms).find(|&f| f > load_ms)
    }

    /// Open model: the plan over the arrival indexes of `arrivals` (a switch at load time `t`
    /// applies from the first arrival due at or after `t`).
    pub fn over(&self, arrivals: &Arrivals) -> OwnedArrivals {
        OwnedArrivals {
            steps: self
                .steps
                .iter()
                .map(|s| (arrivals.count_before(s.from_ms as f64), s.stripe.clone()))
                .collect(),
        }
    }
}

/// A [`Striping`] over arrival indexes: each stripe owns its indexes from its first one until
/// the next stripe's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedArrivals {
    /// (first index, stripe), sorted by index.
    steps: Vec<(u64, Stripe)>,
}

impl OwnedArrivals {
    /// Index ranges of the steps: `(from, until, stripe)`, empty ones left out.
    fn ranges(&self) -> impl Iterator<Item = (u64, u64, &Stripe)> {
        self.steps.iter().enumerate().filter_map(|(i, (lo, s))| {
            let hi = self.steps.get(i + 1).map_or(u64::MAX, |n| n.0);
            (hi > *lo).then_some((*lo, hi, s))
        })
    }

    /// The first owned index at or after `k`; `None` when no more are owned.
    pub fn first_from(&self, k: u64) -> Option<u64> {
        self.ranges()
            .filter(|&(_, hi, _)| hi > k)
            .find_map(|(lo, hi, s)| s.first_from(k.max(lo)).filter(|&x| x < hi))
    }

    /// Whether index `k` is owned.
    pub fn owns(&self, k: u64) -> bool {
        self.ranges()
            .find(|&(lo, hi, _)| (lo..hi).contains(&k))
            .is_some_and(|(_, _, s)| s.owns(k))
    }

    /// How many of the indexes `lo..hi` are owned.
    pub fn count_in(&self, lo: u64, hi: u64) -> u64 {
        self.ranges()
            .map(|(a, b, s)| {
                let (from, to) = (lo.max(a), hi.min(b));
                if from < to {
                    s.count_below(to) - s.count_below(from)
                } else {
                    0
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::scenario::{Model, Profile};
    use lobster_fleet::stripe::stripes;

    #[test]
    fn a_switch_replaces_what_was_planned_from_its_time_on() {
        let [a, b]: [Stripe; 2] = stripes(&[1, 1]).try_into().unwrap();
        let whole = Stripe::whole();
        let mut p = Striping::from(0, whole.clone());
        assert!(!p.switch(500, whole.clone(), 0), "the same stripe again");
        assert!(p.switch(1_000, a.clone(), 0));
        assert_eq!(p.at(999), Some(&whole));
        assert_eq!(p.at(1_000), Some(&a));
        // A later word for an earlier time replaces the planned step.
        assert!(p.switch(800, b.clone(), 0));
        assert_eq!(p.at(900), Some(&b));
        assert_eq!(p.at(5_000), Some(&b));
        // Switching back to what was in force cancels the switch.
        assert!(p.switch(800, whole.clone(), 0));
        assert_eq!(p, Striping::whole());
        // A newcomer owns nothing before its first stripe.
        let late = Striping::from(2_000, a.clone());
        assert_eq!(late.at(1_999), None);
        assert_eq!(late.owns_user(0, 1_000), (false, Some(2_000)));
        assert_eq!(late.owns_user(1, 1_000), (false, None));
        assert_eq!(late.owns_user(0, 3_000), (true, None));
    }

    #[test]
    fn arrivals_change_owner_at_the_first_one_due_from_the_switch() {
        let arrivals = Arrivals::new(&Profile::constant(Model::Open, 10_000)); // 10/s: k due at 100k ms
        let [a, b]: [Stripe; 2] = stripes(&[1, 1]).try_into().unwrap();
        let mut p = Striping::from(0, Stripe::whole());
        p.switch(1_050, a.clone(), 0); // from arrival 11 (due 1.1 s)
        let owned = p.over(&arrivals);
        assert_eq!(owned.first_from(9), Some(9));
        assert_eq!(owned.first_from(11), Some(a.first_from(11).unwrap()));
        assert_eq!(owned.count_in(0, 11), 11);
        assert_eq!(
            owned.count_in(0, 21),
            11 + a.count_below(21) - a.count_below(11)
        );
        // With the other half's plan, every index is owned exactly once.
        let mut q = Striping::from(2_000, b.clone()); // a newcomer, taking b from 2 s
        let mut p2 = Striping::from(0, Stripe::whole());
        p2.switch(2_000, a.clone(), 0);
        q.switch(2_000, b, 0);
        let (p2, q) = (p2.over(&arrivals), q.over(&arrivals));
        for k in 0..100 {
            assert_eq!(u8::from(p2.owns(k)) + u8::from(q.owns(k)), 1, "arrival {k}");
        }
        assert_eq!(p2.count_in(0, 100) + q.count_in(0, 100), 100);
    }
}
