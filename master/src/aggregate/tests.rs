//! The aggregator's merge and close rules, with plain values.

use super::*;
use lobster_fleet::stats::EndpointStats;

/// Complete when every one of `expected` reported.
fn covers(expected: &BTreeSet<String>) -> impl Fn(&HashMap<String, u64>) -> bool + '_ {
    |reporters| expected.iter().all(|s| reporters.contains_key(s))
}

fn stats(requests: u64) -> IntervalStats {
    let mut s = IntervalStats::default();
    let mut e = EndpointStats {
        requests,
        ..Default::default()
    };
    for _ in 0..requests {
        e.latency_us.record(1000).unwrap();
    }
    s.endpoints.insert("a".into(), e);
    s
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn closes_when_complete_or_after_the_wait_and_never_loses() {
    let mut a = Aggregator::default();
    let expected: BTreeSet<String> = ["x".to_string(), "y".to_string()].into();
    assert!(a.add("x", 0, &stats(5)));
    assert!(!a.add("x", 0, &stats(5)), "a resend is a no-op");
    // Only x reported second 0: a busy machine's late reporter is waited for.
    assert!(
        a.close_ready(Duration::from_millis(3000), covers(&expected), WAIT)
            .is_empty()
    );
    assert!(a.add("y", 0, &stats(7)));
    let closed = a.close_ready(Duration::from_millis(3000), covers(&expected), WAIT);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].point.requests, 12);
    assert_eq!(closed[0].point.slaves, 2);
    // Second 1: y stays silent; the second closes after the bounded wait.
    a.add("x", 1, &stats(1));
    assert!(
        a.close_ready(Duration::from_millis(6900), covers(&expected), WAIT)
            .is_empty()
    );
    assert_eq!(
        a.close_ready(Duration::from_millis(7000), covers(&expected), WAIT)
            .len(),
        1
    );
    // y's second 1 arrives later still: merged into second 1 (series = totals) and
    // counted as late.
    a.add("y", 1, &stats(4));
    assert_eq!(a.late_requests, 4);
    assert_eq!(a.total.requests(), 17);
    assert_eq!(a.series.iter().map(|p| p.requests).sum::<u64>(), 17);
    assert_eq!((a.series[1].requests, a.series[1].slaves), (5, 2));
    // Each slave's own totals, late interval included.
    assert_eq!(
        (a.per_slave["x"].requests, a.per_slave["y"].requests),
        (6, 11)
    );
}

#[test]
fn a_slave_that_joins_late_has_its_first_second_and_its_own_requests() {
    let mut a = Aggregator::default();
    // z's intervals arrive out of order; its first second is the lowest it reported.
    a.add("x", 0, &stats(3));
    a.add("z", 5, &stats(2));
    a.add("z", 4, &stats(1));
    a.add("z", 4, &stats(1));
    assert_eq!(
        a.per_slave["z"],
        SlaveTotals {
            requests: 3,
            first_index: 4
        }
    );
    assert_eq!(a.per_slave["x"].first_index, 0);
    a.close_all();
    assert_eq!(
        a.per_slave.values().map(|t| t.requests).sum::<u64>(),
        a.total.requests()
    );
}

#[test]
fn a_late_interval_for_an_old_second_still_lands_in_it() {
    let mut a = Aggregator::default();
    let expected: BTreeSet<String> = ["x".to_string()].into();
    for k in 0..(KEPT as u64 + 10) {
        a.add("x", k, &stats(1));
    }
    a.close_ready(
        Duration::from_secs(KEPT as u64 + 10),
        covers(&expected),
        WAIT,
    );
    assert_eq!(a.series.len(), KEPT + 10);
    // Second 2 is no longer kept in full: its counts are revised.
    a.add("z", 2, &stats(3));
    assert_eq!((a.series[2].requests, a.series[2].slaves), (4, 2));
    // A recent second gets its percentiles recomputed too.
    let mut slow = stats(1);
    slow.endpoints.get_mut("a").unwrap().latency_us.reset();
    slow.endpoints
        .get_mut("a")
        .unwrap()
        .latency_us
        .record(900_000)
        .unwrap();
    a.series[KEPT + 5].load = Some(7.0);
    a.add("z", KEPT as u64 + 5, &slow);
    // Its counts at once, its percentiles at the next refresh (each tick's close).
    assert_eq!(
        (a.series[KEPT + 5].requests, a.series[KEPT + 5].slaves),
        (2, 2)
    );
    a.close_ready(
        Duration::from_secs(KEPT as u64 + 10),
        covers(&expected),
        WAIT,
    );
    let p = &a.series[KEPT + 5];
    assert_eq!(p.requests, 2);
    assert!(p.latency_ms.max >= 899.0, "{:?}", p.latency_ms);
    assert_eq!(p.load, Some(7.0), "the load the run stamped stays");
    assert_eq!(
        a.series.iter().map(|p| p.requests).sum::<u64>(),
        a.total.requests()
    );
}

