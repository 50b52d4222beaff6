//! The agent's state across sessions: the current run and its load control, the spool, the
//! dead-man switch, and what each message from the master does to them.

use super::*;
use lobster_fleet::scenario::Profile;

/// The run this slave carries now.
pub(super) struct Current {
    pub(super) run_id: Arc<str>,
    pub(super) control: watch::Sender<LoadControl>,
    pub(super) stop: CancellationToken,
    /// Set once `Stop` arrived or the share ended by itself.
    pub(super) stopping: bool,
    /// Paused by the dead-man switch (not by the master).
    pub(super) deadman: bool,
    /// Paused by the master's Suspend.
    pub(super) master_suspended: bool,
}

/// The agent's state across sessions.
pub(super) struct State {
    pub(super) spool: Spool,
    pub(super) current: Option<Current>,
    pub(super) draining: bool,
    pub(super) gauges: Arc<Gauges>,
    pub(super) out_tx: mpsc::Sender<Output>,
    /// Last message from the master (any message proves it alive).
    pub(super) last_contact: Instant,
    pub(super) lease: Duration,
    /// The injector's resources since the previous heartbeat.
    pub(super) resources: crate::resources::Sampler,
    /// Set when an interval went out carrying the heartbeat (the main loop then puts off its
    /// own heartbeat, see `lobster_fleet::liveness`); cleared by the loop.
    pub(super) heartbeat_carried: bool,
}

pub(super) fn event(kind: EventKind, run_id: &str, message: impl Into<String>) -> SlaveMessage {
    SlaveMessage {
        kind: Some(Up::Event(proto::Event {
            kind: kind as i32,
            run_id: run_id.to_string(),
            message: message.into(),
        })),
    }
}

impl State {
    pub(super) fn run_id(&self) -> Option<Arc<str>> {
        self.current.as_ref().map(|c| c.run_id.clone())
    }

    /// Nothing left to do before exiting: no run and every interval acknowledged.
    pub(super) fn finished(&self) -> bool {
        self.current.is_none() && self.spool.is_empty()
    }

    pub(super) fn heartbeat(&mut self) -> SlaveMessage {
        SlaveMessage {
            kind: Some(Up::Heartbeat(self.heartbeat_state())),
        }
    }

    /// What a heartbeat says now (its resources cover the time since the previous one).
    fn heartbeat_state(&mut self) -> proto::Heartbeat {
        use std::sync::atomic::Ordering::Relaxed;
        let (state, run_id, rate) = match &self.current {
            None if self.draining => (SlaveState::Draining, String::new(), 0),
            None => (SlaveState::Idle, String::new(), 0),
            Some(c) => {
                let ctl = c.control.borrow();
                let st = if c.stopping {
                    SlaveState::Stopping
                } else if ctl.suspended {
                    SlaveState::Suspended
                } else {
                    SlaveState::Running
                };
                let rate = match ctl.profile.model {
                    lobster_fleet::scenario::Model::Open => {
                        let load_ms = ctl.load_ms(Instant::now());
                        let owned = ctl.striping.at(load_ms).map_or(0.0, |s| s.fraction());
                        (ctl.profile.value_at(load_ms) * owned) as u64
                    }
                    lobster_fleet::scenario::Model::Closed => 0,
                };
                (st, c.run_id.to_string(), rate)
            }
        };
        proto::Heartbeat {
            state: state as i32,
            run_id,
            active_users: self.gauges.active_users.load(Relaxed),
            rate_millis: rate,
            in_flight: self.gauges.in_flight.load(Relaxed),
            spooled: self.spool.len() as u32,
            connections: self.gauges.connections.load(Relaxed),
            resources: Some(self.resources.sample().to_proto()),
        }
    }

    /// Sends spooled intervals that are due (never sent on this session, or unacked too long).
    /// The first carries the heartbeat, in place of a message of its own.
    pub(super) fn flush(&mut self, tx: &mpsc::Sender<SlaveMessage>) {
        let due = self.spool.due(Instant::now(), RESEND_AFTER, FLUSH_BATCH);
        for (i, mut msg) in due.into_iter().enumerate() {
            if i == 0 {
                msg.heartbeat = Some(self.heartbeat_state());
            }
            if tx
                .try_send(SlaveMessage {
                    kind: Some(Up::Stats(msg)),
                })
                .is_err()
            {
                // The session is backed up; what was not sent is resent later.
                self.spool.reset_sent();
                break;
            }
            self.heartbeat_carried = true;
        }
    }

