//! A session's pulse: when its reader last waited on the slave and heard it, shared by the
//! session's reader task (`grpc.rs`) with the control loop's lease check.
//!
//! A slave is silent when the master was listening and nothing came for a lease. It is not
//! silent while its reader holds one of its messages that the control loop has not taken
//! (the command queue is full): that wait is the master's. Judged by the control loop's own
//! handling times alone, a master that fell seconds behind at 10,000 slaves declared most of
//! a live fleet silent, and the reslicing that followed put it further behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared (`Arc`) between one session's reader and the registry.
#[derive(Debug)]
pub struct Pulse {
    /// The origin of `listening_since_us`.
    origin: Instant,
    /// Since when the reader has been waiting on the slave, µs after `origin`: the last
    /// message it read, or the moment the control loop took it, whichever is later.
    listening_since_us: AtomicU64,
    /// The reader holds a message the control loop has not taken yet.
    handing_over: AtomicBool,
}

impl Pulse {
    /// A pulse whose reader starts listening at `now`.
    pub fn new(now: Instant) -> Self {
        Pulse {
            origin: now,
            listening_since_us: AtomicU64::new(0),
            handing_over: AtomicBool::new(false),
        }
    }

    /// The reader read a message at `now` and is handing it to the control loop.
    pub fn heard(&self, now: Instant) {
        self.listen_from(now);
        self.handing_over.store(true, Ordering::Release);
    }

    /// The control loop took the message at `now`; the reader waits on the slave again.
    pub fn handed_over(&self, now: Instant) {
        self.listen_from(now);
        self.handing_over.store(false, Ordering::Release);
    }

    fn listen_from(&self, now: Instant) {
        let us = now.saturating_duration_since(self.origin).as_micros() as u64;
        self.listening_since_us.fetch_max(us, Ordering::AcqRel);
    }

    /// How long the master has listened to the slave without hearing it, as of `now`; zero
    /// while a message of it waits for the control loop.
    pub fn silence(&self, now: Instant) -> Duration {
        if self.handing_over.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let since =
            self.origin + Duration::from_micros(self.listening_since_us.load(Ordering::Acquire));
        now.saturating_duration_since(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_while_the_master_listens() {
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let p = Pulse::new(t0);
        assert_eq!(p.silence(s(3)), Duration::from_secs(3));
        p.heard(s(4));
        // The control loop is 8 s behind: the slave is not silent meanwhile.
        assert_eq!(p.silence(s(12)), Duration::ZERO);
        p.handed_over(s(12));
        assert_eq!(p.silence(s(14)), Duration::from_secs(2));
        // A time from a racing thread that is earlier does not move it back.
        p.heard(s(13));
        p.handed_over(s(13));
        assert_eq!(p.silence(s(15)), Duration::from_secs(2));
    }
}
