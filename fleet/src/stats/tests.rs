//! Merging is exact: fleet-wide percentiles equal the raw samples' within the precision.

use hdrhistogram::serialization::{Serializer, V2Serializer};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

/// Nearest-rank percentile of raw samples.
fn raw_quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn assert_close(what: &str, hist_ms: f64, raw_us: u64) {
    let raw_ms = raw_us as f64 / 1000.0;
    // 3 significant digits: the bucket holding a value spans at most 1/1000 of it (plus 1 µs).
    let tolerance = raw_ms / 1000.0 + 0.001;
    assert!(
        (hist_ms - raw_ms).abs() <= tolerance,
        "{what}: merged {hist_ms} ms vs raw {raw_ms} ms (tolerance {tolerance})"
    );
}

/// Samples from several slaves with very different latency distributions, sent over the wire
/// and merged as the master does: the merged percentiles match the raw reference.
fn check_merge_against_raw(slaves: usize, intervals: usize, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut raw = Vec::new();
    let mut merged = IntervalStats::default();
    for s in 0..slaves {
        for i in 0..intervals {
            let mut slave = IntervalStats::default();
            let e = slave.endpoints.entry("item".into()).or_default();
            let n = rng.random_range(0..400);
            for _ in 0..n {
                // Slave s is 10^s times slower; a few outliers.
                let base = 100u64 * 10u64.pow(s as u32 % 4);
                let v = if rng.random_ratio(1, 50) {
                    rng.random_range(1..MAX_LATENCY_US / 100)
                } else {
                    rng.random_range(base..base * 3)
                };
                e.latency_us.record(v).unwrap();
                e.requests += 1;
                raw.push(v);
            }
            let wire = slave.to_proto("run", i as u64, false);
            merged.merge(
                &IntervalStats::from_proto(&wire)
                    .map_err(|e| e.to_string())
                    .unwrap(),
            );
        }
    }
    raw.sort_unstable();
    let total = merged.total();
    assert_eq!(total.requests, raw.len() as u64);
    assert_eq!(total.latency_us.len(), raw.len() as u64);
    if raw.is_empty() {
        return;
    }
    let sum = LatencySummary::of(&total.latency_us);
    for (name, q, got) in [
        ("p50", 0.50, sum.p50),
        ("p90", 0.90, sum.p90),
        ("p95", 0.95, sum.p95),
        ("p99", 0.99, sum.p99),
        ("p99.9", 0.999, sum.p999),
    ] {
        assert_close(name, got, raw_quantile(&raw, q));
    }
    assert_close("max", sum.max, *raw.last().unwrap());
    assert_close("min", sum.min, raw[0]);
}

#[test]
fn merged_percentiles_equal_raw_samples_across_three_slaves() {
    check_merge_against_raw(3, 20, 7);
}

