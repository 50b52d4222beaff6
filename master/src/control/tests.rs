//! The control loop with its real store, driven by commands as the gRPC service sends them:
//! when an interval is stored and when it is acknowledged.

use super::*;
use crate::home::MasterDir;
use lobster_fleet::stats::{EndpointStats, IntervalStats};

const LEASE: Duration = Duration::from_secs(10);

struct Bench {
    c: Controller,
    _dir: tempfile::TempDir,
    /// Each slave's session and what the master sent it.
    sessions: Vec<(u64, mpsc::Receiver<Result<super::Queued, Status>>)>,
}

/// A master with `slaves` slaves attached and a closed-model run of theirs that started
/// `started_ago` ago.
fn bench(slaves: usize, started_ago: Duration) -> (Bench, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("lobster.db")).unwrap();
    let settings = Settings {
        state_dir: MasterDir::at(dir.path().to_path_buf()),
        heartbeat: Duration::from_secs(1),
        lease: LEASE,
        max_slaves: 100,
    };
    let (mut c, _handle) = Controller::new(settings, store, Arc::new(Metrics::default()));
    let now = Instant::now();
    let mut sessions = Vec::new();
    for i in 0..slaves {
        let uid = format!("u{i}");
        let (_, secret) = c
            .registry
            .join(
                JoinRequest {
                    instance_id: "i-1".into(),
                    cores: 1,
                    slave_index: i as u32 + 1,
                    version: lobster_fleet::VERSION.into(),
                    slave_uid: uid.clone(),
                    millicores: 1000,
                    ..Default::default()
                },
                "default",
                LEASE,
                100,
                now,
                0,
            )
            .unwrap();
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let session = c
            .registry
            .attach(&uid, &secret, tx, Arc::new(Pulse::new(now)), now)
            .unwrap();
        sessions.push((session, rx));
    }
    let scenario = lobster_fleet::scenario::parse(
        "name: t\ntarget: http://127.0.0.1:9\nduration: 10m\nload: {users: 4}\nrequests: [{name: a, path: /}]\n",
        "t.yaml",
    )
    .unwrap();
    let options = RunOptions {
        quorum: slaves as u32,
        quorum_timeout_ms: 5000,
    };
    let id = c.create_run(scenario, options, now - started_ago).unwrap();
    assert_eq!(c.run.as_ref().unwrap().phase, Phase::Running);
    (
        Bench {
            c,
            _dir: dir,
            sessions,
        },
        id,
    )
}

impl Bench {
    /// Slave `i` sends its interval `index` of `requests` requests.
    fn send(&mut self, i: usize, run_id: &str, index: u64, requests: u64) {
        let mut s = IntervalStats::default();
        let mut e = EndpointStats {
            requests,
            ..Default::default()
        };
        for _ in 0..requests {
            e.latency_us.record(2_000).unwrap();
        }
        s.endpoints.insert("a".into(), e);
        let msg = s.to_proto(run_id, index, false);
        self.c
            .handle(Command::FromSlave(self.sessions[i].0, Up::Stats(msg)));
    }

    /// Closes the run's seconds as a lease from now would (every slave that has not reported
    /// them given up), stores them merged and commits.
    fn close_by_lease(&mut self) {
        let r = self.c.run.as_mut().unwrap();
        let _ = r.tick(Instant::now() + LEASE, LEASE);
        self.c.save();
        self.c.commit();
    }

    /// The interval indexes acknowledged to slave `i` since last asked.
    fn acked(&mut self, i: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(Ok(m)) = self.sessions[i].1.try_recv() {
            if let Some(Down::Ack(a)) = m.into_message().kind {
                out.extend(a.indexes);
            }
        }
        out
    }

    /// How many empty `Ack`s (answers to heartbeats) slave `i` got since last asked; drops
    /// anything else it got.
    fn answers(&mut self, i: usize) -> usize {
        let mut n = 0;
        while let Ok(Ok(m)) = self.sessions[i].1.try_recv() {
            if let Some(Down::Ack(a)) = m.into_message().kind
                && a.run_id.is_empty()
                && a.indexes.is_empty()
            {
                n += 1;
            }
        }
        n
    }

    /// Second `index` of the run as the store holds it merged: its requests and reporters.
    fn stored_second(&mut self, run_id: &str, index: u64) -> (u64, Vec<String>) {
        let mut found = None;
        self.c
            .store
            .replay(run_id, |row| -> anyhow::Result<()> {
                if let Stored::Second { index: i, payload } = row
                    && i == index
                {
                    let c = Compaction::decode(i, payload)?;
                    found = Some((c.stats.requests(), c.reporters.into_keys().collect()));
                }
                Ok(())
            })
            .unwrap();
        found.expect("the second is stored merged")
    }

