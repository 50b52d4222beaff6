//! The trace on disk: what is kept, what is dropped beyond the limit, and reading it back in
//! slices of whole lines.

use std::time::{Duration, Instant};

use lobster_fleet::proto::TraceChunk;
use lobster_fleet::scenario::Trace;
use lobster_fleet::stats::ErrorClass;

use super::*;
use crate::engine::recorder::{Failure, Sample, Timing};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lobster-trace-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ok() -> Sample<'static> {
    Sample {
        latency_us: Some(1500),
        status: Some(200),
        error: None,
        bytes_sent: 40,
        bytes_received: 1000,
        timing: Timing {
            waiting: Some(Duration::from_micros(1000)),
            receiving: Some(Duration::from_micros(500)),
            ..Timing::default()
        },
    }
}

fn failed() -> Sample<'static> {
    Sample {
        status: Some(503),
        error: Some(Failure {
            class: ErrorClass::Status5xx,
            status: Some(503),
            detail: &"HTTP 503",
        }),
        ..ok()
    }
}

/// The whole trace of `run`, read in slices of at most `slice` bytes, once it is closed.
fn read_all(dir: &Path, run: &str, slice: u32) -> (Vec<serde_json::Value>, TraceChunk) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = read_chunk(dir, run, 0, slice);
    while first.error.contains("still being written") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        first = read_chunk(dir, run, 0, slice);
    }
    assert_eq!(first.error, "");
    let mut data = first.data.clone();
    let mut offset = data.len() as u64;
    while offset < first.total_bytes {
        let c = read_chunk(dir, run, offset, slice);
        assert_eq!(c.error, "");
        assert!(!c.data.is_empty(), "a slice makes progress");
        assert_eq!(c.data.last(), Some(&b'\n'), "whole lines only");
        offset += c.data.len() as u64;
        data.extend_from_slice(&c.data);
    }
    let lines = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each line is a JSON object"))
        .collect();
    (lines, first)
}