    pub(super) fn on_output(&mut self, o: Output, tx: Option<&mpsc::Sender<SlaveMessage>>) {
        match o {
            Output::Interval {
                run_id,
                index,
                stats,
                last,
            } => {
                let msg = stats.to_proto(&run_id, index, last);
                debug!(run_id = %run_id, index, requests = stats.requests(), last, "interval");
                if stats.requests() > 0 || last {
                    // Activity for the VM's idle watcher, which counts only this target's lines
                    // (reconnect chatter and heartbeats are not load and must not keep a VM up).
                    info!(target: ACTIVITY, run_id = %run_id, index, requests = stats.requests(), last, "interval recorded");
                }
                self.spool.push(run_id.clone(), msg);
                if last && self.current.as_ref().is_some_and(|c| c.run_id == run_id) {
                    info!(run_id = %run_id, "share done");
                    self.current = None;
                }
                if let Some(tx) = tx {
                    self.flush(tx);
                }
            }
            Output::Event {
                run_id,
                kind,
                message,
            } => {
                if let Some(tx) = tx {
                    let _ = tx.try_send(event(kind, &run_id, message));
                }
            }
        }
    }

    /// Pauses the load when the master has been silent longer than its lease.
    pub(super) fn check_deadman(&mut self) {
        let silent = self.last_contact.elapsed();
        let Some(c) = &mut self.current else { return };
        if c.stopping || c.deadman || silent <= self.lease {
            return;
        }
        warn!(run_id = %c.run_id, silent_ms = silent.as_millis() as u64, "master silent longer than its lease: pausing load (dead-man switch)");
        c.deadman = true;
        pause(c);
    }

