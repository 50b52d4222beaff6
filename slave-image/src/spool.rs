//! Statistics intervals kept until the master acknowledges them.
//!
//! Invariant: an interval leaves the spool only on the master's `Ack` (or, past the cap, with a
//! loud warning). Every interval is sent at least once per session and resent while unacked,
//! and the master stores intervals idempotently by (run, slave, index), so a master restart or a
//! broken connection loses no counted request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lobster_fleet::proto::StatsInterval;

/// Most intervals kept (an hour of one run at one per second).
pub const MAX_SPOOLED: usize = 3600;

struct Entry {
    msg: StatsInterval,
    /// When it was last handed to a session; `None` if not since the last (re)connect.
    sent_at: Option<Instant>,
}

/// Unacknowledged intervals by (run id, index).
#[derive(Default)]
pub struct Spool {
    entries: BTreeMap<(Arc<str>, u64), Entry>,
    /// Intervals dropped because the spool was full.
    pub dropped: u64,
}

impl Spool {
    /// Keeps an interval until acknowledged.
    pub fn push(&mut self, run_id: Arc<str>, msg: StatsInterval) {
        self.entries
            .insert((run_id, msg.index), Entry { msg, sent_at: None });
        while self.entries.len() > MAX_SPOOLED {
            let oldest = self.entries.keys().next().cloned().expect("not empty");
            self.entries.remove(&oldest);
            self.dropped += 1;
            tracing::error!(run_id = %oldest.0, index = oldest.1, "spool full: dropped an unacknowledged interval");
        }
    }

    /// Forgets acknowledged intervals.
    pub fn ack(&mut self, run_id: &str, indexes: &[u64]) {
        for &i in indexes {
            self.entries.remove(&(Arc::<str>::from(run_id), i));
        }
    }

    /// Intervals to send now (at most `limit`): those never sent on this session and those
    /// unacked for `resend`, oldest first.
    pub fn due(&mut self, now: Instant, resend: Duration, limit: usize) -> Vec<StatsInterval> {
        self.entries
            .values_mut()
            .filter(|e| e.sent_at.is_none_or(|t| now.duration_since(t) >= resend))
            .take(limit)
            .map(|e| {
                e.sent_at = Some(now);
                e.msg.clone()
            })
            .collect()
    }

    /// After a reconnect, everything is due again.
    pub fn reset_sent(&mut self) {
        for e in self.entries.values_mut() {
            e.sent_at = None;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(i: u64) -> StatsInterval {
        StatsInterval {
            run_id: "r".into(),
            index: i,
            ..Default::default()
        }
    }

    #[test]
    fn kept_until_acked_and_resent() {
        let mut s = Spool::default();
        let r: Arc<str> = "r".into();
        let t0 = Instant::now();
        s.push(r.clone(), interval(0));
        s.push(r.clone(), interval(1));
        assert_eq!(s.due(t0, Duration::from_secs(5), 100).len(), 2);
        assert_eq!(
            s.due(t0, Duration::from_secs(5), 100).len(),
            0,
            "not resent before the timeout"
        );
        s.ack("r", &[0]);
        assert_eq!(s.len(), 1);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(s.due(later, Duration::from_secs(5), 100)[0].index, 1);
        s.reset_sent();
        assert_eq!(s.due(later, Duration::from_secs(5), 100).len(), 1);
        s.ack("r", &[1, 99]);
        assert!(s.is_empty());
    }

    #[test]
    fn bounded() {
        let mut s = Spool::default();
        for i in 0..(MAX_SPOOLED as u64 + 10) {
            s.push("r".into(), interval(i));
        }
        assert_eq!(s.len(), MAX_SPOOLED);
        assert_eq!(s.dropped, 10);
    }
}
