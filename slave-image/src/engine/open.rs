//! The open model: requests arrive on a schedule ([`Arrivals`]) whatever the server does.
//!
//! Arrivals are numbered fleet-wide by the scenario's schedule; this slave sends the ones its
//! stripe owns (see `lobster_fleet::stripe`), so the fleet's arrivals are the schedule's, evenly
//! spread over the slaves. A dispatcher hands each arrival's intended time to a pool of workers
//! (one connection each), growing the pool while no worker is idle, up to the share's
//! `max_connections`; with `targets:` each target has its own pool and queue, arrival k goes to
//! the target the scenario deals k to ([`super::site`]), and the connection budget is split by
//! weight. Latency is measured from the intended time, so time spent waiting for a free worker
//! counts (no coordinated omission).
//!
//! Accounting: every owned arrival due before the end (or the stop) is either sent or counted
//! as dropped, never both and never neither. An arrival is dropped when every worker is busy
//! and the queue (as long as the pool is big) is full, when it is still queued at the end, or
//! when the load clock jumped past it (the master's clock moved on while this slave was
//! paused by its dead-man switch). The queue is bounded, so a backlog costs no memory. When
//! the fleet changes, every slave switches stripes at the load time the master planned (see
//! [`super::striping`]); a switch learnt after its time is accounted by the [`Cursor`].
//!
//! With flows, an arrival starts one flow instance (its steps in order, a fresh cookie jar),
//! as k6's arrival-rate executors start iterations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lobster_fleet::scenario::Arrivals;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::cursor::Cursor;
use super::exchange::{Shared, Worker};
use super::{Events, Items, LoadControl, changed_or_halt};

/// Longest queue of arrivals waiting for a worker, whatever the connection budget.
const MAX_QUEUE: usize = 65_536;

/// The workers of one target: its queue of intended times, its idle count, how many were
/// started.
struct Pool {
    tx: async_channel::Sender<Instant>,
    rx: async_channel::Receiver<Instant>,
    idle: Arc<AtomicUsize>,
    spawned: usize,
}

pub(super) async fn drive(
    shared: Arc<Shared>,
    mut control: watch::Receiver<LoadControl>,
    events: Events,
    halt: CancellationToken,
) {
    let duration_ms = shared.scenario.duration_ms() as f64;
    let budget = control.borrow().max_connections.max(1) as usize;
    let mut pools: Vec<Pool> = (0..shared.sites.all().len())
        .map(|i| {
            let queue = shared.sites.part_of(budget, i).min(MAX_QUEUE);
            let (tx, rx) = async_channel::bounded::<Instant>(queue);
            Pool {
                tx,
                rx,
                idle: Arc::new(AtomicUsize::new(0)),
                spawned: 0,
            }
        })
        .collect();
    let items = Arc::new(Items::new(&shared.scenario));
    let mut workers = JoinSet::new();
    let mut cursor = {
        let ctl = control.borrow();
        Cursor::new(&ctl.striping, &Arrivals::new(&ctl.profile))
    };
    'run: loop {
        let ctl = control.borrow_and_update().clone();
        if ctl.suspended {
            if !changed_or_halt(&mut control, &halt).await {
                break;
            }
            continue;
        }
        let budget = ctl.max_connections.max(1) as usize;
        let end_ms = ctl.end_ms(duration_ms as u64) as f64;
        let arrivals = Arrivals::new(&ctl.profile);
        let skipped = cursor.seek(
            &arrivals,
            &ctl.striping,
            ctl.load_ms(Instant::now()) as f64,
            end_ms,
        );
        shared.recorder.add_dropped(skipped);
        while let Some(k) = cursor.next() {
            let Some(due_ms) = arrivals.due_ms(k).filter(|&d| d < end_ms) else {
                break;
            };
            let intended = ctl.load_origin + Duration::from_secs_f64(due_ms / 1000.0);
            if intended > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(intended.into()) => {}
                    r = control.changed() => if r.is_err() { break 'run } else { continue 'run },
                    _ = halt.cancelled() => break 'run,
                }
            }
            // Arrival k goes to its target; that target's pool grows while none is idle.
            let site = shared.sites.of(k);
            let pool = &mut pools[site];
            if pool.idle.load(Ordering::Relaxed) == 0
                && pool.spawned < shared.sites.part_of(budget, site)
            {
                pool.spawned += 1;
                workers.spawn(worker(
                    Worker::new(site),
                    k,
                    shared.clone(),
                    pool.rx.clone(),
                    control.clone(),
                    pool.idle.clone(),
                    items.clone(),
                    halt.clone(),
                ));
            }
            if pool.tx.try_send(intended).is_err() {
                // Every worker busy and the queue full: the injector cannot keep up.
                shared.recorder.add_dropped(1);
            }
            cursor.handled(k);
        }
        // No more arrivals in this share: wait for the end, a change, or the stop.
        let end = ctl.load_origin + Duration::from_millis(end_ms as u64);
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => break 'run,
            r = control.changed() => if r.is_err() { break 'run } else { continue 'run },
            _ = halt.cancelled() => break 'run,
        }
    }
    halt.cancel();
    // Owned arrivals due before the stop that the dispatcher had not reached yet: before the
    // master's stop when it gave one (this slave's clock may not have reached it), else before
    // now (a suspended load clock had none due).
    let ctl = control.borrow().clone();
    if !ctl.suspended || ctl.stop_at_ms.is_some() {
        let upto_ms = ctl
            .stop_at_ms
            .map_or_else(|| ctl.load_ms(Instant::now()) as f64, |s| s as f64)
            .min(duration_ms);
        let arrivals = Arrivals::new(&ctl.profile);
        // A switch not seen yet is accounted first (the clock is the stop's, not now).
        shared
            .recorder
            .add_dropped(cursor.seek(&arrivals, &ctl.striping, 0.0, upto_ms));
        let due = arrivals.count_before(upto_ms);
        if let Some(next) = cursor.next().filter(|&n| n < due) {
            shared
                .recorder
                .add_dropped(cursor.owned.count_in(next, due));
        }
    }
    let duplicated = cursor.duplicated();
    if duplicated > 0 {
        let message = format!(
            "stripe switches reached this slave after their load time: {duplicated} arrival(s) \
             it sent were another slave's by then, which sent them too"
        );
        warn!(duplicated, "{message}");
        events.warn(message);
    }
    // Workers leave at the halt without taking more; what is still queued was never sent.
    while workers.join_next().await.is_some() {}
    for pool in pools {
        shared.recorder.add_dropped(pool.rx.len() as u64);
        pool.tx.close();
    }
}