    /// What the store holds of the run: (merged seconds, intervals as (second, slave)).
    fn stored(&mut self, run_id: &str) -> (Vec<u64>, Vec<(u64, String)>) {
        let (mut seconds, mut intervals) = (Vec::new(), Vec::new());
        self.c
            .store
            .replay(run_id, |row| -> anyhow::Result<()> {
                match row {
                    Stored::Second { index, .. } => seconds.push(index),
                    Stored::Interval {
                        slave_uid, index, ..
                    } => intervals.push((index, slave_uid.to_string())),
                }
                Ok(())
            })
            .unwrap();
        (seconds, intervals)
    }
}

/// An interval of an open second is merged and held, never written as its own row, and
/// acknowledged only after the commit that stored its second merged.
#[test]
fn an_open_seconds_interval_is_acknowledged_with_its_merged_second() {
    // Second 0 ended 0.5 s ago; it closes once both slaves reported it (or after the lease).
    let (mut b, id) = bench(2, Duration::from_millis(1500));
    b.send(0, &id, 0, 5);
    b.c.tick();
    b.c.tick();
    assert_eq!(
        b.acked(0),
        Vec::<u64>::new(),
        "acknowledged before it is durable"
    );
    assert_eq!(
        b.stored(&id),
        (vec![], vec![]),
        "written before its second closed"
    );
    assert_eq!(b.c.held.len(), 1);
    b.send(1, &id, 0, 7);
    b.c.tick(); // closes second 0 and stores it merged, in the batch
    b.c.tick(); // commits the batch, then acknowledges
    assert_eq!(b.acked(0), [0]);
    assert_eq!(b.acked(1), [0]);
    assert_eq!(b.stored(&id), (vec![0], vec![]), "only the merged second");
    assert_eq!(b.c.held.len(), 0);
    assert_eq!(b.c.run.as_ref().unwrap().agg.series[0].requests, 12);
}

/// A second held open past `HOLD` (a slave gone quiet holds it for a lease) is stored as its
/// merge so far, one row however many reported, and its intervals are acknowledged before
/// the slaves' resend timeout; the second's own merge replaces it when it closes. A resend
/// of an interval merged already is held with it, not stored again.
#[test]
fn a_second_held_too_long_is_stored_merged_so_far() {
    let (mut b, id) = bench(4, Duration::from_millis(1500));
    b.send(0, &id, 0, 5);
    b.send(1, &id, 0, 7);
    b.c.tick();
    b.c.tick();
    assert_eq!(b.acked(0), Vec::<u64>::new());
    // The ticks after `HOLD` store it (the lease holds second 0 open for 10 s).
    std::thread::sleep(held::HOLD + Duration::from_millis(100));
    b.c.tick();
    b.c.tick();
    assert_eq!((b.acked(0), b.acked(1)), (vec![0], vec![0]));
    assert_eq!(
        b.stored(&id),
        (vec![0], vec![]),
        "one merged row, not a row per interval"
    );
    assert_eq!(
        b.stored_second(&id, 0),
        (12, vec!["u0".into(), "u1".into()])
    );
    // Still open: a third slave's interval is merged and held, then stored with the second;
    // so is a resend of slave 0's (its ack was lost, say), merged once.
    b.send(2, &id, 0, 11);
    b.send(0, &id, 0, 5);
    b.c.tick();
    b.c.tick();
    assert_eq!(
        (b.acked(0), b.acked(2)),
        (vec![], vec![]),
        "held until their second is stored"
    );
    assert_eq!(b.stored(&id), (vec![0], vec![]), "the resend was a row");
    // Past the lease second 0 closes without slave 3: its merge replaces the snapshot.
    b.close_by_lease();
    // Slave 0 was acknowledged just now: its ack waits to be spaced (`acks.rs`).
    assert_eq!((b.acked(0), b.acked(2)), (vec![], vec![0]));
    std::thread::sleep(acks::ACK_WAIT);
    b.c.commit();
    assert_eq!((b.acked(0), b.acked(2)), (vec![0], vec![]), "once each");
    assert_eq!(b.stored(&id), (vec![0], vec![]));
    let all = vec!["u0".to_string(), "u1".into(), "u2".into()];
    assert_eq!(b.stored_second(&id, 0), (23, all));
    assert_eq!(b.c.run.as_ref().unwrap().agg.series[0].requests, 23);
}

