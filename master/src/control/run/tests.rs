//! The run lifecycle as a table of events and expected messages.

use super::*;
use lobster_fleet::scenario::Profile;
use lobster_fleet::stats::{EndpointStats, IntervalStats};

fn scenario(extra: &str) -> Scenario {
    lobster_fleet::scenario::parse(
        &format!("name: t\ntarget: http://127.0.0.1:9\nduration: 10s\nload: {{users: 10}}\nrequests: [{{name: a, path: /}}]\n{extra}"),
        "t.yaml",
    )
    .unwrap()
}

fn cand(uid: &str) -> Candidate {
    Candidate {
        uid: uid.into(),
        slave_id: format!("s-{uid}"),
        instance_id: "i-1".into(),
        slave_index: 1,
        millicores: 1000,
    }
}

/// How many of the scenario's 10 users a share owns.
fn users(share: Option<&proto::Share>) -> u64 {
    let s = share.unwrap();
    lobster_fleet::stripe::Stripe::new(s.stripe_period, s.stripe_offsets.clone())
        .unwrap()
        .count_below(10)
}

fn kinds(out: &Outbox) -> Vec<(String, &'static str, u64)> {
    out.iter()
        .map(|(u, m)| match m.kind.as_ref().unwrap() {
            Down::Assign(a) => (u.clone(), "assign", users(a.share.as_ref())),
            Down::Rescale(r) => (u.clone(), "rescale", users(r.share.as_ref())),
            // A stop's number is the load time (ms) it ends the shares at.
            Down::Stop(s) => (u.clone(), "stop", s.at_load_ms.unwrap()),
            Down::Suspend(_) => (u.clone(), "suspend", 0),
            Down::Resume(_) => (u.clone(), "resume", 0),
            _ => (u.clone(), "other", 0),
        })
        .collect()
}

fn stats(requests: u64, latency_ms: u64) -> IntervalStats {
    let mut s = IntervalStats::default();
    let mut e = EndpointStats {
        requests,
        ..Default::default()
    };
    for _ in 0..requests {
        e.latency_us.record(latency_ms * 1000).unwrap();
    }
    s.endpoints.insert("a".into(), e);
    s
}

const LEASE: Duration = Duration::from_secs(3);

#[test]
fn quorum_start_rescale_on_join_and_loss() {
    let t0 = Instant::now();
    let mut r = Run::new(
        "r".into(),
        scenario(""),
        RunOptions {
            quorum: 2,
            quorum_timeout_ms: 5000,
        },
        t0,
        0,
    );
    assert!(
        r.try_start(t0, 0, vec![cand("a")]).is_empty(),
        "below quorum"
    );
    let out = r.try_start(t0, 0, vec![cand("a"), cand("b")]);
    assert_eq!(
        kinds(&out),
        vec![("a".into(), "assign", 5), ("b".into(), "assign", 5)]
    );
    assert_eq!(r.phase, Phase::Running);

    let t1 = t0 + Duration::from_secs(1);
    let out = r.add_slave(t1, cand("c"));
    assert_eq!(
        kinds(&out),
        vec![
            ("a".into(), "rescale", 4),
            ("b".into(), "rescale", 3),
            ("c".into(), "assign", 3)
        ]
    );
    let out = r.lose_slave(t1, "b", "killed");
    assert_eq!(
        kinds(&out),
        vec![("a".into(), "rescale", 5), ("c".into(), "rescale", 5)]
    );
    assert_eq!(r.lost.len(), 1);
    assert!(
        r.lose_slave(t1, "b", "again").is_empty(),
        "a lost slave is lost once"
    );
    // Ordinals (the base of `{{serial}}`) are unique and never reused, even for a slave
    // that comes back.
    let out = r.add_slave(t1, cand("b"));
    let assigned: Vec<u32> = out
        .iter()
        .filter_map(|(_, m)| match m.kind.as_ref() {
            Some(Down::Assign(a)) => Some(a.ordinal),
            _ => None,
        })
        .collect();
    assert_eq!(assigned, vec![3]);
    let mut ordinals: Vec<u32> = r.participants.values().map(|p| p.ordinal).collect();
    ordinals.sort();
    assert_eq!(ordinals, vec![0, 2, 3]);
}

