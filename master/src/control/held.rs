//! Intervals merged but not stored: each is held (by its slave's uid) until its second is
//! stored merged, and acknowledged then. Those of open seconds, late ones of recent closed
//! seconds (`aggregate::KEPT`), and resends of either.
//!
//! Storing every slave's interval as its own row, only to delete it once its second was
//! stored merged (`aggregate::Compaction`), wrote each interval twice (SQLite's WAL, then its
//! checkpoint) and deleted it once: at thousands of slaves the largest share of the master's
//! core. An interval of a second still open is therefore merged at once and held here; the
//! store sees it only inside its merged second. Invariant (design: an interval is never
//! acknowledged before it is durable): an interval is acknowledged after the commit of the
//! batch that holds it, either as its own row (of an older second) or within its merged
//! second (closed, or a snapshot of it once held past [`HOLD`]: `seconds.rs`).
//!
//! Only who reported is held, not the interval: its merge is in the run's open second, and
//! keeping each message until its second closed kept the buffer it was received in, so each
//! message needed a fresh one (at 10,000 slaves glibc's `malloc` was 13.8 % of the master's
//! samples; about 5 % after this and the reused check memory of `CheckRoom`, and peak RSS
//! fell from 824–964 MiB to 743–785 MiB). An interval whose run no longer holds its second
//! open or recent when it is overdue (another run began, or the second left the kept window
//! without its compaction written) is left unacknowledged: its slave sends it again, and that
//! copy is stored as a row of its own.
//!
//! A late interval was once stored as a row of its own at once: the slowest path was the
//! most expensive one, as the snapshots below were for a second held open. A master behind
//! by more than the lease closes seconds before their intervals are read, so nearly every
//! interval was late and a row (at 10,000 slaves, 33.6 MB/s into the store, and a run that
//! collapsed). Held and stored within their second's snapshot, they cost a row per second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest an interval is held before its second is stored as its merge so far: well below
/// the slaves' resend timeout (`lobster_fleet::RESEND_AFTER`), with room for a tick and the
/// round trip.
pub(super) const HOLD: Duration = Duration::from_secs(2);
const _: () = assert!(HOLD.as_millis() * 2 <= lobster_fleet::RESEND_AFTER.as_millis());

/// A second held too long: its index and the uids of the slaves whose intervals it holds.
pub(super) type OverdueSecond = (u64, Vec<String>);

/// The held intervals of one second.
struct HeldSecond {
    /// When its first held interval arrived.
    since: Instant,
    /// The slaves whose intervals of it are held, by uid.
    reporters: Vec<String>,
}

/// The held intervals of the active run, by second.
#[derive(Default)]
pub(super) struct Held {
    /// The run they belong to; holding one of another run drops the rest (a run is over only
    /// once each of its seconds was stored merged, which released them).
    run_id: String,
    seconds: BTreeMap<u64, HeldSecond>,
}

impl Held {
    /// Holds slave `slave_uid`'s interval `index` of run `run_id`, received at `now`.
    pub(super) fn hold(&mut self, run_id: &str, slave_uid: &str, index: u64, now: Instant) {
        if self.run_id != run_id {
            self.run_id = run_id.to_string();
            self.seconds.clear();
        }
        self.seconds
            .entry(index)
            .or_insert_with(|| HeldSecond {
                since: now,
                reporters: Vec::new(),
            })
            .reporters
            .push(slave_uid.to_string());
    }

    /// Lets go of second `index` of run `run_id` (stored merged): the uids of the slaves
    /// whose intervals of it were held, to acknowledge.
    pub(super) fn release(&mut self, run_id: &str, index: u64) -> Vec<String> {
        if self.run_id != run_id {
            return Vec::new();
        }
        self.seconds
            .remove(&index)
            .map(|s| s.reporters)
            .unwrap_or_default()
    }

    /// Takes the seconds held longer than `limit` at `now`, with the run they belong to.
    pub(super) fn overdue(&mut self, now: Instant, limit: Duration) -> (&str, Vec<OverdueSecond>) {
        let due: Vec<u64> = self
            .seconds
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.since) > limit)
            .map(|(k, _)| *k)
            .collect();
        let taken = due
            .into_iter()
            .filter_map(|k| self.seconds.remove(&k).map(|s| (k, s.reporters)))
            .collect();
        (&self.run_id, taken)
    }

    /// Intervals held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seconds.values().map(|s| s.reporters.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_their_second_is_stored_or_they_are_overdue() {
        let t0 = Instant::now();
        let mut h = Held::default();
        h.hold("r", "a", 0, t0);
        h.hold("r", "b", 0, t0 + Duration::from_millis(500));
        h.hold("r", "a", 1, t0 + Duration::from_millis(1000));
        assert_eq!(h.len(), 3);
        assert!(h.release("other", 0).is_empty(), "another run's second");
        assert_eq!(h.release("r", 0), vec!["a", "b"]);
        assert!(h.release("r", 0).is_empty(), "released once");
        // Second 1 is held from t0+1s: not overdue at t0+3s, overdue after.
        assert!(h.overdue(t0 + Duration::from_secs(3), HOLD).1.is_empty());
        let (run, due) = h.overdue(t0 + Duration::from_millis(3001), HOLD);
        assert_eq!(run, "r");
        assert_eq!(due, vec![(1, vec!["a".to_string()])]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn a_new_run_drops_the_last_runs_intervals() {
        let t0 = Instant::now();
        let mut h = Held::default();
        h.hold("r1", "a", 0, t0);
        h.hold("r2", "a", 0, t0);
        assert_eq!(h.len(), 1);
        assert!(h.release("r1", 0).is_empty());
        assert_eq!(h.release("r2", 0), vec!["a"]);
    }
}
