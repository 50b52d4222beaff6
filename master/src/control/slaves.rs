//! The slave side of the control loop: joins (token, rate, limits), sessions attaching,
//! messages from slaves (heartbeats, statistics, events) and drains from idle VMs.

use super::*;

impl Controller {
    pub(super) fn join(&mut self, req: JoinRequest, now: Instant) -> Result<JoinReply, Status> {
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

    pub(super) fn candidate(&self, uid: &str) -> Option<Candidate> {
        self.registry.slaves.get(uid).map(candidate_of)
    }

    /// The display id of a slave (empty when it is unknown).
    pub(super) fn slave_name(&self, uid: &str) -> String {
        self.registry
            .slaves
            .get(uid)
            .map(|s| s.id.clone())
            .unwrap_or_default()
    }

    pub(super) fn on_attached(&mut self, attach: &proto::Attach, session: u64, now: Instant) {
        let uid = attach.slave_uid.clone();
        let _span = info_span!("slave", uid = %uid, session).entered();
        let Some(c) = self.candidate(&uid) else {
            return;
        };
        let out = match (&mut self.run, attach.run_id.as_str()) {
            (_, "") => Vec::new(),
            (Some(r), id) if r.id == id => r.readopt(now, c),
            (_, id) => vec![(uid.clone(), run::stop_msg(id, "unknown run", None))],
        };
        self.deliver(out);
    }

    pub(super) fn on_slave_message(&mut self, session: u64, msg: Up, now: Instant) {
        let Some(uid) = self.registry.by_session(session).map(str::to_string) else {
            return; // a stale session
        };
        if let Some(s) = self.registry.slaves.get_mut(&uid) {
            s.last_seen = now;
        }
        match msg {
            Up::Attach(_) => {}
            Up::Heartbeat(hb) => self.on_heartbeat(&uid, hb, now),
            Up::Stats(mut interval) => {
                // Its heartbeat is applied first and never stored with it.
                if let Some(hb) = interval.heartbeat.take() {
                    self.on_heartbeat(&uid, hb, now);
                }
                self.on_stats(&uid, interval, now)
            }
            Up::TraceChunk(chunk) => self.traces.answer(&uid, chunk),
            Up::Event(ev) => {
                let kind =
                    proto::EventKind::try_from(ev.kind).unwrap_or(proto::EventKind::Unspecified);
                let id = self.slave_name(&uid);
                match kind {
                    proto::EventKind::Stopped => {
                        if let Some(r) = self.run.as_mut().filter(|r| r.id == ev.run_id) {
                            r.on_stopped(&uid, now);
                        }
                    }
                    proto::EventKind::Error => {
                        warn!(slave = %id, run_id = %ev.run_id, message = %ev.message, "slave error")
                    }
                    proto::EventKind::Warning => {
                        warn!(slave = %id, run_id = %ev.run_id, message = %ev.message, "slave warning");
                        if let Some(r) = self.run.as_mut().filter(|r| r.id == ev.run_id) {
                            r.slave_warning(&id, &ev.message);
                        }
                    }
                    _ => {
                        debug!(slave = %id, run_id = %ev.run_id, kind = ?kind, message = %ev.message, "slave event")
                    }
                }
            }
        }
    }

    /// A slave's state, on its own or carried by an interval. The master answers (proof of
    /// life for the slave's dead-man switch) only when it sent the slave nothing for
    /// `heartbeat_reply_after`: a slave whose intervals are acknowledged needs no other
    /// answer (`lobster_fleet::liveness`). The answer is what waits to be acknowledged to
    /// it (`acks.rs`), or an empty `Ack`.
    fn on_heartbeat(&mut self, uid: &str, hb: proto::Heartbeat, now: Instant) {
        let reply_after = lobster_fleet::liveness::heartbeat_reply_after(
            self.settings.lease,
            self.settings.heartbeat,
        );
        let Some(s) = self.registry.slaves.get_mut(uid) else {
            return;
        };
        if !hb.run_id.is_empty() {
            s.last_busy = now;
        }
        let answered = s.session.as_ref().and_then(|x| x.last_sent);
        let due = answered.is_none_or(|t| now.saturating_duration_since(t) >= reply_after);
        // Its run, to look for what waits for it, only when it is answered (a copy).
        let run_id = Some(&hb.run_id).filter(|r| due && !r.is_empty()).cloned();
        s.heartbeat = hb;
        if due {
            // What waits to be acknowledged to it is the answer, if anything does.
            let waiting = run_id.and_then(|r| self.acks.take(uid, &r).map(|i| (r, i)));
            match waiting {
                Some((run_id, indexes)) => self.registry.send_ack(uid, ack(run_id, indexes)),
                None => self.registry.send(uid, ack(String::new(), Vec::new())),
            };
        }
    }

    /// Merges a slave's interval of the active run. One of a second still open, or of a
    /// recent closed second (late: its slave was slow, or the master is behind), is merged
    /// into its second and held (`held.rs`), to be acknowledged once that second is stored
    /// merged; so is a resend of one merged already, without being checked or merged again.
    /// Any other (of an older second, of another run) is stored as its own row and
    /// acknowledged after the commit of its batch.
    ///
    /// So a master that falls behind, whose intervals arrive after their seconds closed and
    /// whose slaves resend what it has not acknowledged, writes a row per second held, not
    /// one per interval. Late intervals were rows of their own: a 10,000-slave run that fell
    /// behind wrote 33.6 MB/s into its store (about a 6 KB row per interval) and collapsed.
    pub(super) fn on_stats(&mut self, uid: &str, interval: proto::StatsInterval, now: Instant) {
        let (run_id, index) = (interval.run_id.clone(), interval.index);
        if let Some(r) = self.run.as_mut().filter(|r| r.id == run_id) {
            // An interval of a second still open (nearly all of them): checked and merged in
            // one pass over its histograms, straight from their encoding
            // (`lobster_fleet::stats`'s `fused.rs`: the check and the merge were most of the
            // master's CPU at thousands of slaves).
            if !r.is_done() && r.agg.is_open(index) {
                match r.on_open_stats(uid, &interval, &mut self.check_room) {
                    Ok(Some(requests)) => {
                        self.metrics.intervals.inc();
                        self.metrics.requests.inc_by(requests);
                    }
                    // Merged already (a resend): acknowledged with its second.
                    Ok(None) => {}
                    Err(e) => return self.refuse_interval(uid, &e),
                }
                return self.held.hold(&run_id, uid, index, now);
            }
            // Late, or a resend, of a recent second: merged into its kept merge (once).
            if r.agg.is_recent(index) {
                if !r.agg.has(uid, index) {
                    let stats = match CheckedInterval::check_in(&interval, &mut self.check_room) {
                        Ok(s) => s,
                        Err(e) => return self.refuse_interval(uid, &e),
                    };
                    if r.on_stats(uid, index, interval.last, &stats) {
                        self.metrics.intervals.inc();
                        self.metrics.requests.inc_by(stats.requests());
                    }
                    stats.give_back(&mut self.check_room);
                }
                return self.held.hold(&run_id, uid, index, now);
            }
        }
        // Any other (of an older second, of another run): checked in place, then stored.
        let stats = match CheckedInterval::check_in(&interval, &mut self.check_room) {
            Ok(s) => s,
            Err(e) => return self.refuse_interval(uid, &e),
        };
        match self.run.as_mut().filter(|r| r.id == run_id) {
            Some(r) => {
                // Encoded into one buffer kept across intervals (thousands a second).
                self.encoded.clear();
                interval
                    .encode(&mut self.encoded)
                    .expect("a Vec grows to any message");
                let stored = self.store.batch().and_then(|()| {
                    self.store
                        .insert_interval(&run_id, uid, index, &self.encoded)
                });
                if let Err(e) = stored {
                    // Not acknowledged: the slave keeps it and sends it again.
                    warn!(run_id = %run_id, error = %format!("{e:#}"), "cannot store interval");
                    return;
                }
                if r.on_stats(uid, index, interval.last, &stats) {
                    self.metrics.intervals.inc();
                    self.metrics.requests.inc_by(stats.requests());
                }
                stats.give_back(&mut self.check_room);
                // Acknowledged once the batch it was stored in is committed (next tick).
                self.ack_after_commit(uid.to_string(), run_id, index);
                return;
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

    /// Cuts off a slave that sent a malformed interval (its stream ends with the reason).
    fn refuse_interval(&mut self, uid: &str, e: &lobster_fleet::stats::StatsError) {
        warn!(uid, error = %e, "malformed statistics interval: cutting the slave off");
        self.metrics.intervals_rejected.inc();
        if let Some(s) = self.registry.slaves.get_mut(uid)
            && let Some(sess) = s.session.take()
        {
            let _ = sess.tx.try_send(Err(Status::invalid_argument(format!(
                "malformed interval: {e}"
            ))));
        }
    }

    pub(super) fn drain(&mut self, req: proto::DrainRequest) -> Result<DrainReply, Status> {
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
                s.drain_reason = if req.undo {
                    String::new()
                } else {
                    req.reason.chars().take(200).collect()
                };
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
}

/// What a run needs to know of a registered slave.
pub(super) fn candidate_of(s: &Slave) -> Candidate {
    Candidate {
        uid: s.uid.clone(),
        slave_id: s.id.clone(),
        instance_id: s.join.instance_id.clone(),
        slave_index: s.join.slave_index,
        millicores: s.join.millicores,
    }
}

/// Admits joins at a steady rate with a burst (a fleet of thousands coming up at once, or a
/// misbehaving client, cannot monopolise the control loop).
pub(super) struct JoinBucket {
    tokens: f64,
    last: Instant,
}

impl JoinBucket {
    const BURST: f64 = 200.0;
    const PER_SECOND: f64 = 50.0;

    pub(super) fn new() -> Self {
        JoinBucket {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
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

impl Controller {
    /// Commits the store's open batch, then acknowledges the intervals stored in it, and
    /// those that waited, as `acks.rs` spaces them (one `Ack` per slave and run at most).
    /// When the commit fails nothing of the batch is acknowledged: the slaves send those
    /// intervals again, and the merge counts each (slave, index) once.
    pub(super) fn commit(&mut self) {
        let now = Instant::now();
        if let Err(e) = self.store.commit() {
            warn!(error = %format!("{e:#}"), intervals = self.acks.noted(), "cannot commit stored intervals: not acknowledged");
            self.acks.forget_noted();
            // Slaves noted in the batch are not in the store after all.
            self.noted.1.clear();
        }
        let mut due = std::mem::take(&mut self.due);
        let registry = &self.registry;
        self.acks
            .committed(now, |uid| registry.last_ack(uid), &mut due);
        for (uid, run_id, indexes) in due.drain(..) {
            self.registry.send_ack(&uid, ack(run_id, indexes));
        }
        self.due = due;
    }

    /// Notes slave `uid`'s interval `index` of run `run_id`, written in the store's open
    /// batch (as its own row or within its second), to acknowledge once that batch is
    /// committed ([`Controller::commit`]).
    pub(super) fn ack_after_commit(&mut self, uid: String, run_id: String, index: u64) {
        self.acks.note(uid, run_id, index);
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
