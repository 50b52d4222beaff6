//! One run's lifecycle: init → running ⇄ suspended → stopping → passed/failed/aborted.
//!
//! All slices of a run share its id and its time zero. Methods take `now` and return the
//! messages to send ([`Outbox`]); the controller delivers them. Nothing here does I/O, so the
//! lifecycle is tested with plain values.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lobster_fleet::proto::{self, MasterMessage, master_message::Kind as Down};
use lobster_fleet::scenario::Scenario;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::aggregate::{Aggregator, Point};
use crate::report::{LostSlave, Report, Status, StopInfo, figures};
use crate::sla::SlaGuard;
use crate::slicer::{self, Slot};

mod closing;
mod live;
mod members;
mod stopping;

use members::participant;
pub use stopping::stop_msg;

/// Messages to deliver: (slave uid, message).
pub type Outbox = Vec<(String, MasterMessage)>;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a quorum of slaves.
    Init,
    Running,
    Suspended,
    /// Stop sent; waiting for the slaves' last intervals.
    Stopping,
    Done(Status),
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::Running => "running",
            Phase::Suspended => "suspended",
            Phase::Stopping => "stopping",
            Phase::Done(s) => s.as_str(),
        }
    }
}

/// How many slaves a run needs and how long it waits for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    pub quorum: u32,
    pub quorum_timeout_ms: u64,
}

/// A slave taking part in a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Participant {
    pub slave_id: String,
    pub instance_id: String,
    pub slave_index: u32,
    pub millicores: u32,
    /// Carries a share now (not lost).
    pub active: bool,
    /// Its last interval arrived.
    pub got_last: bool,
    /// Its share as last sent, to send rescales only on change.
    #[serde(skip)]
    pub share: Option<proto::Share>,
    /// When the session went away (or the master restarted) without the slave being lost yet.
    #[serde(skip)]
    pub detached_since: Option<Instant>,
    #[serde(skip)]
    pub stop_acked_ms: Option<u64>,
    /// Its number in this run, unique and never reused (the base of its `{{serial}}`).
    #[serde(default)]
    pub ordinal: u32,
}

/// Who a slave is, when it joins a run.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub uid: String,
    pub slave_id: String,
    pub instance_id: String,
    pub slave_index: u32,
    pub millicores: u32,
}

struct Stopping {
    reason: String,
    /// Status if nothing else decides (an abort); `None` means judge by the SLA rules.
    forced: Option<Status>,
    sent_at: Instant,
    at_s: f64,
    /// Load time (ms) the run stops at, given to the slaves (at most the duration).
    at_load_ms: u64,
    deadline: Instant,
}

/// The state persisted for recovery after a master restart.
#[derive(Serialize, Deserialize)]
pub struct Persisted {
    pub phase: Phase,
    pub options: RunOptions,
    pub started_unix_ms: Option<u64>,
    pub suspended_total_ms: u64,
    pub suspended_since_unix_ms: Option<u64>,
    pub participants: BTreeMap<String, Participant>,
    pub lost: Vec<LostSlave>,
    /// The stop requested before the restart: its reason and the status it forces.
    #[serde(default)]
    pub stop: Option<(String, Option<Status>)>,
    /// The load profile as last changed by an operator (`None` when never changed).
    #[serde(default)]
    pub load: Option<lobster_fleet::scenario::Profile>,
}

pub struct Run {
    pub id: String,
    pub scenario: Arc<Scenario>,
    /// The scenario as sent to slaves (data items travel in the shares).
    wire_json: String,
    pub phase: Phase,
    pub options: RunOptions,
    created: Instant,
    pub created_unix_ms: u64,
    started: Option<Instant>,
    pub started_unix_ms: Option<u64>,
    suspended_since: Option<Instant>,
    suspended_total: Duration,
    pub participants: BTreeMap<String, Participant>,
    pub agg: Aggregator,
    sla: SlaGuard,
    /// Injectors above 90 % CPU for 5 s in a row, flagged as seconds close.
    pub saturation: crate::saturation::SaturationWatch,
    stop: Option<Stopping>,
    lost: Vec<LostSlave>,
    /// The final report, once done.
    pub report: Option<Report>,
    /// Losses whose share was redistributed, with when: `lost` index and decision time.
    pending_redistribution: Vec<(usize, Instant)>,
    /// Set when the persisted state changed and should be saved.
    pub dirty: bool,
    /// Closed seconds whose asked-for load is stamped (`live.rs`).
    load_stamped: usize,
    /// Each endpoint's figures so far, refreshed when seconds close (`live.rs`), so that the
    /// API's polls read them instead of summarizing the histograms on every poll.
    pub live_endpoints: Vec<crate::report::EndpointReport>,
    /// With `targets:`, each target's figures so far, recomputed with `live_endpoints`.
    pub live_targets: Vec<crate::report::EndpointReport>,
    /// An operator changed the load profile (persisted, so a restart keeps the change).
    load_changed: bool,
    /// What slaves warned of during the run (at most [`MAX_SLAVE_WARNINGS`]), for the report.
    slave_warnings: Vec<String>,
}

