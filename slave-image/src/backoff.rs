//! Capped exponential backoff with full jitter, for reconnecting to the master.

use std::time::Duration;

use rand::Rng;

/// Delays grow as `base · 2ⁿ` up to `cap`; each is drawn uniformly from `[0, that]` so a fleet
/// that lost its master does not come back in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap)
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(ms / 10..=ms.max(1)))
    }

    /// Lowers the largest delay (never raises it): a slave retries at least twice per lease
    /// once it knows the lease, so it comes back within a lease of its master.
    pub fn cap_at(&mut self, cap: Duration) {
        self.cap = self.cap.min(cap.max(self.base));
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(5));
        }
        assert_eq!(&ceilings[..4], &[100, 200, 400, 800]);
        assert_eq!(*ceilings.last().unwrap(), 5000);
        b.reset();
        assert_eq!(b.ceiling().as_millis(), 100);
    }
}