    pub(super) fn on_master(
        &mut self,
        msg: MasterMessage,
        tx: &mpsc::Sender<SlaveMessage>,
        cfg: &AgentConfig,
    ) {
        let Some(kind) = msg.kind else { return };
        // The master is back: a load paused by the dead-man switch (not by the master) goes
        // on where the run's clock is now (the master's clock did not stop).
        if let Some(c) = &mut self.current
            && c.deadman
            && !c.master_suspended
        {
            c.deadman = false;
            c.control.send_modify(|ctl| ctl.suspended = false);
            info!(run_id = %c.run_id, "master back: resuming load");
        }
        match kind {
            Down::Ack(a) => self.spool.ack(&a.run_id, &a.indexes),
            Down::Assign(a) => self.on_assign(a, tx, cfg),
            Down::Rescale(r) => {
                if let Some(c) = self.current_for(&r.run_id) {
                    let Some(share) = r.share else { return };
                    let profile = match r.profile_json.as_str() {
                        "" => None,
                        json => match serde_json::from_str::<Profile>(json) {
                            Ok(p) => Some(p),
                            Err(e) => {
                                warn!(run_id = %r.run_id, error = %e, "a new load profile that cannot be read: keeping the current one");
                                None
                            }
                        },
                    };
                    c.control.send_modify(|ctl| {
                        apply_share(ctl, &share, r.load_elapsed_ms);
                        if let Some(p) = profile.filter(|p| p.model == ctl.profile.model) {
                            ctl.profile = p;
                        }
                    });
                    info!(run_id = %r.run_id, "share rescaled");
                }
            }
            Down::Suspend(s) => {
                if let Some(c) = self.current_for(&s.run_id) {
                    c.master_suspended = true;
                    pause(c);
                    info!(run_id = %s.run_id, "suspended");
                }
            }
            Down::Resume(r) => {
                if let Some(c) = self.current_for(&r.run_id) {
                    resume(c, r.load_elapsed_ms);
                    info!(run_id = %r.run_id, "resumed");
                }
            }
            Down::Stop(s) => {
                let stopped = match self.current_for(&s.run_id) {
                    Some(c) => {
                        c.stopping = true;
                        crate::engine::stop_at(&c.control, &c.stop, s.at_load_ms);
                        true
                    }
                    None => false,
                };
                info!(run_id = %s.run_id, reason = %s.reason, "stop");
                let _ = tx.try_send(event(
                    EventKind::Stopped,
                    &s.run_id,
                    if stopped { "stopped" } else { "not running" },
                ));
            }
            Down::TraceFetch(f) => {
                // Read off the session's task; the answer goes back on the same session.
                let dir = cfg.trace_dir.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let request_id = f.request_id;
                    let read = tokio::task::spawn_blocking(move || {
                        crate::trace::read_chunk(&dir, &f.run_id, f.offset, f.max_bytes)
                    });
                    let mut chunk = read.await.unwrap_or_else(|e| proto::TraceChunk {
                        error: format!("the trace could not be read: {e}"),
                        ..Default::default()
                    });
                    chunk.request_id = request_id;
                    let msg = SlaveMessage {
                        kind: Some(Up::TraceChunk(chunk)),
                    };
                    let _ = tx.send(msg).await;
                });
            }
            Down::Drain(d) => {
                if d.undo {
                    info!(reason = %d.reason, "drain taken back: accepting work again");
                } else {
                    info!(reason = %d.reason, "draining: no new work");
                }
                self.draining = !d.undo;
            }
        }
    }

    pub(super) fn current_for(&mut self, run_id: &str) -> Option<&mut Current> {
        self.current.as_mut().filter(|c| &*c.run_id == run_id)
    }

    pub(super) fn on_assign(
        &mut self,
        a: proto::Assign,
        tx: &mpsc::Sender<SlaveMessage>,
        cfg: &AgentConfig,
    ) {
        let Some(share) = a.share.clone() else {
            let _ = tx.try_send(event(
                EventKind::Error,
                &a.run_id,
                "assignment without a share",
            ));
            return;
        };
        // The master re-adopting a run we already carry (after a reconnect): update it.
        if let Some(c) = self.current_for(&a.run_id) {
            c.control
                .send_modify(|ctl| apply_share(ctl, &share, a.load_elapsed_ms));
            c.deadman = false;
            if a.suspended {
                c.master_suspended = true;
                pause(c);
            } else {
                resume(c, a.load_elapsed_ms);
            }
            info!(run_id = %a.run_id, "run re-adopted by the master");
            return;
        }
        if self.draining {
            let _ = tx.try_send(event(
                EventKind::Error,
                &a.run_id,
                "draining: refusing new work",
            ));
            return;
        }
        let scenario = match Scenario::from_json(&a.scenario_json) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let _ = tx.try_send(event(
                    EventKind::Error,
                    &a.run_id,
                    format!("invalid scenario: {e}"),
                ));
                return;
            }
        };
        let stripe = match Stripe::new(share.stripe_period, share.stripe_offsets.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.try_send(event(
                    EventKind::Error,
                    &a.run_id,
                    format!("invalid share: {e}"),
                ));
                return;
            }
        };
        if let Some(old) = self.current.take() {
            warn!(run_id = %old.run_id, "a new run replaces an unfinished one");
            old.stop.cancel();
        }
        let now = Instant::now();
        let control = LoadControl {
            profile: scenario.load.clone(),
            striping: Striping::from(share.from_load_ms.unwrap_or(a.load_elapsed_ms), stripe),
            load_origin: now - Duration::from_millis(a.load_elapsed_ms),
            suspended: a.suspended,
            items: Arc::new(share.items.clone()),
            max_connections: share.max_connections,
            stop_at_ms: None,
        };
        let (ctl_tx, ctl_rx) = watch::channel(control);
        let run_id: Arc<str> = a.run_id.as_str().into();
        let stop = CancellationToken::new();
        let run = Run {
            run_id: run_id.clone(),
            scenario,
            run_origin: now - Duration::from_millis(a.run_elapsed_ms),
            control: ctl_rx,
            out: self.out_tx.clone(),
            gauges: self.gauges.clone(),
            ordinal: a.ordinal,
            trace_dir: Some(cfg.trace_dir.clone()),
        };
        let span = info_span!("run", run_id = %run_id, instance = %cfg.identity.instance_id, index = cfg.identity.slave_index);
        tokio::spawn(run.run(stop.clone()).instrument(span));
        info!(run_id = %run_id, stripe_period = share.stripe_period, owned = share.stripe_offsets.len(), "share assigned");
        self.current = Some(Current {
            run_id,
            control: ctl_tx,
            stop,
            stopping: false,
            deadman: false,
            master_suspended: a.suspended,
        });
    }
}

fn apply_share(ctl: &mut LoadControl, share: &proto::Share, load_elapsed_ms: u64) {
    match Stripe::new(share.stripe_period, share.stripe_offsets.clone()) {
        Ok(stripe) => {
            let from = share.from_load_ms.unwrap_or(load_elapsed_ms);
            if ctl
                .striping
                .switch(from, stripe, ctl.load_ms(Instant::now()))
            {
                info!(from_load_ms = from, "stripe switch planned");
            }
        }
        Err(e) => warn!(error = %e, "rescale with an invalid stripe: keeping the current one"),
    }
    ctl.items = Arc::new(share.items.clone());
    ctl.max_connections = share.max_connections;
    if !ctl.suspended {
        ctl.load_origin = Instant::now() - Duration::from_millis(load_elapsed_ms);
    }
}

fn pause(c: &mut Current) {
    c.control.send_modify(|ctl| ctl.suspended = true);
}

fn resume(c: &mut Current, load_elapsed_ms: u64) {
    c.deadman = false;
    c.master_suspended = false;
    c.control.send_modify(|ctl| {
        ctl.suspended = false;
        ctl.load_origin = Instant::now() - Duration::from_millis(load_elapsed_ms);
    });
}
