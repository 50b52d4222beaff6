//! An interval checked and merged into its open second in one pass over its histograms.
//!
//! The master's check of a slave's second read every bucket of its histograms and kept each
//! one as a word (`wire.rs`'s `Decoded`), and its merge then added those words into the open
//! second's counts (`pending.rs`): two passes over about 1,500 buckets per slave per second,
//! at 10,000 slaves the largest share of the master's core (check 10.0 %, add 7.7 % of its
//! samples, docs/reliability.md). Here the check adds each bucket into the open second's
//! counts as it reads it ([`super::wire::Sink::Add`]) and notes per histogram how many
//! buckets it added ([`Taken`]). The check itself is the same code, so an interval is
//! refused for exactly the same reasons, with the same error. If it is refused, everything
//! it added is taken back out (each histogram's first buckets read again from its encoding
//! and subtracted, entries it created removed), so a refused interval leaves the open second
//! as it was: bucket for bucket, and without a name it brought (proptested in `tests.rs`).
//! Measured: 5–17 % less time than the two passes (`scripts/bench/interval-check`), about
//! 0.6 points of the master's core at 5,000 slaves; most of what is left is the adds into
//! the open second's counts, not the reading.

use super::pending::{Counts, Histograms, Pending};
use super::wire::{Sink, WireHistogram};
use super::{CheckRoom, CheckedInterval, IntervalStats, StatsError};
use crate::proto;

/// Which of an open second's maps of counts an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Map {
    Endpoints,
    Targets,
    Flows,
}

/// One thing a single-pass check did to an open second's counts, to take back if the
/// interval is refused.
#[derive(Clone, Copy, Debug)]
pub(super) struct Taken {
    map: Map,
    /// The entry's position in its interval (endpoints and targets in order, flows in the
    /// order their map iterates, which does not change while the interval is borrowed).
    at: u32,
    what: Change,
}

#[derive(Clone, Copy, Debug)]
enum Change {
    /// The entry had no counts before this interval.
    Created,
    /// The first `buckets` buckets of histogram `slot` (latency first, then the phases) were
    /// added.
    Added { slot: u8, buckets: u32 },
}

/// An open second's counts as a check adds into them, with the record of what it added.
pub(super) struct Adding<'x> {
    pub(super) pending: &'x mut Pending,
    pub(super) journal: &'x mut Vec<Taken>,
}

impl Adding<'_> {
    /// The sinks for the histograms of entry `name`, at position `at` of `map` in its interval:
    /// created (and noted so) if the open second has no counts for it yet.
    pub(super) fn entry(&mut self, map: Map, at: usize, name: &str) -> EntrySinks<'_> {
        let (counts, new) = histograms(self.pending, map).slots_new(name);
        let at = at as u32;
        if new {
            self.journal.push(Taken {
                map,
                at,
                what: Change::Created,
            });
        }
        EntrySinks {
            counts,
            journal: self.journal,
            map,
            at,
        }
    }
}

/// Where an entry's histograms are added as they are checked.
pub(super) struct EntrySinks<'x> {
    counts: &'x mut [Counts; 5],
    journal: &'x mut Vec<Taken>,
    map: Map,
    at: u32,
}

impl EntrySinks<'_> {
    /// Checks histogram `slot`'s encoding, adding its buckets into its counts as it reads
    /// them, and notes how many it added (also when it is refused).
    pub(super) fn check<'a>(
        &mut self,
        slot: usize,
        bytes: &'a [u8],
    ) -> Result<WireHistogram<'a>, String> {
        let (checked, buckets) =
            WireHistogram::check_into(bytes, Sink::Add(&mut self.counts[slot]));
        if buckets > 0 {
            self.journal.push(Taken {
                map: self.map,
                at: self.at,
                what: Change::Added {
                    slot: slot as u8,
                    buckets,
                },
            });
        }
        checked
    }
}

fn histograms(pending: &mut Pending, map: Map) -> &mut Histograms {
    match map {
        Map::Endpoints => &mut pending.endpoints,
        Map::Targets => &mut pending.targets,
        Map::Flows => &mut pending.flows,
    }
}

impl<'a> CheckedInterval<'a> {
    /// Checks an interval as [`CheckedInterval::check`] does and merges it into an open
    /// second, as [`CheckedInterval::merge_deferred`] into `into` and `pending` would, in
    /// one pass over its histograms; returns its requests. Refused for exactly the reasons
    /// and with the errors of [`CheckedInterval::check`], and then `into` and `pending` are
    /// as they were.
    pub fn check_and_merge(
        p: &'a proto::StatsInterval,
        room: &mut CheckRoom,
        into: &mut IntervalStats,
        pending: &mut Pending,
        reporter: &str,
    ) -> Result<u64, StatsError> {
        let mut journal = std::mem::take(&mut room.journal);
        journal.clear();
        let checked = {
            let mut adding = Adding {
                pending,
                journal: &mut journal,
            };
            Self::check_with(p, &mut room.decoded, Some(&mut adding))
        };
        let merged = match checked {
            Ok(c) => {
                c.merge_counters_into(into, reporter);
                let requests = c.requests();
                c.give_back(room);
                Ok(requests)
            }
            Err(e) => {
                take_back(p, &journal, pending);
                Err(e)
            }
        };
        room.journal = journal;
        merged
    }
}

/// Takes what a refused check added (`journal`, in the order it was done) back out of
/// `pending`: entries it created are removed, buckets added to others subtracted.
fn take_back(p: &proto::StatsInterval, journal: &[Taken], pending: &mut Pending) {
    for t in journal {
        let (name, bytes): (&str, [&[u8]; 5]) = match t.map {
            Map::Endpoints | Map::Targets => {
                let list = if t.map == Map::Endpoints {
                    &p.endpoints
                } else {
                    &p.targets
                };
                let e = &list[t.at as usize];
                (
                    &e.name,
                    [
                        &e.latency_us,
                        &e.connecting_us,
                        &e.tls_handshaking_us,
                        &e.waiting_us,
                        &e.receiving_us,
                    ],
                )
            }
            Map::Flows => {
                let (name, f) = p.flows.iter().nth(t.at as usize).expect("checked flow");
                (name, [&f.duration_us, &[], &[], &[], &[]])
            }
        };
        let counts = histograms(pending, t.map);
        match t.what {
            Change::Created => counts.remove(name),
            Change::Added { slot, buckets } => {
                // Gone if this interval created it (removed above, whole).
                if let Some(slots) = counts.get_mut(name) {
                    let slot = usize::from(slot);
                    WireHistogram::take_back(bytes[slot], buckets, &mut slots[slot]);
                }
            }
        }
    }
}
