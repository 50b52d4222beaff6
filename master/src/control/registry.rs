//! The registry of slaves: who joined, their sessions, their last heartbeat.
//!
//! A slave is *registered* while it holds a live session. Its uid (random per slave process)
//! is its key; a join with a uid whose session is alive is refused, so nobody can take over
//! another slave's identity, and each session carries a secret handed out at join.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lobster_fleet::proto::{Heartbeat, JoinRequest, MasterMessage, SlaveState};
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::Status;

use super::pulse::Pulse;
use super::queued::Queued;

/// Outbound queue of one session; a slave that lets it fill up is cut off. Its stream
/// writes each message as [`Queued::into_message`] makes it.
pub type SessionTx = mpsc::Sender<Result<Queued, Status>>;

/// Capacity of a session's outbound queue.
pub const SESSION_QUEUE: usize = 256;

pub struct Session {
    pub id: u64,
    pub tx: SessionTx,
    /// What its reader last heard (the lease is judged on it, see `pulse.rs`).
    pub pulse: Arc<Pulse>,
    /// When a message was last queued for it (a heartbeat is answered only after a silence:
    /// `lobster_fleet::liveness`).
    pub last_sent: Option<Instant>,
    /// When an acknowledgement of its intervals was last queued for it (they are spaced:
    /// `acks.rs`).
    pub last_ack: Option<Instant>,
}

/// One slave as the master knows it.
pub struct Slave {
    /// Short id for people and logs (`s-12`).
    pub id: String,
    pub uid: String,
    /// The fleet whose join token it presented.
    pub fleet: String,
    pub join: JoinRequest,
    pub secret: String,
    pub session: Option<Session>,
    pub last_seen: Instant,
    pub joined_unix_ms: u64,
    pub heartbeat: Heartbeat,
    /// Last time it carried load (running a share); for the fleet's idle column.
    pub last_busy: Instant,
    /// No new work (asked by the VM's idle watcher or an operator).
    pub draining: bool,
    /// Why it drains (the idle watcher's reason: its VM is about to stop).
    pub drain_reason: String,
}

impl Slave {
    pub fn state(&self) -> SlaveState {
        SlaveState::try_from(self.heartbeat.state).unwrap_or(SlaveState::Unspecified)
    }
}

/// What `lobster fleet status` and the API show of a slave (no secrets).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct SlaveView {
    pub id: String,
    pub fleet: String,
    pub instance_id: String,
    pub instance_type: String,
    pub host: String,
    pub slave_index: u32,
    pub cores: u32,
    pub millicores: u32,
    pub version: String,
    pub state: String,
    pub run_id: String,
    pub draining: bool,
    /// Why it drains, when it does (its VM is stopping: idle, or an operator).
    #[serde(default)]
    pub drain_reason: String,
    /// When its VM stops whatever it does (`lobster:expires-at`, RFC 3339), if the VM said.
    #[serde(default)]
    pub expires_at: String,
    pub connected: bool,
    pub last_seen_ms: u64,
    /// Milliseconds since it last carried load.
    pub idle_ms: u64,
    /// RFC 3339 time of the last join.
    pub joined_at: String,
    pub active_users: u32,
    pub in_flight: u32,
    pub spooled: u32,
    /// Its resources over its last heartbeat period (CPU, memory, network, sockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<lobster_fleet::stats::Resources>,
}

#[derive(Default)]
pub struct Registry {
    /// By uid. A hash map, not a B-tree: every message of every slave looks its slave up a
    /// few times, and a B-tree of 10,000 uids compared a few dozen strings, each in its own
    /// cache line, per lookup (with its `memcmp`, about 6 % of the master's core at 5,000
    /// slaves). What lists slaves sorts them by uid.
    pub slaves: HashMap<String, Slave>,
    /// Session id → the uid it was attached for, so each message finds its slave without a
    /// scan of every slave (a scan per message is quadratic in the fleet: 20,000 messages a
    /// second over 10,000 slaves). An entry whose slave holds another session by now is stale
    /// and ignored; the stream's end (`detach`) removes it.
    by_session: HashMap<u64, String>,
    dropped: Vec<String>,
    next_id: u64,
    next_session: u64,
}