/// One connection's worker for `worker`'s target: takes intended times from its pool's queue
/// until the halt.
#[allow(clippy::too_many_arguments)]
async fn worker(
    mut worker: Worker,
    seed: u64,
    shared: Arc<Shared>,
    rx: async_channel::Receiver<Instant>,
    control: watch::Receiver<LoadControl>,
    idle: Arc<AtomicUsize>,
    items: Arc<Items>,
    halt: CancellationToken,
) {
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ seed);
    let site = shared.sites.get(worker.site());
    let mix = &site.mix;
    let total = mix.total_weight();
    loop {
        idle.fetch_add(1, Ordering::Relaxed);
        let next = tokio::select! {
            biased;
            _ = halt.cancelled() => None,
            t = rx.recv() => t.ok(),
        };
        idle.fetch_sub(1, Ordering::Relaxed);
        let Some(intended) = next else { break };
        if let Some(journeys) = &site.journeys {
            // Each arrival is a new flow instance with a fresh cookie jar.
            let flow = journeys.pick(&mut rng);
            let item = {
                let all = control.borrow().items.clone();
                items.next(&all, &mut rng).to_string()
            };
            let mut state = super::journey::UserState::default();
            super::journey::run_flow(
                &mut worker,
                &shared,
                journeys,
                flow,
                &mut state,
                &item,
                Some(intended),
                &mut rng,
                &halt,
            )
            .await;
            continue;
        }
        let req = mix.pick(rng.random_range(0..total));
        let item = if req.uses_item() {
            let all = control.borrow().items.clone();
            items.next(&all, &mut rng).to_string()
        } else {
            String::new()
        };
        worker.exchange(&shared, req, &item, Some(intended)).await;
    }
    worker.finish(&shared.gauges);
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::stats::IntervalStats;

    /// A server that answers every request at once, counting the answers.
    async fn answering_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        while let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            got.drain(..i + 4);
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        (addr, answered)
    }

    /// Runs an open share of `rate: 100` for 3 s from load time 0; when this slave's load clock
    /// reads `stop_seen_ms`, the master's `Stop` for load time `stop_at_ms` arrives. Returns
    /// (requests, dropped) summed over every interval, and what the server answered.
    async fn stopped_share(stop_seen_ms: u64, stop_at_ms: u64) -> (u64, u64, u64) {
        let (intervals, answered) = stopped_share_intervals(stop_seen_ms, stop_at_ms).await;
        let requests = intervals.iter().map(|(_, s)| s.requests()).sum();
        let dropped = intervals.iter().map(|(_, s)| s.dropped).sum();
        (requests, dropped, answered)
    }

    /// As [`stopped_share`], returning every interval the share sent with its second's index
    /// (the last one last).
    async fn stopped_share_intervals(
        stop_seen_ms: u64,
        stop_at_ms: u64,
    ) -> (Vec<(u64, lobster_fleet::stats::IntervalStats)>, u64) {
        use crate::engine::{Gauges, Output, Run, stop_at};
        let (addr, answered) = answering_server().await;
        let text = format!(
            "name: s\ntarget: http://{addr}\nduration: 3s\nload: {{rate: 100, max_connections: 4}}\nrequests: [{{name: r, path: /}}]\n"
        );
        let scenario = Arc::new(lobster_fleet::scenario::parse(&text, "s.yaml").unwrap());
        let now = Instant::now();
        let (ctl_tx, ctl_rx) = watch::channel(LoadControl {
            profile: scenario.load.clone(),
            striping: crate::engine::Striping::whole(),
            load_origin: now,
            suspended: false,
            items: Arc::new(Vec::new()),
            max_connections: 4,
            stop_at_ms: None,
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let run = Run {
            run_id: "r".into(),
            scenario,
            run_origin: now,
            control: ctl_rx,
            out: tx,
            gauges: Arc::new(Gauges::default()),
            ordinal: 0,
            trace_dir: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run.run(stop.clone()));
        tokio::time::sleep_until((now + Duration::from_millis(stop_seen_ms)).into()).await;
        stop_at(&ctl_tx, &stop, Some(stop_at_ms));
        let mut intervals = Vec::new();
        while let Some(o) = rx.recv().await {
            if let Output::Interval {
                stats, last, index, ..
            } = o
            {
                intervals.push((index, stats));
                if last {
                    break;
                }
            }
        }
        task.await.unwrap();
        (intervals, answered.load(Ordering::SeqCst) as u64)
    }

    /// A share stopped at 0.7 s, before its first second's boundary, sends one interval: the
    /// last, for second 0. It carries this injector's resources like every other second, or
    /// that second shows no CPU in the live table and the report.
    #[tokio::test]
    async fn the_last_interval_carries_the_injectors_resources() {
        let (intervals, _) = stopped_share_intervals(600, 700).await;
        let indexes: Vec<u64> = intervals.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0], "stopped before the first boundary");
        let own = intervals[0].1.injectors.get(IntervalStats::REPORTER);
        assert!(own.is_some(), "no resources in the last interval");
        assert!(own.unwrap().memory_total_bytes > 0, "{own:?}");
    }

    /// A share whose load ends on a second's boundary (1 s) ends as that second's timer is due.
    /// Second 0 is sent as a whole second with its resources, and the last interval is second
    /// 1's tail (the collector's side of it, made to race: `engine::tests`).
    #[tokio::test]
    async fn a_share_that_ends_on_a_boundary_sends_that_second_whole() {
        for _ in 0..3 {
            let (intervals, answered) = stopped_share_intervals(500, 1_000).await;
            let indexes: Vec<u64> = intervals.iter().map(|(i, _)| *i).collect();
            assert_eq!(indexes, [0, 1], "second 0, then the tail");
            let (_, first) = &intervals[0];
            assert!(first.injectors.contains_key(IntervalStats::REPORTER));
            let (_, tail) = &intervals[1];
            let all = first.requests() + tail.requests();
            assert_eq!(all, answered);
            assert_eq!(all + first.dropped + tail.dropped, 100);
            assert!(
                first.requests() >= 90,
                "second 0 holds its own requests: {} of {all}",
                first.requests()
            );
        }
    }

    /// The master stops at load time 1.8 s by its clock; this slave's clock trails by 300 ms
    /// (the Assign's trip). Stopping at once left the arrivals due in 1.5–1.8 s sent by nobody
    /// and counted nowhere (CI: 79 + 7892 of 8000). Right: the share runs on to 1.8 s, and
    /// sent + dropped is the 180 arrivals due before it.
    #[tokio::test]
    async fn a_stop_ahead_of_this_slaves_clock_ends_the_share_at_the_stops_load_time() {
        let (requests, dropped, answered) = stopped_share(1_500, 1_800).await;
        assert_eq!(requests, answered);
        assert_eq!(
            requests + dropped,
            180,
            "requests {requests} + dropped {dropped}"
        );
        assert!(
            requests >= 170,
            "the share went on to 1.8 s: {requests} sent"
        );
    }

    /// A stop further ahead than the catch-up bound ends the share at once; what was due
    /// before the stop's load time and not sent is dropped, not lost.
    #[tokio::test]
    async fn a_stop_far_ahead_ends_the_share_at_once_and_counts_the_rest_dropped() {
        let (requests, dropped, answered) = stopped_share(300, 2_500).await;
        assert_eq!(requests, answered);
        assert_eq!(
            requests + dropped,
            250,
            "requests {requests} + dropped {dropped}"
        );
        assert!(
            dropped >= 150,
            "stopped at once, not run on to 2.5 s: {requests} sent"
        );
    }
}
