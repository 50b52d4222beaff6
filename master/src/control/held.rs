//! Intervals of open seconds, merged but not stored: each is held (as it was received) until
//! its second is stored merged, and acknowledged then.
//!
//! Storing every slave's interval as its own row, only to delete it once its second was
//! stored merged (`aggregate::Compaction`), wrote each interval twice (SQLite's WAL, then its
//! checkpoint) and deleted it once: at thousands of slaves the largest share of the master's
//! core. An interval of a second still open is therefore merged at once and held here; the
//! store sees it only inside its merged second. Invariant (design: an interval is never
//! acknowledged before it is durable): an interval is acknowledged after the commit of the
//! batch that holds it, either as its own row (late, resent, or held past [`HOLD`]) or within
//! its merged second.
//!
//! A second held longer than [`HOLD`] (a slave that went silent holds its second open for a
//! lease) has its intervals written as rows, so that no slave waits for its acknowledgement
//! past its resend timeout (`lobster_fleet::RESEND_AFTER`) and sends them again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest an interval is held before it is stored as its own row: well below the slaves'
/// resend timeout (`lobster_fleet::RESEND_AFTER`), with room for a tick and the round trip.
pub(super) const HOLD: Duration = Duration::from_secs(2);
const _: () = assert!(HOLD.as_millis() * 2 <= lobster_fleet::RESEND_AFTER.as_millis());

/// One slave's interval: the master's `proto::StatsInterval` as it was received, encoded only
/// if it has to be stored as a row (most never are: encoding each was a few per cent of the
/// master's core at thousands of slaves).
pub(super) struct HeldInterval<P> {
    pub(super) slave_uid: String,
    pub(super) payload: P,
}

/// A second held too long: its index and its held intervals.
pub(super) type OverdueSecond<P> = (u64, Vec<HeldInterval<P>>);

/// The held intervals of one second.
struct HeldSecond<P> {
    /// When its first held interval arrived.
    since: Instant,
    intervals: Vec<HeldInterval<P>>,
}

/// The held intervals of the active run, by second.
pub(super) struct Held<P> {
    /// The run they belong to; holding one of another run drops the rest (a run is over only
    /// once each of its seconds was stored merged, which released them).
    run_id: String,
    seconds: BTreeMap<u64, HeldSecond<P>>,
}

impl<P> Default for Held<P> {
    fn default() -> Self {
        Held {
            run_id: String::new(),
            seconds: BTreeMap::new(),
        }
    }
}

impl<P> Held<P> {
    /// Holds `slave_uid`'s interval `index` of run `run_id` (already merged into the run).
    pub(super) fn hold(
        &mut self,
        run_id: &str,
        slave_uid: &str,
        index: u64,
        payload: P,
        now: Instant,
    ) {
        if self.run_id != run_id {
            self.run_id = run_id.to_string();
            self.seconds.clear();
        }
        self.seconds
            .entry(index)
            .or_insert_with(|| HeldSecond {
                since: now,
                intervals: Vec::new(),
            })
            .intervals
            .push(HeldInterval {
                slave_uid: slave_uid.to_string(),
                payload,
            });
    }

    /// Second `index` of run `run_id` is in the store's batch, merged: its held intervals are
    /// let go, and the slaves that sent them returned (to acknowledge after the commit).
    pub(super) fn release(&mut self, run_id: &str, index: u64) -> Vec<String> {
        if self.run_id != run_id {
            return Vec::new();
        }
        self.seconds
            .remove(&index)
            .map(|s| s.intervals.into_iter().map(|i| i.slave_uid).collect())
            .unwrap_or_default()
    }

    /// Takes the seconds held longer than `limit` at `now`, with the run they belong to, to
    /// store their intervals as rows.
    pub(super) fn overdue(
        &mut self,
        now: Instant,
        limit: Duration,
    ) -> (&str, Vec<OverdueSecond<P>>) {
        let due: Vec<u64> = self
            .seconds
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.since) > limit)
            .map(|(k, _)| *k)
            .collect();
        let taken = due
            .into_iter()
            .filter_map(|k| self.seconds.remove(&k).map(|s| (k, s.intervals)))
            .collect();
        (&self.run_id, taken)
    }

    /// Intervals held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seconds.values().map(|s| s.intervals.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_their_second_is_stored_or_they_are_overdue() {
        let t0 = Instant::now();
        let mut h = Held::default();
        h.hold("r", "a", 0, vec![1], t0);
        h.hold("r", "b", 0, vec![2], t0 + Duration::from_millis(500));
        h.hold("r", "a", 1, vec![3], t0 + Duration::from_millis(1000));
        assert_eq!(h.len(), 3);
        assert!(h.release("other", 0).is_empty(), "another run's second");
        assert_eq!(h.release("r", 0), vec!["a", "b"]);
        assert!(h.release("r", 0).is_empty(), "released once");
        // Second 1 is held from t0+1s: not overdue at t0+3s, overdue after.
        assert!(h.overdue(t0 + Duration::from_secs(3), HOLD).1.is_empty());
        let (run, due) = h.overdue(t0 + Duration::from_millis(3001), HOLD);
        assert_eq!(run, "r");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, 1);
        assert_eq!(due[0].1[0].slave_uid, "a");
        assert_eq!(due[0].1[0].payload, vec![3]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn a_new_run_drops_the_last_runs_intervals() {
        let t0 = Instant::now();
        let mut h = Held::default();
        h.hold("r1", "a", 0, vec![1], t0);
        h.hold("r2", "a", 0, vec![2], t0);
        assert_eq!(h.len(), 1);
        assert!(h.release("r1", 0).is_empty());
        assert_eq!(h.release("r2", 0), vec!["a"]);
    }
}
