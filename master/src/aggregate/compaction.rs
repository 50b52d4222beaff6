//! Compaction: one closed second, merged, in place of every slave's own interval of it.
//!
//! The store keeps each interval before it is acknowledged (a slave's copy is dropped on the
//! ack), so a run's store grew by every slave's interval every second: about 5 KB per slave
//! per second, 19 GB an hour at 1,000 slaves. Once a second has closed, its merged
//! statistics plus who reported it and how many requests each sent are all a restarted
//! master needs to rebuild the same second, the same totals and the same per-slave figures
//! ([`Aggregator::add_merged`]); the store then drops the slaves' intervals of that second
//! in the same transaction (`Store::put_second`). A second reported by one slave is left as
//! it is (its merge is no smaller).

use std::collections::BTreeMap;

use lobster_fleet::proto;
use lobster_fleet::stats::{IntervalStats, Resources, StatsError};
use prost::Message;

use super::Aggregator;

/// A closed second's merged statistics and its reporters, to store in place of their
/// intervals.
#[derive(Clone, Debug)]
pub struct Compaction {
    /// The second (interval index).
    pub index: u64,
    /// Every reporter's interval of the second, merged; injectors' resources under each
    /// reporter's uid.
    pub stats: IntervalStats,
    /// The slaves (uids) whose intervals are merged in, with the requests each sent.
    pub reporters: BTreeMap<String, u64>,
}

/// A stored compaction could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error("merged second {0} is not a MergedSecond message")]
    Payload(u64, #[source] prost::DecodeError),
    #[error("merged second {0} has malformed statistics")]
    Stats(u64, #[source] StatsError),
}

impl Compaction {
    /// The stored form: a `MergedSecond` (protobuf), about 50 bytes per reporter beside the
    /// merged statistics.
    pub fn encode(&self) -> Vec<u8> {
        let reporters = self
            .reporters
            .iter()
            .map(|(uid, &requests)| proto::MergedReporter {
                slave_uid: uid.clone(),
                requests,
                resources: self.stats.injectors.get(uid).map(Resources::to_proto),
            })
            .collect();
        proto::MergedSecond {
            stats: Some(self.stats.to_proto("", 0, false)),
            reporters,
        }
        .encode_to_vec()
    }

    /// Reads back what [`Compaction::encode`] stored for second `index`.
    pub fn decode(index: u64, payload: &[u8]) -> Result<Self, CompactionError> {
        let m =
            proto::MergedSecond::decode(payload).map_err(|e| CompactionError::Payload(index, e))?;
        let mut stats = IntervalStats::from_proto(&m.stats.unwrap_or_default())
            .map_err(|e| CompactionError::Stats(index, e))?;
        let mut reporters = BTreeMap::new();
        for r in m.reporters {
            if let Some(res) = &r.resources {
                stats
                    .injectors
                    .insert(r.slave_uid.clone(), Resources::from_proto(res));
            }
            reporters.insert(r.slave_uid, r.requests);
        }
        Ok(Compaction {
            index,
            stats,
            reporters,
        })
    }
}

impl Aggregator {
    /// Closed seconds merged since the last call, for the store (each at its close, and
    /// again when it leaves the kept window after taking late intervals).
    pub fn take_compactions(&mut self) -> Vec<Compaction> {
        std::mem::take(&mut self.compactions)
    }

    /// Second `index` as merged so far: its counters, its histograms (the bucket counts not
    /// recorded yet recorded into a copy) and its reporters, while it is open or, closed,
    /// still one of the [`KEPT`](super::KEPT) recent seconds (with the late intervals it
    /// took). `None` for an older second or one no slave reported. Stored in place of the
    /// held intervals of a second (`control::seconds`): one row however many slaves
    /// reported, replaced by the next merge of the second stored.
    pub fn snapshot(&self, index: u64) -> Option<Compaction> {
        let b = match self.open.get(&index) {
            Some(b) => b,
            None => self.recent_bucket(index)?,
        };
        let b = Some(b).filter(|b| !b.reporters.is_empty())?;
        let mut stats = b.stats.clone();
        b.pending.clone().finish(&mut stats);
        Some(Compaction {
            index,
            stats,
            reporters: b.sorted_reporters(),
        })
    }

    /// Adds a stored [`Compaction`] as if each of its reporters' intervals arrived (a master
    /// rebuilding a run); false, and nothing added, if any of them was already merged.
    pub fn add_merged(&mut self, c: &Compaction) -> bool {
        if c.reporters.keys().any(|uid| self.has(uid, c.index)) {
            return false;
        }
        for (uid, &requests) in &c.reporters {
            self.note(uid, c.index, requests);
        }
        let reporter = IntervalStats::REPORTER;
        if c.index < self.next_to_close {
            let slaves: Vec<(&str, u64)> =
                c.reporters.iter().map(|(u, &n)| (u.as_str(), n)).collect();
            self.merge_late(c.index, &c.stats, reporter, &slaves);
        } else {
            let b = self.open.entry(c.index).or_default();
            b.stats.merge(&c.stats);
            b.reporters
                .extend(c.reporters.iter().map(|(u, &n)| (u.clone(), n)));
        }
        true
    }
}
