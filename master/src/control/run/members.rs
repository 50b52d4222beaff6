//! Who takes part in a run: slaves added, re-adopted after a reconnect, detached or lost, and
//! the shares re-sliced over the active ones each time.

use super::*;

/// How far ahead of the master's load clock a new slicing of a running run takes effect: the
/// slaves' messages must arrive before it (a slave that learns of it later counts what it sent
/// twice or passed, see the slave's `engine::cursor`).
pub(crate) const SWITCH_LEAD_MS: u64 = 500;

impl Run {
    /// A slave became available during the run: give it a share.
    pub fn add_slave(&mut self, now: Instant, c: Candidate) -> Outbox {
        self.add_slaves(now, [c])
    }

    /// Slaves that became available during the run (a fleet grown mid-run): one new slicing
    /// gives each its share and the others their smaller ones, one message each (one slicing
    /// per slave sent every participant a `Rescale` per newcomer).
    pub fn add_slaves(
        &mut self,
        now: Instant,
        candidates: impl IntoIterator<Item = Candidate>,
    ) -> Outbox {
        if !matches!(self.phase, Phase::Running | Phase::Suspended) {
            return Vec::new();
        }
        let mut added = false;
        for c in candidates {
            if self.participants.get(&c.uid).is_some_and(|p| p.active) {
                continue;
            }
            info!(run_id = %self.id, slave = %c.slave_id, "slave joins the run");
            let mut p = participant(&c);
            if let Some(old) = self.participants.get(&c.uid) {
                p.got_last = old.got_last;
            }
            // A fresh number even for a slave coming back: its serials must not meet anyone's.
            p.ordinal = self.next_ordinal();
            self.participants.insert(c.uid.clone(), p);
            self.dirty = true;
            added = true;
        }
        if added { self.reslice(now) } else { Vec::new() }
    }

    /// A participant came back with this run's id (reconnect, or after a master restart).
    pub fn readopt(&mut self, now: Instant, c: Candidate) -> Outbox {
        match self.phase {
            Phase::Stopping | Phase::Done(_) => {
                let at_load_ms = self.stop.as_ref().map(|s| s.at_load_ms);
                return vec![(c.uid, stop_msg(&self.id, "the run is over", at_load_ms))];
            }
            Phase::Init => return Vec::new(),
            Phase::Running | Phase::Suspended => {}
        }
        match self.participants.get_mut(&c.uid) {
            Some(p) if p.active => {
                p.detached_since = None;
                // Send the share again so the slave aligns with this master's clock.
                p.share = None;
                self.reslice(now)
            }
            _ => self.add_slave(now, c),
        }
    }

    /// A participant is gone: its share goes to the others.
    pub fn lose_slave(&mut self, now: Instant, uid: &str, reason: &str) -> Outbox {
        self.lose_slaves(now, [uid], reason)
    }

    /// Participants gone at once (sessions found closed together, leases run out in the same
    /// tick): their shares go to the others in one new slicing. One slicing per loss sent
    /// every remaining slave a `Rescale` per loss: at 10,000 slaves a burst of a hundred
    /// losses overflowed every session's queue, which cut more slaves off, and the fleet
    /// fell apart.
    pub fn lose_slaves<'a>(
        &mut self,
        now: Instant,
        uids: impl IntoIterator<Item = &'a str>,
        reason: &str,
    ) -> Outbox {
        if self.is_done() {
            return Vec::new();
        }
        let at_s = self.elapsed(now).as_secs_f64();
        let mut out = Vec::new();
        let mut reslice = false;
        // Counted once, not per loss: a burst of a thousand losses at 10,000 slaves.
        let mut active = self.active().count();
        for uid in uids {
            let Some(p) = self.participants.get_mut(uid).filter(|p| p.active) else {
                continue;
            };
            p.active = false;
            p.share = None;
            active -= 1;
            self.dirty = true;
            warn!(run_id = %self.id, slave = %p.slave_id, reason, "slave lost");
            let lost = LostSlave {
                slave_id: p.slave_id.clone(),
                instance_id: p.instance_id.clone(),
                slave_index: p.slave_index,
                at_s,
                reason: reason.to_string(),
                redistributed_after_ms: None,
            };
            let finished = p.got_last;
            if matches!(self.phase, Phase::Running | Phase::Suspended) && !finished {
                if active == 0 {
                    self.lost.push(lost);
                    out.extend(self.request_stop(now, "all slaves lost", Some(Status::Aborted)));
                    reslice = false;
                    continue;
                }
                reslice = true;
                // Set when the control loop has delivered the rescale.
                self.pending_redistribution.push((self.lost.len(), now));
            }
            self.lost.push(lost);
        }
        if reslice {
            out.extend(self.reslice(now));
        }
        out
    }

    /// Recomputes every active participant's share; sends `Assign` to new ones, `Rescale` to
    /// those whose share changed. A changed stripe applies from [`SWITCH_LEAD_MS`] ahead of
    /// the master's load clock, so that every slave has it before its time and all switch at
    /// the same load instant (the start's shares apply from load time 0).
    pub(super) fn reslice(&mut self, now: Instant) -> Outbox {
        let slots: Vec<Slot> = self
            .active()
            .map(|(uid, p)| Slot {
                key: uid.clone(),
                millicores: u64::from(p.millicores),
            })
            .collect();
        let shares = slicer::shares(&self.scenario, &slots);
        let (run_ms, load_ms) = (
            self.elapsed(now).as_millis() as u64,
            self.load_elapsed(now).as_millis() as u64,
        );
        let suspended = self.phase == Phase::Suspended;
        let from_ms = if self.participants.values().all(|p| p.share.is_none()) && run_ms == 0 {
            0
        } else {
            load_ms + SWITCH_LEAD_MS
        };
        let mut out = Vec::new();
        for (slot, mut share) in slots.into_iter().zip(shares) {
            let p = self
                .participants
                .get_mut(&slot.key)
                .expect("active participant");
            let unchanged = p.share.as_ref().is_some_and(|old| {
                proto::Share {
                    from_load_ms: None,
                    ..old.clone()
                } == share
            });
            if unchanged {
                continue;
            }
            share.from_load_ms = Some(from_ms);
            let msg = match &p.share {
                None => Down::Assign(proto::Assign {
                    run_id: self.id.clone(),
                    scenario_json: self.wire_json.clone(),
                    share: Some(share.clone()),
                    run_elapsed_ms: run_ms,
                    load_elapsed_ms: load_ms,
                    suspended,
                    ordinal: p.ordinal,
                }),
                Some(_) => Down::Rescale(proto::Rescale {
                    run_id: self.id.clone(),
                    share: Some(share.clone()),
                    load_elapsed_ms: load_ms,
                    profile_json: String::new(),
                }),
            };
            p.share = Some(share);
            out.push((slot.key, MasterMessage { kind: Some(msg) }));
        }
        out
    }
}

pub(super) fn participant(c: &Candidate) -> Participant {
    Participant {
        slave_id: c.slave_id.clone(),
        instance_id: c.instance_id.clone(),
        slave_index: c.slave_index,
        millicores: c.millicores.max(1),
        active: true,
        got_last: false,
        share: None,
        detached_since: None,
        stop_acked_ms: None,
        ordinal: 0,
    }
}
