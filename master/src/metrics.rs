//! Prometheus metrics of the master and of its run, served at `/metrics` by the HTTP API.

mod run;

pub use run::{RunFacts, RunSnapshot};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every metric the master exports (names carry the `lobster_` prefix).
pub struct Metrics {
    registry: Registry,
    pub joins: Counter,
    pub joins_refused: Counter,
    pub sessions: Counter,
    pub intervals: Counter,
    pub intervals_rejected: Counter,
    pub requests: Counter,
    pub runs: Counter,
    pub runs_finished: Family<Vec<(String, String)>, Counter>,
    pub slaves_connected: Gauge,
    /// Seconds from the end of a second of load to its merge into the fleet's second (every
    /// slave's interval in, or the lease over); the live view and the SLA rules lag by this.
    pub merge_lag: Histogram,
}

/// Upper bounds of `lobster_merge_lag_seconds`' buckets.
const MERGE_LAG_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lobster");
        let m = Metrics {
            registry: Registry::default(),
            joins: Counter::default(),
            joins_refused: Counter::default(),
            sessions: Counter::default(),
            intervals: Counter::default(),
            intervals_rejected: Counter::default(),
            requests: Counter::default(),
            runs: Counter::default(),
            runs_finished: Family::default(),
            slaves_connected: Gauge::default(),
            merge_lag: Histogram::new(MERGE_LAG_BUCKETS),
        };
        registry.register("joins", "Slave joins accepted", m.joins.clone());
        registry.register(
            "joins_refused",
            "Slave joins or attaches refused (wrong token, limits, impostors)",
            m.joins_refused.clone(),
        );
        registry.register("sessions", "Slave sessions opened", m.sessions.clone());
        registry.register(
            "intervals",
            "Statistics intervals merged",
            m.intervals.clone(),
        );
        registry.register(
            "intervals_rejected",
            "Malformed statistics intervals refused",
            m.intervals_rejected.clone(),
        );
        registry.register(
            "requests",
            "Load requests counted in merged intervals",
            m.requests.clone(),
        );
        registry.register("runs", "Runs created", m.runs.clone());
        registry.register(
            "runs_finished",
            "Runs finished, by status",
            m.runs_finished.clone(),
        );
        registry.register(
            "slaves_connected",
            "Slaves holding a live session",
            m.slaves_connected.clone(),
        );
        registry.register(
            "merge_lag_seconds",
            "Seconds from the end of a second of load to its merge (the master ticks every 100 ms)",
            m.merge_lag.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn finished(&self, status: &str) {
        self.runs_finished
            .get_or_create(&vec![("status".to_string(), status.to_string())])
            .inc();
    }

    /// The text exposition format: the master's metrics, then the run's (the current run, or
    /// the last one until the next starts) when there is one.
    pub fn render(&self, run: Option<RunSnapshot>) -> String {
        let mut out = String::new();
        let mut run_registry = Registry::with_prefix("lobster");
        if let Some(run) = run {
            run_registry.register_collector(Box::new(run));
        }
        // One exposition: the master's families, then the run's, then the single `# EOF`.
        encode_registry(&mut out, &self.registry).expect("writing to a string cannot fail");
        encode_registry(&mut out, &run_registry).expect("writing to a string cannot fail");
        encode_eof(&mut out).expect("writing to a string cannot fail");
        out
    }
}
