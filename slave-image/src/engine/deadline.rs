//! A worker's request timeout, armed once and moved forward lazily.
//!
//! `tokio::time::timeout` around every exchange registers a timer entry in the runtime's
//! timer wheel when the exchange first waits and removes it when the exchange ends: two
//! trips through the timer driver per request, on the hot path of a load generator whose
//! requests almost never time out. A [`Deadline`] keeps one timer per worker instead. Each
//! exchange only notes its own due time (start + timeout); the timer, set for an earlier
//! exchange's due time, is left alone. When it fires, it is either this exchange's due time
//! (the request timed out) or an older one, and then it is set again to this exchange's due
//! time. So the timer is touched about once per timeout period rather than twice per
//! request, and a request still times out at exactly its own start + timeout (to the
//! timer's millisecond), as with `tokio::time::timeout`. Netty's `IdleStateHandler` keeps its
//! idle timeouts the same way: a read only notes the time, and the timer, when it fires,
//! reschedules itself from the last read instead of being cancelled on every read.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;

use tokio::time::{Instant, Sleep};

/// The exchange did not finish within its timeout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// One worker's reusable request timer (see the module doc).
#[derive(Default)]
pub(crate) struct Deadline {
    /// The timer, made on the first exchange; its deadline is the due time of this or an
    /// earlier exchange, never later than the current one's.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Runs `fut` to completion or until `due` (the exchange's start + its timeout; the
    /// caller has read the clock already), whichever is first.
    pub(crate) async fn run<F: Future>(
        &mut self,
        due: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() > due {
            // A shorter timeout than the one the timer is set for: it must not fire late.
            timer.as_mut().reset(due);
        }
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            while timer.as_mut().poll(cx).is_ready() {
                if timer.deadline() >= due {
                    return Poll::Ready(Err(Elapsed));
                }
                // An earlier exchange's due time: move on to this one's.
                timer.as_mut().reset(due);
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn after(d: Duration) -> Duration {
        tokio::time::sleep(d).await;
        d
    }

    /// Each exchange times out at exactly its own start + timeout, however many exchanges
    /// the timer was armed for before, and one that finishes in time is not cut short.
    #[tokio::test(start_paused = true)]
    async fn each_exchange_times_out_at_its_own_start_plus_the_timeout() {
        let mut d = Deadline::default();
        let timeout = Duration::from_secs(10);
        // Quick exchanges spread over 25 s: the first armed the timer for 10 s.
        for _ in 0..250 {
            let got = d
                .run(Instant::now() + timeout, after(Duration::from_millis(100)))
                .await;
            assert_eq!(got, Ok(Duration::from_millis(100)));
        }
        // One that takes 9.999 s still completes (the timer, armed for an older exchange,
        // fired on the way and was moved on).
        assert_eq!(
            d.run(
                Instant::now() + timeout,
                after(Duration::from_millis(9_999))
            )
            .await,
            Ok(Duration::from_millis(9_999))
        );
        // One that never completes ends at exactly 10 s from its start.
        let start = Instant::now();
        let got = d
            .run(Instant::now() + timeout, std::future::pending::<()>())
            .await;
        assert_eq!(got, Err(Elapsed));
        assert_eq!(start.elapsed(), timeout);
        // After an idle spell longer than the timeout (the timer fired with no one waiting).
        tokio::time::sleep(Duration::from_secs(30)).await;
        let start = Instant::now();
        assert_eq!(
            d.run(Instant::now() + timeout, std::future::pending::<()>())
                .await,
            Err(Elapsed)
        );
        assert_eq!(start.elapsed(), timeout);
    }

    /// A shorter timeout than the timer is armed for fires at its own time, not the old one.
    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_is_not_held_back_by_a_longer_one() {
        let mut d = Deadline::default();
        let _ = d
            .run(
                Instant::now() + Duration::from_secs(60),
                after(Duration::from_millis(1)),
            )
            .await;
        let start = Instant::now();
        let got = d
            .run(
                Instant::now() + Duration::from_secs(2),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(got, Err(Elapsed));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
