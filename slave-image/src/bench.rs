//! `lobster-slave bench`: the load engine alone against one URL, for `scripts/bench/engine`.
//!
//! The same [`Run`] the agent uses, driven by a synthetic closed-model scenario (one GET, no
//! think time, one connection per user), so the benchmark measures the real hot path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use lobster_fleet::scenario::{self, Scenario};
use lobster_fleet::stats::{IntervalStats, LatencySummary};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::{Gauges, LoadControl, Output, Run};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// URL to GET, e.g. http://127.0.0.1:8080/
    #[arg(long)]
    pub url: String,
    /// Concurrent connections (one user each; 1 to 100000).
    #[arg(long, short = 'c', default_value_t = 64, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u64, 100_000, ""))]
    pub connections: u64,
    /// How long to run, e.g. 10s.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    scenario::value::parse_duration(s)
}

/// What one benchmark run measured.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub requests: u64,
    pub failures: u64,
    pub seconds: f64,
    pub rps: f64,
    pub latency_ms: LatencySummary,
}

/// Builds the synthetic scenario for a URL.
pub fn scenario_for(args: &BenchArgs) -> Result<Scenario, String> {
    let (base, path) = split_url(&args.url)?;
    let text = format!(
        "name: bench\ntarget: {base}\nduration: {}ms\ntimeout: 10s\nload: {{users: {}}}\nrequests:\n  - {{name: get, path: '{path}'}}\n",
        args.duration.as_millis(),
        args.connections
    );
    scenario::parse(&text, "bench").map_err(|e| e.to_string())
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: only http:// URLs"))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((format!("http://{auth}"), path.to_string()))
}

/// Runs the engine for the scenario's duration and sums what it recorded.
pub async fn run(scenario: Scenario) -> BenchResult {
    let scenario = Arc::new(scenario);
    let now = Instant::now();
    let (_ctl_tx, ctl_rx) = watch::channel(LoadControl {
        profile: scenario.load.clone(),
        striping: crate::engine::Striping::whole(),
        load_origin: now,
        suspended: false,
        items: Arc::new(Vec::new()),
        max_connections: scenario.max_connections,
        stop_at_ms: None,
    });
    let (tx, mut rx) = mpsc::channel(64);
    let run = Run {
        run_id: "bench".into(),
        scenario,
        run_origin: now,
        control: ctl_rx,
        out: tx,
        gauges: Arc::new(Gauges::default()),
        ordinal: 0,
        trace_dir: None,
    };
    let task = tokio::spawn(run.run(CancellationToken::new()));
    let mut total = IntervalStats::default();
    while let Some(o) = rx.recv().await {
        if let Output::Interval { stats, last, .. } = o {
            total.merge(&stats);
            if last {
                break;
            }
        }
    }
    let _ = task.await;
    let seconds = now.elapsed().as_secs_f64();
    let t = total.total();
    BenchResult {
        requests: t.requests,
        failures: t.failures,
        seconds,
        rps: t.requests as f64 / seconds,
        latency_ms: LatencySummary::of(&t.latency_us),
    }
}
