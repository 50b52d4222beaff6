//! The run store: SQLite (embedded) under the master's state directory.
//!
//! Holds every run (scenario, live state, final report) and every statistics interval received,
//! keyed by (run, index, slave): second first, so that the intervals a batch stores (one per
//! slave, nearly all of the same second or two) land together at the end of the key's index.
//! An interval is stored before the master acknowledges it, so a master killed at any moment
//! restarts with everything a slave was told is safe.
//!
//! Once a second reported by several slaves has closed, its merged statistics and reporters
//! (`seconds`, see `aggregate::Compaction`) replace their intervals, in one transaction: a
//! run's store grows by about one merged second per second, not by one interval per slave
//! per second. Every interval stored for a second has been merged into the master's copy of
//! that second when it is compacted (the controller stores and merges each in one step).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open the run store at {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("run store query failed")]
    Query(#[from] rusqlite::Error),
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    pub name: String,
    pub scenario_json: String,
    /// `init`, `running`, `suspended`, `stopping`, `passed`, `failed`, `aborted`.
    pub status: String,
    pub created_unix_ms: u64,
    /// Live state needed to recover the run after a restart (JSON).
    pub state_json: String,
}

/// One line of the run list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub created_unix_ms: u64,
}

/// A row [`Store::replay`] hands out.
pub enum Stored<'a> {
    /// A merged second (`aggregate::Compaction`'s stored form).
    Second { index: u64, payload: &'a [u8] },
    /// One slave's interval (a `StatsInterval`).
    Interval {
        slave_uid: &'a str,
        index: u64,
        payload: &'a [u8],
    },
}