/// Most slave warnings a report keeps.
const MAX_SLAVE_WARNINGS: usize = 20;

/// The scenario as sent to slaves: without its data items (they travel in the shares).
fn wire_json(scenario: &Scenario) -> String {
    let mut wire = scenario.clone();
    wire.data = Vec::new();
    wire.to_json()
}

/// How long a run waits for the last intervals after the stop, beyond the request timeout.
const STOP_SLACK: Duration = Duration::from_secs(5);
/// Longest wait for in-flight requests after a stop.
const MAX_INFLIGHT_WAIT: Duration = Duration::from_secs(60);

impl Run {
    pub fn new(
        id: String,
        scenario: Scenario,
        options: RunOptions,
        now: Instant,
        unix_ms: u64,
    ) -> Self {
        let sla = SlaGuard::new(&scenario.sla);
        Run {
            id,
            wire_json: wire_json(&scenario),
            scenario: Arc::new(scenario),
            phase: Phase::Init,
            options,
            created: now,
            created_unix_ms: unix_ms,
            started: None,
            started_unix_ms: None,
            suspended_since: None,
            suspended_total: Duration::ZERO,
            participants: BTreeMap::new(),
            agg: Aggregator::default(),
            sla,
            saturation: Default::default(),
            stop: None,
            lost: Vec::new(),
            report: None,
            pending_redistribution: Vec::new(),
            dirty: true,
            load_stamped: 0,
            live_endpoints: Vec::new(),
            live_targets: Vec::new(),
            load_changed: false,
            slave_warnings: Vec::new(),
        }
    }

    /// A slave warned of something that concerns the run's figures (e.g. arrivals sent twice
    /// after a late stripe switch): kept for the report's warnings.
    pub fn slave_warning(&mut self, slave_id: &str, message: &str) {
        if self.slave_warnings.len() < MAX_SLAVE_WARNINGS {
            self.slave_warnings
                .push(format!("slave {slave_id}: {message}"));
        }
    }

    /// Rebuilds a run from the store after a restart; participants must re-attach within the lease.
    /// The participants get two leases to come back (they were cut off for as long as the
    /// master was away, and retry with a backoff).
    pub fn recover(
        id: String,
        scenario: Scenario,
        p: Persisted,
        created_unix_ms: u64,
        now: Instant,
        unix_ms: u64,
        lease: Duration,
    ) -> Self {
        let mut run = Run::new(id, scenario, p.options, now, created_unix_ms);
        let ago = |ms: u64| {
            now.checked_sub(Duration::from_millis(unix_ms.saturating_sub(ms)))
                .unwrap_or(now)
        };
        run.phase = p.phase;
        run.started_unix_ms = p.started_unix_ms;
        run.started = p.started_unix_ms.map(ago);
        run.suspended_total = Duration::from_millis(p.suspended_total_ms);
        run.suspended_since = p.suspended_since_unix_ms.map(ago);
        run.participants = p.participants;
        for part in run.participants.values_mut() {
            // Lost once a lease has passed after this one.
            part.detached_since = Some(now + lease);
        }
        run.lost = p.lost;
        if let Some(profile) = p.load {
            run.set_profile(profile);
            run.load_changed = true;
        }
        if run.phase == Phase::Stopping {
            // The stop was sent before the restart; wait a little for the last intervals again.
            let (reason, forced) = p.stop.unwrap_or_else(|| ("stopped".into(), None));
            run.stop = Some(Stopping {
                reason,
                forced,
                sent_at: now,
                at_s: run.elapsed(now).as_secs_f64(),
                at_load_ms: (run.load_elapsed(now).as_millis() as u64)
                    .min(run.scenario.duration_ms()),
                deadline: now + STOP_SLACK,
            });
        }
        run
    }

