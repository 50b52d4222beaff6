//! The load engine: runs this slave's share of one run and reports it interval by interval.
//!
//! A [`Run`] owns the workers of one share. The master can change the share while it runs
//! (rescale, suspend, resume) through the [`LoadControl`] watch channel; stopping is a
//! [`CancellationToken`]. Workers never start a request after the stop, and requests in flight
//! complete (bounded by the request timeout) before the last interval is sent, so the sum of all
//! intervals is exactly what this slave sent.
//!
//! Time: `run_origin` is the run's time zero (interval `k` covers `[k, k+1)` seconds after it);
//! `load_origin` is the load profile's time zero, which moves forward while suspended.

mod closed;
mod cursor;
mod deadline;
mod exchange;
pub mod http;
mod journey;
mod mix;
mod open;
pub(crate) mod recorder;
mod site;
mod striping;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lobster_fleet::proto::EventKind;
use lobster_fleet::scenario::{Model, Profile, Scenario};
use lobster_fleet::stats::IntervalStats;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use exchange::Shared;
pub use recorder::Recorder;
pub use striping::Striping;

/// The share this slave runs now; replaced as a whole on rescale, suspend and resume.
#[derive(Clone, Debug)]
pub struct LoadControl {
    /// The fleet-wide load profile (users or millirate over load time), the scenario's own.
    pub profile: Profile,
    /// Which of the fleet's user or arrival indexes this slave runs, over load time: each
    /// stripe from the load time the master gave it for (a slave joining mid-run owes nothing
    /// before its first).
    pub striping: Striping,
    /// Load time zero.
    pub load_origin: Instant,
    /// No new requests while true; the load clock is frozen.
    pub suspended: bool,
    /// This slave's data items.
    pub items: Arc<Vec<String>>,
    /// Open model: most connections this slave may open.
    pub max_connections: u32,
    /// Load time (ms) at which the master stopped the run, once it did (see [`stop_at`]).
    pub stop_at_ms: Option<u64>,
}

impl LoadControl {
    /// Load time now, in milliseconds.
    pub fn load_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.load_origin).as_millis() as u64
    }

    /// Load time (ms) at which this share ends: the scenario's `duration_ms`, or the master's
    /// stop when that came first.
    pub fn end_ms(&self, duration_ms: u64) -> u64 {
        self.stop_at_ms.map_or(duration_ms, |s| s.min(duration_ms))
    }
}

/// Longest a share goes on after the master's `Stop` to reach the load time it stopped at.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// How long after the stop's load time the backstop cancels a share that did not end itself.
const BACKSTOP_SLACK: Duration = Duration::from_millis(100);

/// Ends a share at the master's `Stop`.
///
/// The master stops a run at a load time on its own clock (`at_load_ms`: the duration when it
/// ran out, else the moment the stop was asked for). This slave's load clock trails the
/// master's by the time the last `Assign`, `Rescale` or `Resume` took to arrive, so stopping at
/// once would leave the arrivals (and users' requests) due in that gap sent by nobody and
/// counted nowhere. Instead the share runs on until its own clock reaches `at_load_ms` and ends
/// there by itself, so every slave's share ends at the same load instant; `stop` is cancelled
/// a little later as a backstop. When that is more than [`MAX_CATCH_UP`] away, or the share is
/// suspended, it stops at once, and the open model counts the owned arrivals due before
/// `at_load_ms` that it did not send as dropped. Without `at_load_ms` (a master that does not
/// give one, or a run it does not know) the share stops at once.
pub fn stop_at(
    control: &watch::Sender<LoadControl>,
    stop: &CancellationToken,
    at_load_ms: Option<u64>,
) {
    let mut wait = Duration::ZERO;
    control.send_modify(|ctl| {
        let Some(at) = at_load_ms else { return };
        ctl.stop_at_ms = Some(ctl.stop_at_ms.map_or(at, |s| s.min(at)));
        if !ctl.suspended {
            wait = Duration::from_millis(at.saturating_sub(ctl.load_ms(Instant::now())));
        }
    });
    if wait.is_zero() || wait > MAX_CATCH_UP {
        stop.cancel();
        return;
    }
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(wait + BACKSTOP_SLACK) => stop.cancel(),
            _ = stop.cancelled() => {}
        }
    });
}

/// What a run reports to the session.
#[derive(Debug)]
pub enum Output {
    /// Statistics of interval `index` (whole seconds since the run's origin).
    Interval {
        run_id: Arc<str>,
        index: u64,
        stats: IntervalStats,
        last: bool,
    },
    /// Something the master should know.
    Event {
        run_id: Arc<str>,
        kind: EventKind,
        message: String,
    },
}

/// Sends a share's events to the session without waiting (a full channel loses the event,
/// never the load's timing).
#[derive(Clone)]
pub(crate) struct Events {
    run_id: Arc<str>,
    out: mpsc::Sender<Output>,
}