#[test]
fn a_trace_keeps_the_sampled_requests_and_every_failure() {
    let d = dir("sample");
    let t = Trace {
        sample_ppm: 100_000,
        all_errors: true,
        max_bytes: 64_000_000,
        output: vec!["item".into()],
    };
    let tracer = Tracer::start(&d, "r-1", t, vec!["home".into(), "item".into()], vec![]).unwrap();
    let t0 = Instant::now();
    // 1,007 requests: the first 7 failed (none of them in the 10 % sample, which takes
    // numbers 9, 19, …), the rest answered 200.
    for n in 0..1007u64 {
        let s = if n < 7 { failed() } else { ok() };
        let values = [("item".to_string(), format!("v{n}"))];
        tracer.offer(
            (n % 2) as usize,
            0,
            &s,
            t0 + Duration::from_millis(n),
            &values,
        );
    }
    drop(tracer);
    let (lines, chunk) = read_all(&d, "r-1", 1000);
    assert_eq!(chunk.dropped, 0);
    assert_eq!(
        lines.len(),
        100 + 7,
        "⌊1007 × 10 %⌋ sampled and the 7 failures"
    );
    let errors: Vec<_> = lines.iter().filter(|l| !l["error"].is_null()).collect();
    assert_eq!(errors.len(), 7);
    assert!(
        errors
            .iter()
            .all(|l| l["error"] == "status_503" && l["status"] == 503)
    );
    let first_ok = lines.iter().find(|l| l["error"].is_null()).unwrap();
    assert_eq!(
        first_ok["endpoint"], "item",
        "request 9 is of the second endpoint"
    );
    assert_eq!(first_ok["status"], 200);
    assert_eq!(first_ok["latency_us"], 1500);
    assert_eq!(first_ok["waiting_us"], 1000);
    assert!(first_ok["connecting_us"].is_null());
    assert_eq!(first_ok["bytes_received"], 1000);
    assert!(
        first_ok.get("target").is_none(),
        "one target: no target field"
    );
    // Times are the requests' own, 1 ms apart: request 9 is 9 ms after request 0.
    let t = |l: &serde_json::Value| l["t_us"].as_u64().unwrap();
    assert_eq!(t(first_ok) - t(&lines[0]), 9_000);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn beyond_its_limit_a_trace_keeps_the_newest_records_and_counts_the_rest() {
    let d = dir("limit");
    let t = Trace {
        sample_ppm: 1_000_000,
        all_errors: true,
        max_bytes: 200_000,
        output: vec![],
    };
    let tracer = Tracer::start(&d, "r-2", t, vec!["home".into()], vec!["http://a".into()]).unwrap();
    let t0 = Instant::now();
    for n in 0..10_000u64 {
        tracer.offer(0, 0, &ok(), t0 + Duration::from_micros(n), &[]);
    }
    drop(tracer);
    let (lines, chunk) = read_all(&d, "r-2", 4096);
    assert!(
        chunk.total_bytes <= 200_000,
        "{} bytes kept",
        chunk.total_bytes
    );
    assert!(lines.len() > 100, "{} kept", lines.len());
    assert_eq!(
        lines.len() as u64 + chunk.dropped,
        10_000,
        "every record kept or counted"
    );
    // The newest are kept: the last line is the last request, and they follow in order.
    let t = |l: &serde_json::Value| l["t_us"].as_u64().unwrap();
    let last = t(lines.last().unwrap());
    assert_eq!(last - t(&lines[0]), lines.len() as u64 - 1);
    assert_eq!(lines[0]["target"], "http://a");
    assert!(
        lines[0].get("values").is_none(),
        "no output: no values field"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_trace_that_is_missing_unfinished_or_misnamed_says_so() {
    let d = dir("errors");
    assert_eq!(
        read_chunk(&d, "r-9", 0, 100).error,
        "no trace of r-9 on this slave"
    );
    assert!(
        !read_chunk(&d, "r-9", 0, 100).writing,
        "none: nothing to wait for"
    );
    std::fs::create_dir_all(d.join("r-8")).unwrap();
    let unfinished = read_chunk(&d, "r-8", 0, 100);
    assert_eq!(unfinished.error, "the trace of r-8 is still being written");
    assert!(unfinished.writing, "asked again, it will be there");
    assert_eq!(
        read_chunk(&d, "../etc", 0, 100).error,
        "`../etc` is not a run id"
    );
    let t = Trace {
        sample_ppm: 1_000_000,
        all_errors: true,
        max_bytes: 1_000_000,
        output: vec![],
    };
    assert!(Tracer::start(&d, "a/b", t, vec![], vec![]).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

/// A slave given the same run again (it lost its session and was assigned anew) keeps what
/// it wrote before: the two writers are generations of their own, and the trace is whole
/// (and readable) only once both are done, whichever ends first.
#[test]
fn a_run_given_again_keeps_its_earlier_records() {
    let d = dir("again");
    let t = Trace {
        sample_ppm: 1_000_000,
        all_errors: true,
        max_bytes: 1_000_000,
        output: vec![],
    };
    let first = Tracer::start(&d, "r-3", t.clone(), vec!["a".into()], vec![]).unwrap();
    let t0 = Instant::now();
    for n in 0..10u64 {
        first.offer(0, 0, &ok(), t0 + Duration::from_millis(n), &[]);
    }
    let second = Tracer::start(&d, "r-3", t, vec!["a".into()], vec![]).unwrap();
    for n in 10..15u64 {
        second.offer(0, 0, &ok(), t0 + Duration::from_millis(n), &[]);
    }
    drop(second);
    // The second is done; the first still writes: not whole yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.join("r-3").join("done-0002").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        read_chunk(&d, "r-3", 0, 1000).error,
        "the trace of r-3 is still being written"
    );
    drop(first);
    let (lines, chunk) = read_all(&d, "r-3", 1000);
    assert_eq!(chunk.dropped, 0);
    assert_eq!(lines.len(), 15, "both writers' records");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn only_the_last_runs_traces_are_kept() {
    let d = dir("prune");
    let t = Trace {
        sample_ppm: 1_000_000,
        all_errors: true,
        max_bytes: 1_000_000,
        output: vec![],
    };
    for i in 0..RUNS_KEPT + 2 {
        let tracer =
            Tracer::start(&d, &format!("r-{i}"), t.clone(), vec!["a".into()], vec![]).unwrap();
        tracer.offer(0, 0, &ok(), Instant::now(), &[]);
        drop(tracer);
        // Folder times order the runs: make each visibly newer.
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort_by_key(|n| n[2..].parse::<usize>().unwrap());
    let want: Vec<String> = (2..RUNS_KEPT + 2).map(|i| format!("r-{i}")).collect();
    assert_eq!(left, want);
    let _ = std::fs::remove_dir_all(&d);
}
