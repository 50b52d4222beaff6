//! Scenarios: the YAML format users write (see `docs/scenario.md`), its validation, and the
//! resolved [`Scenario`] the master slices and sends to slaves as JSON.
//!
//! Parsing is pure: [`parse`] takes text and returns a [`Scenario`] or a [`ScenarioError`] that
//! names the file, line, column and what was expected. Only [`load`] touches the file system
//! (the scenario file itself and an optional `data.file`).

mod document;
mod file;
pub mod journey;
mod millis;
mod profile;
mod target;
mod validate;
pub mod value;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use document::{Document, load, parse};
pub use journey::{Browse, Capture, Check, Flow, Group, Markov, Rule, Source};

pub use profile::{Arrivals, Load, Model, Profile, Stage};
pub use target::{Scheme, Target};

/// Largest scenario file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A validated, self-contained load test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    /// Base URL every request path is joined to; with `targets`, the first of them.
    pub target: Target,
    /// Several base URLs (`targets:`), each with its weight: arrival k (open model) or user k
    /// (closed model), numbered fleet-wide, goes to [`Scenario::target_of`]`(k)`, so the
    /// fleet's shares are the weights' exactly whatever the number of slaves. Empty: `target`
    /// alone.
    #[serde(default)]
    pub targets: Vec<WeightedTarget>,
    /// Which certificates an `https://` target may present.
    #[serde(default)]
    pub tls: TlsSettings,
    /// How long load is generated (suspended time not counted).
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Per-request timeout.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Closed model: pause of a user between two requests.
    pub think: Think,
    /// Load over time, fleet-wide: users (closed) or thousandths of a request per second (open).
    pub load: Profile,
    /// Open model: most concurrent connections over the whole fleet.
    pub max_connections: u32,
    /// Headers sent with every request (a request's own headers win).
    pub headers: Vec<(String, String)>,
    /// Every request of the mix, or every step of every flow (each an endpoint of the report).
    pub requests: Vec<Request>,
    /// Journeys: when not empty, users run these flows (closed model) and each open-model
    /// arrival starts one, instead of drawing single requests from `requests`.
    #[serde(default)]
    pub flows: Vec<Flow>,
    /// A Markov mix over `requests` (closed model): users walk from state to state.
    #[serde(default)]
    pub markov: Option<Markov>,
    /// Data items given to the slaves as `data_strategy` says; requests use them as
    /// `{{item}}`, or, when `data_columns` is not empty, each is a row (a JSON array of
    /// strings, one per column) used as `{{row.NAME}}`.
    pub data: Vec<String>,
    /// The columns of a data file with a header row (`.csv`, `.tsv`).
    #[serde(default)]
    pub data_columns: Vec<String>,
    /// How data items are divided among slaves and handed to users.
    #[serde(default)]
    pub data_strategy: DataStrategy,
    pub sla: Vec<SlaRule>,
    /// Failed requests the run accepts, in percent of all requests over the whole run. `None`:
    /// not stated (see [`Scenario::accepted_error_rate`]).
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Per-request records kept by each slave (`trace:`); `None`: none.
    #[serde(default)]
    pub trace: Option<Trace>,
}

/// Which requests each slave records in its trace (see `docs/scenario.md`, "Traces"), and
/// how much it keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Share of requests recorded, in parts per million (1 % = 10,000): of a slave's requests
    /// numbered n = 0, 1, 2, …, request n is recorded when `⌊(n+1)·p/10⁶⌋ > ⌊n·p/10⁶⌋`, so
    /// a slave records exactly `⌊N·p/10⁶⌋` of its first N requests, evenly spread.
    pub sample_ppm: u32,
    /// Every failed request is recorded too, sampled or not (`errors: all`, the default).
    pub all_errors: bool,
    /// Most bytes of records a slave keeps for one run; beyond it the oldest are dropped.
    pub max_bytes: u64,
    /// Values written with each record, as the request was sent: `item`, `row.NAME`, or a
    /// variable captured by an earlier step (absent from a record until captured).
    #[serde(default)]
    pub output: Vec<String>,
}

