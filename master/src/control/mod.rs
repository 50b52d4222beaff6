//! The control loop: one task that owns the registry of slaves, the active run and the store.
//!
//! Everything that changes fleet or run state arrives as a [`Command`] on one bounded channel
//! (from the gRPC service, the HTTP API and a 100 ms tick) and is handled in order, so there
//! are no locks around the state and every transition is logged in one place. Replies go back
//! on oneshot channels.

mod registry;
pub mod run;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lobster_fleet::proto::{
    self, DrainReply, JoinReply, JoinRequest, MasterMessage, master_message::Kind as Down,
    slave_message::Kind as Up,
};
use lobster_fleet::scenario::Scenario;
use lobster_fleet::stats::IntervalStats;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, info_span, warn};

use registry::Registry;
pub use registry::{SESSION_QUEUE, SessionTx, SlaveView};
use run::{Candidate, Outbox, Phase, Run, RunOptions};

use crate::aggregate::Point;
use crate::clock;
use crate::metrics::Metrics;
use crate::report::{Report, Status as RunStatus};
use crate::store::{RunRecord, RunRow, Store};

/// How the control plane behaves.
#[derive(Clone)]
pub struct Settings {
    /// Holds the fleets' join tokens (`tokens/`).
    pub state_dir: std::path::PathBuf,
    pub heartbeat: Duration,
    /// A slave silent this long is lost.
    pub lease: Duration,
    pub max_slaves: usize,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("state_dir", &self.state_dir)
            .field("heartbeat", &self.heartbeat)
            .field("lease", &self.lease)
            .field("max_slaves", &self.max_slaves)
            .finish()
    }
}

/// Operator actions on a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Stop,
    Suspend,
    Resume,
}

/// What the API shows of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunView {
    pub id: String,
    pub name: String,
    pub phase: String,
    pub elapsed_s: f64,
    pub load_elapsed_s: f64,
    pub duration_s: f64,
    pub slaves: u32,
    pub active_slaves: u32,
    /// Closed seconds after the `after` index asked for.
    pub points: Vec<Point>,
    pub report: Option<Report>,
}

/// Why an API request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// Another run is in progress.
    #[error("run {0} is still in progress")]
    Busy(String),
    /// No such run.
    #[error("no run {0}")]
    NotFound(String),
    /// The action does not apply now.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
}

/// A request to the control loop.
pub enum Command {
    Join(JoinRequest, oneshot::Sender<Result<JoinReply, Status>>),
    Attach {
        attach: proto::Attach,
        tx: SessionTx,
        reply: oneshot::Sender<Result<u64, Status>>,
    },
    FromSlave(u64, Up),
    Detached(u64),
    Drain(
        proto::DrainRequest,
        oneshot::Sender<Result<DrainReply, Status>>,
    ),
    CreateRun(
        Box<Scenario>,
        RunOptions,
        oneshot::Sender<Result<String, ApiError>>,
    ),
    GetRun(String, u64, oneshot::Sender<Result<RunView, ApiError>>),
    Act(String, Action, oneshot::Sender<Result<(), ApiError>>),
    Slaves(oneshot::Sender<Vec<SlaveView>>),
    Runs(oneshot::Sender<Result<Vec<RunRow>, ApiError>>),
}

/// The sending side, cloned into the gRPC service and the API.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
}