#[test]
fn averaging_percentiles_would_be_wrong() {
    // Two slaves: one fast, one slow. Averaging their p99s is far from the true p99.
    let mut fast = EndpointStats::default();
    let mut slow = EndpointStats::default();
    for _ in 0..990 {
        fast.latency_us.record(1_000).unwrap();
    }
    for _ in 0..10 {
        slow.latency_us.record(500_000).unwrap();
    }
    let avg =
        (LatencySummary::of(&fast.latency_us).p99 + LatencySummary::of(&slow.latency_us).p99) / 2.0;
    let mut merged = fast.clone();
    merged.merge(&slow);
    let p99 = LatencySummary::of(&merged.latency_us).p99;
    assert!((p99 - 1.0).abs() < 0.01, "true p99 is 1 ms, got {p99}");
    assert!(
        avg > 200.0,
        "the average of p99s ({avg}) is wrong by design"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn merge_is_exact_for_any_fleet(slaves in 3usize..8, intervals in 1usize..6, seed in any::<u64>()) {
        check_merge_against_raw(slaves, intervals, seed);
    }

    /// Decoding arbitrary bytes never panics.
    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_histogram(&bytes);
    }

    /// Arbitrary payloads behind a valid header never panic either, and whatever passes the
    /// check adds exactly the samples it claims.
    #[test]
    fn wire_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&new_histogram(), &mut bytes).unwrap();
        bytes.truncate(40);
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        if let Ok(w) = WireHistogram::check(&bytes) {
            let mut h = new_histogram();
            w.add_to(&mut h);
            prop_assert_eq!(h.len(), w.len());
        }
    }

    /// Adding a histogram's non-empty buckets straight from its encoding (the master's merge)
    /// gives the same histogram as decoding it with the hdrhistogram crate and adding it.
    #[test]
    fn merging_from_the_wire_equals_decoding_and_adding(
        values in proptest::collection::vec((1u64..MAX_LATENCY_US, 1u64..5), 0..300),
        base in proptest::collection::vec(1u64..MAX_LATENCY_US, 0..50),
    ) {
        let mut h = new_histogram();
        for (v, n) in &values {
            h.record_n(*v, *n).unwrap();
        }
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        let decoded: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut &bytes[..])
            .unwrap();
        let mut by_crate = new_histogram();
        for v in &base {
            by_crate.record(*v).unwrap();
        }
        let mut by_wire = by_crate.clone();
        by_crate.add(&decoded).unwrap();
        let wire = WireHistogram::check(&bytes).unwrap();
        prop_assert_eq!(wire.len(), h.len());
        wire.add_to(&mut by_wire);
        prop_assert_eq!(by_wire.len(), by_crate.len());
        prop_assert_eq!(by_wire.min(), by_crate.min());
        prop_assert_eq!(by_wire.max(), by_crate.max());
        prop_assert_eq!(by_wire.mean(), by_crate.mean());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            prop_assert_eq!(by_wire.value_at_quantile(q), by_crate.value_at_quantile(q));
        }
        let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
        };
        prop_assert_eq!(buckets(&by_wire), buckets(&by_crate));
    }
}

/// Random intervals of `slaves` slaves: 2 endpoints with latencies and phases, a target each,
/// and a flow, on the wire.
fn random_wire(slaves: usize, seed: u64) -> Vec<proto::StatsInterval> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..slaves)
        .map(|s| {
            let mut st = IntervalStats::default();
            for (name, url) in [("a", "http://x"), ("b", "http://y")] {
                let mut e = EndpointStats::default();
                for _ in 0..rng.random_range(0..200) {
                    let scale = 10u64.pow(rng.random_range(0..5));
                    let v = rng.random_range(1..MAX_LATENCY_US / scale);
                    e.latency_us.record(v).unwrap();
                    Phases::record(&mut e.phases.waiting_us, v / 2);
                    if rng.random_ratio(1, 4) {
                        Phases::record(&mut e.phases.connecting_us, rng.random_range(1..5000));
                    }
                    e.requests += 1;
                }
                st.targets.insert(url.into(), e.clone());
                st.endpoints.insert(name.into(), e);
            }
            let f = st.flows.entry("f".into()).or_default();
            for _ in 0..rng.random_range(0..20) {
                f.duration_us
                    .record(rng.random_range(1..60_000_000))
                    .unwrap();
                f.completed += 1;
            }
            st.dropped = s as u64;
            st.to_proto("r", 0, false)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The master's open second: histograms kept as bucket counts and recorded once at the
    /// close give exactly the statistics of merging each interval's histograms directly.
    #[test]
    fn a_deferred_merge_equals_the_direct_merge(slaves in 1usize..12, seed in any::<u64>()) {
        let wire = random_wire(slaves, seed);
        let mut direct = IntervalStats::default();
        let mut deferred = IntervalStats::default();
        let mut pending = Pending::default();
        // The deferred side checks in one room, as the master does, and the room held the
        // buckets of another interval before each (the last one's).
        let mut room = CheckRoom::default();
        for (i, w) in wire.iter().enumerate() {
            let c = CheckedInterval::check(w).unwrap();
            c.merge_into(&mut direct, &format!("s{i}"));
            CheckedInterval::check_in(&wire[wire.len() - 1 - i], &mut room).unwrap().give_back(&mut room);
            let c = CheckedInterval::check_in(w, &mut room).unwrap();
            c.merge_deferred(&mut deferred, &mut pending, &format!("s{i}"));
            c.give_back(&mut room);
        }
        pending.finish(&mut deferred);
        let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
        };
        let same = |a: &EndpointStats, b: &EndpointStats| {
            a.requests == b.requests
                && buckets(&a.latency_us) == buckets(&b.latency_us)
                && a.latency_us.min() == b.latency_us.min()
                && a.latency_us.max() == b.latency_us.max()
                && buckets(&a.phases.waiting_us) == buckets(&b.phases.waiting_us)
                && buckets(&a.phases.connecting_us) == buckets(&b.phases.connecting_us)
        };
        for name in ["a", "b"] {
            prop_assert!(same(&direct.endpoints[name], &deferred.endpoints[name]), "endpoint {}", name);
        }
        for url in ["http://x", "http://y"] {
            prop_assert!(same(&direct.targets[url], &deferred.targets[url]), "target {}", url);
        }
        prop_assert_eq!(direct.dropped, deferred.dropped);
        prop_assert_eq!(
            buckets(&direct.flows["f"].duration_us),
            buckets(&deferred.flows["f"].duration_us)
        );
        prop_assert_eq!(direct.flows["f"].completed, deferred.flows["f"].completed);
        prop_assert_eq!(direct.injectors.len(), deferred.injectors.len());
    }
}