impl Trace {
    /// Whether request number `n` (0-based, of one slave) is in the sample.
    pub fn samples(&self, n: u64) -> bool {
        let p = u128::from(self.sample_ppm);
        (u128::from(n) + 1) * p / 1_000_000 > u128::from(n) * p / 1_000_000
    }
}

/// One of a scenario's `targets:` and its relative share of the load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedTarget {
    pub target: Target,
    /// Relative share, 1 to [`MAX_TARGET_WEIGHT`].
    pub weight: u32,
}

/// Most base URLs under `targets:`.
pub const MAX_TARGETS: usize = 100;
/// Highest weight of one of `targets:`, and of their sum (one round of the weighted
/// round-robin, [`Scenario::target_order`]).
pub const MAX_TARGET_WEIGHT: u32 = 10_000;

/// How data items reach the users (see `docs/scenario.md`, "Data").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataStrategy {
    /// Each slave gets its own part of the items (none shared); its users take them in turn.
    #[default]
    Slice,
    /// Every slave gets all items; its users take them in turn.
    Cycle,
    /// Every slave gets all items; each use draws one at random.
    Random,
}

/// TLS settings of an `https://` target (see `docs/scenario.md`, "HTTPS").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// PEM certificates trusted instead of the system's roots: the text of the scenario's
    /// `tls.ca_file`, read when the scenario was loaded (slaves have no access to the file).
    pub ca_pem: Option<String>,
    /// Accept any certificate; reported as a warning before the run and in the report.
    pub insecure_skip_verify: bool,
}

/// Think time, drawn uniformly from `[min, max]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Think {
    #[serde(rename = "min_ms", with = "millis")]
    pub min: Duration,
    #[serde(rename = "max_ms", with = "millis")]
    pub max: Duration,
}

/// One named request of the mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub name: String,
    pub method: String,
    /// Path below the target's base path; may contain `{{item}}`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Statuses that count as success; empty means any 2xx or 3xx.
    pub expect: Vec<u16>,
    /// Relative share of the mix.
    pub weight: u32,
    /// Values taken from the response into the user's variables.
    #[serde(default)]
    pub capture: Vec<Capture>,
    /// Assertions on the response, counted per check.
    #[serde(default)]
    pub check: Vec<Check>,
    /// A flow step's own pause after it (else the scenario's `think`).
    #[serde(default)]
    pub think: Option<Think>,
    /// Follow `301`, `302`, `303`, `307` and `308` to the same origin, up to
    /// [`MAX_REDIRECTS`] hops, each hop a request of this endpoint.
    #[serde(default)]
    pub follow_redirects: bool,
    /// Follow links from the step's page (a flow step only).
    #[serde(default)]
    pub browse: Option<Browse>,
    /// A flow step that failed lets its flow instance go on with the next step (`on_failure:
    /// continue`); the instance still counts as failed. By default it ends the instance.
    #[serde(default)]
    pub continue_on_failure: bool,
}

/// Most redirects a step follows.
pub const MAX_REDIRECTS: usize = 10;

impl Request {
    /// Whether a response with this status is a success.
    pub fn accepts(&self, status: u16) -> bool {
        if self.expect.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expect.contains(&status)
        }
    }

    /// Whether the response's head and body are needed (to capture, check or follow).
    pub fn reads_response(&self) -> bool {
        !self.capture.is_empty()
            || !self.check.is_empty()
            || self.follow_redirects
            || self.browse.is_some()
    }

    /// Whether the request uses a value made per request: a column of a data row
    /// (`{{row.NAME}}`), `{{serial}}` or `{{uuid}}` (the request then runs as a flow step).
    pub fn uses_generated(&self) -> bool {
        std::iter::once(self.path.as_str())
            .chain(self.body.as_deref())
            .chain(self.headers.iter().map(|(_, v)| v.as_str()))
            .any(|t| {
                journey::variables(t)
                    .iter()
                    .any(|v| v.starts_with("row.") || *v == "serial" || *v == "uuid")
            })
    }

    /// Whether the request uses a data item.
    pub fn uses_item(&self) -> bool {
        self.path.contains(ITEM)
            || self.body.as_deref().is_some_and(|b| b.contains(ITEM))
            || self.headers.iter().any(|(_, v)| v.contains(ITEM))
    }
}

