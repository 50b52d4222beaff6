//! What a run shows while it goes on: the load the scenario asks for in each closed second
//! (stamped on the series as seconds close) and the SLA rules' state so far.

use super::*;
use lobster_fleet::scenario::Model;

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
        let profile = &self.scenario.load;
        let v = profile.value_at(t.min(self.scenario.duration_ms));
        match profile.model {
            Model::Open => v / 1000.0,
            Model::Closed => v,
        }
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

    /// Every SLA rule's state so far (`not_judged` until a whole window closed).
    pub fn sla_so_far(&self) -> Vec<crate::sla::RuleResult> {
        self.sla.results()
    }
}