/// A second stored as its merge so far while still open (a snapshot, held too long) and
/// rebuilt from the store by a restarted master, then completed by the intervals the slaves
/// send again, is the second the master that stayed up closed: same totals, histograms,
/// injectors, per-slave figures and point.
#[test]
fn a_run_rebuilt_from_a_snapshot_of_an_open_second_is_the_same_run() {
    let mut a = Aggregator::default();
    for slave in 0..2 {
        assert!(a.add(&format!("s{slave}"), 3, &interval_of(slave, 3)));
    }
    assert!(a.snapshot(4).is_none(), "no second 4 is open");
    let stored = a.snapshot(3).expect("second 3 is open").encode();
    let mut b = Aggregator::default();
    assert!(b.add_merged(&Compaction::decode(3, &stored).unwrap()));
    // Both slaves' intervals are in the snapshot: their resends are not merged again.
    assert!(!b.add("s0", 3, &interval_of(0, 3)));
    assert!(!b.add("s1", 3, &interval_of(1, 3)));
    for m in [&mut a, &mut b] {
        assert!(m.add("s2", 3, &interval_of(2, 3)));
        m.close_all();
    }
    assert_eq!(a.total.requests(), b.total.requests());
    assert_eq!(
        a.total.requests(),
        (0..3).map(|s| interval_of(s, 3).requests()).sum::<u64>()
    );
    assert_eq!(
        a.total.endpoints["a"].latency_us,
        b.total.endpoints["a"].latency_us
    );
    assert_eq!(
        a.total.endpoints["a"].failures,
        b.total.endpoints["a"].failures
    );
    assert_eq!(a.total.injectors, b.total.injectors);
    assert_eq!(a.per_slave, b.per_slave);
    assert_eq!(a.series[3].requests, b.series[3].requests);
    assert_eq!(a.series[3].slaves, 3);
    assert_eq!(a.series[3].slaves, b.series[3].slaves);
}

proptest::proptest! {
    /// Exactly once, whatever the order and the resends: `add` agrees with a plain set of
    /// (slave, index) pairs.
    #[test]
    fn merges_each_interval_exactly_once(
        arrivals in proptest::collection::vec((0u8..3, 0u64..40), 0..300)
    ) {
        let mut a = Aggregator::default();
        let mut reference = std::collections::HashSet::new();
        for (slave, index) in arrivals {
            let uid = format!("s{slave}");
            let fresh = reference.insert((uid.clone(), index));
            proptest::prop_assert_eq!(a.add(&uid, index, &stats(1)), fresh);
            proptest::prop_assert!(a.has(&uid, index));
        }
        // Open seconds reach the total as they close.
        a.close_all();
        proptest::prop_assert_eq!(a.total.requests(), reference.len() as u64);
    }
}

#[test]
fn remembering_merged_intervals_does_not_grow_with_the_run() {
    let mut a = Aggregator::default();
    let one = stats(0);
    // An overnight run (10 h) of two slaves, one of which joined late and resent twice.
    for k in 0..36_000 {
        a.add("x", k, &one);
        if k >= 500 {
            a.add("y", k, &one);
            a.add("y", k - 3, &one);
        }
    }
    assert_eq!(a.seen["x"].iter().count(), 1);
    assert_eq!(a.seen["y"].iter().count(), 1);
}

