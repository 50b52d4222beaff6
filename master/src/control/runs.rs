//! The run side of the control loop: creating and starting runs, answering the API, applying
//! actions, the 100 ms tick (leases, a stalled master, quorum, closing seconds), delivering
//! the run's outbox to slaves and saving its state.

use super::*;
use crate::metrics::RunFacts;
use lobster_fleet::scenario::Model;

impl Controller {
    pub(super) fn create_run(
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
        let _span = info_span!("run", run_id = %id).entered();
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

    pub(super) fn try_start(&mut self, now: Instant) {
        let Some(r) = self.run.as_mut().filter(|r| r.phase == Phase::Init) else {
            return;
        };
        let available: Vec<Candidate> = self
            .registry
            .available()
            .into_iter()
            .map(candidate_of)
            .collect();
        let out = r.try_start(now, clock::unix_ms(), available);
        self.deliver(out);
    }

    pub(super) fn get_run(&self, id: &str, after: u64, now: Instant) -> Result<RunView, ApiError> {
        if let Some(r) = self.run.as_ref().filter(|r| r.id == id) {
            return Ok(RunView {
                id: r.id.clone(),
                name: r.scenario.name.clone(),
                model: r.scenario.load.model.name().to_string(),
                phase: r.phase.name().to_string(),
                elapsed_s: r.elapsed(now).as_secs_f64(),
                load_elapsed_s: r.load_elapsed(now).as_secs_f64(),
                duration_s: r.scenario.duration.as_secs_f64(),
                slaves: r.participants.len() as u32,
                active_slaves: r.participants.values().filter(|p| p.active).count() as u32,
                points: r
                    .agg
                    .series
                    .iter()
                    .filter(|p| p.index + 1 > after)
                    .cloned()
                    .collect(),
                endpoints: match &r.report {
                    Some(_) => Vec::new(),
                    None => r.live_endpoints.clone(),
                },
                targets: match &r.report {
                    Some(_) => Vec::new(),
                    None => r.live_targets.clone(),
                },
                sla: match &r.report {
                    Some(_) => Vec::new(),
                    None => r.sla_so_far(),
                },
                saturated: match &r.report {
                    Some(_) => Vec::new(),
                    None => r.saturation.flagged().to_vec(),
                },
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
            model: report.model.clone(),
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
            endpoints: Vec::new(),
            targets: Vec::new(),
            sla: Vec::new(),
            saturated: Vec::new(),
            report: Some(report),
        })
    }

    pub(super) fn change_load(
        &mut self,
        id: &str,
        change: LoadChange,
        now: Instant,
    ) -> Result<u64, ApiError> {
        let Some(r) = self.run.as_mut().filter(|r| r.id == id) else {
            return Err(ApiError::NotFound(id.to_string()));
        };
        let _span = info_span!("run", run_id = %r.id).entered();
        let target = match (r.scenario.load.model, change.load) {
            (model, load) if load.model() == model => load.amount(),
            (Model::Closed, _) => {
                return Err(ApiError::Invalid(format!(
                    "run {id} is closed-model: give `users`, not a rate"
                )));
            }
            (Model::Open, _) => {
                return Err(ApiError::Invalid(format!(
                    "run {id} is open-model: give `rate` (requests per second), not users"
                )));
            }
        };
        let (out, at) = r
            .change_load(now, target, change.ramp)
            .map_err(ApiError::Conflict)?;
        info!(
            target,
            at_load_ms = at,
            ramp_ms = change.ramp.as_millis() as u64,
            "load changed by the operator"
        );
        self.deliver(out);
        self.save();
        Ok(at)
    }

    pub(super) fn act(
        &mut self,
        id: &str,
        action: Action,
        why: Option<&str>,
        now: Instant,
    ) -> Result<(), ApiError> {
        let Some(r) = self.run.as_mut().filter(|r| r.id == id) else {
            return Err(ApiError::NotFound(id.to_string()));
        };
        let _span = info_span!("run", run_id = %r.id).entered();
        let out = match action {
            Action::Stop => {
                if r.is_done() {
                    return Err(ApiError::Conflict(format!("run {id} is already over")));
                }
                // A person's stop ends the run before its end: aborted, never a pass.
                let reason = format!(
                    "stopped by the operator: {}",
                    why.unwrap_or("stop requested through the API")
                );
                r.request_stop(now, &reason, Some(RunStatus::Aborted))
            }
            Action::Suspend => r.suspend(now).map_err(ApiError::Conflict)?,
            Action::Resume => r.resume(now).map_err(ApiError::Conflict)?,
        };
        self.deliver(out);
        Ok(())
    }

    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        self.commit();
        self.traces.expire(now);
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
        let silent = if now.duration_since(self.last_sweep) >= super::sweep_every(lease) {
            self.last_sweep = now;
            let silent = self.registry.expire(now, lease, Duration::from_secs(600));
            self.metrics
                .slaves_connected
                .set(self.registry.connected() as i64);
            silent
        } else {
            Vec::new()
        };
        for uid in &silent {
            warn!(uid = %uid, "slave silent longer than its lease");
        }
        let out = match &mut self.run {
            Some(r) if !silent.is_empty() => r.lose_slaves(
                now,
                silent.iter().map(String::as_str),
                "silent longer than its lease",
            ),
            _ => Vec::new(),
        };
        self.deliver(out);
        self.try_start(now);
        if let Some(r) = self.run.as_mut().filter(|r| !r.is_done()) {
            let _span = info_span!("run", run_id = %r.id).entered();
            // Slaves that joined during the run take part.
            let joining: Vec<Candidate> = if matches!(r.phase, Phase::Running | Phase::Suspended) {
                self.registry
                    .available()
                    .into_iter()
                    .filter(|s| !r.participants.get(&s.uid).is_some_and(|p| p.active))
                    .filter(|s| s.heartbeat.run_id.is_empty())
                    .map(candidate_of)
                    .collect()
            } else {
                Vec::new()
            };
            let mut out = r.add_slaves(now, joining);
            let (more, points) = r.tick(now, lease);
            let elapsed = r.elapsed(now);
            for p in &points {
                let lag = elapsed.saturating_sub(Duration::from_secs(p.index + 1));
                self.metrics.merge_lag.observe(lag.as_secs_f64());
            }
            out.extend(more);
            self.deliver(out);
        }
        self.save();
        self.store_overdue(now);
    }

    pub(super) fn deliver(&mut self, out: Outbox) {
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
                if let Some(r) = &mut self.run {
                    r.redistribution_sent(Instant::now());
                }
                return;
            }
            let now = Instant::now();
            out = Vec::new();
            if let Some(r) = &mut self.run {
                out = r.lose_slaves(now, dropped.iter().map(String::as_str), "session closed");
            }
        }
    }

    /// Persists the active run's state when it changed, and its report once done; stores
    /// the seconds it merged in place of their intervals (in the open batch, so the state
    /// that goes with them, a slave's `last`, commits with them).
    pub(super) fn save(&mut self) {
        self.compact();
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

    /// The figures of the current (or last) run for `/metrics`.
    pub(super) fn run_metrics(&self, now: Instant) -> Option<RunSnapshot> {
        let r = self.run.as_ref()?;
        // A finished run's load time is its report's, not the time since it started.
        let elapsed = match &r.report {
            Some(rep) => Duration::from_secs_f64(rep.duration_s.max(0.0)),
            None => r.load_elapsed(now),
        };
        let profile = &r.scenario.load;
        let load = if r.phase == Phase::Running {
            profile.load_at(elapsed.as_millis() as u64)
        } else {
            0.0
        };
        let names = crate::report::Names::of(&r.scenario);
        let facts = RunFacts {
            run_id: &r.id,
            name: &r.scenario.name,
            phase: r.phase.name(),
            elapsed,
            model: profile.model,
            load,
            slaves: r.participants.values().filter(|p| p.active).count() as u32,
            endpoint_names: &names.endpoints,
            target_names: &names.targets,
        };
        Some(RunSnapshot::of(facts, &r.agg.total))
    }
}