/// Slaves that join or are lost together are resliced once: each slave gets one message with
/// its final share (one per loss overflowed every session's queue at 10,000 slaves).
#[test]
fn slaves_that_join_or_are_lost_together_are_resliced_once() {
    let t0 = Instant::now();
    let (mut r, _) = started_with_a_and_b(t0);
    let t1 = t0 + Duration::from_secs(1);
    // Slaves that join together likewise: one message each.
    let out = r.add_slaves(t1, [cand("c"), cand("d"), cand("a")]);
    assert_eq!(
        kinds(&out),
        vec![
            ("a".into(), "rescale", 3),
            ("b".into(), "rescale", 3),
            ("c".into(), "assign", 2),
            ("d".into(), "assign", 2)
        ]
    );
    let out = r.lose_slaves(t1, ["b", "c", "nobody"], "session closed");
    assert_eq!(
        kinds(&out),
        vec![("a".into(), "rescale", 5), ("d".into(), "rescale", 5)]
    );
    assert_eq!(r.lost.len(), 2);
    // Losing the rest stops the run; nothing is resliced over nobody.
    let out = r.lose_slaves(t1, ["a", "d"], "session closed");
    assert!(kinds(&out).iter().all(|(_, kind, _)| *kind != "rescale"));
    assert_eq!(r.lost.len(), 4);
    assert_eq!(r.phase, Phase::Stopping);
}

/// A run of the default scenario (quorum 2) started at `t0` on slaves `a` and `b`, and its
/// start's messages.
fn started_with_a_and_b(t0: Instant) -> (Run, Outbox) {
    let options = RunOptions {
        quorum: 2,
        quorum_timeout_ms: 5000,
    };
    let mut r = Run::new("r".into(), scenario(""), options, t0, 0);
    let out = r.try_start(t0, 0, vec![cand("a"), cand("b")]);
    (r, out)
}

/// The load time each message's share applies from.
fn froms(out: &Outbox) -> Vec<Option<u64>> {
    out.iter()
        .map(|(_, m)| match m.kind.as_ref().unwrap() {
            Down::Assign(a) => a.share.as_ref().unwrap().from_load_ms,
            Down::Rescale(r) => r.share.as_ref().unwrap().from_load_ms,
            _ => None,
        })
        .collect()
}

/// Every slave switches to a new slicing at the same load instant, ahead of the master's
/// clock by the lead, so that its message arrives first (each slave switching as its message
/// arrived sent the arrivals near the switch twice or never: CI, 4793 of 4800).
#[test]
fn a_new_slicing_applies_from_one_load_instant_ahead_of_the_clock() {
    use super::members::SWITCH_LEAD_MS;
    let t0 = Instant::now();
    let (mut r, out) = started_with_a_and_b(t0);
    assert_eq!(froms(&out), vec![Some(0), Some(0)], "the start's shares");
    let t1 = t0 + Duration::from_millis(1_200);
    let out = r.add_slave(t1, cand("c"));
    assert_eq!(froms(&out), vec![Some(1_200 + SWITCH_LEAD_MS); 3]);
    let t2 = t1 + Duration::from_millis(100);
    let out = r.lose_slave(t2, "b", "killed");
    assert_eq!(froms(&out), vec![Some(1_300 + SWITCH_LEAD_MS); 2]);
    // A load change resends each share as it is, switch time included.
    let (out, _) = r
        .change_load(t2 + Duration::from_millis(50), 4, Duration::ZERO)
        .unwrap();
    assert_eq!(froms(&out), vec![Some(1_300 + SWITCH_LEAD_MS); 2]);
}

#[test]
fn quorum_timeout_aborts() {
    let t0 = Instant::now();
    let mut r = Run::new(
        "r".into(),
        scenario(""),
        RunOptions {
            quorum: 3,
            quorum_timeout_ms: 2000,
        },
        t0,
        0,
    );
    r.tick(t0 + Duration::from_secs(1), LEASE);
    assert_eq!(r.phase, Phase::Init);
    r.tick(t0 + Duration::from_secs(2), LEASE);
    assert_eq!(r.phase, Phase::Done(Status::Aborted));
    assert!(r.report.as_ref().unwrap().stop.reason.contains("quorum"));
}