/// Statistics of slave `slave`'s interval `index`: the same whenever it is sent again.
fn interval_of(slave: u8, index: u64) -> IntervalStats {
    let requests = (u64::from(slave) * 7 + index) % 5 + 1;
    let mut s = IntervalStats::default();
    let mut e = EndpointStats {
        requests,
        failures: index % 2,
        ..Default::default()
    };
    for r in 0..requests {
        e.latency_us
            .record(1_000 + 997 * (index * 3 + u64::from(slave) + r))
            .unwrap();
    }
    s.endpoints.insert("a".into(), e);
    let cpu = f64::from(slave) * 10.0 + (index % 7) as f64;
    s.injectors.insert(
        IntervalStats::REPORTER.into(),
        lobster_fleet::stats::Resources {
            cpu_percent: cpu,
            ..Default::default()
        },
    );
    s
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// A store that takes an open second's intervals only merged, when the second closes
    /// (the master holds them until then, `control/held.rs`), and late ones and resends as
    /// rows (each compaction replacing that second's rows, as `Store::put_second` does),
    /// rebuilds the same run: the same totals, histograms, injectors, per-slave figures and
    /// series, whatever the order, lateness (past the kept window too) and resends of the
    /// intervals. And it keeps no slave's own interval of a second it compacted, except ones
    /// that came after the second left the kept window and resends (stored again, found
    /// merged when the run is rebuilt).
    #[test]
    fn a_run_rebuilt_from_its_compacted_store_is_the_same_run(
        mut arrivals in proptest::collection::vec((0u8..4, 0u64..90, 0u64..100_000), 1..400)
    ) {
        arrivals.sort_by_key(|a| a.2);
        let all: BTreeSet<String> = (0..4).map(|s| format!("s{s}")).collect();
        let mut a = Aggregator::default();
        // The store: slaves' own intervals by (second, slave), merged seconds by second.
        let mut rows: BTreeMap<(u64, String), IntervalStats> = BTreeMap::new();
        let mut seconds: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut after_window: BTreeSet<(u64, String)> = BTreeSet::new();
        let mut resent: BTreeSet<(u64, String)> = BTreeSet::new();
        let mut store = |a: &mut Aggregator, rows: &mut BTreeMap<(u64, String), IntervalStats>| {
            for c in a.take_compactions() {
                seconds.insert(c.index, c.encode());
                rows.retain(|(k, _), _| *k != c.index);
            }
        };
        for (slave, index, at_ms) in arrivals {
            a.close_ready(Duration::from_millis(at_ms), covers(&all), WAIT);
            store(&mut a, &mut rows);
            let uid = format!("s{slave}");
            if index + (KEPT as u64) < a.next_to_close {
                after_window.insert((index, uid.clone()));
            }
            let stats = interval_of(slave, index);
            // One of an open second is held, the rest stored first (a resend of a compacted
            // interval is stored again), then merged.
            if !a.is_open(index) || a.has(&uid, index) {
                rows.entry((index, uid.clone())).or_insert_with(|| stats.clone());
            }
            if !a.add(&uid, index, &stats) {
                resent.insert((index, uid));
            }
        }
        a.close_all();
        store(&mut a, &mut rows);

        for (index, uid) in rows.keys() {
            proptest::prop_assert!(
                !seconds.contains_key(index)
                    || after_window.contains(&(*index, uid.clone()))
                    || resent.contains(&(*index, uid.clone())),
                "slave {} still has its own interval of compacted second {}", uid, index
            );
        }
        let mut b = Aggregator::default();
        for (index, payload) in &seconds {
            let c = Compaction::decode(*index, payload).unwrap();
            proptest::prop_assert!(b.add_merged(&c));
        }
        for ((index, uid), stats) in &rows {
            b.add(uid, *index, stats);
        }
        b.close_all();

        proptest::prop_assert_eq!(b.total.requests(), a.total.requests());
        proptest::prop_assert_eq!(&b.total.endpoints["a"].latency_us, &a.total.endpoints["a"].latency_us);
        proptest::prop_assert_eq!(b.total.endpoints["a"].failures, a.total.endpoints["a"].failures);
        proptest::prop_assert_eq!(&b.total.injectors, &a.total.injectors);
        proptest::prop_assert_eq!(&b.per_slave, &a.per_slave);
        // The same seconds; the run closed empty seconds past the last interval as its clock
        // went by, the rebuild only those up to the last interval.
        let counts = |x: &Aggregator| -> Vec<(u64, u64, u64, u32)> {
            let last = x.series.iter().rposition(|p| p.slaves > 0).map_or(0, |i| i + 1);
            x.series[..last].iter().map(|p| (p.index, p.requests, p.failures, p.slaves)).collect()
        };
        proptest::prop_assert_eq!(counts(&b), counts(&a));
    }
}