pub struct Store {
    conn: Connection,
    /// A transaction is open (see [`Store::batch`]).
    batching: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scenario_json TEXT NOT NULL,
    status TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    state_json TEXT NOT NULL DEFAULT '{}',
    report_json TEXT
);
CREATE TABLE IF NOT EXISTS intervals (
    run_id TEXT NOT NULL,
    slave_uid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (run_id, idx, slave_uid)
);
CREATE TABLE IF NOT EXISTS seconds (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS run_slaves (
    run_id TEXT NOT NULL,
    slave_uid TEXT NOT NULL,
    first_idx INTEGER NOT NULL,
    PRIMARY KEY (run_id, slave_uid)
);
";

/// The intervals table's key before 2026-12-02, by slave first. By second first, the
/// intervals of one 100 ms batch (nearly all of one second) go to the tail of the key's index
/// instead of one place per slave.
const OLD_INTERVALS_KEY: &str = "PRIMARY KEY (run_id, slave_uid, idx)";

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // The store is written all run long and read only on recovery and for reports: a
        // bounded page cache keeps the master's memory flat while the database grows. 4 MiB
        // holds the pages a batch writes to (the intervals' tail, the key's tail) at 10,000
        // slaves, so they are not read back from the file every 100 ms.
        conn.pragma_update(None, "cache_size", -4096)
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let intervals_sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'intervals'",
                [],
                |r| r.get(0),
            )
            .map_err(open_err)?;
        if intervals_sql.contains(OLD_INTERVALS_KEY) {
            // Rebuilt with the schema's key, in one transaction: a master stopped mid-way
            // keeps the old table whole.
            conn.execute_batch(&format!(
                "BEGIN;
                 ALTER TABLE intervals RENAME TO intervals_by_slave;
                 {SCHEMA}
                 INSERT INTO intervals (run_id, slave_uid, idx, payload)
                     SELECT run_id, slave_uid, idx, payload FROM intervals_by_slave ORDER BY rowid;
                 DROP TABLE intervals_by_slave;
                 COMMIT;"
            ))
            .map_err(open_err)?;
        }
        Ok(Store {
            conn,
            batching: false,
        })
    }

    pub fn create_run(&self, r: &RunRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO runs (id, name, scenario_json, status, created_unix_ms, state_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.id, r.name, r.scenario_json, r.status, r.created_unix_ms as i64, r.state_json],
        )?;
        Ok(())
    }

    pub fn update_state(&self, id: &str, status: &str, state_json: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE runs SET status = ?2, state_json = ?3 WHERE id = ?1",
            params![id, status, state_json],
        )?;
        Ok(())
    }

    pub fn finish_run(&self, id: &str, status: &str, report_json: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE runs SET status = ?2, report_json = ?3 WHERE id = ?1",
            params![id, status, report_json],
        )?;
        Ok(())
    }

    /// Makes the writes that follow, until [`Store::commit`], one transaction: thousands of
    /// intervals a second cost one commit per batch instead of one each. Nothing written in
    /// a batch is durable before the commit (acknowledge only after it).
    pub fn batch(&mut self) -> Result<(), StoreError> {
        if !self.batching {
            self.conn.execute_batch("BEGIN")?;
            self.batching = true;
        }
        Ok(())
    }

    /// Commits the open batch, if any. On failure the batch is rolled back: its writes are
    /// lost (the slaves send unacknowledged intervals again).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.batching {
            return Ok(());
        }
        self.batching = false;
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        Ok(())
    }

    /// Stores an interval; `false` if it was already stored (a resend).
    pub fn insert_interval(
        &self,
        run_id: &str,
        slave_uid: &str,
        index: u64,
        payload: &[u8],
    ) -> Result<bool, StoreError> {
        // Once per interval of every slave: the statement is compiled once, not per call.
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO intervals (run_id, slave_uid, idx, payload) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![run_id, slave_uid, index as i64, payload])?;
        Ok(n == 1)
    }

    /// Stores second `index` of run `run_id` merged (replacing an earlier merge of it) and
    /// drops the run's intervals of that second, which the caller has merged into it all.
    /// Meant for a batch ([`Store::batch`]): both happen at its commit or neither does.
    pub fn put_second(&self, run_id: &str, index: u64, payload: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO seconds (run_id, idx, payload) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![run_id, index as i64, payload])?;
        self.conn
            .prepare_cached("DELETE FROM intervals WHERE run_id = ?1 AND idx = ?2")?
            .execute(params![run_id, index as i64])?;
        Ok(())
    }

    /// Hands `f` every merged second and interval stored for run `run_id`, by second, a
    /// second's merge before its intervals, one row at a time (a long run's rows do not fit
    /// in memory together). Stops at `f`'s first error.
    pub fn replay<E: From<StoreError>>(
        &self,
        run_id: &str,
        mut f: impl FnMut(Stored<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = self
            .conn
            .prepare(
                "SELECT idx, kind, slave_uid, payload FROM (
                     SELECT idx, 0 AS kind, '' AS slave_uid, payload FROM seconds WHERE run_id = ?1
                     UNION ALL
                     SELECT idx, 1 AS kind, slave_uid, payload FROM intervals WHERE run_id = ?1
                 ) ORDER BY idx, kind",
            )
            .map_err(StoreError::from)?;
        let mut rows = q.query(params![run_id]).map_err(StoreError::from)?;
        while let Some(r) = rows.next().map_err(StoreError::from)? {
            let read = || -> Result<_, rusqlite::Error> {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)?,
                    r.get_ref(2)?.as_str()?,
                    r.get_ref(3)?.as_blob()?,
                ))
            };
            let (index, kind, slave_uid, payload) = read().map_err(StoreError::from)?;
            f(if kind == 0 {
                Stored::Second { index, payload }
            } else {
                Stored::Interval {
                    slave_uid,
                    index,
                    payload,
                }
            })?;
        }
        Ok(())
    }

    /// Records that slave `slave_uid` reported second `index` of run `run_id`, for
    /// [`Store::slaves_of`] once its intervals are compacted away (keeps the lowest second).
    pub fn note_slave(&self, run_id: &str, slave_uid: &str, index: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO run_slaves (run_id, slave_uid, first_idx) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, slave_uid) DO UPDATE SET first_idx = MIN(first_idx, excluded.first_idx)",
            )?
            .execute(params![run_id, slave_uid, index as i64])?;
        Ok(())
    }

    /// The slaves that sent statistics for run `run_id` (their uids), by the first second
    /// they reported, then in the order they were first stored.
    pub fn slaves_of(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT slave_uid FROM (
                 SELECT slave_uid, idx AS k, rowid AS o FROM intervals WHERE run_id = ?1
                 UNION ALL
                 SELECT slave_uid, first_idx AS k, rowid AS o FROM run_slaves WHERE run_id = ?1
             ) GROUP BY slave_uid ORDER BY MIN(k), MIN(o), slave_uid",
        )?;
        let rows = q.query_map(params![run_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs that had not finished when the master stopped.
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT id, name, scenario_json, status, created_unix_ms, state_json FROM runs WHERE report_json IS NULL ORDER BY created_unix_ms",
        )?;
        let rows = q.query_map([], |r| {
            Ok(RunRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                scenario_json: r.get(2)?,
                status: r.get(3)?,
                created_unix_ms: r.get::<_, i64>(4)? as u64,
                state_json: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A run's status (`init`, `running`, … `passed`), `None` for an unknown run.
    pub fn status(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT status FROM runs WHERE id = ?1", params![id], |r| {
                r.get::<_, String>(0)
            })
            .optional()?)
    }

    /// The scenario a run was created with (`Scenario::to_json`), `None` for an unknown run.
    pub fn scenario(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT scenario_json FROM runs WHERE id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
    }

    pub fn report(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT report_json FROM runs WHERE id = ?1",
                params![id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Deletes a finished run (one with a report) and its intervals, in one transaction;
    /// `false` if there is no finished run `id` (an unfinished run is never deleted: its
    /// master may still be driving it or resume it after a restart).
    pub fn delete_finished_run(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "DELETE FROM runs WHERE id = ?1 AND report_json IS NOT NULL",
            params![id],
        )?;
        if n == 1 {
            tx.execute("DELETE FROM intervals WHERE run_id = ?1", params![id])?;
            tx.execute("DELETE FROM seconds WHERE run_id = ?1", params![id])?;
            tx.execute("DELETE FROM run_slaves WHERE run_id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    pub fn runs(&self, limit: u32) -> Result<Vec<RunRow>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT id, name, status, created_unix_ms FROM runs ORDER BY created_unix_ms DESC LIMIT ?1",
        )?;
        let rows = q.query_map(params![limit], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                name: r.get(1)?,
                status: r.get(2)?,
                created_unix_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests;