/// A master behind closes seconds before their intervals are read. Those late intervals,
/// and resends of intervals merged already, are merged into their recent second and held,
/// and the second is stored again whole once they were held `HOLD`: one row however many
/// came, never a row each (a row each, they fed a 10,000-slave master's collapse).
#[test]
fn late_and_resent_intervals_of_a_recent_second_are_stored_within_it() {
    let (mut b, id) = bench(3, Duration::from_millis(1500));
    b.send(0, &id, 0, 5);
    // Second 0 closes by the lease without slaves 1 and 2.
    b.close_by_lease();
    assert_eq!(b.acked(0), [0]);
    // Their intervals arrive late, one of them twice; slave 0 resends its own.
    b.send(1, &id, 0, 7);
    b.send(2, &id, 0, 11);
    b.send(2, &id, 0, 11);
    b.send(0, &id, 0, 5);
    b.c.tick();
    b.c.tick();
    assert_eq!(
        (b.acked(0), b.acked(1), b.acked(2)),
        (vec![], vec![], vec![]),
        "acknowledged before they are stored"
    );
    assert_eq!(b.stored(&id), (vec![0], vec![]), "a row per late interval");
    std::thread::sleep(held::HOLD + Duration::from_millis(100));
    b.c.tick(); // stores second 0 again, merged with them
    b.c.tick(); // commits, then acknowledges
    assert_eq!(
        (b.acked(0), b.acked(1), b.acked(2)),
        (vec![0], vec![0], vec![0])
    );
    assert_eq!(b.stored(&id), (vec![0], vec![]));
    let all = vec!["u0".to_string(), "u1".into(), "u2".into()];
    assert_eq!(b.stored_second(&id, 0), (23, all), "merged once each");
    let r = b.c.run.as_ref().unwrap();
    assert_eq!(r.agg.series[0].requests, 23);
    assert_eq!(r.agg.late_requests, 18);
}

