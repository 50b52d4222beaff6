//! How long each side of a session may stay silent: the rules the master and its slaves
//! share, so that neither mistakes the other's quiet for a failure.
//!
//! A slave heartbeats every `heartbeat` (the master's `--heartbeat`); the master declares a
//! slave lost after `lease` (`--lease`, at least twice `heartbeat`) without a message from
//! it. The other way round, a slave pauses its load (the dead-man switch) once the master has
//! been silent for [`master_silence_limit`]; the master answers a heartbeat with an empty
//! acknowledgement only when it sent that slave nothing for [`heartbeat_reply_after`], so a
//! slave whose intervals are acknowledged (every other second: the master spaces its
//! acknowledgements) gets nothing else, and an idle slave hears from it every other
//! heartbeat.

use std::time::Duration;

/// How long a slave lets its master be silent before its dead-man switch pauses the load:
/// one heartbeat before the master's lease runs out (the load has stopped by the time the
/// master redistributes it), and never under two heartbeats.
pub fn master_silence_limit(lease: Duration, heartbeat: Duration) -> Duration {
    lease.saturating_sub(heartbeat).max(heartbeat * 2)
}

/// The master answers a heartbeat (on its own, or carried by an interval) only when it sent
/// that slave nothing for this long: two heartbeats, or less when the lease is short, so that
/// the longest silence a slave sees (this, plus the heartbeat period until the next one)
/// stays a quarter heartbeat within [`master_silence_limit`]. Two, not one: a slave in a run
/// is acknowledged every other second, and answering each heartbeat in between would send
/// it a message a second again.
pub fn heartbeat_reply_after(lease: Duration, heartbeat: Duration) -> Duration {
    let room = master_silence_limit(lease, heartbeat).saturating_sub(heartbeat * 5 / 4);
    (heartbeat * 2).min(room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_defaults_answer_after_two_seconds_of_silence() {
        let (lease, hb) = (Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(master_silence_limit(lease, hb), Duration::from_secs(4));
        assert_eq!(heartbeat_reply_after(lease, hb), Duration::from_secs(2));
        // A lease a second shorter leaves less room: the answer comes sooner.
        let lease = Duration::from_secs(4);
        assert_eq!(
            heartbeat_reply_after(lease, hb),
            Duration::from_millis(1750)
        );
        // The shortest lease allowed (twice the heartbeat): the reply comes sooner.
        let short = Duration::from_secs(2);
        assert_eq!(master_silence_limit(short, hb), Duration::from_secs(2));
        assert_eq!(heartbeat_reply_after(short, hb), Duration::from_millis(750));
    }

    proptest! {
        /// For every lease and heartbeat the master accepts, the longest silence a slave can
        /// see (reply threshold plus one heartbeat) leaves a quarter heartbeat before its
        /// dead-man switch, and the master never answers more often than needed to get there.
        #[test]
        fn a_slave_hears_from_its_master_before_its_dead_man_switch(
            hb_ms in 100u64..=60_000,
            lease_factor in 2.0f64..20.0,
        ) {
            let hb = Duration::from_millis(hb_ms);
            let lease = hb.mul_f64(lease_factor);
            let after = heartbeat_reply_after(lease, hb);
            let limit = master_silence_limit(lease, hb);
            prop_assert!(after + hb + hb / 4 <= limit, "{after:?} + {hb:?} vs {limit:?}");
            prop_assert!(after >= hb * 3 / 4, "{after:?} answers needlessly often");
            prop_assert!(limit < lease || limit == hb * 2);
        }
    }
}