/// A second slaves reported is handed out once at its close, with one reporter as with two
/// (its interval is stored no other way); again when it leaves the kept window only if a
/// late interval changed it.
#[test]
fn compactions_are_handed_out_at_the_close_and_after_late_intervals() {
    let mut a = Aggregator::default();
    let both: BTreeSet<String> = ["s0".to_string(), "s1".to_string()].into();
    a.add("s0", 0, &interval_of(0, 0));
    a.add("s1", 0, &interval_of(1, 0));
    a.add("s0", 1, &interval_of(0, 1));
    a.close_ready(Duration::from_secs(1), covers(&both), WAIT);
    let c = a.take_compactions();
    assert_eq!(c.iter().map(|c| c.index).collect::<Vec<_>>(), [0]);
    assert_eq!(
        c[0].reporters,
        BTreeMap::from([("s0".into(), 1), ("s1".into(), 3)])
    );
    assert_eq!(c[0].stats.requests(), 1 + 3);
    assert_eq!(
        c[0].stats.injectors.keys().collect::<Vec<_>>(),
        ["s0", "s1"],
        "resources under each reporter"
    );
    // Second 1 closes with one reporter, compacted all the same. Its late interval makes
    // it two.
    a.close_ready(Duration::from_secs(7), covers(&both), WAIT);
    let one: Vec<(u64, usize)> = a
        .take_compactions()
        .iter()
        .map(|c| (c.index, c.reporters.len()))
        .collect();
    assert_eq!(one, [(1, 1)]);
    a.add("s1", 1, &interval_of(1, 1));
    for k in 2..(KEPT as u64 + 3) {
        a.add("s0", k, &interval_of(0, k));
        a.add("s1", k, &interval_of(1, k));
    }
    a.close_ready(Duration::from_secs(KEPT as u64 + 3), covers(&both), WAIT);
    let again: Vec<(u64, usize)> = a
        .take_compactions()
        .iter()
        .filter(|c| c.index < 2)
        .map(|c| (c.index, c.reporters.len()))
        .collect();
    assert_eq!(
        again,
        [(1, 2)],
        "second 0 unchanged, second 1 whole at last"
    );
}

/// A run rebuilt from its merged seconds does not hand them out again (an overnight run's
/// every second at once); a second that also has a slave's own interval is, whole.
#[test]
fn a_rebuilt_second_is_compacted_again_only_with_new_intervals() {
    let mut a = Aggregator::default();
    for k in 0..3 {
        a.add("s0", k, &interval_of(0, k));
        a.add("s1", k, &interval_of(1, k));
    }
    a.close_all();
    let stored: Vec<Compaction> = a.take_compactions();
    assert_eq!(stored.len(), 3);
    let mut b = Aggregator::default();
    for c in &stored {
        assert!(b.add_merged(c));
        assert!(!b.add_merged(c), "a second merged once");
    }
    assert!(
        !b.add("s1", 2, &interval_of(1, 2)),
        "a resend after a rebuild"
    );
    b.add("s2", 2, &interval_of(2, 2));
    b.close_all();
    let again: Vec<(u64, usize)> = b
        .take_compactions()
        .iter()
        .map(|c| (c.index, c.reporters.len()))
        .collect();
    assert_eq!(again, [(2, 3)]);
    assert_eq!(
        b.total.requests(),
        a.total.requests() + interval_of(2, 2).requests()
    );
}

