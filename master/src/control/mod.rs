//! The control loop: one task that owns the registry of slaves, the active run and the store.
//!
//! Everything that changes fleet or run state arrives as a [`Command`] on one bounded channel
//! (from the gRPC service, the HTTP API and a 100 ms tick) and is handled in order, so there
//! are no locks around the state and every transition is logged in one place. Replies go back
//! on oneshot channels.

mod acks;
mod held;
mod pulse;
mod queued;
mod registry;
pub mod run;
mod runs;
mod seconds;
mod slaves;
mod traces;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lobster_fleet::proto::{
    self, DrainReply, JoinReply, JoinRequest, MasterMessage, master_message::Kind as Down,
    slave_message::Kind as Up,
};
use lobster_fleet::scenario::Scenario;
use lobster_fleet::stats::CheckedInterval;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, info_span, warn};

use acks::Acks;
use held::Held;
pub use pulse::Pulse;
pub use queued::Queued;
use registry::Registry;
use registry::Slave;
pub use registry::{SESSION_QUEUE, SessionTx, SlaveView};
use run::{Candidate, Outbox, Phase, Run, RunOptions};
use slaves::{JoinBucket, candidate_of};
use traces::TraceFetches;
pub use traces::TraceSlaves;

use crate::aggregate::{Compaction, Point};
use crate::clock;
use crate::metrics::{Metrics, RunSnapshot};
use crate::report::{Report, Status as RunStatus};
use crate::store::{RunRecord, RunRow, Store, Stored};

/// How the control plane behaves.
#[derive(Clone)]
pub struct Settings {
    /// Holds the fleets' join tokens (`tokens/`).
    pub state_dir: crate::home::MasterDir,
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
    /// `closed` (users) or `open` (arrival rate).
    #[serde(default)]
    pub model: String,
    pub phase: String,
    pub elapsed_s: f64,
    pub load_elapsed_s: f64,
    pub duration_s: f64,
    pub slaves: u32,
    pub active_slaves: u32,
    /// Closed seconds after the `after` index asked for.
    pub points: Vec<Point>,
    /// While the run goes on: each endpoint's figures so far (the report has them after).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<crate::report::EndpointReport>,
    /// While the run goes on, with `targets:`: each target's figures so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<crate::report::EndpointReport>,
    /// While the run goes on: each SLA rule's state so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sla: Vec<crate::sla::RuleResult>,
    /// While the run goes on: injectors flagged as saturated so far (`ongoing` while they
    /// still are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saturated: Vec<crate::saturation::Saturated>,
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
    /// The request does not fit the run (e.g. users for an open-model run).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
}

/// An operator's change of a run's load: users (closed model) or a rate (open model), reached
/// over `ramp` and held for the rest of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadChange {
    /// The load to reach; its model must be the run's.
    pub load: lobster_fleet::scenario::Load,
    pub ramp: Duration,
}

/// A request to the control loop. Each is handled whole, in arrival order.
pub enum Command {
    /// A slave presents its token and identity (any time; refused over the join rate, the
    /// slave cap, with a wrong token, or with the uid of a live slave). Replies its secret.
    Join(JoinRequest, oneshot::Sender<Result<JoinReply, Status>>),
    /// A session's first message: binds the stream `tx` to a joined slave whose secret
    /// matches; re-adopts the run it names. Replies the session number.
    Attach {
        attach: proto::Attach,
        /// The master's half of the session stream.
        tx: SessionTx,
        /// What the session's reader hears of the slave.
        pulse: Arc<Pulse>,
        reply: oneshot::Sender<Result<u64, Status>>,
    },
    /// A message on session `0` (ignored when the session is no longer the slave's current).
    FromSlave(u64, Up),
    /// Session `0` ended; its slave (if it was current) is lost to the run at once.
    Detached(u64),
    /// An idle watcher asks to drain its instance (token checked); replies whether it is idle.
    Drain(
        proto::DrainRequest,
        oneshot::Sender<Result<DrainReply, Status>>,
    ),
    /// A new run (the scenario already checked); refused with `Busy` while another is active.
    CreateRun(
        Box<Scenario>,
        RunOptions,
        oneshot::Sender<Result<String, ApiError>>,
    ),
    /// A run's view with its closed seconds after the given index; any run the store holds.
    GetRun(String, u64, oneshot::Sender<Result<RunView, ApiError>>),
    /// An operator action on a run; the text says who or why (a stop's reason).
    Act(
        String,
        Action,
        Option<String>,
        oneshot::Sender<Result<(), ApiError>>,
    ),
    /// Every registered slave.
    Slaves(oneshot::Sender<Vec<SlaveView>>),
    /// The store's recent runs.
    Runs(oneshot::Sender<Result<Vec<RunRow>, ApiError>>),
    /// Changes the load of the run going on; replies the load time (ms) the change starts at.
    ChangeLoad(String, LoadChange, oneshot::Sender<Result<u64, ApiError>>),
    /// The current (or last) run's figures for `/metrics`; `None` before the first run.
    RunMetrics(oneshot::Sender<Option<RunSnapshot>>),
    /// The slaves that took part in a run, for fetching its trace.
    TraceSlaves(String, oneshot::Sender<Result<TraceSlaves, ApiError>>),
    /// One slice of a run's trace from one slave (by uid), from a byte offset.
    FetchTrace {
        run_id: String,
        uid: String,
        offset: u64,
        reply: oneshot::Sender<Result<proto::TraceChunk, ApiError>>,
    },
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

