//! `runs compare` as a CI gate on real runs. Its figures are latencies of a loaded machine's
//! own target, so it runs here, one test at a time (a second busy test on 2 cores bent a
//! baseline's p95 from 200 ms to 270 ms).

use crate::common::*;

/// `runs compare` gates CI on a baseline: two runs of one scenario pass, a run whose server
/// answers twice as slowly regresses (exit 1, its p95 named); `runs rm` deletes finished runs
/// only, and a list with one unknown id deletes nothing.
#[test]
fn runs_compare_flags_a_doubled_p95_and_runs_rm_deletes_finished_runs() {
    let env = Env::new();
    let (_target, addr) = env.target();
    // Open model: the throughput is the rate in both runs, only the latency moves. A 200 ms
    // answer leaves 40 ms of the 20 % tolerance for a loaded machine's jitter.
    let run = |delay: u32| {
        let text = format!(
            "name: gate\ntarget: http://{addr}\nduration: 3s\nload: {{rate: 20}}\nrequests:\n  - {{name: page, path: /delay/{delay}}}\n"
        );
        let file = env.scenario("gate.yaml", &text);
        let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
        assert_eq!(code, 0, "{out}\n{err}");
        r.unwrap()["run_id"].as_str().unwrap().to_string()
    };
    let (base, same, slow) = (run(200), run(200), run(400));

    let (code, out, err) = env.cli(&["runs", "compare", &base, &same]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("no regression"), "{out}");

    let json = env.path("cmp.json");
    let (code, out, err) = env.cli(&[
        "runs",
        "compare",
        &base,
        &slow,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("REGRESSED"), "{out}");
    let c = report(&json);
    let regressions: Vec<&str> = c["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(
        regressions.iter().any(|r| r.starts_with("page: p95 ")),
        "{regressions:?}"
    );
    assert!(
        !regressions.iter().any(|r| r.contains("throughput")),
        "the rate was the same: {regressions:?}"
    );
    let (b, s) = (&c["rows"][1]["base"], &c["rows"][1]["run"]);
    let ratio = s["p95_ms"].as_f64().unwrap() / b["p95_ms"].as_f64().unwrap();
    assert!((1.6..2.4).contains(&ratio), "p95 ratio {ratio}: {c}");
    // A tolerance wide enough passes the same pair.
    let (code, out, _) = env.cli(&[
        "runs",
        "compare",
        &base,
        &slow,
        "--latency-tolerance",
        "150%",
    ]);
    assert_eq!(code, 0, "{out}");

    // rm: one unknown id and nothing is deleted; then the baseline goes, the others stay.
    let (code, _, err) = env.cli(&["runs", "rm", &base, "r-nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no run `r-nope`"), "{err}");
    let (_, list, _) = env.cli(&["runs", "list"]);
    assert!(list.contains(&base), "{list}");
    let (code, out, err) = env.cli(&["runs", "rm", &base]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("deleted run {base}")), "{out}");
    let (_, list, _) = env.cli(&["runs", "list"]);
    assert!(
        !list.contains(&base) && list.contains(&same) && list.contains(&slow),
        "{list}"
    );
    let (code, _, err) = env.cli(&["runs", "compare", &base, &same]);
    assert_eq!(code, 2, "{err}");
}
