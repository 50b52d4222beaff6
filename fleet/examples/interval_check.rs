//! The master's cost of checking and merging one slave's second, without the network (run by
//! `scripts/bench/interval-check`, in release).
//!
//! Intervals are made as `lobster-slave simulate` makes them (10 endpoints, 50 latencies each
//! between 1 and 200 ms, with their waiting and receiving phases) and encoded once. Then, round
//! after round, each is read byte by byte (a floor: what touching its histograms costs),
//! checked ([`CheckedInterval::check_in`]), and checked and merged into an open second
//! ([`CheckedInterval::merge_deferred`], the second closed by [`Pending::finish`] once all
//! are in), and both in one pass ([`CheckedInterval::check_and_merge`], what the master does
//! with an interval of an open second). Printed: the histogram bytes and non-empty buckets
//! of an interval, and nanoseconds per interval and per bucket for each pass, the best of
//! the rounds.

use std::time::{Duration, Instant};

use lobster_fleet::stats::{CheckRoom, CheckedInterval, EndpointStats, IntervalStats, Pending};
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Distinct intervals (as many slaves' seconds), each read once per round.
const SLAVES: usize = 1000;
const ROUNDS: usize = 15;

/// One simulated slave's second, as `lobster-slave simulate` makes it.
fn interval(rng: &mut SmallRng) -> IntervalStats {
    let mut stats = IntervalStats::default();
    for e in 0..10 {
        let mut s = EndpointStats {
            requests: 50,
            ..Default::default()
        };
        for _ in 0..50 {
            let latency = rng.random_range(1_000..200_000u64);
            let receiving = rng.random_range(10..latency / 10);
            let _ = s.latency_us.record(latency);
            let _ = s.phases.waiting_us.record(latency - receiving);
            let _ = s.phases.receiving_us.record(receiving);
        }
        stats.endpoints.insert(format!("endpoint-{e}"), s);
    }
    stats
}

fn main() {
    let mut rng = SmallRng::seed_from_u64(7);
    let seconds: Vec<IntervalStats> = (0..SLAVES).map(|_| interval(&mut rng)).collect();
    // Non-empty buckets of an interval's histograms: what the master adds up.
    let buckets = seconds
        .iter()
        .flat_map(|s| s.endpoints.values())
        .flat_map(|e| [&e.latency_us, &e.phases.waiting_us, &e.phases.receiving_us])
        .map(|h| h.iter_recorded().count())
        .sum::<usize>()
        / SLAVES;
    let wire: Vec<_> = seconds
        .iter()
        .enumerate()
        .map(|(i, s)| s.to_proto("run", i as u64, false))
        .collect();
    let histograms: Vec<&[u8]> = wire
        .iter()
        .flat_map(|w| &w.endpoints)
        .flat_map(|e| [&e.latency_us[..], &e.waiting_us[..], &e.receiving_us[..]])
        .collect();
    let bytes = histograms.iter().map(|h| h.len()).sum::<usize>() / SLAVES;

    let per = |d: Duration| d.as_nanos() as f64 / SLAVES as f64;
    let mut room = CheckRoom::default();
    let (mut touch, mut check, mut merge, mut fused) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let (mut touched, mut requests) = (0u64, 0u64);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for h in &histograms {
            touched += h.iter().map(|&b| u64::from(b)).sum::<u64>();
        }
        touch = touch.min(per(t.elapsed()));

        let t = Instant::now();
        for w in &wire {
            let c = CheckedInterval::check_in(w, &mut room).expect("a valid interval");
            requests += c.requests();
            c.give_back(&mut room);
        }
        check = check.min(per(t.elapsed()));

        let t = Instant::now();
        let (mut second, mut pending) = (IntervalStats::default(), Pending::default());
        for w in &wire {
            let c = CheckedInterval::check_in(w, &mut room).expect("a valid interval");
            c.merge_deferred(&mut second, &mut pending, "slave");
            c.give_back(&mut room);
        }
        pending.finish(&mut second);
        merge = merge.min(per(t.elapsed()));
        requests += second.requests();

        let t = Instant::now();
        let (mut second, mut pending) = (IntervalStats::default(), Pending::default());
        for w in &wire {
            CheckedInterval::check_and_merge(w, &mut room, &mut second, &mut pending, "slave")
                .expect("a valid interval");
        }
        pending.finish(&mut second);
        fused = fused.min(per(t.elapsed()));
        requests += second.requests();
    }
    assert_eq!(requests, 3 * (ROUNDS * SLAVES * 10 * 50) as u64);
    let n = buckets as f64;
    println!(
        "{SLAVES} intervals, best of {ROUNDS} rounds; an interval's histograms: \
         {bytes} bytes, {buckets} non-empty buckets (checksum {touched})"
    );
    for (what, ns) in [
        ("read each byte ", touch),
        ("check          ", check),
        ("check and merge", merge),
        ("in one pass    ", fused),
    ] {
        println!(
            "  {what}  {ns:>7.0} ns per interval {:>6.2} ns per bucket",
            ns / n
        );
    }
}
