//! Writing the active run's seconds to the store: each closed second merged
//! (`aggregate::Compaction`), and the intervals held past [`held::HOLD`], so that each is
//! durable before it is acknowledged (after the commit of the batch that holds it).
//!
//! A second held open too long (a slave late, or a master behind) is stored as a snapshot of
//! its merge so far: one row however many slaves reported, replaced by the second's own
//! compaction when it closes. Storing each of its held intervals as a row of its own made
//! the master's slowest path its most expensive one: at 10,000 slaves one second past the
//! hold was 10,000 rows (about 7 MiB a second to SQLite, on the control loop), which made the
//! next second later still, until the fleet was lost by lease. A recent closed second whose
//! late intervals are held is stored the same way, its kept merge with them, replacing its
//! compaction. An interval whose second the run no longer keeps (another run's, or an older
//! second) is not stored from here: its slave sends it again, and that copy is stored as a
//! row of its own (`slaves.rs`).

use std::collections::HashSet;

use super::*;
use crate::store::StoreError;

impl Controller {
    /// Writes the seconds the active run compacted into the store's batch, and lets go of
    /// their held intervals, to acknowledge after the commit. One that cannot be written
    /// leaves its stored intervals as they are and its held ones unacknowledged (the slaves
    /// send them again, and they are stored as rows).
    pub(super) fn compact(&mut self) {
        let Some(r) = self.run.as_mut() else {
            return;
        };
        let compactions = r.agg.take_compactions();
        if compactions.is_empty() {
            return;
        }
        let run_id = r.id.clone();
        let (stored, result) =
            write_seconds(&mut self.store, &mut self.noted, &run_id, &compactions);
        for (i, c) in compactions.iter().enumerate() {
            for uid in self.held.release(&run_id, c.index) {
                if i < stored {
                    self.ack_after_commit(uid, run_id.clone(), c.index);
                }
            }
        }
        if let Err(e) = result {
            warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot compact merged seconds: their stored intervals stay, their held ones are not acknowledged");
        }
    }

    /// Stores, in the store's batch, the seconds whose intervals were held longer than
    /// `held::HOLD` at `now` (they wait for a slave, the master is behind, or they came late)
    /// as snapshots of their merge so far, open or recent, to acknowledge their intervals
    /// after the commit, before the slaves' resend timeout. What cannot be written stays
    /// unacknowledged, and so does an interval whose run no longer keeps its second
    /// (`held.rs`): their slaves send them again.
    pub(super) fn store_overdue(&mut self, now: Instant) {
        let (run_id, due) = self.held.overdue(now, held::HOLD);
        if due.is_empty() {
            return;
        }
        let run_id = run_id.to_string();
        let run = self.run.as_ref().filter(|r| r.id == run_id);
        let mut snapshots = Vec::new();
        let mut reporters = Vec::new();
        for (index, uids) in due {
            match run.and_then(|r| r.agg.snapshot(index)) {
                Some(c) => {
                    snapshots.push(c);
                    reporters.push(uids);
                }
                None => {
                    debug!(run_id = %run_id, index, intervals = uids.len(), "held intervals of a second no longer kept: left for their slaves to send again");
                }
            }
        }
        if snapshots.is_empty() {
            return;
        }
        debug!(run_id = %run_id, seconds = snapshots.len(), "seconds held too long: stored as their merge so far");
        let (stored, result) = write_seconds(&mut self.store, &mut self.noted, &run_id, &snapshots);
        for (c, uids) in snapshots.iter().zip(reporters).take(stored) {
            for uid in uids {
                self.ack_after_commit(uid, run_id.clone(), c.index);
            }
        }
        if let Err(e) = result {
            warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot store held seconds: their intervals are not acknowledged");
        }
    }
}

/// Writes merged seconds of run `run_id` into the store's batch, noting each reporter the
/// store has not noted for the run yet (`noted`: the run id and those uids). Returns how
/// many were written, in order, before the first error.
fn write_seconds(
    store: &mut Store,
    noted: &mut (String, HashSet<String>),
    run_id: &str,
    seconds: &[Compaction],
) -> (usize, Result<(), StoreError>) {
    if noted.0 != run_id {
        *noted = (run_id.to_string(), HashSet::new());
    }
    let noted = &mut noted.1;
    let mut stored = 0;
    let result = store.batch().and_then(|()| {
        for c in seconds {
            for uid in c.reporters.keys() {
                if !noted.contains(uid) {
                    store.note_slave(run_id, uid, c.index)?;
                    noted.insert(uid.clone());
                }
            }
            store.put_second(run_id, c.index, &c.encode())?;
            stored += 1;
        }
        Ok(())
    });
    (stored, result)
}