/// An interval of a second older than the kept window (`aggregate::KEPT`) has no merge to
/// go into: it is a row of its own, acknowledged after its commit, and stored without the
/// heartbeat it carries. One of a recent second is held.
#[test]
fn an_interval_older_than_the_kept_seconds_is_a_row_without_its_heartbeat() {
    // Started 75 s ago: the first tick closes seconds 0 to 64, and keeps 5 to 64.
    let (mut b, id) = bench(1, Duration::from_secs(75));
    b.c.tick();
    let agg = &b.c.run.as_ref().unwrap().agg;
    assert!(!agg.is_open(0) && !agg.is_recent(0) && agg.is_recent(5));
    let mut msg = one_request_interval(&id, 0);
    msg.heartbeat = Some(proto::Heartbeat {
        state: proto::SlaveState::Running as i32,
        run_id: id.clone(),
        active_users: 7,
        ..Default::default()
    });
    b.c.handle(Command::FromSlave(b.sessions[0].0, Up::Stats(msg)));
    b.send(0, &id, 5, 3);
    b.c.commit();
    assert_eq!(b.acked(0), [0], "only the row is durable");
    let mut rows = Vec::new();
    b.c.store
        .replay(&id, |row| -> anyhow::Result<()> {
            if let Stored::Interval { index, payload, .. } = row {
                rows.push((index, proto::StatsInterval::decode(payload)?));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, 0);
    assert_eq!(
        rows[0].1.heartbeat, None,
        "the heartbeat was stored with the interval"
    );
    assert_eq!(rows[0].1.endpoints[0].requests, 1);
    assert_eq!(b.c.registry.slaves["u0"].heartbeat.active_users, 7);
    assert_eq!(b.c.held.len(), 1, "second 5's interval");
}

/// A heartbeat is answered (an empty `Ack`, the slave's proof of life) only when the master
/// sent that slave nothing for `heartbeat_reply_after`; one carried by an interval is applied
/// as a heartbeat and never stored with the interval.
#[test]
fn a_heartbeat_is_answered_only_after_a_silence_and_an_interval_may_carry_it() {
    let (mut b, id) = bench(1, Duration::from_millis(1500));
    let reply_after = lobster_fleet::liveness::heartbeat_reply_after(LEASE, Duration::from_secs(1));
    assert_eq!(reply_after, Duration::from_secs(2));
    let beat = |users: u32| proto::Heartbeat {
        state: proto::SlaveState::Running as i32,
        run_id: id.clone(),
        active_users: users,
        ..Default::default()
    };
    let session = b.sessions[0].0;
    b.answers(0); // the run's assignment
    // Just after the assignment: the slave heard from the master, no answer.
    b.c.handle(Command::FromSlave(session, Up::Heartbeat(beat(1))));
    assert_eq!(
        b.answers(0),
        0,
        "answered a slave that just heard from the master"
    );
    assert_eq!(b.c.registry.slaves["u0"].heartbeat.active_users, 1);
    // After a silence toward it as long as the reply threshold: answered, once.
    let quiet_since = Instant::now() - reply_after;
    b.c.registry
        .slaves
        .get_mut("u0")
        .unwrap()
        .session
        .as_mut()
        .unwrap()
        .last_sent = Some(quiet_since);
    b.c.handle(Command::FromSlave(session, Up::Heartbeat(beat(2))));
    assert_eq!(b.answers(0), 1, "a silent master was not answered");
    b.c.handle(Command::FromSlave(session, Up::Heartbeat(beat(3))));
    assert_eq!(
        b.answers(0),
        0,
        "the answer itself is a message: no second one"
    );
    // An interval carries the heartbeat: applied as one (and never stored with it:
    // `an_interval_older_than_the_kept_seconds_is_a_row_without_its_heartbeat`).
    let mut msg = one_request_interval(&id, 0);
    msg.heartbeat = Some(beat(7));
    b.c.handle(Command::FromSlave(session, Up::Stats(msg)));
    assert_eq!(b.c.registry.slaves["u0"].heartbeat.active_users, 7);
    b.c.tick();
    b.c.tick();
    assert_eq!(b.acked(0), [0]);
}

/// Acknowledgements are spaced: a slave acknowledged a moment ago waits for its next one
/// with the one after (at most `ACK_WAIT`), or has it as the answer to its heartbeat; each
/// interval is acknowledged once. One `Ack` a slave a second was, with its writes, a
/// quarter of a 10,000-slave master's core.
#[test]
fn an_acknowledgement_right_after_another_waits_for_the_next_or_a_heartbeat() {
    let (mut b, id) = bench(2, Duration::from_millis(1500));
    b.send(0, &id, 0, 5);
    b.send(1, &id, 0, 7);
    b.c.tick();
    b.c.tick();
    assert_eq!(
        (b.acked(0), b.acked(1)),
        (vec![0], vec![0]),
        "a first ack waits for nothing"
    );
    // Second 1 closes (by the lease, as good as any close here) and is stored at once.
    b.send(0, &id, 1, 5);
    b.send(1, &id, 1, 7);
    b.close_by_lease();
    assert_eq!(b.stored(&id).0, [0, 1], "second 1 is durable");
    assert_eq!(
        (b.acked(0), b.acked(1)),
        (vec![], vec![]),
        "acknowledged again within a second"
    );
    // Slave 0 heartbeats after a silence toward it: the answer is its waiting ack.
    let reply_after = lobster_fleet::liveness::heartbeat_reply_after(LEASE, Duration::from_secs(1));
    let session =
        b.c.registry
            .slaves
            .get_mut("u0")
            .unwrap()
            .session
            .as_mut()
            .unwrap();
    session.last_sent = Some(Instant::now() - reply_after);
    let beat = proto::Heartbeat {
        state: proto::SlaveState::Running as i32,
        run_id: id.clone(),
        ..Default::default()
    };
    b.c.handle(Command::FromSlave(b.sessions[0].0, Up::Heartbeat(beat)));
    assert_eq!(b.acked(0), [1], "the answer to a heartbeat");
    // Slave 1's goes out once it waited `ACK_WAIT`; slave 0's is not sent twice.
    std::thread::sleep(acks::ACK_WAIT);
    b.c.commit();
    assert_eq!((b.acked(0), b.acked(1)), (vec![], vec![1]));
}

/// Interval `index` of one request to endpoint `a`.
fn one_request_interval(run_id: &str, index: u64) -> proto::StatsInterval {
    let mut s = IntervalStats::default();
    let mut e = EndpointStats {
        requests: 1,
        ..Default::default()
    };
    e.latency_us.record(2_000).unwrap();
    s.endpoints.insert("a".into(), e);
    s.to_proto(run_id, index, false)
}

/// A stop asked for through the API is in the store when it has been answered, not at the
/// next tick: a second Ctrl-C may end the process at once, and a run whose stop was not
/// stored was then closed as crashed. Read by another connection, as the next master would.
#[test]
fn a_stop_is_durable_once_it_is_answered() {
    let (mut b, id) = bench(1, Duration::from_millis(1500));
    b.c.tick();
    // Between ticks the store's batch is usually open (intervals stored, seconds compacted).
    b.c.store.batch().unwrap();
    let (tx, mut rx) = oneshot::channel();
    b.c.handle(Command::Act(
        id.clone(),
        Action::Stop,
        Some("Ctrl-C".into()),
        tx,
    ));
    assert!(matches!(rx.try_recv(), Ok(Ok(()))), "the stop is answered");
    let other = rusqlite::Connection::open(b._dir.path().join("lobster.db")).unwrap();
    let state: String = other
        .query_row("SELECT state_json FROM runs WHERE id = ?1", [&id], |row| {
            row.get(0)
        })
        .unwrap();
    assert!(state.contains("Ctrl-C"), "stored state: {state}");
}