/// The placeholder replaced by the slave's next data item.
pub const ITEM: &str = "{{item}}";

/// A service-level rule evaluated fleet-wide on the merged stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaRule {
    pub metric: Metric,
    pub bound: Bound,
    /// Sliding window the metric is computed over.
    #[serde(rename = "window_ms", with = "millis")]
    pub window: Duration,
    /// Restrict the rule to one request of the mix.
    pub request: Option<String>,
    /// Restrict the rule to one of `targets:` (its base URL's `Display` form).
    #[serde(default)]
    pub target: Option<String>,
    /// Abort the whole run at the first violation (otherwise the run only fails at the end).
    pub abort: bool,
}

impl fmt::Display for SlaRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.metric.name())?;
        if let Some(r) = &self.request {
            write!(f, "[{r}]")?;
        }
        if let Some(t) = &self.target {
            write!(f, "[{t}]")?;
        }
        let (op, v) = match self.bound {
            Bound::Max(v) => ("<=", v),
            Bound::Min(v) => (">=", v),
        };
        write!(
            f,
            " {op} {}{} over {}s",
            fmt_num(v),
            self.metric.unit(),
            self.window.as_secs_f64()
        )
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// What an SLA rule measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
    Mean,
    /// Failed requests over all requests, in percent.
    ErrorRate,
    /// Requests per second.
    Rps,
    /// The busiest injector's CPU, percent: each slave's `Resources::injector_cpu` averaged
    /// over the window, the highest of them (seed 003: a saturated client emulator reports
    /// its own queueing as the server's latency). Judged on full windows only, and never
    /// scoped to a request.
    InjectorCpu,
}

impl Metric {
    /// All metrics with the names used in scenario files.
    pub const ALL: [Metric; 10] = [
        Metric::P50,
        Metric::P90,
        Metric::P95,
        Metric::P99,
        Metric::P999,
        Metric::Max,
        Metric::Mean,
        Metric::ErrorRate,
        Metric::Rps,
        Metric::InjectorCpu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::P999 => "p99.9",
            Metric::Max => "max",
            Metric::Mean => "mean",
            Metric::ErrorRate => "error_rate",
            Metric::Rps => "rps",
            Metric::InjectorCpu => "injector_cpu",
        }
    }

    /// Unit of the metric's values: `ms`, `%` or empty.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::ErrorRate | Metric::InjectorCpu => "%",
            Metric::Rps => "",
            _ => "ms",
        }
    }

    /// Whether the metric is a latency (values in milliseconds).
    pub fn is_latency(self) -> bool {
        !matches!(self, Metric::ErrorRate | Metric::Rps | Metric::InjectorCpu)
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The side of a threshold that is a violation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Violated when the metric is above this value.
    Max(f64),
    /// Violated when the metric is below this value.
    Min(f64),
}

impl Bound {
    /// Whether `value` violates the bound.
    pub fn violated_by(self, value: f64) -> bool {
        match self {
            Bound::Max(limit) => value > limit,
            Bound::Min(limit) => value < limit,
        }
    }
}

/// A scenario that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario file (or its data file) could not be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid scenario; the position is 1-based (0 when unknown).
    #[error("{}", located(path, *line, *column, message))]
    Invalid {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
}

fn located(path: &str, line: u64, column: u64, message: &str) -> String {
    if line == 0 {
        format!("{path}: {message}")
    } else {
        format!("{path}:{line}:{column}: {message}")
    }
}