impl Registry {
    /// Admits a join (the token was already checked). Returns the slave id and its secret.
    pub fn join(
        &mut self,
        req: JoinRequest,
        fleet: &str,
        lease: Duration,
        max_slaves: usize,
        now: Instant,
        unix_ms: u64,
    ) -> Result<(String, String), Status> {
        if let Some(existing) = self.slaves.get(&req.slave_uid) {
            let alive =
                existing.session.is_some() && now.duration_since(existing.last_seen) < lease;
            if alive {
                return Err(Status::already_exists(
                    "a live slave already holds this slave uid",
                ));
            }
            if existing.join.instance_id != req.instance_id
                || existing.join.slave_index != req.slave_index
            {
                return Err(Status::permission_denied(
                    "this slave uid belongs to another instance or index",
                ));
            }
        } else if self.connected() >= max_slaves {
            return Err(Status::resource_exhausted(format!(
                "the master accepts at most {max_slaves} slaves"
            )));
        }
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let id = match self.slaves.get(&req.slave_uid) {
            Some(s) => s.id.clone(),
            None => {
                self.next_id += 1;
                format!("s-{}", self.next_id)
            }
        };
        let (draining, drain_reason) = self
            .slaves
            .get(&req.slave_uid)
            .map_or((false, String::new()), |s| {
                (s.draining, s.drain_reason.clone())
            });
        // The join is shown to people: an over-long expiry text is cut.
        let mut req = req;
        req.expires_at = req.expires_at.chars().take(64).collect();
        self.slaves.insert(
            req.slave_uid.clone(),
            Slave {
                id: id.clone(),
                uid: req.slave_uid.clone(),
                fleet: fleet.to_string(),
                join: req,
                secret: secret.clone(),
                session: None,
                last_seen: now,
                joined_unix_ms: unix_ms,
                heartbeat: Heartbeat::default(),
                last_busy: now,
                draining,
                drain_reason,
            },
        );
        Ok((id, secret))
    }

