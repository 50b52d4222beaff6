//! The run store: SQLite (embedded) under the master's state directory.
//!
//! Holds every run (scenario, live state, final report) and every statistics interval received,
//! keyed by (run, index, slave): second first, so that the intervals a batch stores (one per
//! slave, nearly all of the same second or two) land together at the end of the key's index.
//! An interval is stored before the master acknowledges it, so a master killed at any moment
//! restarts with everything a slave was told is safe.

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

/// One stored interval.
pub struct StoredInterval {
    pub slave_uid: String,
    pub index: u64,
    pub payload: Vec<u8>,
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

    pub fn intervals(&self, run_id: &str) -> Result<Vec<StoredInterval>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT slave_uid, idx, payload FROM intervals WHERE run_id = ?1 ORDER BY idx",
        )?;
        let rows = q.query_map(params![run_id], |r| {
            Ok(StoredInterval {
                slave_uid: r.get(0)?,
                index: r.get::<_, i64>(1)? as u64,
                payload: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The slaves that sent statistics for run `run_id` (their uids), in the order they first
    /// did.
    pub fn slaves_of(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT slave_uid FROM intervals WHERE run_id = ?1 GROUP BY slave_uid ORDER BY MIN(rowid)",
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
mod tests {
    use super::*;

    #[test]
    fn runs_and_intervals_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let rec = RunRecord {
            id: "r1".into(),
            name: "smoke".into(),
            scenario_json: "{}".into(),
            status: "running".into(),
            created_unix_ms: 1,
            state_json: "{}".into(),
        };
        {
            let s = Store::open(&path).unwrap();
            s.create_run(&rec).unwrap();
            assert!(s.insert_interval("r1", "a", 0, b"x").unwrap());
            assert!(
                !s.insert_interval("r1", "a", 0, b"x").unwrap(),
                "idempotent"
            );
            assert!(s.insert_interval("r1", "b", 0, b"y").unwrap());
        }
        // Reopen: like a master restart.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.unfinished_runs().unwrap(), vec![rec]);
        assert_eq!(s.intervals("r1").unwrap().len(), 2);
        s.finish_run("r1", "passed", "{\"ok\":1}").unwrap();
        assert!(s.unfinished_runs().unwrap().is_empty());
        assert_eq!(s.report("r1").unwrap().as_deref(), Some("{\"ok\":1}"));
        assert_eq!(s.report("nope").unwrap(), None);
        assert_eq!(s.scenario("r1").unwrap().as_deref(), Some("{}"));
        assert_eq!(s.scenario("nope").unwrap(), None);
        assert_eq!(s.status("r1").unwrap().as_deref(), Some("passed"));
        assert_eq!(s.status("nope").unwrap(), None);
        assert_eq!(s.runs(10).unwrap()[0].status, "passed");
        assert!(s.delete_finished_run("r1").unwrap());
        assert!(s.runs(10).unwrap().is_empty());
        assert!(
            s.intervals("r1").unwrap().is_empty(),
            "its intervals go with it"
        );
        assert!(!s.delete_finished_run("r1").unwrap());
    }

    /// What a batch writes is invisible to another reader (and lost in a crash) until the
    /// commit, then all there; so a master acknowledges a batch's intervals only after it.
    #[test]
    fn a_batch_is_durable_at_its_commit_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let mut s = Store::open(&path).unwrap();
        let other = Store::open(&path).unwrap();
        s.batch().unwrap();
        s.batch().unwrap(); // one transaction, however often asked
        for i in 0..50 {
            assert!(s.insert_interval("r1", "a", i, b"x").unwrap());
        }
        assert_eq!(
            s.intervals("r1").unwrap().len(),
            50,
            "the writer sees its batch"
        );
        assert!(
            other.intervals("r1").unwrap().is_empty(),
            "nobody else does yet"
        );
        s.commit().unwrap();
        assert_eq!(other.intervals("r1").unwrap().len(), 50);
        s.commit().unwrap(); // nothing open: nothing to do
        // A batch never committed (the master died) leaves nothing.
        s.batch().unwrap();
        assert!(s.insert_interval("r1", "a", 50, b"x").unwrap());
        drop(s);
        assert_eq!(other.intervals("r1").unwrap().len(), 50);
    }

    #[test]
    fn an_unfinished_run_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("runs.db")).unwrap();
        let rec = RunRecord {
            id: "live".into(),
            name: "n".into(),
            scenario_json: "{}".into(),
            status: "running".into(),
            created_unix_ms: 1,
            state_json: "{}".into(),
        };
        s.create_run(&rec).unwrap();
        s.insert_interval("live", "a", 0, b"x").unwrap();
        assert!(!s.delete_finished_run("live").unwrap());
        assert_eq!(s.unfinished_runs().unwrap(), vec![rec]);
        assert_eq!(s.intervals("live").unwrap().len(), 1);
    }

    /// The key's index is ordered by second before slave, so a batch of one second's
    /// intervals writes to the index's tail; a store made with the old key is migrated with
    /// its intervals.
    #[test]
    fn intervals_are_keyed_by_second_before_slave_and_old_stores_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                &SCHEMA.replace("PRIMARY KEY (run_id, idx, slave_uid)", OLD_INTERVALS_KEY),
            )
            .unwrap();
            for (uid, idx) in [("b", 0), ("a", 0), ("a", 1)] {
                old.execute(
                    "INSERT INTO intervals (run_id, slave_uid, idx, payload) VALUES ('r', ?1, ?2, x'01')",
                    params![uid, idx],
                )
                .unwrap();
            }
        }
        let s = Store::open(&path).unwrap();
        let columns: Vec<String> = s
            .conn
            .prepare(
                "SELECT name FROM pragma_index_info('sqlite_autoindex_intervals_1') ORDER BY seqno",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["run_id", "idx", "slave_uid"]);
        let got: Vec<(String, u64)> = s
            .intervals("r")
            .unwrap()
            .into_iter()
            .map(|i| (i.slave_uid, i.index))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            s.slaves_of("r").unwrap(),
            ["b", "a"],
            "first-seen order kept"
        );
        assert!(
            !s.insert_interval("r", "a", 1, b"x").unwrap(),
            "still one per key"
        );
        drop(s);
        // Opening again finds nothing to migrate.
        assert_eq!(Store::open(&path).unwrap().intervals("r").unwrap().len(), 3);
    }
}