#[test]
fn duration_end_stop_and_report() {
    let t0 = Instant::now();
    let mut r = Run::new(
        "r".into(),
        scenario(""),
        RunOptions {
            quorum: 1,
            quorum_timeout_ms: 5000,
        },
        t0,
        0,
    );
    r.try_start(t0, 0, vec![cand("a"), cand("b")]);
    for i in 0..10 {
        r.on_stats("a", i, false, &stats(10, 5));
        r.on_stats("b", i, false, &stats(10, 5));
    }
    let (out, points) = r.tick(t0 + Duration::from_secs(10), LEASE);
    assert_eq!(points.len(), 10);
    assert_eq!(
        kinds(&out),
        vec![("a".into(), "stop", 10_000), ("b".into(), "stop", 10_000)]
    );
    assert_eq!(r.phase, Phase::Stopping);
    r.on_stopped("a", t0 + Duration::from_millis(10_050));
    r.on_stats("a", 10, true, &stats(1, 5));
    r.tick(t0 + Duration::from_millis(10_100), LEASE);
    assert_eq!(r.phase, Phase::Stopping, "waits for b's last interval");
    r.on_stats("b", 10, true, &stats(1, 5));
    r.tick(t0 + Duration::from_millis(10_150), LEASE);
    assert_eq!(
        r.phase,
        Phase::Stopping,
        "waits for b's stop acknowledgement"
    );
    r.on_stopped("b", t0 + Duration::from_millis(10_020));
    r.tick(t0 + Duration::from_millis(10_200), LEASE);
    let rep = r.report.as_ref().unwrap();
    assert_eq!(rep.status, Status::Passed);
    assert_eq!(rep.totals.requests, 202);
    assert_eq!(rep.stop.propagation_ms, Some(50));
    assert!(rep.stop.missing_final.is_empty());
}

#[test]
fn sla_violation_aborts_at_once() {
    let t0 = Instant::now();
    let mut r = Run::new(
        "r".into(),
        scenario("sla: [{metric: p99, max: 100ms}]"),
        RunOptions {
            quorum: 1,
            quorum_timeout_ms: 5000,
        },
        t0,
        0,
    );
    r.try_start(t0, 0, vec![cand("a")]);
    r.on_stats("a", 0, false, &stats(10, 500));
    let (out, _) = r.tick(t0 + Duration::from_millis(1_010), LEASE);
    assert_eq!(kinds(&out), vec![("a".into(), "stop", 1_010)]);
    r.on_stats("a", 1, true, &stats(1, 500));
    r.on_stopped("a", t0 + Duration::from_millis(1_050));
    r.tick(t0 + Duration::from_millis(1_100), LEASE);
    let rep = r.report.as_ref().unwrap();
    assert_eq!(rep.status, Status::Aborted);
    assert!(!rep.sla[0].passed && rep.sla[0].aborted_run);
}

#[test]
fn suspend_freezes_load_time_and_detached_slaves_expire() {
    let t0 = Instant::now();
    let mut r = Run::new(
        "r".into(),
        scenario(""),
        RunOptions {
            quorum: 1,
            quorum_timeout_ms: 5000,
        },
        t0,
        0,
    );
    r.try_start(t0, 0, vec![cand("a"), cand("b")]);
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(kinds(&r.suspend(t1).unwrap()).len(), 2);
    assert!(r.suspend(t1).is_err());
    let t2 = t1 + Duration::from_secs(5);
    r.resume(t2).unwrap();
    assert_eq!(r.load_elapsed(t2), Duration::from_secs(2));
    // b's session went away (as after a master restart): it has a lease to come back.
    r.participants.get_mut("b").unwrap().detached_since = Some(t2);
    let (out, _) = r.tick(t2 + LEASE + Duration::from_millis(1), LEASE);
    assert_eq!(kinds(&out), vec![("a".into(), "rescale", 10)]);
    assert_eq!(r.lost[0].slave_id, "s-b");
    // Stopped 1 s after the resume: the shares end at load time 3 s, not wall time 8 s.
    let t3 = t2 + Duration::from_secs(1);
    let out = r.request_stop(t3, "asked", Some(Status::Aborted));
    assert_eq!(kinds(&out), vec![("a".into(), "stop", 3_000)]);
}

