//! Acknowledgements of stored intervals: noted while the store's batch holds them, sent
//! after its commit, and spaced so that a slave reporting every second is sent one every two
//! seconds (both indexes in one `Ack`), not one a second.
//!
//! Each `Ack` is a message of its own on its slave's stream: encoded, framed by HTTP/2,
//! sealed as a TLS record and written with a `writev` of its own (one per slave per second at
//! 2,000 simulated slaves, measured with `perf stat`). At 10,000 slaves writing them was the
//! master's largest cost after the merge itself: `FramedWrite::flush` held 16.5 % of its
//! samples and the response streams that encode them 8.8 %, against 21.4 % for checking and
//! merging every interval (`perf record --call-graph dwarf`, docs/reliability.md). TCP
//! delays its own acknowledgements for the same reason (RFC 1122, 4.2.3.2).
//!
//! The rule, per slave and run: acknowledgements committed when the slave was sent none for
//! [`ACK_SPACING`] go out at once (the first of a run always does); the others wait for the
//! next commit, or at most [`ACK_WAIT`], and go out together. The master answers a
//! heartbeat after a silence with what waits for that slave (`slaves.rs`), so spacing never
//! adds a message. An interval is still acknowledged only once durable, and within the
//! slaves' resend timeout: held at most `held::HOLD`, then waiting at most `ACK_WAIT`
//! (checked below).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::TICK;
use super::held::HOLD;

/// A slave sent an `Ack` less than this long ago is sent the next one with the one after.
pub(super) const ACK_SPACING: Duration = Duration::from_millis(1500);
/// Longest a committed acknowledgement waits to go out with a later one: past one commit
/// (a second's), short of two.
pub(super) const ACK_WAIT: Duration = Duration::from_millis(1200);
// Held, waiting, three ticks of the control loop and a second for the round trip: still
// before the slave sends the interval again.
const _: () = assert!(
    HOLD.as_millis() + ACK_WAIT.as_millis() + 3 * TICK.as_millis() + 1000
        <= lobster_fleet::RESEND_AFTER.as_millis()
);

/// An acknowledgement to send now: the slave's uid, the run, the interval indexes (sorted,
/// each once).
pub(super) type AckDue = (String, String, Vec<u64>);

/// Committed acknowledgements of one slave and run that wait for the next.
struct Waiting {
    indexes: Vec<u64>,
    /// When the first of them was committed.
    since: Instant,
}

/// The acknowledgements of stored intervals, by (slave uid, run id).
#[derive(Default)]
pub(super) struct Acks {
    /// Stored in the store's open batch: to acknowledge once it is committed.
    /// A hash map: one entry per slave a second, and a B-tree's string compares were a
    /// visible share of the master's core at thousands of slaves.
    stored: HashMap<(String, String), Vec<u64>>,
    /// Committed, waiting to go out with the slave's next ones.
    waiting: HashMap<(String, String), Waiting>,
    /// No waiting acknowledgement is older than this (it may be older than all of them: the
    /// waiting ones are looked through only once it is past [`ACK_WAIT`]).
    oldest: Option<Instant>,
}

impl Acks {
    /// Notes slave `uid`'s interval `index` of run `run_id`, written in the store's open batch.
    pub(super) fn note(&mut self, uid: String, run_id: String, index: u64) {
        self.stored.entry((uid, run_id)).or_default().push(index);
    }

    /// Intervals noted in the open batch.
    pub(super) fn noted(&self) -> usize {
        self.stored.values().map(Vec::len).sum()
    }

    /// The open batch was not committed: its intervals are not acknowledged (their slaves
    /// send them again).
    pub(super) fn forget_noted(&mut self) {
        self.stored.clear();
    }

    /// The open batch was committed at `now`: adds to `out` what goes out now, of its
    /// acknowledgements and of those waiting. `last_ack` tells when a slave was last sent
    /// one (`None`: never on its session).
    pub(super) fn committed(
        &mut self,
        now: Instant,
        last_ack: impl Fn(&str) -> Option<Instant>,
        out: &mut Vec<AckDue>,
    ) {
        // Drained, not taken: the map keeps its room for the next second's thousands.
        for (key, indexes) in self.stored.drain() {
            let spaced =
                last_ack(&key.0).is_none_or(|t| now.saturating_duration_since(t) >= ACK_SPACING);
            match self.waiting.remove(&key) {
                Some(mut w) => {
                    w.indexes.extend(indexes);
                    if spaced || now.saturating_duration_since(w.since) >= ACK_WAIT {
                        out.push(due(key, w.indexes));
                    } else {
                        self.waiting.insert(key, w);
                    }
                }
                None if spaced => out.push(due(key, indexes)),
                None => {
                    self.oldest.get_or_insert(now);
                    self.waiting.insert(
                        key,
                        Waiting {
                            indexes,
                            since: now,
                        },
                    );
                }
            }
        }
        self.overdue(now, out);
    }