    /// A handle on a command queue the test reads itself (standing in for the loop).
    #[cfg(test)]
    pub(crate) fn for_tests(tx: mpsc::Sender<Command>) -> Self {
        ControlHandle { tx }
    }
}

/// The one task that owns the fleet's and the run's state.
pub struct Controller {
    settings: Settings,
    /// The fleets' join tokens (reloaded when an unknown token is presented).
    tokens: crate::tokens::TokenBook,
    /// Admits joins at a steady rate with a burst.
    join_bucket: JoinBucket,
    /// Joined slaves and their sessions.
    registry: Registry,
    /// The active run, or the last one (kept to answer about it until the next is created).
    run: Option<Run>,
    /// Runs, merged seconds, intervals and reports (SQLite); an interval is stored (as its
    /// own row or within its merged second) before it is acked.
    store: Store,
    /// Commands from the gRPC service and the API (bounded).
    rx: mpsc::Receiver<Command>,
    metrics: Arc<Metrics>,
    /// Last tick, to tell the master's own stalls from silent slaves.
    last_tick: Instant,
    /// Last sweep of the registry for silent slaves (`runs.rs`, [`sweep_every`]).
    last_sweep: Instant,
    /// Trace slices asked of slaves and not answered yet.
    traces: TraceFetches,
    /// Intervals stored in the store's open batch, to acknowledge once it is committed, and
    /// committed ones waiting to go out with their slave's next (`acks.rs`).
    acks: Acks,
    /// Acknowledgements going out now (reused, as `encoded` is).
    due: Vec<acks::AckDue>,
    /// An interval's encoding on its way to the store (reused: one allocation, not one per
    /// interval).
    encoded: Vec<u8>,
    /// Memory for an interval's check (reused, as `encoded` is).
    check_room: lobster_fleet::stats::CheckRoom,
    /// The active run's intervals of open seconds (who reported), merged and not stored yet:
    /// stored within their merged second when it closes, or within a snapshot of it once
    /// held too long.
    held: Held,
    /// The slaves of the active run already noted in the store (`Store::note_slave`), by
    /// run id: each is noted once, when a second of it is first compacted.
    noted: (String, std::collections::HashSet<String>),
}

/// Capacity of the command channel.
const COMMANDS: usize = 1024;
const TICK: Duration = Duration::from_millis(100);