/// Stats of `requests` requests of which `failures` failed.
fn failing(requests: u64, failures: u64) -> IntervalStats {
    let mut s = stats(requests, 5);
    let e = s.endpoints.get_mut("a").unwrap();
    e.failures = failures;
    e.errors.insert("status_5xx".into(), failures);
    s
}

/// Runs a 10 s, one-slave run of `scenario` to its end with `per_second` stats each second,
/// stopped by the operator at `stop_at` seconds when given; returns the report.
fn finish_with(
    scenario: Scenario,
    per_second: IntervalStats,
    operator_stop_at: Option<u64>,
) -> crate::report::Report {
    let t0 = Instant::now();
    let mut r = Run::new(
        "r".into(),
        scenario,
        RunOptions {
            quorum: 1,
            quorum_timeout_ms: 5000,
        },
        t0,
        0,
    );
    r.try_start(t0, 0, vec![cand("a")]);
    let end = operator_stop_at.unwrap_or(10);
    for i in 0..end {
        r.on_stats("a", i, false, &per_second);
        r.tick(t0 + Duration::from_millis(i * 1000 + 1010), LEASE);
    }
    let at = t0 + Duration::from_millis(end * 1000 + 20);
    if operator_stop_at.is_some() {
        r.request_stop(
            at,
            "stopped by the operator: interrupted in `lobster run` (Ctrl-C, SIGINT)",
            Some(Status::Aborted),
        );
    }
    r.tick(at, LEASE);
    r.on_stats("a", end, true, &IntervalStats::default());
    r.on_stopped("a", at);
    r.tick(at + Duration::from_millis(50), LEASE);
    r.report.clone().expect("finished")
}

/// (what, scenario extra, stats per second, operator stop at, status, words of a reason)
type VerdictCase = (
    &'static str,
    &'static str,
    IntervalStats,
    Option<u64>,
    Status,
    &'static str,
);

#[test]
fn the_verdict_table() {
    let cases: Vec<VerdictCase> = vec![
        ("clean", "", stats(10, 5), None, Status::Passed, ""),
        (
            "every request failed, nothing accepted",
            "",
            failing(10, 10),
            None,
            Status::Failed,
            "100 of 100 requests failed",
        ),
        (
            "failures within max_error_rate",
            "max_error_rate: 20%",
            failing(10, 1),
            None,
            Status::Passed,
            "",
        ),
        (
            "failures above max_error_rate",
            "max_error_rate: 5%",
            failing(10, 1),
            None,
            Status::Failed,
            "more than the 5% the scenario accepts",
        ),
        (
            "an error_rate rule over all requests judges alone",
            "sla: [{metric: error_rate, max: 20%, window: 2s}]",
            failing(10, 1),
            None,
            Status::Passed,
            "",
        ),
        (
            "a rule whose window never filled",
            "sla: [{metric: rps, min: 1, window: 20s}]",
            stats(10, 5),
            None,
            Status::Failed,
            "was never judged",
        ),
        (
            "a person stopped it",
            "",
            stats(10, 5),
            Some(4),
            Status::Aborted,
            "Ctrl-C",
        ),
    ];
    for (what, extra, per_second, stop, status, words) in cases {
        let rep = finish_with(scenario(extra), per_second, stop);
        assert_eq!(rep.status, status, "{what}: {:?}", rep.reasons);
        if words.is_empty() {
            assert!(rep.reasons.is_empty(), "{what}: {:?}", rep.reasons);
        } else {
            assert!(
                rep.reasons.iter().any(|r| r.contains(words)),
                "{what}: {:?}",
                rep.reasons
            );
        }
    }
}

