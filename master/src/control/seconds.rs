//! Writing the active run's seconds to the store: each closed second merged
//! (`aggregate::Compaction`), and the intervals held past [`held::HOLD`], so that each is
//! durable before it is acknowledged (after the commit of the batch that holds it).
//!
//! A second held open too long (a slave late, or a master behind) is stored as a snapshot of
//! its merge so far: one row however many slaves reported, replaced by the second's own
//! compaction when it closes. Storing each of its held intervals as a row of its own made
//! the master's slowest path its most expensive one: at 10,000 slaves one second past the
//! hold was 10,000 rows (about 7 MiB a second to SQLite, on the control loop), which made the
//! next second later still, until the fleet was lost by lease. Only an interval whose second
//! the run no longer holds open (another run's, or none) is still stored as a row.

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
                    self.acks
                        .entry((uid, run_id.clone()))
                        .or_default()
                        .push(c.index);
                }
            }
        }
        if let Err(e) = result {
            warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot compact merged seconds: their stored intervals stay, their held ones are not acknowledged");
        }
    }

    /// Stores, in the store's batch, the intervals held longer than `held::HOLD` at `now`
    /// (their second waits for a slave, or the master is behind), to acknowledge after the
    /// commit, before the slaves' resend timeout: a second the active run still holds open
    /// as a snapshot of its merge, any other interval as a row. What cannot be written stays
    /// unacknowledged.
    pub(super) fn store_overdue(&mut self, now: Instant) {
        let (run_id, due) = self.held.overdue(now, held::HOLD);
        if due.is_empty() {
            return;
        }
        let run_id = run_id.to_string();
        let run = self.run.as_ref().filter(|r| r.id == run_id);
        let mut snapshots = Vec::new();
        let mut snapshot_uids = Vec::new();
        let mut rows = Vec::new();
        for (index, intervals) in due {
            match run.and_then(|r| r.agg.snapshot(index)) {
                Some(c) => {
                    snapshots.push(c);
                    snapshot_uids.push(intervals.into_iter().map(|i| i.slave_uid));
                }
                None => rows.push((index, intervals)),
            }
        }
        let mut acked: Vec<(String, u64)> = Vec::new();
        if !snapshots.is_empty() {
            debug!(run_id = %run_id, seconds = snapshots.len(), "seconds held open too long: stored as their merge so far");
            let (stored, result) =
                write_seconds(&mut self.store, &mut self.noted, &run_id, &snapshots);
            for (c, uids) in snapshots.iter().zip(snapshot_uids).take(stored) {
                acked.extend(uids.map(|uid| (uid, c.index)));
            }
            if let Err(e) = result {
                warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot store seconds held open: their intervals are not acknowledged");
            }
        }
        let result = self.store.batch().and_then(|()| {
            for (index, intervals) in &rows {
                for i in intervals {
                    self.encoded.clear();
                    i.payload
                        .encode(&mut self.encoded)
                        .expect("a Vec grows to any message");
                    self.store
                        .insert_interval(&run_id, &i.slave_uid, *index, &self.encoded)?;
                    acked.push((i.slave_uid.clone(), *index));
                }
            }
            Ok(())
        });
        if let Err(e) = &result {
            warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot store held intervals: not acknowledged");
        }
        for (uid, index) in acked {
            self.acks
                .entry((uid, run_id.clone()))
                .or_default()
                .push(index);
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