#[test]
fn counts_beyond_the_highest_value_or_cut_short_are_refused() {
    let mut h = new_histogram();
    h.record(1000).unwrap();
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(&h, &mut bytes).unwrap();
    // A run of empty buckets that jumps past the header's highest value, then a count.
    let mut beyond = bytes[..40].to_vec();
    let payload = [0x80 | 0x7f, 0x7f, 2]; // zig-zag of -(2^14 - 1)…, then a count of 1
    beyond[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    beyond.extend_from_slice(&payload);
    assert!(
        WireHistogram::check(&beyond)
            .unwrap_err()
            .contains("beyond"),
        "{:?}",
        WireHistogram::check(&beyond)
    );
    // A number whose continuation bit promises more bytes than there are.
    let mut cut = bytes[..40].to_vec();
    cut[4..8].copy_from_slice(&1u32.to_be_bytes());
    cut.push(0x80);
    assert!(
        WireHistogram::check(&cut)
            .unwrap_err()
            .contains("mid-number")
    );
}

#[test]
fn foreign_histograms_are_refused() {
    let mut h: Histogram<u64> = Histogram::new_with_bounds(1, 1 << 60, 5).unwrap();
    h.record(5).unwrap();
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(&h, &mut bytes).unwrap();
    assert!(
        decode_histogram(&bytes)
            .unwrap_err()
            .contains("significant digits")
    );
    // HdrHistogram's compressed V2 (another cookie) is neither encoding we read.
    let mut compressed = bytes.clone();
    compressed[..4].copy_from_slice(&0x1c84_9314u32.to_be_bytes());
    let e = decode_histogram(&compressed).unwrap_err();
    assert!(e.contains("neither Lobster's sparse words nor"), "{e}");
    let wire = proto::StatsInterval {
        endpoints: vec![
            proto::EndpointStats {
                name: "a".into(),
                ..Default::default()
            },
            proto::EndpointStats {
                name: "a".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        IntervalStats::from_proto(&wire).unwrap_err(),
        StatsError::DuplicateEndpoint("a".into())
    );
    // Targets: each URL once, never empty, at most MAX_TARGETS, each checked as an endpoint.
    let target = |name: &str| proto::EndpointStats {
        name: name.into(),
        ..Default::default()
    };
    for targets in [
        vec![target("http://a"), target("http://a")],
        vec![target("")],
        (0..=crate::scenario::MAX_TARGETS)
            .map(|i| target(&format!("http://h{i}")))
            .collect(),
    ] {
        let n = targets.len();
        let wire = proto::StatsInterval {
            targets,
            ..Default::default()
        };
        assert_eq!(
            IntervalStats::from_proto(&wire).unwrap_err(),
            StatsError::BadTargets(n)
        );
    }
    let wire = proto::StatsInterval {
        targets: vec![proto::EndpointStats {
            name: "http://a".into(),
            latency_us: vec![1, 2, 3].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(matches!(
        IntervalStats::from_proto(&wire).unwrap_err(),
        StatsError::Histogram(..)
    ));
}

/// Per-target statistics travel the wire and merge by URL, next to the endpoints'.
#[test]
fn targets_survive_the_wire_and_merge_by_url() {
    let one = |url: &str, us: u64| {
        let mut e = EndpointStats {
            requests: 1,
            ..Default::default()
        };
        e.latency_us.record(us).unwrap();
        let mut s = IntervalStats::default();
        s.endpoints.insert("r".into(), e.clone());
        s.targets.insert(url.into(), e);
        s
    };
    let mut total = IntervalStats::default();
    for (url, us) in [
        ("http://a", 1_000),
        ("http://b", 5_000),
        ("http://a", 3_000),
    ] {
        let wire = one(url, us).to_proto("r", 0, false);
        CheckedInterval::check(&wire)
            .unwrap()
            .merge_into(&mut total, "s");
    }
    assert_eq!(total.endpoints["r"].requests, 3);
    assert_eq!(total.targets["http://a"].requests, 2);
    assert_eq!(total.targets["http://b"].requests, 1);
    assert_eq!(total.targets["http://a"].latency_us.max(), 3_001);
    let mut merged = IntervalStats::default();
    merged.merge(&total);
    assert_eq!(merged.targets["http://b"].latency_us.len(), 1);
}

/// Checks, flows and phases travel the wire and merge as counts and histograms, exactly.
#[test]
fn checks_flows_and_phases_survive_the_wire_and_merge() {
    let mut a = IntervalStats::default();
    let mut e = EndpointStats {
        requests: 2,
        ..Default::default()
    };
    Phases::record(&mut e.phases.waiting_us, 1500);
    Phases::record(&mut e.phases.tls_handshaking_us, 4000);
    a.endpoints.insert("login".into(), e);
    a.checks.insert(
        "login: status 200".into(),
        CheckCount {
            passes: 3,
            fails: 1,
        },
    );
    let mut f = FlowCount {
        completed: 2,
        failed: 1,
        ..Default::default()
    };
    f.duration_us.record(2_000_000).unwrap();
    f.duration_us.record(3_000_000).unwrap();
    a.flows.insert("member".into(), f);
    let back = IntervalStats::from_proto(&a.to_proto("r", 0, false)).unwrap();
    let mut sum = back.clone();
    sum.merge(&back);
    assert_eq!(
        sum.checks["login: status 200"],
        CheckCount {
            passes: 6,
            fails: 2
        }
    );
    let m = &sum.flows["member"];
    assert_eq!((m.completed, m.failed, m.duration_us.len()), (4, 2, 4));
    assert!(m.duration_us.equivalent(m.duration_us.max(), 3_000_000));
    let p = &sum.endpoints["login"].phases;
    assert_eq!(
        (
            p.waiting_us.len(),
            p.tls_handshaking_us.len(),
            p.connecting_us.len()
        ),
        (2, 2, 0)
    );
    // A flow histogram with more samples than completed instances is refused.
    let mut bad = a.to_proto("r", 0, false);
    bad.flows.get_mut("member").unwrap().completed = 1;
    assert!(IntervalStats::from_proto(&bad).is_err());
}

/// Spoils a valid interval so that its check fails late, after it added some buckets (or,
/// for a flipped byte, perhaps not at all): `how` picks the fault, `at` where it lands.
fn spoil(w: &mut proto::StatsInterval, how: u8, at: usize) {
    let last = w.endpoints.len() - 1;
    match how {
        0 => {
            let e = &mut w.endpoints[last];
            let mut bytes = e.latency_us.to_vec();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= 1 << (at % 8);
                e.latency_us = bytes.into();
            }
        }
        1 => w.endpoints[last].requests = 0,
        2 => {
            let first = w.endpoints[0].clone();
            w.endpoints.push(first);
        }
        3 => {
            if let Some(f) = w.flows.values_mut().next() {
                f.completed = 0;
            }
        }
        4 => {
            if let Some(t) = w.targets.last_mut() {
                t.name.clear();
            }
        }
        5 => {
            w.endpoints[last].errors = (0..65).map(|i| (format!("e{i}"), 1)).collect();
        }
        _ => {
            if let Some(t) = w.targets.last_mut() {
                let n = t.waiting_us.len();
                t.waiting_us = t.waiting_us.slice(..n.saturating_sub(1 + at % 3));
            }
        }
    }
}

/// An open second's merge as the master would store it: its counts recorded, on the wire.
fn closed(into: &IntervalStats, pending: &Pending) -> proto::StatsInterval {
    let mut s = into.clone();
    pending.clone().finish(&mut s);
    s.to_proto("r", 0, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The single pass (`fused.rs`) merges exactly what the check and then the deferred merge
    /// do, and an interval it refuses is refused with the check's error and leaves the open
    /// second as it was: every bucket, counter and name (a refused interval's new endpoint
    /// or target does not appear).
    #[test]
    fn a_single_pass_merges_what_two_do_and_a_refusal_takes_back_everything(
        slaves in 1usize..6,
        seed in any::<u64>(),
        how in 0u8..7,
        at in any::<usize>(),
        rename in any::<bool>(),
    ) {
        let wire = random_wire(slaves + 1, seed);
        let (mut into, mut pending) = (IntervalStats::default(), Pending::default());
        let (mut two_into, mut two_pending) = (IntervalStats::default(), Pending::default());
        let mut room = CheckRoom::default();
        for (i, w) in wire[..slaves].iter().enumerate() {
            let r = format!("s{i}");
            let n = CheckedInterval::check_and_merge(w, &mut room, &mut into, &mut pending, &r);
            prop_assert_eq!(n, Ok(w.endpoints.iter().map(|e| e.requests).sum::<u64>()));
            let c = CheckedInterval::check(w).unwrap();
            c.merge_deferred(&mut two_into, &mut two_pending, &r);
        }
        prop_assert_eq!(closed(&into, &pending), closed(&two_into, &two_pending));

        let mut bad = wire[slaves].clone();
        if rename {
            bad.endpoints[1].name = "new".into();
            bad.targets[1].name = "http://new".into();
            bad.flows = bad.flows.into_values().map(|f| ("new".to_string(), f)).collect();
        }
        spoil(&mut bad, how, at);
        let before = closed(&into, &pending);
        let expected = CheckedInterval::check(&bad).map(|c| c.requests());
        let got = CheckedInterval::check_and_merge(&bad, &mut room, &mut into, &mut pending, "bad");
        prop_assert_eq!(&got, &expected);
        if got.is_err() {
            prop_assert_eq!(closed(&into, &pending), before);
        } else {
            CheckedInterval::check(&bad).unwrap().merge_deferred(&mut two_into, &mut two_pending, "bad");
            prop_assert_eq!(closed(&into, &pending), closed(&two_into, &two_pending));
        }
    }
}

/// Faults that fail the check after buckets were added are refused, and each leaves the
/// open second unchanged (the cases the proptest above draws at random, each once).
#[test]
fn each_late_fault_is_taken_back() {
    let wire = random_wire(3, 11);
    for how in 1u8..7 {
        let (mut into, mut pending) = (IntervalStats::default(), Pending::default());
        let mut room = CheckRoom::default();
        CheckedInterval::check_and_merge(&wire[0], &mut room, &mut into, &mut pending, "a")
            .unwrap();
        let before = closed(&into, &pending);
        let mut bad = wire[1].clone();
        bad.endpoints[1].name = "new".into();
        spoil(&mut bad, how, 1);
        let got = CheckedInterval::check_and_merge(&bad, &mut room, &mut into, &mut pending, "x");
        assert!(got.is_err(), "fault {how} refused");
        assert!(
            pending.endpoints.get_mut("new").is_none(),
            "fault {how}: no `new`"
        );
        assert_eq!(closed(&into, &pending), before, "fault {how}");
        // And the room still checks the next interval.
        CheckedInterval::check_and_merge(&wire[2], &mut room, &mut into, &mut pending, "b")
            .unwrap();
    }
}
