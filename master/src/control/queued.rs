//! A message queued for a slave's session, with when it was queued, so that the times it
//! carries are those of the moment it is written to the slave.
//!
//! `Assign`, `Rescale` and `Resume` carry the run's clocks (`run_elapsed_ms`,
//! `load_elapsed_ms`): the slave sets its own origins from them as it receives them, and
//! ends its seconds and paces its load by those origins. They are read off the run when the
//! message is made, but one slicing makes thousands at once, and a session's stream writes
//! its message only when its HTTP/2 connection gets to it: at 10,000 slaves the last
//! `Assign` was written up to 0.8 s after it was made. Each slave's seconds then ended late
//! by its message's wait, for the whole run, and every merged second waited for the latest
//! (merge lag p50 0.88 s with the master at 43 % of its core, 2026-12-04). So the clocks
//! are advanced by the time the message waited in its queue, as it leaves it.

use std::time::{Duration, Instant};

use lobster_fleet::proto::{MasterMessage, master_message::Kind as Down};

/// A message for a slave and when it was queued (its clocks were read then).
#[derive(Debug)]
pub struct Queued {
    pub(crate) msg: MasterMessage,
    /// When it was queued: its run clocks are those of this instant.
    pub(crate) at: Instant,
}

impl Queued {
    /// The message as it is written now: its clocks advanced by its wait in the queue (the
    /// clock is read only for a message that carries the run's clocks; most are `Ack`s).
    pub fn into_message(self) -> MasterMessage {
        match self.msg.kind {
            Some(Down::Assign(_) | Down::Rescale(_) | Down::Resume(_)) => {
                advanced(self.msg, self.at.elapsed())
            }
            _ => self.msg,
        }
    }
}

/// `msg` with its run clocks advanced by `waited` (whole milliseconds, rounded down): the
/// run's wall time always, the load time unless the run is suspended (an `Assign` says so;
/// a suspended slave takes no load time from a `Rescale`, and the `Resume` that ends the
/// suspension carries it again). Other messages are returned as they are.
pub(crate) fn advanced(mut msg: MasterMessage, waited: Duration) -> MasterMessage {
    let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return msg;
    }
    match &mut msg.kind {
        Some(Down::Assign(a)) => {
            a.run_elapsed_ms = a.run_elapsed_ms.saturating_add(ms);
            if !a.suspended {
                a.load_elapsed_ms = a.load_elapsed_ms.saturating_add(ms);
            }
        }
        Some(Down::Rescale(r)) => r.load_elapsed_ms = r.load_elapsed_ms.saturating_add(ms),
        Some(Down::Resume(r)) => r.load_elapsed_ms = r.load_elapsed_ms.saturating_add(ms),
        _ => {}
    }
    msg
}

#[cfg(test)]
mod tests {
    use lobster_fleet::proto;

    use super::*;

    fn assign(suspended: bool) -> MasterMessage {
        MasterMessage {
            kind: Some(Down::Assign(proto::Assign {
                run_id: "r".into(),
                run_elapsed_ms: 5_000,
                load_elapsed_ms: 4_000,
                suspended,
                ..Default::default()
            })),
        }
    }

    fn clocks(m: &MasterMessage) -> (u64, u64) {
        match &m.kind {
            Some(Down::Assign(a)) => (a.run_elapsed_ms, a.load_elapsed_ms),
            Some(Down::Rescale(r)) => (0, r.load_elapsed_ms),
            Some(Down::Resume(r)) => (0, r.load_elapsed_ms),
            other => panic!("no clocks in {other:?}"),
        }
    }

    #[test]
    fn an_assignment_that_waited_carries_both_clocks_advanced_by_its_wait() {
        let m = advanced(assign(false), Duration::from_millis(700));
        assert_eq!(clocks(&m), (5_700, 4_700));
    }

    #[test]
    fn a_suspended_run_advances_its_wall_clock_only() {
        let m = advanced(assign(true), Duration::from_micros(700_900));
        assert_eq!(clocks(&m), (5_700, 4_000));
    }

    #[test]
    fn a_rescale_and_a_resume_advance_the_load_clock() {
        let rescale = MasterMessage {
            kind: Some(Down::Rescale(proto::Rescale {
                load_elapsed_ms: 4_000,
                ..Default::default()
            })),
        };
        let resume = MasterMessage {
            kind: Some(Down::Resume(proto::Resume {
                load_elapsed_ms: 4_000,
                ..Default::default()
            })),
        };
        assert_eq!(
            clocks(&advanced(rescale, Duration::from_millis(250))).1,
            4_250
        );
        assert_eq!(
            clocks(&advanced(resume, Duration::from_millis(250))).1,
            4_250
        );
    }

    #[test]
    fn other_messages_and_no_wait_leave_it_as_it_was() {
        let ack = MasterMessage {
            kind: Some(Down::Ack(proto::Ack {
                run_id: "r".into(),
                indexes: vec![3],
            })),
        };
        assert_eq!(advanced(ack.clone(), Duration::from_secs(3)), ack);
        assert_eq!(
            advanced(assign(false), Duration::from_micros(999)),
            assign(false)
        );
    }

    #[test]
    fn a_message_queued_earlier_leaves_with_the_time_it_waited() {
        let q = Queued {
            msg: assign(false),
            at: Instant::now() - Duration::from_millis(300),
        };
        let (run, load) = clocks(&q.into_message());
        // At least its 300 ms; a loaded machine may add more, not a second.
        assert!((5_300..6_300).contains(&run), "{run}");
        assert_eq!(run - 5_000, load - 4_000);
    }
}
