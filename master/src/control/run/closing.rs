//! Closed seconds judged: the saturation watch and the SLA guard, at each tick and while a
//! run is rebuilt from the store.

use std::time::{Duration, Instant};

use tracing::warn;

use super::{Outbox, Run};
use crate::aggregate::{Closed, Point};
use crate::report::Status;

impl Run {
    /// Closes the seconds below `below` while the run is rebuilt from the store (every
    /// stored row of them replayed, in order), judged as a tick judges them. Only seconds a
    /// tick would close now (ended more than `lease` ago) are: a rebuilt run holds a bounded
    /// number of open seconds, not every second it ran (each holds its histograms, 50 of
    /// them with 10 endpoints, until it closes).
    pub fn close_replayed(&mut self, below: u64, now: Instant, lease: Duration) -> Outbox {
        let mut out = Vec::new();
        if self.started.is_none() {
            return out;
        }
        let closable = self.elapsed(now).saturating_sub(lease).as_secs();
        let closed = self.agg.close_below(below.min(closable));
        if !closed.is_empty() {
            self.judge(closed, now, &mut out);
            self.seconds_closed(now);
        }
        out
    }

    /// Feeds closed seconds to the saturation watch and the SLA guard (a violation stops
    /// the run: its messages go to `out`); returns their points.
    pub(super) fn judge(
        &mut self,
        closed: Vec<Closed>,
        now: Instant,
        out: &mut Outbox,
    ) -> Vec<Point> {
        // Only whole seconds of load are judged: the second the stop fell in is partial.
        let judged_below = self
            .stop
            .as_ref()
            .map_or(u64::MAX, |s| s.at_s.floor() as u64);
        let mut points = Vec::with_capacity(closed.len());
        for closed in closed {
            if closed.index >= judged_below {
                points.push(closed.point);
                continue;
            }
            let parts = &self.participants;
            let name = |uid: &str| parts.get(uid).map_or(uid, |p| &p.slave_id).to_string();
            for f in self
                .saturation
                .on_interval(closed.index, &closed.stats, name)
            {
                warn!(run_id = %self.id, slave = %f.slave_id, "{}", f.warning());
            }
            if let Some(abort) = self.sla.on_interval(closed.index, &closed.stats) {
                let reason = format!("SLA violated: {} (was {:.2})", abort.rule, abort.value);
                out.extend(self.request_stop(now, &reason, Some(Status::Aborted)));
            }
            points.push(closed.point);
        }
        points
    }
}
