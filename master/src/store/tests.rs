//! The store's keys, batches, migrations and compaction, on a file in a temporary directory.

use super::*;

/// The intervals stored for `run`: (slave, second), by second.
fn intervals(s: &Store, run: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    s.replay(run, |row| -> Result<(), StoreError> {
        if let Stored::Interval {
            slave_uid, index, ..
        } = row
        {
            out.push((slave_uid.to_string(), index));
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The merged seconds stored for `run`: (second, payload), by second.
fn seconds(s: &Store, run: &str) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    s.replay(run, |row| -> Result<(), StoreError> {
        if let Stored::Second { index, payload } = row {
            out.push((index, payload.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    out
}

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
    assert_eq!(intervals(&s, "r1").len(), 2);
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
    assert!(intervals(&s, "r1").is_empty(), "its intervals go with it");
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
    assert_eq!(intervals(&s, "r1").len(), 50, "the writer sees its batch");
    assert!(intervals(&other, "r1").is_empty(), "nobody else does yet");
    s.commit().unwrap();
    assert_eq!(intervals(&other, "r1").len(), 50);
    s.commit().unwrap(); // nothing open: nothing to do
    // A batch never committed (the master died) leaves nothing.
    s.batch().unwrap();
    assert!(s.insert_interval("r1", "a", 50, b"x").unwrap());
    drop(s);
    assert_eq!(intervals(&other, "r1").len(), 50);
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
    assert_eq!(intervals(&s, "live").len(), 1);
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
    let got = intervals(&s, "r");
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
    assert_eq!(intervals(&Store::open(&path).unwrap(), "r").len(), 3);
}

/// A merged second replaces that second's intervals (and an earlier merge of it) in one
/// batch, leaves other seconds alone, still names every slave, and goes with its run.
#[test]
fn a_merged_second_replaces_its_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let mut s = Store::open(&path).unwrap();
    let other = Store::open(&path).unwrap();
    for (uid, idx) in [("c", 0), ("a", 1), ("b", 1), ("c", 1), ("a", 2)] {
        s.insert_interval("r", uid, idx, b"x").unwrap();
    }
    s.insert_interval("q", "a", 1, b"x").unwrap();
    s.batch().unwrap();
    s.note_slave("r", "b", 1).unwrap();
    s.note_slave("r", "a", 1).unwrap();
    s.put_second("r", 1, b"merged").unwrap();
    assert_eq!(
        intervals(&other, "r").len(),
        5,
        "nothing changes before the commit"
    );
    s.commit().unwrap();
    let left = intervals(&s, "r");
    assert_eq!(left, [("c".to_string(), 0), ("a".to_string(), 2)]);
    assert_eq!(intervals(&s, "q").len(), 1, "another run's stay");
    s.put_second("r", 1, b"merged again").unwrap();
    let merged = seconds(&s, "r");
    assert_eq!(merged.len(), 1, "one row per second");
    assert_eq!((merged[0].0, &merged[0].1[..]), (1, &b"merged again"[..]));
    // c first (second 0), then a and b (second 1; b was noted first), none twice.
    assert_eq!(s.slaves_of("r").unwrap(), ["c", "b", "a"]);
    s.note_slave("r", "b", 0).unwrap();
    assert_eq!(
        s.slaves_of("r").unwrap(),
        ["b", "c", "a"],
        "the lowest second"
    );
    let rec = RunRecord {
        id: "r".into(),
        name: "n".into(),
        scenario_json: "{}".into(),
        status: "passed".into(),
        created_unix_ms: 1,
        state_json: "{}".into(),
    };
    s.create_run(&rec).unwrap();
    s.finish_run("r", "passed", "{}").unwrap();
    assert!(s.delete_finished_run("r").unwrap());
    assert!(seconds(&s, "r").is_empty());
    assert!(s.slaves_of("r").unwrap().is_empty());
}

/// A replay hands out rows by second, each second's merge before its intervals, whatever
/// order they were stored in, and only the run's own.
#[test]
fn a_replay_goes_by_second_merge_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("runs.db")).unwrap();
    s.insert_interval("r", "b", 2, b"b2").unwrap();
    s.insert_interval("r", "a", 0, b"a0").unwrap();
    s.insert_interval("other", "a", 1, b"x").unwrap();
    s.put_second("r", 1, b"m1").unwrap();
    s.insert_interval("r", "c", 1, b"c1").unwrap();
    s.put_second("r", 2, b"m2").unwrap();
    s.insert_interval("r", "c", 2, b"c2").unwrap();
    let mut got = Vec::new();
    s.replay("r", |row| -> Result<(), StoreError> {
        got.push(match row {
            Stored::Second { index, payload } => (index, String::new(), payload.to_vec()),
            Stored::Interval {
                slave_uid,
                index,
                payload,
            } => (index, slave_uid.to_string(), payload.to_vec()),
        });
        Ok(())
    })
    .unwrap();
    let got: Vec<(u64, &str, &[u8])> = got
        .iter()
        .map(|(i, u, p)| (*i, u.as_str(), p.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "a", &b"a0"[..]),
            (1, "", b"m1"),
            (1, "c", b"c1"),
            (2, "", b"m2"),
            (2, "c", b"c2"),
        ],
        "b's interval of second 2 went with its merge"
    );
}
