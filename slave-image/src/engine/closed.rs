//! The closed model: users, each sending its next request when the previous one completed
//! (plus think time).
//!
//! Users are numbered fleet-wide: user `u` runs while the fleet-wide profile is above `u`, on
//! the one slave whose stripe owns `u` (see `lobster_fleet::stripe`). So the fleet's active
//! users follow the profile whatever the number of slaves: a ramp from 0 to 4 users starts one
//! user at a time on a fleet of 4 just as on one slave. A controller follows the profile every
//! 100 ms, starting the owned users below the target; a user above the target, or no longer
//! owned after a rescale, leaves after its current request. With flows, a user runs one flow
//! after another (see [`journey`]). With `targets:`, user `u` talks to the target the scenario
//! deals `u` to ([`super::site`]) for its whole life.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::exchange::{Outcome, Shared, Worker};
use super::journey::{self, think_time};
use super::{Items, LoadControl, changed_or_halt};

const TICK: Duration = Duration::from_millis(100);
/// Pause after a failed connect, so a dead target is not hammered in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

pub(super) async fn drive(
    shared: Arc<Shared>,
    mut control: watch::Receiver<LoadControl>,
    halt: CancellationToken,
) {
    let duration_ms = shared.scenario.duration_ms();
    // The fleet-wide number of users wanted now.
    let target = Arc::new(AtomicU64::new(0));
    let items = Arc::new(Items::new(&shared.scenario));
    // Running users by fleet-wide index.
    let mut users: BTreeMap<u64, JoinHandle<()>> = BTreeMap::new();
    loop {
        let ctl = control.borrow_and_update().clone();
        let now = Instant::now();
        let load_ms = ctl.load_ms(now);
        let end_ms = ctl.end_ms(duration_ms);
        if !ctl.suspended && load_ms >= end_ms {
            break;
        }
        let want = ctl.profile.value_at(load_ms).floor().max(0.0) as u64;
        target.store(want, Ordering::Relaxed);
        users.retain(|_, h| !h.is_finished());
        if let Some(stripe) = ctl.striping.at(load_ms).filter(|_| !ctl.suspended) {
            let mut j = 0;
            while let Some(u) = stripe.nth(j).filter(|&u| u < want) {
                users.entry(u).or_insert_with(|| {
                    tokio::spawn(user(
                        u,
                        shared.clone(),
                        control.clone(),
                        target.clone(),
                        items.clone(),
                        halt.clone(),
                    ))
                });
                j += 1;
            }
        }
        // Woken at a planned stripe switch too, so the new owner starts its users on time.
        let until = ctl
            .striping
            .next_switch(load_ms)
            .map_or(end_ms, |t| t.min(end_ms));
        let until = Duration::from_millis(until.saturating_sub(load_ms));
        tokio::select! {
            _ = tokio::time::sleep(TICK.min(until)) => {}
            r = control.changed() => if r.is_err() { break },
            _ = halt.cancelled() => break,
        }
    }
    halt.cancel();
    for u in users.into_values() {
        let _ = u.await;
    }
}

/// One user: fleet-wide index `index`, talking to the target that index is dealt to.
async fn user(
    index: u64,
    shared: Arc<Shared>,
    mut control: watch::Receiver<LoadControl>,
    target: Arc<AtomicU64>,
    items: Arc<Items>,
    halt: CancellationToken,
) {
    let gauges = shared.gauges.clone();
    gauges.active_users.fetch_add(1, Ordering::Relaxed);
    let mut rng = SmallRng::seed_from_u64(rand::random::<u64>() ^ index);
    let mut worker = Worker::new(shared.sites.of(index));
    let site = shared.sites.get(worker.site());
    let mix = &site.mix;
    let mut state = journey::UserState::default();
    let total = mix.total_weight();
    let think = shared.scenario.think;
    // Whether this user is still this slave's, and the load time that changes at (a planned
    // stripe switch).
    let read = |c: &LoadControl| {
        let (mine, change) = c.striping.owns_user(index, c.load_ms(Instant::now()));
        (c.suspended, mine, change, c.load_origin, c.items.clone())
    };
    let (mut suspended, mut mine, mut change, mut origin, mut my_items) =
        read(&control.borrow_and_update());
    while !halt.is_cancelled() && mine && index < target.load(Ordering::Relaxed) {
        let switched = !suspended
            && change.is_some_and(|t| {
                Instant::now().saturating_duration_since(origin) >= Duration::from_millis(t)
            });
        if switched || control.has_changed().unwrap_or(false) {
            (suspended, mine, change, origin, my_items) = read(&control.borrow_and_update());
            continue;
        }
        if suspended {
            if !changed_or_halt(&mut control, &halt).await {
                break;
            }
            // `changed` marked the new value seen: read it now.
            (suspended, mine, change, origin, my_items) = read(&control.borrow_and_update());
            continue;
        }
        let pause = if let Some(journeys) = &site.journeys {
            // A journey or a Markov walk: steps pause by their own think times.
            let item = items.next(&my_items, &mut rng);
            let outcome = if journeys.is_markov() {
                journey::run_markov(
                    &mut worker,
                    &shared,
                    journeys,
                    &mut state,
                    item,
                    &mut rng,
                    &halt,
                )
                .await
            } else {
                let flow = journeys.pick(&mut rng);
                journey::run_flow(
                    &mut worker,
                    &shared,
                    journeys,
                    flow,
                    &mut state,
                    item,
                    None,
                    &mut rng,
                    &halt,
                )
                .await
            };
            match outcome {
                Outcome::ConnectFailed => CONNECT_BACKOFF,
                Outcome::Done => Duration::ZERO,
            }
        } else {
            let req = mix.pick(rng.random_range(0..total));
            let item = if req.uses_item() {
                items.next(&my_items, &mut rng)
            } else {
                ""
            };
            match worker.exchange(&shared, req, item, None).await {
                Outcome::ConnectFailed => CONNECT_BACKOFF.max(think_time(&think, &mut rng)),
                Outcome::Done => think_time(&think, &mut rng),
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = halt.cancelled() => break,
            }
        }
    }
    worker.finish(&gauges);
    gauges.active_users.fetch_sub(1, Ordering::Relaxed);
}