    /// The state to save (pure: wall-clock times derive from the start's Unix time).
    pub fn persisted(&self) -> Persisted {
        Persisted {
            phase: self.phase,
            options: self.options,
            started_unix_ms: self.started_unix_ms,
            suspended_total_ms: self.suspended_total.as_millis() as u64,
            suspended_since_unix_ms: self.suspended_since.map(|s| self.unix_ms_at(s)),
            participants: self.participants.clone(),
            lost: self.lost.clone(),
            stop: self.stop.as_ref().map(|s| (s.reason.clone(), s.forced)),
            load: self.load_changed.then(|| self.scenario.load.clone()),
        }
    }

    /// The Unix time (ms) of an instant of this run, from its start's pair of clocks.
    fn unix_ms_at(&self, t: Instant) -> u64 {
        let (origin, origin_unix) = match (self.started, self.started_unix_ms) {
            (Some(s), Some(u)) => (s, u),
            _ => (self.created, self.created_unix_ms),
        };
        match t.checked_duration_since(origin) {
            Some(d) => origin_unix + d.as_millis() as u64,
            None => origin_unix.saturating_sub(origin.duration_since(t).as_millis() as u64),
        }
    }

    /// Sets how long the redistributions decided since the last call took to reach the
    /// slaves: the control loop calls this when it has delivered the messages at `sent`.
    pub fn redistribution_sent(&mut self, sent: Instant) {
        for (i, decided) in self.pending_redistribution.drain(..) {
            if let Some(l) = self.lost.get_mut(i) {
                l.redistributed_after_ms =
                    Some(sent.saturating_duration_since(decided).as_millis() as u64);
            }
        }
    }