    /// Adds to `out` the acknowledgements that waited [`ACK_WAIT`] at `now`.
    fn overdue(&mut self, now: Instant, out: &mut Vec<AckDue>) {
        if self
            .oldest
            .is_none_or(|t| now.saturating_duration_since(t) < ACK_WAIT)
        {
            return;
        }
        let mut oldest = None;
        let keys: Vec<(String, String)> = self
            .waiting
            .iter()
            .filter(|(_, w)| {
                let late = now.saturating_duration_since(w.since) >= ACK_WAIT;
                if !late {
                    oldest = Some(oldest.map_or(w.since, |o: Instant| o.min(w.since)));
                }
                late
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(w) = self.waiting.remove(&key) {
                out.push(due(key, w.indexes));
            }
        }
        self.oldest = oldest;
    }

    /// Takes what waits for slave `uid` of run `run_id` (to answer its heartbeat with).
    pub(super) fn take(&mut self, uid: &str, run_id: &str) -> Option<Vec<u64>> {
        let w = self
            .waiting
            .remove(&(uid.to_string(), run_id.to_string()))?;
        Some(once(w.indexes))
    }
}

fn due(key: (String, String), indexes: Vec<u64>) -> AckDue {
    (key.0, key.1, once(indexes))
}

/// Sorted, each once: a resend held beside its first copy is acknowledged with it, once.
fn once(mut indexes: Vec<u64>) -> Vec<u64> {
    indexes.sort_unstable();
    indexes.dedup();
    indexes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `acks` (uid, index) of run `r` at `at`, with the slaves' last acks in `sent`
    /// (updated with what went out); returns what went out.
    fn commit(
        a: &mut Acks,
        at: Instant,
        acks: &[(&str, u64)],
        sent: &mut HashMap<String, Instant>,
    ) -> Vec<AckDue> {
        for (uid, i) in acks {
            a.note(uid.to_string(), "r".into(), *i);
        }
        let mut out = Vec::new();
        a.committed(at, |uid| sent.get(uid).copied(), &mut out);
        for (uid, _, _) in &out {
            sent.insert(uid.clone(), at);
        }
        out.sort();
        out
    }

    fn acked(uid: &str, indexes: &[u64]) -> AckDue {
        (uid.into(), "r".into(), indexes.to_vec())
    }

    /// A slave reporting every second is acknowledged every other second, both indexes in
    /// one `Ack`; none waits longer than `ACK_WAIT`, and each index goes out once.
    #[test]
    fn a_slave_reporting_every_second_is_acknowledged_every_other_second() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(1000 * n);
        let (mut a, mut sent) = (Acks::default(), HashMap::new());
        assert_eq!(
            commit(&mut a, s(0), &[("a", 0)], &mut sent),
            [acked("a", &[0])],
            "the first at once"
        );
        assert_eq!(commit(&mut a, s(1), &[("a", 1)], &mut sent), []);
        assert_eq!(
            commit(&mut a, s(2), &[("a", 2)], &mut sent),
            [acked("a", &[1, 2])]
        );
        assert_eq!(commit(&mut a, s(3), &[("a", 3)], &mut sent), []);
        // A commit 100 ms late still goes with the next one; a second without an interval
        // of this slave (say it was late) lets what waits go out at `ACK_WAIT`.
        let late = s(4) + Duration::from_millis(100);
        assert_eq!(
            commit(&mut a, late, &[("a", 4), ("a", 4)], &mut sent),
            [acked("a", &[3, 4])]
        );
        assert_eq!(commit(&mut a, s(5), &[("a", 5)], &mut sent), []);
        assert_eq!(
            commit(&mut a, s(6) - Duration::from_millis(1), &[], &mut sent),
            []
        );
        assert_eq!(
            commit(&mut a, s(5) + ACK_WAIT, &[], &mut sent),
            [acked("a", &[5])]
        );
        assert_eq!(commit(&mut a, s(7), &[], &mut sent), [], "sent once");
    }

    /// Slaves are spaced each on its own: one whose last `Ack` is old enough, or that never
    /// had one, is acknowledged at once.
    #[test]
    fn each_slave_is_spaced_on_its_own() {
        let t0 = Instant::now();
        let mut sent = HashMap::from([("b".to_string(), t0)]);
        let mut a = Acks::default();
        let at = t0 + Duration::from_millis(800);
        assert_eq!(
            commit(&mut a, at, &[("a", 3), ("b", 3)], &mut sent),
            [acked("a", &[3])]
        );
        let at = t0 + ACK_SPACING;
        assert_eq!(
            commit(&mut a, at, &[("b", 4)], &mut sent),
            [acked("b", &[3, 4])]
        );
    }

    /// A heartbeat answered takes what waits for its slave; a batch not committed is
    /// forgotten (nothing of it is acknowledged).
    #[test]
    fn what_waits_may_answer_a_heartbeat_and_an_uncommitted_batch_is_never_acknowledged() {
        let t0 = Instant::now();
        let mut sent = HashMap::from([("a".to_string(), t0)]);
        let mut a = Acks::default();
        assert_eq!(commit(&mut a, t0, &[("a", 7)], &mut sent), []);
        assert_eq!(a.take("a", "other"), None);
        assert_eq!(a.take("a", "r"), Some(vec![7]));
        assert_eq!(a.take("a", "r"), None);
        a.note("a".into(), "r".into(), 8);
        assert_eq!(a.noted(), 1);
        a.forget_noted();
        let at = t0 + ACK_SPACING + ACK_WAIT;
        assert_eq!(commit(&mut a, at, &[], &mut sent), []);
    }
}
