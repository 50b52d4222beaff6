//! A run while it goes on: the load the scenario asks for in each closed second (stamped on
//! the series as seconds close), the SLA rules' state so far, and an operator's change of the
//! load (users or rate) mid-run.

use super::*;
use lobster_fleet::scenario::Profile;

/// How far ahead of the master's load clock a change of load takes effect: the slaves' clocks
/// trail the master's by a message's trip, and the profile before that instant stays as it was.
const CHANGE_LEAD_MS: u64 = 500;

impl Run {
    /// The load asked for at wall second `index` of the run: the profile at the load time
    /// that second corresponds to (suspended time excluded); users, or arrivals per second.
    fn load_at(&self, index: u64, now: Instant) -> f64 {
        if self.phase == Phase::Suspended {
            return 0.0;
        }
        let wall_ms = index * 1000 + 500;
        let behind = self.elapsed(now).as_millis() as u64;
        let load_now = self.load_elapsed(now).as_millis() as u64;
        // The suspended time so far is `behind - load_now`; seconds closed since were not.
        let t = wall_ms.saturating_sub(behind.saturating_sub(load_now));
        self.scenario
            .load
            .load_at(t.min(self.scenario.duration_ms()))
    }

    /// Stamps the load asked for on the seconds closed since the last call.
    pub(super) fn stamp_load(&mut self, now: Instant) {
        while self.load_stamped < self.agg.series.len() {
            let i = self.load_stamped;
            let index = self.agg.series[i].index;
            let load = self.load_at(index, now);
            self.agg.series[i].load.get_or_insert(load);
            self.load_stamped += 1;
        }
    }

    /// After a tick: stamps the seconds it closed and, when it closed any, recomputes each
    /// endpoint's (and target's) figures so far (once per closed second, not per poll of the
    /// API).
    pub(super) fn seconds_closed(&mut self, now: Instant) {
        if self.load_stamped == self.agg.series.len() {
            return;
        }
        self.stamp_load(now);
        let names = crate::report::Names::of(&self.scenario);
        let seconds = self.load_elapsed(now).as_secs_f64();
        self.live_endpoints = figures(&self.agg.total, &names, seconds).1;
        self.live_targets = crate::report::target_figures(&self.agg.total, &names, seconds);
    }

    /// Every SLA rule's state so far (`not_judged` until a whole window closed).
    pub fn sla_so_far(&self) -> Vec<crate::sla::RuleResult> {
        self.sla.results()
    }

    /// Changes the load from a little ahead of now (`CHANGE_LEAD_MS`) to `target` (users, or
    /// thousandths of a request per second) over `ramp`, for the rest of the run: every active
    /// slave gets the new profile in a `Rescale`. Returns the messages and the load time (ms)
    /// the change starts at.
    pub fn change_load(
        &mut self,
        now: Instant,
        target: u64,
        ramp: Duration,
    ) -> Result<(Outbox, u64), String> {
        if !matches!(self.phase, Phase::Running | Phase::Suspended) {
            return Err(format!("run is {}, not running", self.phase.name()));
        }
        let load_ms = self.load_elapsed(now).as_millis() as u64;
        let at = load_ms + CHANGE_LEAD_MS;
        let ramp_ms = u64::try_from(ramp.as_millis()).unwrap_or(u64::MAX);
        let profile = self.scenario.load.changed_at(at, target, ramp_ms);
        self.set_profile(profile);
        self.load_changed = true;
        self.dirty = true;
        let json = serde_json::to_string(&self.scenario.load).expect("a profile serializes");
        let out = self
            .active()
            .filter_map(|(uid, p)| {
                let share = p.share.clone()?;
                let msg = Down::Rescale(proto::Rescale {
                    run_id: self.id.clone(),
                    share: Some(share),
                    load_elapsed_ms: load_ms,
                    profile_json: json.clone(),
                });
                Some((uid.clone(), MasterMessage { kind: Some(msg) }))
            })
            .collect();
        Ok((out, at))
    }

    /// Replaces the load profile, for the slaves that join later too.
    pub(super) fn set_profile(&mut self, profile: Profile) {
        Arc::make_mut(&mut self.scenario).load = profile;
        self.wire_json = wire_json(&self.scenario);
    }
}