impl ControlHandle {
    /// Sends a command and waits for its reply (`None` if the control loop is gone).
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Sends a command without a reply (backpressure: waits while the loop is busy).
    pub async fn tell(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

pub struct Controller {
    settings: Settings,
    tokens: crate::tokens::TokenBook,
    join_bucket: JoinBucket,
    registry: Registry,
    run: Option<Run>,
    store: Store,
    rx: mpsc::Receiver<Command>,
    metrics: Arc<Metrics>,
    /// Last tick, to tell the master's own stalls from silent slaves.
    last_tick: Instant,
}

/// Capacity of the command channel.
const COMMANDS: usize = 1024;
const TICK: Duration = Duration::from_millis(100);

impl Controller {
    pub fn new(settings: Settings, store: Store, metrics: Arc<Metrics>) -> (Self, ControlHandle) {
        let (tx, rx) = mpsc::channel(COMMANDS);
        let c = Controller {
            tokens: crate::tokens::TokenBook::new(&settings.state_dir),
            join_bucket: JoinBucket::new(),
            settings,
            registry: Registry::default(),
            run: None,
            store,
            rx,
            metrics,
            last_tick: Instant::now(),
        };
        (c, ControlHandle { tx })
    }

    /// Reloads an unfinished run after a restart (its intervals are merged again).
    pub fn recover(&mut self) -> anyhow::Result<Option<String>> {
        let now = Instant::now();
        let mut recovered = None;
        for rec in self.store.unfinished_runs()? {
            let scenario = Scenario::from_json(&rec.scenario_json)?;
            let persisted: run::Persisted = match serde_json::from_str(&rec.state_json) {
                Ok(p) => p,
                Err(e) => {
                    warn!(run_id = %rec.id, error = %e, "cannot recover run state: marking it aborted");
                    self.store
                        .update_state(&rec.id, "aborted", &rec.state_json)?;
                    continue;
                }
            };
            if recovered.is_some() {
                warn!(run_id = %rec.id, "more than one unfinished run: marking the older aborted");
                continue;
            }
            let mut r = Run::recover(
                rec.id.clone(),
                scenario,
                persisted,
                rec.created_unix_ms,
                now,
                clock::unix_ms(),
            );
            let mut n = 0;
            for i in self.store.intervals(&rec.id)? {
                let msg = proto::StatsInterval::decode(&*i.payload)?;
                let stats = IntervalStats::from_proto(&msg)?;
                r.on_stats(&i.slave_uid, i.index, msg.last, &stats);
                n += 1;
            }
            info!(run_id = %rec.id, phase = r.phase.name(), intervals = n, requests = r.agg.total.requests(), "recovered run");
            recovered = Some(rec.id.clone());
            self.run = Some(r);
        }
        Ok(recovered)
    }

    /// Handles commands until `shutdown`; then stops the active run and waits (bounded) for it.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                Some(cmd) = self.rx.recv() => self.handle(cmd),
                _ = tick.tick() => self.tick(),
                _ = shutdown.cancelled(), if deadline.is_none() => {
                    info!("master shutting down: stopping the active run");
                    let now = Instant::now();
                    let out = match &mut self.run {
                        Some(r) if !r.is_done() => r.request_stop(now, "master shutdown", Some(RunStatus::Aborted)),
                        _ => Vec::new(),
                    };
                    self.deliver(out);
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                }
                _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => {
                    warn!("shutdown deadline reached");
                    self.finish_now();
                    return;
                }
            }
            if deadline.is_some() && self.run.as_ref().is_none_or(|r| r.is_done()) {
                self.save();
                return;
            }
        }
    }

    fn finish_now(&mut self) {
        if let Some(r) = &mut self.run {
            // Past the deadline: close with what arrived.
            let far = Instant::now() + Duration::from_secs(3600);
            let _ = r.tick(far, self.settings.lease);
        }
        self.save();
    }

    fn handle(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join(req, reply) => {
                let _ = reply.send(self.join(req, now));
            }
            Command::Attach { attach, tx, reply } => {
                let r = self
                    .registry
                    .attach(&attach.slave_uid, &attach.session_secret, tx, now);
                if let Ok(session) = r {
                    self.metrics.sessions.inc();
                    self.on_attached(&attach, session, now);
                } else {
                    self.metrics.joins_refused.inc();
                }
                let _ = reply.send(r);
            }
            Command::FromSlave(session, msg) => self.on_slave_message(session, msg, now),
            Command::Detached(session) => {
                if let Some(uid) = self.registry.detach(session) {
                    let id = self
                        .registry
                        .slaves
                        .get(&uid)
                        .map(|s| s.id.clone())
                        .unwrap_or_default();
                    info!(slave = %id, "session ended");
                    let out = match &mut self.run {
                        Some(r) => r.lose_slave(now, &uid, "session ended"),
                        None => Vec::new(),
                    };
                    self.deliver(out);
                }
            }
            Command::Drain(req, reply) => {
                let _ = reply.send(self.drain(req));
            }
            Command::CreateRun(scenario, options, reply) => {
                let _ = reply.send(self.create_run(*scenario, options, now));
            }
            Command::GetRun(id, after, reply) => {
                let _ = reply.send(self.get_run(&id, after, now));
            }
            Command::Act(id, action, reply) => {
                let _ = reply.send(self.act(&id, action, now));
            }
            Command::Slaves(reply) => {
                let _ = reply.send(self.registry.view(now));
            }
            Command::Runs(reply) => {
                let _ = reply.send(
                    self.store
                        .runs(100)
                        .map_err(|e| ApiError::Store(format!("{e:#}"))),
                );
            }
        }
        // Sessions found closed while answering: lose those slaves now.
        self.deliver(Vec::new());
        self.save();
    }

    fn join(&mut self, req: JoinRequest, now: Instant) -> Result<JoinReply, Status> {
        if !self.join_bucket.take(now) {
            self.metrics.joins_refused.inc();
            return Err(Status::resource_exhausted(
                "too many joins right now: retry later",
            ));
        }
        let Some(fleet) = self.tokens.check(&req.join_token) else {
            self.metrics.joins_refused.inc();
            warn!(instance = %req.instance_id, index = req.slave_index, "join refused: wrong join token");
            return Err(Status::unauthenticated("wrong join token"));
        };
        if let Err(why) = check_join(&req) {
            self.metrics.joins_refused.inc();
            return Err(Status::invalid_argument(why));
        }
        let (instance, index) = (req.instance_id.clone(), req.slave_index);
        let (id, secret) = self
            .registry
            .join(
                req,
                &fleet,
                self.settings.lease,
                self.settings.max_slaves,
                now,
                clock::unix_ms(),
            )
            .inspect_err(|_| {
                self.metrics.joins_refused.inc();
            })?;
        self.metrics.joins.inc();
        info!(slave = %id, fleet = %fleet, instance = %instance, index, "slave joined");
        Ok(JoinReply {
            session_secret: secret,
            heartbeat_ms: self.settings.heartbeat.as_millis() as u32,
            lease_ms: self.settings.lease.as_millis() as u32,
            master_version: lobster_fleet::VERSION.to_string(),
            slave_id: id,
        })
    }

    fn candidate(&self, uid: &str) -> Option<Candidate> {
        self.registry.slaves.get(uid).map(|s| Candidate {
            uid: uid.to_string(),
            slave_id: s.id.clone(),
            instance_id: s.join.instance_id.clone(),
            slave_index: s.join.slave_index,
            millicores: s.join.millicores,
        })
    }

    fn on_attached(&mut self, attach: &proto::Attach, session: u64, now: Instant) {
        let uid = attach.slave_uid.clone();
        let _span = info_span!("slave", uid = %uid, session).entered();
        let Some(c) = self.candidate(&uid) else {
            return;
        };
        let out = match (&mut self.run, attach.run_id.as_str()) {
            (_, "") => Vec::new(),
            (Some(r), id) if r.id == id => r.readopt(now, c),
            (_, id) => vec![(uid.clone(), run::stop_msg(id, "unknown run"))],
        };
        self.deliver(out);
    }

    fn on_slave_message(&mut self, session: u64, msg: Up, now: Instant) {
        let Some(uid) = self.registry.by_session(session).map(str::to_string) else {
            return; // a stale session
        };
        if let Some(s) = self.registry.slaves.get_mut(&uid) {
            s.last_seen = now;
        }
        match msg {
            Up::Attach(_) => {}
            Up::Heartbeat(hb) => {
                if let Some(s) = self.registry.slaves.get_mut(&uid) {
                    let busy = !hb.run_id.is_empty();
                    s.heartbeat = hb;
                    if busy {
                        s.last_busy = now;
                    }
                }
                // The reply proves the master alive to the slave's dead-man switch.
                self.registry.send(&uid, ack(String::new(), Vec::new()));
            }
            Up::Stats(interval) => self.on_stats(&uid, interval),
            Up::Event(ev) => {
                let kind =
                    proto::EventKind::try_from(ev.kind).unwrap_or(proto::EventKind::Unspecified);
                let id = self
                    .registry
                    .slaves
                    .get(&uid)
                    .map(|s| s.id.clone())
                    .unwrap_or_default();
                match kind {
                    proto::EventKind::Stopped => {
                        if let Some(r) = self.run.as_mut().filter(|r| r.id == ev.run_id) {
                            r.on_stopped(&uid, now);
                        }
                    }
                    proto::EventKind::Error => {
                        warn!(slave = %id, run_id = %ev.run_id, message = %ev.message, "slave error")
                    }
                    _ => {
                        debug!(slave = %id, run_id = %ev.run_id, kind = ?kind, message = %ev.message, "slave event")
                    }
                }
            }
        }
    }

    fn on_stats(&mut self, uid: &str, interval: proto::StatsInterval) {
        let stats = match IntervalStats::from_proto(&interval) {
            Ok(s) => s,
            Err(e) => {
                warn!(uid, error = %e, "malformed statistics interval: cutting the slave off");
                self.metrics.intervals_rejected.inc();
                if let Some(s) = self.registry.slaves.get_mut(uid)
                    && let Some(sess) = s.session.take()
                {
                    let _ = sess.tx.try_send(Err(Status::invalid_argument(format!(
                        "malformed interval: {e}"
                    ))));
                }
                return;
            }
        };
        let (run_id, index) = (interval.run_id.clone(), interval.index);
        match self.run.as_mut().filter(|r| r.id == run_id) {
            Some(r) => {
                let stored =
                    self.store
                        .insert_interval(&run_id, uid, index, &interval.encode_to_vec());
                if let Err(e) = stored {
                    // Not acknowledged: the slave keeps it and sends it again.
                    warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot store interval");
                    return;
                }
                if r.on_stats(uid, index, interval.last, &stats) {
                    self.metrics.intervals.inc();
                    self.metrics.requests.inc_by(stats.requests());
                }
            }
            None => {
                let done = matches!(self.store.report(&run_id), Ok(Some(_)));
                if !done {
                    warn!(run_id = %run_id, requests = stats.requests(), "interval of an unknown run: acknowledged and dropped");
                }
            }
        }
        self.registry.send(uid, ack(run_id, vec![index]));
    }

    fn drain(&mut self, req: proto::DrainRequest) -> Result<DrainReply, Status> {
        if self.tokens.check(&req.join_token).is_none() {
            self.metrics.joins_refused.inc();
            return Err(Status::unauthenticated("wrong join token"));
        }
        let mut n = 0;
        let mut idle = true;
        let uids: Vec<String> = self
            .registry
            .slaves
            .values()
            .filter(|s| s.join.instance_id == req.instance_id)
            .map(|s| s.uid.clone())
            .collect();
        for uid in &uids {
            if let Some(s) = self.registry.slaves.get_mut(uid) {
                s.draining = !req.undo;
                n += 1;
            }
            let msg = MasterMessage {
                kind: Some(Down::Drain(proto::Drain {
                    reason: req.reason.clone(),
                    undo: req.undo,
                })),
            };
            self.registry.send(uid, msg);
            if let Some(r) = &self.run
                && !r.is_done()
                && r.participants
                    .get(uid)
                    .is_some_and(|p| p.active && !p.got_last)
            {
                idle = false;
            }
        }
        info!(instance = %req.instance_id, slaves = n, idle, reason = %req.reason, "drain");
        Ok(DrainReply { slaves: n, idle })
    }

    fn create_run(
        &mut self,
        scenario: Scenario,
        options: RunOptions,
        now: Instant,
    ) -> Result<String, ApiError> {
        if let Some(r) = self.run.as_ref().filter(|r| !r.is_done()) {
            return Err(ApiError::Busy(r.id.clone()));
        }
        let id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let unix = clock::unix_ms();
        let run = Run::new(id.clone(), scenario, options, now, unix);
        let rec = RunRecord {
            id: id.clone(),
            name: run.scenario.name.clone(),
            scenario_json: run.scenario.to_json(),
            status: "init".into(),
            created_unix_ms: unix,
            state_json: serde_json::to_string(&run.persisted()).expect("state serializes"),
        };
        self.store
            .create_run(&rec)
            .map_err(|e| ApiError::Store(format!("{e:#}")))?;
        info!(run_id = %id, name = %run.scenario.name, quorum = options.quorum, "run created");
        self.metrics.runs.inc();
        self.run = Some(run);
        self.try_start(now);
        Ok(id)
    }

    fn try_start(&mut self, now: Instant) {
        let Some(r) = self.run.as_mut().filter(|r| r.phase == Phase::Init) else {
            return;
        };
        let available: Vec<Candidate> = self
            .registry
            .available()
            .into_iter()
            .map(|s| Candidate {
                uid: s.uid.clone(),
                slave_id: s.id.clone(),
                instance_id: s.join.instance_id.clone(),
                slave_index: s.join.slave_index,
                millicores: s.join.millicores,
            })
            .collect();
        let out = r.try_start(now, clock::unix_ms(), available);
        self.deliver(out);
    }

    fn get_run(&self, id: &str, after: u64, now: Instant) -> Result<RunView, ApiError> {
        if let Some(r) = self.run.as_ref().filter(|r| r.id == id) {
            return Ok(RunView {
                id: r.id.clone(),
                name: r.scenario.name.clone(),
                phase: r.phase.name().to_string(),
                elapsed_s: r.elapsed(now).as_secs_f64(),
                load_elapsed_s: r.load_elapsed(now).as_secs_f64(),
                duration_s: r.scenario.duration_ms as f64 / 1000.0,
                slaves: r.participants.len() as u32,
                active_slaves: r.participants.values().filter(|p| p.active).count() as u32,
                points: r
                    .agg
                    .series
                    .iter()
                    .filter(|p| p.index + 1 > after)
                    .cloned()
                    .collect(),
                report: r.report.clone(),
            });
        }
        let json = self
            .store
            .report(id)
            .map_err(|e| ApiError::Store(format!("{e:#}")))?
            .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
        let report: Report =
            serde_json::from_str(&json).map_err(|e| ApiError::Store(e.to_string()))?;
        Ok(RunView {
            id: report.run_id.clone(),
            name: report.name.clone(),
            phase: report.status.as_str().to_string(),
            elapsed_s: report.duration_s,
            load_elapsed_s: report.duration_s,
            duration_s: report.duration_s,
            slaves: report.slaves,
            active_slaves: 0,
            points: report
                .series
                .iter()
                .filter(|p| p.index + 1 > after)
                .cloned()
                .collect(),
            report: Some(report),
        })
    }

    fn act(&mut self, id: &str, action: Action, now: Instant) -> Result<(), ApiError> {
        let Some(r) = self.run.as_mut().filter(|r| r.id == id) else {
            return Err(ApiError::NotFound(id.to_string()));
        };
        let out = match action {
            Action::Stop => {
                if r.is_done() {
                    return Err(ApiError::Conflict(format!("run {id} is already over")));
                }
                r.request_stop(now, "stopped by the operator", None)
            }
            Action::Suspend => r.suspend(now).map_err(ApiError::Conflict)?,
            Action::Resume => r.resume(now).map_err(ApiError::Conflict)?,
        };
        self.deliver(out);
        Ok(())
    }

    fn tick(&mut self) {
        let now = Instant::now();
        // A tick much later than planned means this process was stopped (SIGSTOP, swap): do
        // not blame the slaves for the master's own pause.
        if now.duration_since(self.last_tick) > self.settings.lease / 2 {
            warn!(
                stalled_ms = now.duration_since(self.last_tick).as_millis() as u64,
                "master was stalled: renewing every lease"
            );
            for s in self.registry.slaves.values_mut() {
                s.last_seen = now;
            }
        }
        self.last_tick = now;
        let lease = self.settings.lease;
        for uid in self.registry.expire(now, lease, Duration::from_secs(600)) {
            warn!(uid = %uid, "slave silent longer than its lease");
            let out = match &mut self.run {
                Some(r) => r.lose_slave(now, &uid, "silent longer than its lease"),
                None => Vec::new(),
            };
            self.deliver(out);
        }
        self.try_start(now);
        if let Some(r) = self.run.as_mut().filter(|r| !r.is_done()) {
            // Slaves that joined during the run take part.
            let joining: Vec<Candidate> = if matches!(r.phase, Phase::Running | Phase::Suspended) {
                self.registry
                    .available()
                    .into_iter()
                    .filter(|s| !r.participants.get(&s.uid).is_some_and(|p| p.active))
                    .filter(|s| s.heartbeat.run_id.is_empty())
                    .map(|s| Candidate {
                        uid: s.uid.clone(),
                        slave_id: s.id.clone(),
                        instance_id: s.join.instance_id.clone(),
                        slave_index: s.join.slave_index,
                        millicores: s.join.millicores,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut out = Vec::new();
            for c in joining {
                out.extend(r.add_slave(now, c));
            }
            let (more, _points) = r.tick(now, lease);
            out.extend(more);
            self.deliver(out);
        }
        self.save();
    }

    fn deliver(&mut self, out: Outbox) {
        let mut out = out;
        loop {
            for (uid, msg) in out {
                if !self.registry.send(&uid, msg) {
                    debug!(uid = %uid, "message not delivered: no session");
                }
            }
            // A session found closed while sending is a lost slave (its stream's end will not
            // name it any more); losing it may reslice, which may find more.
            let dropped = self.registry.take_dropped();
            if dropped.is_empty() {
                return;
            }
            let now = Instant::now();
            out = Vec::new();
            if let Some(r) = &mut self.run {
                for uid in dropped {
                    out.extend(r.lose_slave(now, &uid, "session closed"));
                }
            }
        }
    }

    /// Persists the active run's state when it changed, and its report once done.
    fn save(&mut self) {
        let Some(r) = self.run.as_mut().filter(|r| r.dirty) else {
            return;
        };
        r.dirty = false;
        let result = match &r.report {
            Some(rep) => {
                self.metrics.finished(rep.status.as_str());
                self.store.finish_run(
                    &r.id,
                    rep.status.as_str(),
                    &serde_json::to_string(rep).expect("report serializes"),
                )
            }
            None => self.store.update_state(
                &r.id,
                r.phase.name(),
                &serde_json::to_string(&r.persisted()).expect("state serializes"),
            ),
        };
        if let Err(e) = result {
            warn!(run_id = %r.id, error = %format!("{e:#}"), "cannot save run state");
            r.dirty = true;
        }
    }
}

/// Admits joins at a steady rate with a burst (a fleet of thousands coming up at once, or a
/// misbehaving client, cannot monopolise the control loop).
struct JoinBucket {
    tokens: f64,
    last: Instant,
}

impl JoinBucket {
    const BURST: f64 = 200.0;
    const PER_SECOND: f64 = 50.0;

    fn new() -> Self {
        JoinBucket {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn ack(run_id: String, indexes: Vec<u64>) -> MasterMessage {
    MasterMessage {
        kind: Some(Down::Ack(proto::Ack { run_id, indexes })),
    }
}

/// Checks the fields of a join beyond the token.
fn check_join(r: &JoinRequest) -> Result<(), String> {
    let short = |s: &str, what: &str, max: usize| {
        if s.len() > max {
            Err(format!("{what} longer than {max} bytes"))
        } else {
            Ok(())
        }
    };
    if r.slave_uid.is_empty() || r.instance_id.is_empty() {
        return Err("slave_uid and instance_id are required".into());
    }
    short(&r.slave_uid, "slave_uid", 64)?;
    short(&r.instance_id, "instance_id", 128)?;
    short(&r.host, "host", 255)?;
    short(&r.version, "version", 64)?;
    short(&r.boot_id, "boot_id", 64)?;
    short(&r.instance_type, "instance_type", 64)?;
    short(&r.region, "region", 64)?;
    if r.slave_index == 0 || r.slave_index > 4096 {
        return Err("slave_index must be between 1 and 4096".into());
    }
    if r.cores == 0 || r.cores > 4096 || r.millicores == 0 || r.millicores > 4_096_000 {
        return Err("cores and millicores must be positive and plausible".into());
    }
    if r.version != lobster_fleet::VERSION {
        return Err(format!(
            "slave version {} does not match master version {}",
            r.version,
            lobster_fleet::VERSION
        ));
    }
    Ok(())
}