/// A second stored by an earlier version, its histograms in HdrHistogram's V2 encoding (what
/// slaves and the store wrote before the sparse bucket words), reads back bucket for bucket.
#[test]
fn a_second_stored_with_v2_histograms_by_an_earlier_version_reads_back_the_same() {
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    use lobster_fleet::proto;
    use prost::Message;

    let mut st = interval_of(1, 2);
    let e = st.endpoints.get_mut("a").unwrap();
    assert_eq!(e.requests, 5);
    for v in [40u64, 40, 90_000, 3_600_000] {
        lobster_fleet::stats::Phases::record(&mut e.phases.waiting_us, v);
    }
    let v2 = |h: &Histogram<u64>| {
        let mut b = Vec::new();
        V2Serializer::new().serialize(h, &mut b).unwrap();
        bytes::Bytes::from(b)
    };
    let mut wire = st.to_proto("", 0, false);
    let mine = &st.endpoints["a"];
    wire.endpoints[0].latency_us = v2(&mine.latency_us);
    wire.endpoints[0].waiting_us = v2(&mine.phases.waiting_us);
    assert_eq!(
        wire.endpoints[0].latency_us[..4],
        0x1c84_9313u32.to_be_bytes()
    );
    let stored = proto::MergedSecond {
        stats: Some(wire),
        reporters: vec![proto::MergedReporter {
            slave_uid: "s1".into(),
            requests: mine.requests,
            resources: None,
        }],
    }
    .encode_to_vec();
    let back = Compaction::decode(2, &stored).unwrap();
    let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    };
    let got = &back.stats.endpoints["a"];
    assert_eq!(got.requests, mine.requests);
    assert_eq!(buckets(&got.latency_us), buckets(&mine.latency_us));
    assert_eq!(got.phases.waiting_us.len(), 4);
    assert_eq!(
        buckets(&got.phases.waiting_us),
        buckets(&mine.phases.waiting_us)
    );
}

/// The single pass the master takes for intervals of open seconds merges as `add` does; a
/// refused interval opens no second, counts for no slave and leaves its second as it was,
/// and the slave's next, valid copy of it is merged.
#[test]
fn a_refused_interval_of_an_open_second_leaves_no_trace() {
    let mut room = CheckRoom::default();
    let (mut one, mut two) = (Aggregator::default(), Aggregator::default());
    let wire = stats(5).to_proto("r", 0, false);
    assert_eq!(
        one.check_and_add_open("x", 0, &wire, &mut room),
        Ok(Some(5))
    );
    assert_eq!(one.check_and_add_open("x", 0, &wire, &mut room), Ok(None));
    assert!(two.add("x", 0, &stats(5)));

    // More latency samples than requests: refused after its buckets were added.
    let mut bad = stats(3).to_proto("r", 1, false);
    bad.endpoints[0].requests = 1;
    assert!(one.check_and_add_open("y", 1, &bad, &mut room).is_err());
    let mut bad0 = stats(3).to_proto("r", 0, false);
    bad0.endpoints[0].requests = 1;
    assert!(one.check_and_add_open("y", 0, &bad0, &mut room).is_err());
    assert_eq!(
        one.open_seconds(),
        1,
        "no second opened by a refused interval"
    );
    assert!(!one.has("y", 0) && !one.has("y", 1));

    let good = stats(3).to_proto("r", 0, false);
    assert_eq!(
        one.check_and_add_open("y", 0, &good, &mut room),
        Ok(Some(3))
    );
    assert!(two.add("y", 0, &stats(3)));
    let all: BTreeSet<String> = ["x".to_string(), "y".to_string()].into();
    let (a, b) = (
        one.close_ready(Duration::from_millis(3000), covers(&all), WAIT),
        two.close_ready(Duration::from_millis(3000), covers(&all), WAIT),
    );
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].point.requests, 8);
    assert_eq!(a[0].point, b[0].point);
    assert_eq!(
        one.total.endpoints["a"].latency_us,
        two.total.endpoints["a"].latency_us
    );
}
