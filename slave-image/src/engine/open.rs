//! The open model: requests arrive on a schedule ([`Arrivals`]) whatever the server does.
//!
//! A dispatcher hands each arrival's intended time to a pool of workers (one connection each),
//! growing the pool while no worker is idle, up to the share's `max_connections`. Latency is
//! measured from the intended time, so time spent waiting for a free worker counts (no
//! coordinated omission). Arrivals still queued when the run ends are counted as dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lobster_fleet::scenario::Arrivals;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::exchange::{Shared, Worker};
use super::{Items, LoadControl, Mix, changed_or_halt};

/// Queued arrivals allowed beyond the busy workers before the dispatcher waits.
const QUEUE: usize = 4096;

pub(super) async fn drive(
    shared: Arc<Shared>,
    mix: Arc<Mix>,
    mut control: watch::Receiver<LoadControl>,
    halt: CancellationToken,
) {
    let duration_ms = shared.scenario.duration_ms as f64;
    let (tx, rx) = async_channel::bounded::<Instant>(QUEUE);
    let idle = Arc::new(AtomicUsize::new(0));
    let items = Arc::new(Items {
        next: Default::default(),
    });
    let mut workers = JoinSet::new();
    let mut spawned = 0usize;
    'run: loop {
        let ctl = control.borrow_and_update().clone();
        if ctl.suspended {
            if !changed_or_halt(&mut control, &halt).await {
                break;
            }
            continue;
        }
        let max_workers = ctl.max_connections.max(1) as usize;
        let arrivals = Arrivals::new(&ctl.profile);
        let mut k = arrivals.count_before(ctl.load_ms(Instant::now()) as f64);
        loop {
            let due_ms = arrivals.due_ms(k).filter(|&d| d < duration_ms);
            let Some(due_ms) = due_ms else {
                // No more arrivals in this share: wait for the end, a change, or the stop.
                let end = ctl.load_origin + Duration::from_millis(duration_ms as u64);
                tokio::select! {
                    _ = tokio::time::sleep_until(end.into()) => break 'run,
                    r = control.changed() => if r.is_err() { break 'run } else { continue 'run },
                    _ = halt.cancelled() => break 'run,
                }
            };
            let intended = ctl.load_origin + Duration::from_secs_f64(due_ms / 1000.0);
            if intended > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(intended.into()) => {}
                    r = control.changed() => if r.is_err() { break 'run } else { continue 'run },
                    _ = halt.cancelled() => break 'run,
                }
            }
            if idle.load(Ordering::Relaxed) == 0 && spawned < max_workers {
                spawned += 1;
                workers.spawn(worker(
                    spawned as u64,
                    shared.clone(),
                    mix.clone(),
                    rx.clone(),
                    control.clone(),
                    idle.clone(),
                    items.clone(),
                    halt.clone(),
                ));
            }
            if tx.try_send(intended).is_err() {
                tokio::select! {
                    r = tx.send(intended) => if r.is_err() { break 'run },
                    _ = halt.cancelled() => break 'run,
                }
            }
            k += 1;
        }
    }
    halt.cancel();
    tx.close();
    shared.recorder.add_dropped(rx.len() as u64);
    while workers.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    seed: u64,
    shared: Arc<Shared>,
    mix: Arc<Mix>,
    rx: async_channel::Receiver<Instant>,
    control: watch::Receiver<LoadControl>,
    idle: Arc<AtomicUsize>,
    items: Arc<Items>,
    halt: CancellationToken,
) {
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ seed);
    let mut worker = Worker::new();
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
        let req = mix.pick(rng.random_range(0..total));
        let item = if req.uses_item() {
            let all = control.borrow().items.clone();
            items.next(&all).to_string()
        } else {
            String::new()
        };
        worker.exchange(&shared, req, &item, Some(intended)).await;
    }
    worker.finish(&shared.gauges);
}