impl Events {
    /// Something the master should show the user (it lands in the report's warnings).
    pub(crate) fn warn(&self, message: String) {
        let _ = self.out.try_send(Output::Event {
            run_id: self.run_id.clone(),
            kind: EventKind::Warning,
            message,
        });
    }
}

/// Live counters for heartbeats.
#[derive(Debug, Default)]
pub struct Gauges {
    pub active_users: AtomicU32,
    pub in_flight: AtomicU32,
    pub connections: AtomicU32,
}

/// One share of one run.
pub struct Run {
    pub run_id: Arc<str>,
    pub scenario: Arc<Scenario>,
    /// The run's time zero on this host's monotonic clock.
    pub run_origin: Instant,
    pub control: watch::Receiver<LoadControl>,
    pub out: mpsc::Sender<Output>,
    pub gauges: Arc<Gauges>,
    /// This slave's number in the run (from the master; the base of `{{serial}}`).
    pub ordinal: u32,
    /// Where this slave keeps traces (`trace:`); `None`: none kept (benchmarks).
    pub trace_dir: Option<std::path::PathBuf>,
}

/// Hands out data items round-robin.
pub(crate) struct Items {
    next: AtomicUsize,
    /// `data.strategy: random`: each use draws an item at random instead of in turn.
    random: bool,
}

impl Items {
    fn new(scenario: &Scenario) -> Self {
        Items {
            next: AtomicUsize::new(0),
            random: scenario.data_strategy == lobster_fleet::scenario::DataStrategy::Random,
        }
    }

    fn next<'a>(&self, items: &'a [String], rng: &mut rand::rngs::SmallRng) -> &'a str {
        if items.is_empty() {
            return "";
        }
        let i = if self.random {
            rand::Rng::random_range(rng, 0..items.len())
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % items.len()
        };
        &items[i]
    }
}

impl Run {
    /// The run's trace on this slave, when the scenario asks for one; a trace that cannot be
    /// started is said (a warning event) and the run goes on without it.
    async fn tracer(
        &self,
        endpoints: &[String],
        targets: &[String],
    ) -> Option<crate::trace::Tracer> {
        let settings = self.scenario.trace.clone()?;
        let dir = self.trace_dir.as_ref()?;
        match crate::trace::Tracer::start(
            dir,
            &self.run_id,
            settings,
            endpoints.to_vec(),
            targets.to_vec(),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                let message = format!(
                    "no trace kept on this slave: {} cannot be written ({e})",
                    dir.display()
                );
                warn!(run_id = %self.run_id, %message);
                let _ = self
                    .out
                    .send(Output::Event {
                        run_id: self.run_id.clone(),
                        kind: EventKind::Warning,
                        message,
                    })
                    .await;
                None
            }
        }
    }

    /// Runs the share until the scenario's duration or `stop`, then sends the last interval.
    pub async fn run(self, stop: CancellationToken) {
        let run_id = self.run_id.clone();
        let started = Instant::now();
        let sites = match site::Sites::prepare(&self.scenario).await {
            Ok(p) => p,
            Err(message) => {
                // Nothing can be sent: say why, and end the share with an empty interval.
                warn!(run_id = %run_id, %message, "share not started");
                let _ = self
                    .out
                    .send(Output::Event {
                        run_id: run_id.clone(),
                        kind: EventKind::Error,
                        message,
                    })
                    .await;
                self.send_last(IntervalStats::default(), 0).await;
                return;
            }
        };
        let names = self.scenario.endpoint_names();
        let addrs: Vec<String> = sites.all().iter().map(|s| s.addr.to_string()).collect();
        let urls = if self.scenario.targets.is_empty() {
            Vec::new()
        } else {
            sites.all().iter().map(|s| s.target.to_string()).collect()
        };
        let tracer = self.tracer(&names, &urls).await;
        let shared = Arc::new(Shared {
            tracer,
            scenario: self.scenario.clone(),
            sites,
            serial: journey::Serial::new(self.ordinal),
            timeout: self.scenario.timeout,
            recorder: Recorder::with_sites(
                names,
                urls,
                journey::Journeys::check_labels(&self.scenario),
                self.scenario.flows.iter().map(|f| f.name.clone()).collect(),
            ),
            gauges: self.gauges.clone(),
        });
        let _ = self
            .out
            .send(Output::Event {
                run_id: run_id.clone(),
                kind: EventKind::Started,
                message: format!("target {}", addrs.join(", ")),
            })
            .await;

        // The collector sends interval k at run_origin + (k+1) s.
        let collector_stop = CancellationToken::new();
        let recorded = shared.clone();
        let collector = tokio::spawn(collect(
            move || recorded.recorder.take(),
            self.run_origin,
            run_id.clone(),
            self.out.clone(),
            collector_stop.clone(),
        ));

        let halt = stop.child_token();
        let driver = match self.scenario.load.model {
            Model::Closed => tokio::spawn(closed::drive(
                shared.clone(),
                self.control.clone(),
                halt.clone(),
            )),
            Model::Open => tokio::spawn(open::drive(
                shared.clone(),
                self.control.clone(),
                Events {
                    run_id: run_id.clone(),
                    out: self.out.clone(),
                },
                halt.clone(),
            )),
        };
        if let Err(e) = driver.await {
            warn!(run_id = %run_id, error = %e, "load driver failed");
        }
        collector_stop.cancel();
        let collected = collector.await;
        // Taken after the collector ended: it may still have sent a second that was due.
        let mut last = shared.recorder.take();
        let index = match collected {
            // The last interval is a second like the others: it carries this injector's
            // resources since the previous interval, or the last second of load has no CPU
            // figure. A window too short to measure (the stop's tail just after a boundary)
            // carries none.
            Ok(Collected {
                next_index,
                mut resources,
            }) => {
                if let Some(r) = resources.sample_over(LAST_SAMPLE_MIN) {
                    last.injectors
                        .insert(IntervalStats::REPORTER.to_string(), r);
                }
                next_index
            }
            Err(_) => self.run_origin.elapsed().as_secs(),
        };
        self.send_last(last, index).await;
        info!(run_id = %run_id, secs = started.elapsed().as_secs_f64(), "share finished");
    }

    async fn send_last(&self, stats: IntervalStats, index: u64) {
        let _ = self
            .out
            .send(Output::Interval {
                run_id: self.run_id.clone(),
                index,
                stats,
                last: true,
            })
            .await;
    }
}