#[test]
fn a_load_change_reaches_every_slave_new_joiners_and_a_restart() {
    let t0 = Instant::now();
    let (mut r, _) = started_with_a_and_b(t0);
    let t3 = t0 + Duration::from_secs(3);
    let (out, at) = r
        .change_load(t3, 40, Duration::from_secs(2))
        .expect("a running run takes a change");
    assert_eq!(at, 3_500, "half a second ahead of the master's load clock");
    assert_eq!(out.len(), 2, "every active slave");
    for (_, m) in &out {
        let Some(Down::Rescale(rs)) = &m.kind else {
            panic!("{m:?}")
        };
        let p: Profile = serde_json::from_str(&rs.profile_json).unwrap();
        assert_eq!(
            (p.value_at(3_000), p.value_at(4_500), p.value_at(9_000)),
            (10.0, 25.0, 40.0)
        );
    }
    // A slave joining later is assigned the changed scenario.
    let out = r.add_slave(t0 + Duration::from_secs(6), cand("c"));
    let Some(Down::Assign(a)) = out
        .iter()
        .find(|(u, _)| u == "c")
        .and_then(|(_, m)| m.kind.clone())
    else {
        panic!("no assign")
    };
    assert_eq!(
        Scenario::from_json(&a.scenario_json)
            .unwrap()
            .load
            .value_at(9_000),
        40.0
    );
    // A restarted master keeps the change.
    let p = r.persisted();
    let back = Run::recover("r".into(), scenario(""), p, 0, t0, 0, LEASE);
    assert_eq!(back.scenario.load.value_at(9_000), 40.0);
    // Not once the run is over.
    r.request_stop(t0 + Duration::from_secs(7), "test", Some(Status::Aborted));
    let mut done = r;
    done.phase = Phase::Done(Status::Aborted);
    assert!(
        done.change_load(t0 + Duration::from_secs(8), 1, Duration::ZERO)
            .is_err()
    );
}

/// A run rebuilt from the store closes the seconds behind its replay as it goes (at most 30
/// open, not every second of the run: each holds its histograms until it closes), but none a
/// tick would still wait for, and ends with the series of a run closed all at once.
#[test]
fn a_rebuilt_run_closes_the_seconds_behind_its_replay() {
    let t0 = Instant::now();
    let start = || {
        let long = lobster_fleet::scenario::parse(
            "name: t\ntarget: http://127.0.0.1:9\nduration: 300s\nload: {users: 10}\nrequests: [{name: a, path: /}]\n",
            "t.yaml",
        )
        .unwrap();
        let options = RunOptions {
            quorum: 2,
            quorum_timeout_ms: 5000,
        };
        let mut r = Run::new("r".into(), long, options, t0, 0);
        r.try_start(t0, 0, vec![cand("a"), cand("b")]);
        r
    };
    let feed = |r: &mut Run, k: u64| {
        r.on_stats("a", k, false, &stats(k % 7 + 1, 5 + k % 3));
        r.on_stats("b", k, false, &stats(3, 9));
    };
    let now = t0 + Duration::from_secs(200);
    let (mut replayed, mut at_once) = (start(), start());
    let mut most_open = 0;
    for k in 0..150 {
        if k % 30 == 0 {
            replayed.close_replayed(k, now, LEASE);
        }
        feed(&mut replayed, k);
        feed(&mut at_once, k);
        most_open = most_open.max(replayed.agg.open_seconds());
    }
    assert_eq!(most_open, 30);
    assert_eq!(at_once.agg.open_seconds(), 150);
    // Seconds that ended within a lease of now stay open, as a tick would leave them.
    let mut recent = start();
    for k in 0..150 {
        feed(&mut recent, k);
    }
    recent.close_replayed(150, t0 + Duration::from_secs(152), LEASE);
    assert_eq!(recent.agg.open_seconds(), 1, "second 149 ended 2 s ago");
    replayed.tick(now, LEASE);
    at_once.tick(now, LEASE);
    // Both closed every second up to a lease ago (empty ones past the data too).
    assert_eq!(replayed.agg.series.len(), 197);
    assert_eq!(replayed.agg.series, at_once.agg.series);
    assert_eq!(replayed.agg.total.requests(), at_once.agg.total.requests());
}