    /// Wall time since the run started.
    pub fn elapsed(&self, now: Instant) -> Duration {
        self.started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Load time: wall time minus suspended time.
    pub fn load_elapsed(&self, now: Instant) -> Duration {
        let suspended = self.suspended_total
            + self
                .suspended_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        self.elapsed(now).saturating_sub(suspended)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    fn active(&self) -> impl Iterator<Item = (&String, &Participant)> {
        self.participants.iter().filter(|(_, p)| p.active)
    }

    /// Starts the run if enough slaves are available; every available slave takes part.
    pub fn try_start(&mut self, now: Instant, unix_ms: u64, available: Vec<Candidate>) -> Outbox {
        if self.phase != Phase::Init || (available.len() as u32) < self.options.quorum.max(1) {
            return Vec::new();
        }
        self.started = Some(now);
        self.started_unix_ms = Some(unix_ms);
        self.phase = Phase::Running;
        self.dirty = true;
        for c in available {
            let mut p = participant(&c);
            p.ordinal = self.next_ordinal();
            self.participants.insert(c.uid.clone(), p);
        }
        info!(run_id = %self.id, slaves = self.participants.len(), "run started");
        self.reslice(now)
    }

    /// A participant number no participant of this run ever had.
    fn next_ordinal(&self) -> u32 {
        self.participants
            .values()
            .map(|p| p.ordinal + 1)
            .max()
            .unwrap_or(0)
    }

    /// Whether the quorum wait is over without a start.
    pub fn quorum_expired(&self, now: Instant) -> bool {
        self.phase == Phase::Init
            && now.duration_since(self.created)
                >= Duration::from_millis(self.options.quorum_timeout_ms)
    }

    /// Records a slave's interval; false if it was a resend.
    pub fn on_stats<S: lobster_fleet::stats::Mergeable + ?Sized>(
        &mut self,
        uid: &str,
        index: u64,
        last: bool,
        stats: &S,
    ) -> bool {
        let new = self.agg.add(uid, index, stats);
        self.got_last(uid, last);
        new
    }

    /// As [`Run::on_stats`] for an interval of a second still open, checked and merged in one
    /// pass ([`crate::aggregate::Aggregator::check_and_add_open`]): its requests if it is new.
    pub fn on_open_stats(
        &mut self,
        uid: &str,
        wire: &proto::StatsInterval,
        room: &mut lobster_fleet::stats::CheckRoom,
    ) -> Result<Option<u64>, lobster_fleet::stats::StatsError> {
        let new = self.agg.check_and_add_open(uid, wire.index, wire, room)?;
        if new.is_some() {
            self.got_last(uid, wire.last);
        }
        Ok(new)
    }

    /// Notes a slave's `last` interval (it has reported all of its share).
    fn got_last(&mut self, uid: &str, last: bool) {
        if last
            && let Some(p) = self.participants.get_mut(uid)
            && !p.got_last
        {
            p.got_last = true;
            // Persisted with the next save, in the transaction that may compact the second
            // this `last` came in (the stored interval then no longer says so).
            self.dirty = true;
        }
    }

    pub fn suspend(&mut self, now: Instant) -> Result<Outbox, String> {
        if self.phase != Phase::Running {
            return Err(format!("run is {}, not running", self.phase.name()));
        }
        self.phase = Phase::Suspended;
        self.suspended_since = Some(now);
        self.dirty = true;
        let msg = |id: &str| MasterMessage {
            kind: Some(Down::Suspend(proto::Suspend {
                run_id: id.to_string(),
            })),
        };
        Ok(self
            .active()
            .map(|(u, _)| (u.clone(), msg(&self.id)))
            .collect())
    }

    pub fn resume(&mut self, now: Instant) -> Result<Outbox, String> {
        if self.phase != Phase::Suspended {
            return Err(format!("run is {}, not suspended", self.phase.name()));
        }
        if let Some(s) = self.suspended_since.take() {
            self.suspended_total += now.saturating_duration_since(s);
        }
        self.phase = Phase::Running;
        self.dirty = true;
        let load_ms = self.load_elapsed(now).as_millis() as u64;
        let msg = |id: &str| MasterMessage {
            kind: Some(Down::Resume(proto::Resume {
                run_id: id.to_string(),
                load_elapsed_ms: load_ms,
            })),
        };
        Ok(self
            .active()
            .map(|(u, _)| (u.clone(), msg(&self.id)))
            .collect())
    }

    /// Advances time: closes intervals (evaluating SLA rules), ends the run at its duration,
    /// declares silent participants lost, finishes the stop. Returns messages and the newly
    /// closed points.
    pub fn tick(&mut self, now: Instant, lease: Duration) -> (Outbox, Vec<Point>) {
        let mut out = Vec::new();
        let mut points = Vec::new();
        if self.quorum_expired(now) {
            let reason = format!(
                "quorum not reached: fewer than {} slave(s) within {} s",
                self.options.quorum,
                self.options.quorum_timeout_ms / 1000
            );
            out.extend(self.request_stop(now, &reason, Some(Status::Aborted)));
        }
        let gone: Vec<String> = self
            .participants
            .iter()
            .filter(|(_, p)| {
                p.active
                    && p.detached_since
                        .is_some_and(|d| now.duration_since(d) > lease)
            })
            .map(|(u, _)| u.clone())
            .collect();
        out.extend(self.lose_slaves(
            now,
            gone.iter().map(String::as_str),
            "did not come back within its lease",
        ));
        if self.started.is_some() {
            // Every tick, with thousands of slaves: no set is built, and the slaves are
            // looked up in a second's reporters only once there are enough of them.
            let parts = &self.participants;
            let expected = || parts.iter().filter(|(_, p)| p.active && !p.got_last);
            let waiting_for = expected().count();
            let complete = |reporters: &HashMap<String, u64>| {
                reporters.len() >= waiting_for && expected().all(|(u, _)| reporters.contains_key(u))
            };
            let elapsed = self.elapsed(now);
            let closed = self.agg.close_ready(elapsed, complete, lease);
            points.extend(self.judge(closed, now, &mut out));
            self.seconds_closed(now);
        }
        if self.phase == Phase::Running && self.load_elapsed(now) >= self.scenario.duration {
            out.extend(self.request_stop(now, "duration reached", None));
        }
        if self.phase == Phase::Stopping {
            // Every active slave sent its last interval and acknowledged the stop.
            let all_in = self
                .active()
                .all(|(_, p)| p.got_last && (p.stop_acked_ms.is_some() || self.started.is_none()));
            let deadline = self.stop.as_ref().is_some_and(|s| now >= s.deadline);
            if all_in || deadline {
                points.extend(self.finish(now));
            }
        }
        (out, points)
    }
}

#[cfg(test)]
mod tests;