/// The shortest window the last interval's resource sample may cover (20 clock ticks).
const LAST_SAMPLE_MIN: Duration = Duration::from_millis(200);

/// What the collector leaves for the share's last interval.
struct Collected {
    /// The first second it did not send: the one the last interval's data fell in.
    next_index: u64,
    /// Its sampler, whose window starts at that second's start.
    resources: crate::resources::Sampler,
}

/// Sends interval k, the statistics `take` gives then, at `run_origin` + (k+1) s until
/// `stop`. On `stop` it still sends every second whose boundary has passed: a timer due at the
/// same instant as the stop would otherwise lose that second to the next one.
async fn collect(
    mut take: impl FnMut() -> IntervalStats,
    run_origin: Instant,
    run_id: Arc<str>,
    out: mpsc::Sender<Output>,
    stop: CancellationToken,
) -> Collected {
    // Tokio's clock (the same as std's, but one a test can pause and advance).
    let origin = tokio::time::Instant::from_std(run_origin);
    let mut index = origin.elapsed().as_secs();
    let mut resources = crate::resources::Sampler::for_this_runtime();
    loop {
        let boundary = origin + Duration::from_secs(index + 1);
        let stopped = tokio::select! {
            _ = tokio::time::sleep_until(boundary) => false,
            _ = stop.cancelled() => true,
        };
        if stopped && tokio::time::Instant::now() < boundary {
            return Collected {
                next_index: index,
                resources,
            };
        }
        let mut stats = take();
        stats
            .injectors
            .insert(IntervalStats::REPORTER.to_string(), resources.sample());
        let _ = out
            .send(Output::Interval {
                run_id: run_id.clone(),
                index,
                stats,
                last: false,
            })
            .await;
        index += 1;
    }
}

/// Waits until the control changes or `halt`; returns false on halt.
pub(crate) async fn changed_or_halt(
    control: &mut watch::Receiver<LoadControl>,
    halt: &CancellationToken,
) -> bool {
    tokio::select! {
        r = control.changed() => r.is_ok(),
        _ = halt.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stop and second 0's boundary are due at the same instant (a share whose load ends
    /// on a boundary). The collector still sends second 0 as a whole second, with its
    /// resources, and leaves second 1 to the last interval. Before, `select!` took the stop
    /// half the time and second 0's requests were filed under second 1 (CI: the live table's
    /// last second of load read 0 slaves and no CPU).
    #[tokio::test(start_paused = true)]
    async fn a_stop_due_with_a_boundary_still_sends_that_second() {
        for _ in 0..16 {
            // The paused clock's now, which `advance` moves (std's does not move with it).
            let origin = tokio::time::Instant::now().into_std();
            let (tx, mut rx) = mpsc::channel(4);
            let stop = CancellationToken::new();
            let task = tokio::spawn(collect(
                IntervalStats::default,
                origin,
                "r".into(),
                tx,
                stop.clone(),
            ));
            tokio::task::yield_now().await;
            tokio::time::advance(Duration::from_millis(1_001)).await;
            stop.cancel();
            let left = task.await.unwrap();
            assert_eq!(left.next_index, 1, "second 0 was sent, second 1 is left");
            match rx.try_recv() {
                Ok(Output::Interval { index, stats, .. }) => {
                    assert_eq!(index, 0);
                    assert!(stats.injectors.contains_key(IntervalStats::REPORTER));
                }
                _ => panic!("second 0 not sent"),
            }
        }
    }
}