impl Scenario {
    /// The scenario as JSON, as sent to slaves.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("scenario serializes")
    }

    /// Reads the JSON sent by the master.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Overrides the target (`--target`).
    pub fn set_target(&mut self, url: &str) -> Result<(), String> {
        self.target = Target::parse(url)?;
        // One base URL replaces the whole list: the load goes to it alone.
        self.targets.clear();
        Ok(())
    }

    /// Overrides the duration (`--duration`); the load profile holds its last value beyond its
    /// stages and is cut at the duration.
    ///
    /// # Errors
    /// A duration of zero or longer than [`validate::MAX_DURATION`] (30 days).
    pub fn set_duration(&mut self, d: Duration) -> Result<(), String> {
        validate::check_duration(d)?;
        self.duration = d;
        Ok(())
    }

    /// The base URL, or with `targets:` every one with its weight (`http://a ×1, http://b ×3`):
    /// how runs and reports name what was loaded.
    pub fn target_label(&self) -> String {
        if self.targets.is_empty() {
            return self.target.to_string();
        }
        let all: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{} ×{}", t.target, t.weight))
            .collect();
        all.join(", ")
    }

    /// Every base URL the load goes to, with its weight: `targets`, or `target` alone.
    pub fn sites(&self) -> Vec<WeightedTarget> {
        if self.targets.is_empty() {
            vec![WeightedTarget {
                target: self.target.clone(),
                weight: 1,
            }]
        } else {
            self.targets.clone()
        }
    }

    /// One round of the smooth weighted round-robin over [`Scenario::sites`] (nginx's
    /// upstream algorithm): as many entries as the weights' sum, site `i` exactly `weight`
    /// times, spread evenly. Unit `k` of the load (arrival or user, fleet-wide) goes to
    /// site `order[k % order.len()]`.
    pub fn target_order(&self) -> Vec<u16> {
        let sites = self.sites();
        let total: i64 = sites.iter().map(|s| i64::from(s.weight)).sum();
        let mut current = vec![0i64; sites.len()];
        (0..total)
            .map(|_| {
                for (c, s) in current.iter_mut().zip(&sites) {
                    *c += i64::from(s.weight);
                }
                let (best, _) = current
                    .iter()
                    .enumerate()
                    .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
                    .expect("at least one site");
                current[best] -= total;
                best as u16
            })
            .collect()
    }

    /// The share of failed requests (percent, over the whole run) above which the run fails:
    /// `max_error_rate` when stated; else `None` when an SLA rule on `error_rate` over all
    /// requests states what is accepted (that rule judges); else 0 — by default a failed
    /// request fails the run, as Locust's exit code does.
    pub fn accepted_error_rate(&self) -> Option<f64> {
        if self.max_error_rate.is_some() {
            return self.max_error_rate;
        }
        let stated = self
            .sla
            .iter()
            .any(|r| r.metric == Metric::ErrorRate && r.request.is_none());
        (!stated).then_some(0.0)
    }

    /// What a user should know before the run starts, each a sentence: a target whose
    /// certificate is not verified (`tls.insecure_skip_verify`), and SLA rules that can never
    /// be judged because their window is longer than the run (such a rule makes the run fail
    /// as `not judged`).
    pub fn warnings(&self) -> Vec<String> {
        let insecure = self.tls.insecure_skip_verify.then(|| {
            format!(
                "tls.insecure_skip_verify: the certificate of {} is NOT verified; anyone on the path can read and change this traffic",
                self.target
            )
        });
        insecure.into_iter().chain(self.sla_warnings()).collect()
    }

    fn sla_warnings(&self) -> Vec<String> {
        self.sla
            .iter()
            .filter(|r| r.window > self.duration)
            .map(|r| {
                format!(
                    "SLA rule `{r}`: its window is longer than the run ({}s), so it can never be judged and the run cannot pass; shorten the window or lengthen the run",
                    fmt_num(self.duration.as_secs_f64())
                )
            })
            .collect()
    }

    /// Every endpoint's name, in the order of statistics: the requests (or steps or states),
    /// then the browse groups of each step.
    pub fn endpoint_names(&self) -> Vec<String> {
        let groups = self
            .requests
            .iter()
            .filter_map(|r| r.browse.as_ref())
            .flat_map(|b| b.groups.iter().map(|g| g.name.clone()));
        self.requests
            .iter()
            .map(|r| r.name.clone())
            .chain(groups)
            .collect()
    }

    /// The duration in whole milliseconds: where it ends on the load profile's timeline
    /// ([`Profile`] counts milliseconds from the load's start).
    pub fn duration_ms(&self) -> u64 {
        u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the scenario uses the open model.
    pub fn is_open(&self) -> bool {
        self.load.model == Model::Open
    }
}

#[cfg(test)]
mod tests;