/// How often the registry is swept for slaves silent past their lease: a tenth of the lease,
/// at most every 500 ms. A slave is declared lost at most this much after its lease ran out;
/// sweeping all of them every tick was a few per cent of the master's core at 5,000 slaves.
fn sweep_every(lease: Duration) -> Duration {
    (lease / 10).min(Duration::from_millis(500))
}
/// A run rebuilt from the store closes the seconds behind its replay every this many.
const REPLAY_CLOSE_EVERY: u64 = 30;

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
            last_sweep: Instant::now(),
            traces: TraceFetches::default(),
            acks: Default::default(),
            due: Vec::new(),
            encoded: Vec::new(),
            check_room: Default::default(),
            held: Held::default(),
            noted: Default::default(),
        };
        (c, ControlHandle { tx })
    }

    /// Reloads an unfinished run after a restart (its intervals are merged again). With
    /// `close`, the run is not continued but closed at once as aborted (this master is
    /// ephemeral, see `MasterConfig::ephemeral`), its report built from what was stored.
    pub fn recover(&mut self, close: bool) -> anyhow::Result<Option<String>> {
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
                self.settings.lease,
            );
            // By second, a second's merge before its intervals (an interval stored again
            // after its second was compacted, a resend whose ack was lost, is then found
            // merged and skipped); the seconds behind are closed as the replay goes.
            let mut n = 0;
            let mut closed_below = 0;
            let lease = self.settings.lease;
            self.store.replay(&rec.id, |row| -> anyhow::Result<()> {
                let (Stored::Second { index, .. } | Stored::Interval { index, .. }) = row;
                if index >= closed_below + REPLAY_CLOSE_EVERY {
                    let _ = r.close_replayed(index, now, lease);
                    closed_below = index;
                }
                match row {
                    Stored::Second { index, payload } => {
                        let c = Compaction::decode(index, payload)?;
                        n += c.reporters.len();
                        r.agg.add_merged(&c);
                    }
                    Stored::Interval {
                        slave_uid,
                        index,
                        payload,
                    } => {
                        let msg = proto::StatsInterval::decode(payload)?;
                        let stats = CheckedInterval::check(&msg)?;
                        r.on_stats(slave_uid, index, msg.last, &stats);
                        n += 1;
                    }
                }
                Ok(())
            })?;
            info!(run_id = %rec.id, phase = r.phase.name(), intervals = n, requests = r.agg.total.requests(), "recovered run");
            recovered = Some(rec.id.clone());
            if close {
                let reason = "its master ended before the run did (a crashed or force-quit `lobster run`); closed when the next run started on this home";
                warn!(run_id = %rec.id, "closing a run left unfinished: {reason}");
                // A stop already under way keeps its reason and verdict (a run that reached
                // its duration is judged); any other run did not reach its end.
                let _ = r.request_stop(now, reason, Some(RunStatus::Aborted));
                let _ = r.close_stale(now);
            }
            self.run = Some(r);
        }
        self.save();
        Ok(recovered)
    }

    /// Handles commands until `shutdown`; then stops the active run (aborted, with
    /// `shutdown_reason`) and waits (bounded) for it.
    pub async fn run(mut self, shutdown: CancellationToken, shutdown_reason: impl Fn() -> String) {
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
                        Some(r) if !r.is_done() => r.request_stop(now, &shutdown_reason(), Some(RunStatus::Aborted)),
                        _ => Vec::new(),
                    };
                    self.deliver(out);
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
                }
                _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => {
                    warn!("shutdown deadline reached");
                    self.finish_now();
                    self.commit();
                    return;
                }
            }
            if deadline.is_some() && self.run.as_ref().is_none_or(|r| r.is_done()) {
                self.save();
                self.commit();
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
        // A slave's messages (thousands a second) leave the run's state to the next tick's
        // save, which stores it with the batch their intervals are in; serializing every
        // participant after each of them was a master's largest cost when slaves were lost.
        let save_now = !matches!(cmd, Command::FromSlave(..) | Command::Detached(_));
        match cmd {
            Command::Join(req, reply) => {
                let _ = reply.send(self.join(req, now));
            }
            Command::Attach {
                attach,
                tx,
                pulse,
                reply,
            } => {
                let r =
                    self.registry
                        .attach(&attach.slave_uid, &attach.session_secret, tx, pulse, now);
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
                    self.traces.lost(&uid);
                    let id = self.slave_name(&uid);
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
            Command::Act(id, action, why, reply) => {
                let _ = reply.send(self.act(&id, action, why.as_deref(), now));
            }
            Command::Slaves(reply) => {
                let _ = reply.send(self.registry.view(now));
            }
            Command::ChangeLoad(id, change, reply) => {
                let _ = reply.send(self.change_load(&id, change, now));
            }
            Command::RunMetrics(reply) => {
                let _ = reply.send(self.run_metrics(now));
            }
            Command::TraceSlaves(id, reply) => {
                let _ = reply.send(self.trace_slaves(&id));
            }
            Command::FetchTrace {
                run_id,
                uid,
                offset,
                reply,
            } => self.fetch_trace(&run_id, &uid, offset, reply, now),
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
        if save_now {
            // Committed at once, not at the next tick: a stop asked for by a Ctrl-C must be
            // durable before a second Ctrl-C ends the process (it was lost when the second came
            // within the tick, and the run was then closed as crashed, not as stopped).
            self.save();
            self.commit();
        }
    }
}

#[cfg(test)]
mod tests;
