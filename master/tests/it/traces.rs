//! `trace:`: each slave keeps its sampled per-request records on its own disk, and `lobster
//! runs traces` fetches them through the master after the run, merged in time order.

use std::time::Duration;

use crate::common::*;

/// A run's report once `lobster run FILE --detach --master API` and `runs wait` ended it.
fn run_detached(env: &Env, api: &str, file: &std::path::Path, json: &str) -> serde_json::Value {
    let id = detach(env, api, file);
    let (code, r) = wait_report(env, api, &id, json);
    assert!(code == 0 || code == 1, "{r}");
    r
}

/// `lobster runs traces RUN --master API --out FILE`: exit code, standard error, records.
fn traces(env: &Env, api: &str, id: &str, out: &str) -> (i32, String, Vec<serde_json::Value>) {
    let path = env.path(out);
    let (code, stdout, err) = env.cli(&[
        "runs",
        "traces",
        id,
        "--master",
        api,
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(stdout.is_empty(), "records go to --out: {stdout}");
    let records = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON record"))
        .collect();
    (code, err, records)
}

/// Requests each slave sent, by slave id, from the report.
fn per_slave(r: &serde_json::Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = r["injectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["slave_id"].as_str().unwrap().to_string(),
                i["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Two slaves, two traced runs. With `sample: 10%` (failures only when sampled), each slave
/// recorded exactly ⌊n/10⌋ of its n requests, and the merged file holds them all in time
/// order, each tagged with its slave. With `sample: 0%` and `errors: all`, the trace is exactly
/// the failed requests. A slave that is gone is named, and the rest still fetched (exit 1);
/// a run without `trace:` is refused (exit 2).
#[test]
fn each_slave_keeps_its_sampled_share_and_the_merge_is_in_time_order() {
    let env = Env::new();
    let (_t, addr) = env.target();
    let (_m, api, grpc) = env.master(None, &[]);
    let _s1 = env.slave(&grpc, 1, 2);
    let mut s2 = env.slave(&grpc, 2, 2);
    wait_slaves(&api, 2, Duration::from_secs(60));

    let sampled = env.scenario(
        "sampled.yaml",
        &format!(
            "name: sampled\ntarget: http://{addr}\nduration: 4s\nload: {{rate: 40}}\ndata: {{items: [a1, b2, c3], strategy: cycle}}\nrequests:\n  - {{name: home, path: '/item/{{{{item}}}}'}}\ntrace: {{sample: 10%, errors: sampled, output: [item]}}\n"
        ),
    );
    let r = run_detached(&env, &api, &sampled, "sampled.json");
    let id = r["run_id"].as_str().unwrap().to_string();
    let sent = per_slave(&r);
    assert_eq!(sent.len(), 2, "both slaves took part: {sent:?}");
    assert!(sent.iter().all(|(_, n)| *n >= 40), "{sent:?}");

    let failing = env.scenario(
        "failing.yaml",
        &format!(
            "name: failing\ntarget: http://{addr}\nduration: 3s\nload: {{rate: 40}}\nrequests:\n  - {{name: home, path: /}}\n  - {{name: bad, path: /status/503}}\ntrace: {{sample: 0%}}\n"
        ),
    );
    let f = run_detached(&env, &api, &failing, "failing.json");
    let failed_id = f["run_id"].as_str().unwrap().to_string();

    // The first run's trace, fetched after the second ran (the slaves keep their last runs').
    let (code, err, records) = traces(&env, &api, &id, "sampled.jsonl");
    assert_eq!(code, 0, "{err}");
    let mut by_slave: Vec<(String, u64)> = Vec::new();
    for (slave, n) in &sent {
        let kept = records
            .iter()
            .filter(|r| r["slave"] == slave.as_str())
            .count() as u64;
        by_slave.push((slave.clone(), kept));
        assert_eq!(kept, n / 10, "slave {slave} sent {n}: ⌊n/10⌋ sampled");
    }
    assert_eq!(
        records.len() as u64,
        by_slave.iter().map(|s| s.1).sum::<u64>()
    );
    let times: Vec<u64> = records
        .iter()
        .map(|r| r["t_us"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    // The records are the run's requests: within its load time, answered by the target.
    let span_s = (times[times.len() - 1] - times[0]) as f64 / 1e6;
    assert!(span_s <= 4.5, "{span_s} s");
    assert!(
        records
            .iter()
            .all(|r| r["endpoint"] == "home" && r["status"] == 200)
    );
    // Each carries the data item it was sent with (`trace.output`).
    assert!(
        records
            .iter()
            .all(|r| ["a1", "b2", "c3"].contains(&r["values"]["item"].as_str().unwrap_or("-"))),
        "{:?}",
        records.first()
    );
    assert!(
        records
            .iter()
            .all(|r| r["latency_us"].as_u64().unwrap() > 0)
    );
    assert!(
        err.contains(&format!(
            "{} records of run {id} from 2 slave(s)",
            records.len()
        )),
        "{err}"
    );

    // The second run's trace is its failures, exactly.
    let (code, err, records) = traces(&env, &api, &failed_id, "failing.jsonl");
    assert_eq!(code, 0, "{err}");
    // The mix is a weighted random draw (1:1 here, 120 requests): the failures are exactly the
    // `bad` requests the report counted, whatever the draw gave (at least 20 with 1:1 odds
    // fails about once in 10^12 runs; 3:1 odds failed a CI run with 19).
    let failures = f["totals"]["failures"].as_u64().unwrap();
    assert_eq!(failures, endpoint(&f, "bad")["requests"].as_u64().unwrap());
    assert_eq!(endpoint(&f, "home")["failures"].as_u64(), Some(0));
    assert!(failures >= 20, "{failures}");
    assert_eq!(records.len() as u64, failures);
    assert!(
        records
            .iter()
            .all(|r| r["endpoint"] == "bad" && r["status"] == 503 && r["error"] == "status_503")
    );

    // A slave that is gone is named; the other's records are still written.
    s2.signal(nix::sys::signal::Signal::SIGKILL);
    s2.wait_exit(Duration::from_secs(10));
    let (code, err, records) = eventually(
        "the master sees the slave gone",
        Duration::from_secs(60),
        || {
            let got = traces(&env, &api, &id, "partial.jsonl");
            (got.0 == 1).then_some(got)
        },
    );
    assert_eq!(code, 1);
    let (gone, there) = if err.contains(&format!("not fetched: {} (not connected", sent[0].0)) {
        (&by_slave[0], &by_slave[1])
    } else {
        (&by_slave[1], &by_slave[0])
    };
    assert!(
        err.contains(&format!("not fetched: {} (not connected", gone.0)),
        "{err}"
    );
    assert_eq!(
        records.len() as u64,
        there.1,
        "the slave still there: {err}"
    );
    assert!(records.iter().all(|r| r["slave"] == there.0.as_str()));

    // A run without a trace is refused, saying why.
    let plain = env.scenario(
        "plain.yaml",
        &format!(
            "name: plain\ntarget: http://{addr}\nduration: 1s\nload: {{rate: 5}}\nrequests:\n  - {{name: home, path: /}}\n"
        ),
    );
    let p = run_detached(&env, &api, &plain, "plain.json");
    let (code, err, _) = traces(&env, &api, p["run_id"].as_str().unwrap(), "none.jsonl");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("kept no trace: its scenario has no `trace:`"),
        "{err}"
    );
}

/// `lobster run --local-slaves 2 --trace-out FILE`: the trace is fetched before the local
/// slaves end with the command; with `sample: 100%` it holds every request of the report.
#[test]
fn a_local_run_writes_its_trace_before_its_slaves_end() {
    let env = Env::new();
    let (_t, addr) = env.target();
    let file = env.scenario(
        "local.yaml",
        &format!(
            "name: local\ntarget: http://{addr}\nduration: 2s\nload: {{rate: 30}}\nrequests:\n  - {{name: home, path: /}}\ntrace: {{}}\n"
        ),
    );
    let out = env.path("local.jsonl");
    let (code, stdout, err, r) =
        lobster_run(&env, &file, 2, &["--trace-out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let r = r.unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        r["totals"]["requests"].as_u64().unwrap(),
        "{err}"
    );
    let slaves: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l["slave"].as_str().unwrap()).collect();
    assert_eq!(slaves.len(), 2, "both local slaves' records: {slaves:?}");
}