    /// Binds a session stream to a joined slave whose secret matches.
    pub fn attach(
        &mut self,
        uid: &str,
        secret: &str,
        tx: SessionTx,
        pulse: Arc<Pulse>,
        now: Instant,
    ) -> Result<u64, Status> {
        let Some(s) = self.slaves.get_mut(uid) else {
            return Err(Status::unauthenticated("unknown slave: join first"));
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            s.secret.as_bytes(),
            secret.as_bytes(),
        )) {
            return Err(Status::unauthenticated("wrong session secret"));
        }
        self.next_session += 1;
        s.session = Some(Session {
            id: self.next_session,
            tx,
            pulse,
            last_sent: None,
            last_ack: None,
        });
        s.last_seen = now;
        self.by_session.insert(self.next_session, uid.to_string());
        Ok(self.next_session)
    }

    /// The uid of the slave holding session `session`.
    pub fn by_session(&self, session: u64) -> Option<&str> {
        let uid = self.by_session.get(&session)?;
        self.slaves
            .get(uid)
            .filter(|s| s.session.as_ref().is_some_and(|x| x.id == session))
            .map(|s| s.uid.as_str())
    }

    /// Ends a session; returns the slave's uid if it was the current one.
    pub fn detach(&mut self, session: u64) -> Option<String> {
        let uid = self.by_session.remove(&session)?;
        let s = self
            .slaves
            .get_mut(&uid)
            .filter(|s| s.session.as_ref().is_some_and(|x| x.id == session))?;
        s.session = None;
        Some(s.uid.clone())
    }

    /// Slaves whose session was dropped while sending to them (the controller declares them
    /// lost: their stream's own end will no longer name them).
    pub fn take_dropped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dropped)
    }

    /// Queues an acknowledgement of intervals for a slave, as [`Registry::send`], noting when.
    pub fn send_ack(&mut self, uid: &str, msg: MasterMessage) -> bool {
        let sent = self.send(uid, msg);
        if sent && let Some(session) = self.slaves.get_mut(uid).and_then(|s| s.session.as_mut()) {
            session.last_ack = session.last_sent;
        }
        sent
    }

    /// When slave `uid` was last queued an acknowledgement of intervals on its session.
    pub fn last_ack(&self, uid: &str) -> Option<Instant> {
        self.slaves.get(uid)?.session.as_ref()?.last_ack
    }

    /// Queues a message for a slave; a full queue cuts the slave off (returns false).
    pub fn send(&mut self, uid: &str, msg: MasterMessage) -> bool {
        let Some(s) = self.slaves.get_mut(uid) else {
            return false;
        };
        let Some(session) = &mut s.session else {
            return false;
        };
        let now = Instant::now();
        match session.tx.try_send(Ok(Queued { msg, at: now })) {
            Ok(()) => {
                session.last_sent = Some(now);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(slave = %s.id, "session queue full: cutting the slave off");
                let _ = session
                    .tx
                    .try_send(Err(Status::resource_exhausted("too slow: cut off")));
                s.session = None;
                self.dropped.push(uid.to_string());
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                s.session = None;
                self.dropped.push(uid.to_string());
                false
            }
        }
    }

    /// Slaves with a session but silent for longer than `lease`: their sessions are dropped and
    /// their uids returned, sorted. Slaves without a session for `forget_after` are forgotten.
    pub fn expire(&mut self, now: Instant, lease: Duration, forget_after: Duration) -> Vec<String> {
        let mut lost = Vec::new();
        for s in self.slaves.values_mut() {
            // Silent: nothing handled for a lease, and nothing heard while listening (a
            // message of it waiting for this loop does not count against it).
            let silent = s.session.as_ref().is_some_and(|x| {
                now.duration_since(s.last_seen) > lease && x.pulse.silence(now) > lease
            });
            if silent {
                s.session = None;
                lost.push(s.uid.clone());
            }
        }
        self.slaves
            .retain(|_, s| s.session.is_some() || now.duration_since(s.last_seen) < forget_after);
        lost.sort_unstable();
        lost
    }

    /// Slaves holding a live session.
    pub fn connected(&self) -> usize {
        self.slaves.values().filter(|s| s.session.is_some()).count()
    }

    /// Connected slaves free for new work, sorted by uid.
    pub fn available(&self) -> Vec<&Slave> {
        let mut free: Vec<&Slave> = self
            .slaves
            .values()
            .filter(|s| s.session.is_some() && !s.draining)
            .filter(|s| matches!(s.state(), SlaveState::Idle | SlaveState::Unspecified))
            .collect();
        free.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
        free
    }

    /// Every slave, sorted by uid.
    pub fn view(&self, now: Instant) -> Vec<SlaveView> {
        let mut all: Vec<&Slave> = self.slaves.values().collect();
        all.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
        all.into_iter()
            .map(|s| SlaveView {
                id: s.id.clone(),
                fleet: s.fleet.clone(),
                instance_id: s.join.instance_id.clone(),
                instance_type: s.join.instance_type.clone(),
                host: s.join.host.clone(),
                slave_index: s.join.slave_index,
                cores: s.join.cores,
                millicores: s.join.millicores,
                version: s.join.version.clone(),
                state: format!("{:?}", s.state()).to_lowercase(),
                run_id: s.heartbeat.run_id.clone(),
                draining: s.draining,
                drain_reason: s.drain_reason.clone(),
                expires_at: s.join.expires_at.clone(),
                connected: s.session.is_some(),
                last_seen_ms: now.duration_since(s.last_seen).as_millis() as u64,
                idle_ms: now.duration_since(s.last_busy).as_millis() as u64,
                joined_at: crate::clock::rfc3339(s.joined_unix_ms),
                active_users: s.heartbeat.active_users,
                in_flight: s.heartbeat.in_flight,
                spooled: s.heartbeat.spooled,
                resources: s
                    .heartbeat
                    .resources
                    .as_ref()
                    .map(lobster_fleet::stats::Resources::from_proto),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_req(uid: &str) -> JoinRequest {
        JoinRequest {
            join_token: String::new(),
            instance_id: "i-1".into(),
            host: "h".into(),
            cores: 1,
            slave_index: 1,
            version: lobster_fleet::VERSION.into(),
            boot_id: "b".into(),
            slave_uid: uid.into(),
            millicores: 1000,
            instance_type: "t".into(),
            region: "r".into(),
            slaves_on_host: 1,
            expires_at: "2026-12-01T12:00:00Z".into(),
        }
    }

    /// A slave that never reads its session is cut off once its queue holds SESSION_QUEUE
    /// messages: the master's memory for it is bounded, and the slave is reported dropped.
    #[test]
    fn the_fleet_view_shows_expiry_and_why_a_slave_drains() {
        let mut r = Registry::default();
        let now = Instant::now();
        let lease = Duration::from_secs(5);
        r.join(join_req("a"), "default", lease, 10, now, 0).unwrap();
        let mut long = join_req("b");
        long.expires_at = "x".repeat(10_000);
        r.join(long, "default", lease, 10, now, 0).unwrap();
        if let Some(s) = r.slaves.get_mut("a") {
            s.draining = true;
            s.drain_reason = "idle for 10 min: stopping its VM".into();
        }
        // A re-join (a reconnect) keeps the drain and its reason.
        r.join(join_req("a"), "default", lease, 10, now + lease * 2, 0)
            .unwrap();
        let v = r.view(now + lease * 2);
        let a = v
            .iter()
            .find(|s| s.instance_id == "i-1" && s.expires_at.starts_with("2026"))
            .unwrap();
        assert_eq!(a.expires_at, "2026-12-01T12:00:00Z");
        assert!(a.draining);
        assert_eq!(a.drain_reason, "idle for 10 min: stopping its VM");
        assert!(
            v.iter().any(|s| s.expires_at.len() == 64),
            "an over-long expiry is cut"
        );
    }

    /// A message's session finds its slave; a session replaced by a reconnect, or cut off,
    /// names nobody, and its stream's end leaves the new session alone.
    #[test]
    fn sessions_name_their_slave_until_replaced_or_ended() {
        let mut r = Registry::default();
        let now = Instant::now();
        let lease = Duration::from_secs(5);
        let attach = |r: &mut Registry, uid: &str| {
            let (_, secret) = r.join(join_req(uid), "default", lease, 10, now, 0).unwrap();
            let (tx, rx) = mpsc::channel(SESSION_QUEUE);
            std::mem::forget(rx);
            r.attach(uid, &secret, tx, Arc::new(Pulse::new(now)), now)
                .unwrap()
        };
        let a1 = attach(&mut r, "a");
        let b = attach(&mut r, "b");
        assert_eq!(r.by_session(a1), Some("a"));
        assert_eq!(r.by_session(b), Some("b"));
        assert_eq!(r.by_session(999), None);
        // "a" reconnects: its old session names nobody, and the old stream's end does not
        // end the new session.
        r.slaves.get_mut("a").unwrap().session = None;
        let a2 = attach(&mut r, "a");
        assert_eq!(r.by_session(a1), None);
        assert_eq!(r.detach(a1), None);
        assert_eq!(r.by_session(a2), Some("a"));
        assert_eq!(r.detach(a2), Some("a".to_string()));
        assert_eq!(r.by_session(a2), None);
        assert_eq!(r.detach(a2), None, "ended once");
        // A session expired by its lease names nobody.
        r.expire(now + lease * 2, lease, Duration::from_secs(600));
        assert_eq!(r.by_session(b), None);
        assert_eq!(r.detach(b), None);
    }

    #[test]
    fn a_slave_that_never_reads_is_cut_off_at_the_queue_bound() {
        let mut r = Registry::default();
        let now = Instant::now();
        let lease = Duration::from_secs(5);
        let (_, secret) = r.join(join_req("u"), "default", lease, 10, now, 0).unwrap();
        let (tx, mut rx) = mpsc::channel(SESSION_QUEUE);
        r.attach("u", &secret, tx, Arc::new(Pulse::new(now)), now)
            .unwrap();
        let msg = || MasterMessage { kind: None };
        for i in 0..SESSION_QUEUE {
            assert!(r.send("u", msg()), "message {i} fits the queue");
        }
        assert!(r.take_dropped().is_empty());
        assert!(!r.send("u", msg()), "one more than the queue holds");
        assert_eq!(r.take_dropped(), vec!["u".to_string()]);
        assert_eq!(r.connected(), 0, "the session was dropped");
        assert!(!r.send("u", msg()), "nothing more is queued for it");
        // What it finds when it reads at last: the queued messages, then nothing more.
        let mut n = 0;
        while let Ok(m) = rx.try_recv() {
            assert!(m.is_ok());
            n += 1;
        }
        assert_eq!(n, SESSION_QUEUE);
    }

    #[test]
    fn the_slave_cap_refuses_a_new_slave_but_not_a_reconnect() {
        let mut r = Registry::default();
        let now = Instant::now();
        let lease = Duration::from_secs(5);
        for uid in ["a", "b"] {
            let (_, secret) = r.join(join_req(uid), "default", lease, 2, now, 0).unwrap();
            let (tx, _rx) = mpsc::channel(1);
            std::mem::forget(_rx);
            r.attach(uid, &secret, tx, Arc::new(Pulse::new(now)), now)
                .unwrap();
        }
        let e = r
            .join(join_req("c"), "default", lease, 2, now, 0)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        // A known slave whose session is gone may join again whatever the cap.
        assert_eq!(r.detach(1).as_deref(), Some("a"));
        assert!(r.join(join_req("a"), "default", lease, 2, now, 0).is_ok());
    }

    /// A slave is lost for silence only when the master listened a lease long and heard
    /// nothing; not while a message it sent waits for the control loop (the master is the
    /// one behind), nor within a lease of the loop taking it.
    #[test]
    fn a_slave_whose_message_waits_for_the_master_is_not_silent() {
        let mut r = Registry::default();
        let t0 = Instant::now();
        let lease = Duration::from_secs(5);
        let forget = Duration::from_secs(600);
        let mut pulses = Vec::new();
        for uid in ["waiting", "quiet"] {
            let (_, secret) = r.join(join_req(uid), "default", lease, 10, t0, 0).unwrap();
            let (tx, rx) = mpsc::channel(1);
            std::mem::forget(rx);
            let pulse = Arc::new(Pulse::new(t0));
            r.attach(uid, &secret, tx, pulse.clone(), t0).unwrap();
            pulses.push(pulse);
        }
        // "waiting" sent a heartbeat at 1 s that the loop has not taken by 7 s.
        pulses[0].heard(t0 + Duration::from_secs(1));
        assert_eq!(
            r.expire(t0 + Duration::from_secs(7), lease, forget),
            ["quiet"]
        );
        pulses[0].handed_over(t0 + Duration::from_secs(8));
        assert!(
            r.expire(t0 + Duration::from_secs(12), lease, forget)
                .is_empty()
        );
        assert_eq!(
            r.expire(t0 + Duration::from_millis(13_001), lease, forget),
            ["waiting"]
        );
    }
}
