//! Journeys: a virtual user runs a flow's steps in order with its own variables and cookie
//! jar (see `docs/scenario.md`, "Flows").
//!
//! Each step's response is kept (head and body, bounded) so that its captures fill the
//! user's variables, its `Set-Cookie` headers fill the user's jar, and its checks are
//! counted; with `follow_redirects`, each redirect to the same origin is followed as a browser
//! would (see [`redirect`]), each hop a request of the step. A step whose response failed (no response, an unexpected status, a capture that
//! found nothing) ends the flow instance there: the next steps would only send requests
//! the system under test would refuse; with `on_failure: continue` the instance goes on with
//! the next step and counts as failed at its end. Closed model: a user picks its next flow by weight,
//! keeping its jar and variables across flows as a browser keeps its cookies. Open model:
//! every arrival is a new flow instance with a fresh jar.

mod browse;
mod extract;
mod markov;
mod redirect;
mod template;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cookie_store::CookieStore;
use lobster_fleet::scenario::{MAX_REDIRECTS, Scenario, Think};
use lobster_fleet::stats::ErrorClass;
use rand::Rng;
use rand::rngs::SmallRng;
use tokio_util::sync::CancellationToken;

use super::exchange::{Judged, Outcome, Shared, Worker};
use super::http::Kept;
use extract::{CompiledCapture, CompiledCheck};
pub use template::Serial;
use template::{Template, Vars};

/// One step, compiled for the run.
struct Step {
    endpoint: usize,
    head_method: bool,
    template: Template,
    captures: Vec<CompiledCapture>,
    /// Checks with their index in the recorder.
    checks: Vec<(usize, CompiledCheck)>,
    think: Think,
    follow_redirects: bool,
    /// `on_failure: continue`: a failure does not end the flow instance.
    continue_on_failure: bool,
    browse: Option<browse::Browsing>,
}

/// The scenario's flows, compiled once per run and shared by its users.
pub struct Journeys {
    steps: Vec<Step>,
    /// Each flow's steps (indexes into `steps`) and the running sum of the flows' weights.
    flows: Vec<(Vec<usize>, u64)>,
    /// `scheme://authority` of the target, for the cookie jar's URLs.
    origin: String,
    /// The data's columns (items are rows) or empty.
    columns: Vec<String>,
    /// A Markov mix over the steps (then `flows` is empty).
    chain: Option<markov::Chain>,
}

impl Journeys {
    /// The flows of `scenario`, or `None` when it has none (the request mix runs).
    pub fn new(scenario: &Scenario) -> Result<Option<Self>, String> {
        if scenario.flows.is_empty() && scenario.markov.is_none() {
            return Ok(None);
        }
        let mut check_index = 0;
        let mut group_index = scenario.requests.len();
        let mut steps = Vec::new();
        for (i, r) in scenario.requests.iter().enumerate() {
            let captures = r
                .capture
                .iter()
                .map(CompiledCapture::new)
                .collect::<Result<Vec<_>, _>>()?;
            let mut checks = Vec::new();
            for c in &r.check {
                checks.push((check_index, CompiledCheck::new(c)?));
                check_index += 1;
            }
            let think = r.think.unwrap_or(scenario.think);
            let browse = match &r.browse {
                None => None,
                Some(b) => {
                    let compiled = browse::Browsing::new(b, i, group_index, think)?;
                    group_index += b.groups.len();
                    Some(compiled)
                }
            };
            steps.push(Step {
                browse,
                endpoint: i,
                head_method: r.method == "HEAD",
                template: Template::new(scenario, r),
                captures,
                checks,
                think: r.think.unwrap_or(scenario.think),
                follow_redirects: r.follow_redirects,
                continue_on_failure: r.continue_on_failure,
            });
        }
        let mut sum = 0u64;
        let flows = scenario
            .flows
            .iter()
            .map(|f| {
                sum += u64::from(f.weight.max(1));
                (f.steps.clone(), sum)
            })
            .collect();
        let origin = format!(
            "{}://{}",
            scenario.target.scheme.as_str(),
            scenario.target.authority()
        );
        Ok(Some(Journeys {
            steps,
            flows,
            origin,
            columns: scenario.data_columns.clone(),
            chain: scenario.markov.as_ref().map(markov::Chain::new),
        }))
    }

    /// The labels of every check, in the recorder's order.
    pub fn check_labels(scenario: &Scenario) -> Vec<String> {
        scenario
            .requests
            .iter()
            .flat_map(|r| r.check.iter().map(|c| c.label.clone()))
            .collect()
    }

    /// The fields of a data row (`item` is a JSON array when the data has columns).
    fn row(&self, item: &str) -> Vec<String> {
        if self.columns.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(item).unwrap_or_default()
        }
    }

    /// Whether users walk a Markov mix (else they run flows).
    pub fn is_markov(&self) -> bool {
        self.chain.is_some()
    }

    /// A flow drawn by weight.
    pub fn pick(&self, rng: &mut SmallRng) -> usize {
        let total = self.flows.last().map_or(1, |(_, c)| *c);
        let r = rng.random_range(0..total);
        self.flows.iter().position(|(_, c)| r < *c).unwrap_or(0)
    }
}

/// A virtual user's state: its variables, cookies and buffers, and where it is in a Markov
/// mix.
#[derive(Default)]
pub struct UserState {
    vars: HashMap<String, String>,
    jar: CookieStore,
    kept: Kept,
    request: Vec<u8>,
    /// The next Markov state to visit (`None` before the first).
    next_state: Option<usize>,
}

/// One visit of a Markov mix (see [`markov`]): the user's next state is sent and judged as a
/// step, then the state after it is drawn from that state's row. A failed visit does not
/// change the walk.
pub async fn run_markov(
    worker: &mut Worker,
    shared: &Shared,
    journeys: &Journeys,
    user: &mut UserState,
    item: &str,
    rng: &mut SmallRng,
    halt: &CancellationToken,
) -> Outcome {
    let Some(chain) = &journeys.chain else {
        return Outcome::Done;
    };
    let state = match user.next_state {
        Some(s) => s,
        None => chain.start(rng.random::<f64>()),
    };
    user.next_state = Some(chain.next(state, rng.random::<f64>()));
    let Some(step) = journeys.steps.get(state) else {
        return Outcome::Done;
    };
    let row = journeys.row(item);
    match run_step(
        worker, shared, journeys, step, user, item, &row, None, rng, halt,
    )
    .await
    {
        StepEnd::Failed(outcome) => return outcome,
        StepEnd::Halted => return Outcome::Done,
        StepEnd::Passed => {}
    }
    think(&step.think, rng, halt).await;
    Outcome::Done
}

/// Runs flow `flow` once for `user`; latency of the first step runs from `intended` (open
/// model). Returns how the last exchange went (to pause after a connect failure).
#[allow(clippy::too_many_arguments)]
pub async fn run_flow(
    worker: &mut Worker,
    shared: &Shared,
    journeys: &Journeys,
    flow: usize,
    user: &mut UserState,
    item: &str,
    mut intended: Option<Instant>,
    rng: &mut SmallRng,
    halt: &CancellationToken,
) -> Outcome {
    let began = intended.unwrap_or_else(Instant::now);
    let row = journeys.row(item);
    let Some((steps, _)) = journeys.flows.get(flow) else {
        return Outcome::Done;
    };
    // A step with `on_failure: continue` failed: the instance goes on, and counts as failed.
    let mut failed = false;
    for (i, &s) in steps.iter().enumerate() {
        if halt.is_cancelled() {
            return Outcome::Done;
        }
        let step = &journeys.steps[s];
        match run_step(
            worker,
            shared,
            journeys,
            step,
            user,
            item,
            &row,
            intended.take(),
            rng,
            halt,
        )
        .await
        {
            StepEnd::Passed => {}
            StepEnd::Halted => return Outcome::Done,
            StepEnd::Failed(_) if step.continue_on_failure => failed = true,
            StepEnd::Failed(outcome) => {
                if !halt.is_cancelled() {
                    shared.recorder.record_flow(flow, None);
                }
                return outcome;
            }
        }
        if i + 1 == steps.len() {
            // Done at its last response; its think time belongs to no flow.
            let took = (!failed).then(|| began.elapsed());
            shared.recorder.record_flow(flow, took);
        }
        if !think(&step.think, rng, halt).await {
            return Outcome::Done;
        }
    }
    Outcome::Done
}

/// How a step went.
enum StepEnd {
    /// Its response came as expected and every capture found its value.
    Passed,
    /// It failed (no response, an unexpected status, a capture that found nothing).
    Failed(Outcome),
    /// The run ended in the middle of a redirect chain (the step is not judged) or of its
    /// browsing (the flow instance is cut, not completed).
    Halted,
}

/// Sends one step (following its redirects), stores its cookies, fills its captures and
/// counts its checks; then, for a browse step, follows links from its page.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    worker: &mut Worker,
    shared: &Shared,
    journeys: &Journeys,
    step: &Step,
    user: &mut UserState,
    item: &str,
    row: &[String],
    mut intended: Option<Instant>,
    rng: &mut SmallRng,
    halt: &CancellationToken,
) -> StepEnd {
    let vars = Vars {
        captured: &user.vars,
        item,
        columns: &journeys.columns,
        row,
        serial: &shared.serial,
    };
    let url = url::Url::parse(&format!("{}{}", journeys.origin, step.template.path(&vars))).ok();
    let cookie = url
        .as_ref()
        .map_or_else(String::new, |u| cookie_header(&user.jar, u));
    step.template.render(&vars, &cookie, &mut user.request);
    worker.set_trace_values(shared, |name| match name.strip_prefix("row.") {
        Some(col) => journeys
            .columns
            .iter()
            .position(|c| c == col)
            .and_then(|i| row.get(i))
            .map(String::as_str),
        None if name == "item" => Some(item),
        None => user.vars.get(name).map(String::as_str),
    });
    let UserState {
        vars,
        jar,
        kept,
        request,
        ..
    } = user;
    // The body only when something looks at it; the head always (cookies, redirects).
    kept.want_body = !step.captures.is_empty() || !step.checks.is_empty() || step.browse.is_some();
    let mut here = url;
    let mut hops = 0;
    let (outcome, resp, captured_all) = loop {
        let follow = step.follow_redirects && hops < MAX_REDIRECTS;
        let next_hop = |resp: &super::http::Response, kept: &Kept| {
            let base = here.as_ref()?;
            follow
                .then(|| redirect::next(resp.status, &kept.head, base))
                .flatten()
        };
        let mut found = Vec::new();
        let mut judge = |resp: &super::http::Response, kept: Option<&Kept>| -> Option<Judged> {
            let kept = kept?;
            if next_hop(resp, kept).is_some() {
                return None; // not the final response: captures look at that one
            }
            for c in &step.captures {
                match c.finder.find(kept) {
                    Some(v) => found.push((c.name.clone(), v)),
                    None => {
                        return Some(Judged {
                            class: ErrorClass::Capture,
                            detail: format!("capture `{}` ({}) found nothing", c.name, c.shown),
                        });
                    }
                }
            }
            None
        };
        let (outcome, resp) = worker
            .exchange_bytes(
                shared,
                step.endpoint,
                request,
                step.head_method,
                intended.take(),
                Some(kept),
                follow,
                &mut judge,
            )
            .await;
        if let (Some(_), Some(u)) = (&resp, &here) {
            for (name, value) in extract::headers(&kept.head) {
                if name.eq_ignore_ascii_case("set-cookie") {
                    let _ = jar.parse(value, u);
                }
            }
        }
        if let Some(next) = resp.as_ref().and_then(|r| next_hop(r, kept)) {
            if halt.is_cancelled() {
                return StepEnd::Halted;
            }
            hops += 1;
            let cookie = cookie_header(jar, &next.url);
            redirect::request(request, &next, &cookie);
            here = Some(next.url);
            continue;
        }
        let captured_all = found.len() == step.captures.len();
        vars.extend(found);
        break (outcome, resp, captured_all);
    };
    for (index, check) in &step.checks {
        let passed = check.passes(resp.as_ref(), resp.as_ref().map(|_| &*kept));
        shared.recorder.record_check(*index, passed);
    }
    let ok = resp
        .as_ref()
        .is_some_and(|r| shared.scenario.requests[step.endpoint].accepts(r.status) && captured_all);
    if !ok {
        return StepEnd::Failed(outcome);
    }
    if let (Some(b), Some(page)) = (&step.browse, here)
        && !b.follow(worker, shared, user, page, rng, halt).await
    {
        return StepEnd::Halted;
    }
    StepEnd::Passed
}

/// Pauses for a think time drawn from `t`; false when the run ended meanwhile.
async fn think(t: &Think, rng: &mut SmallRng, halt: &CancellationToken) -> bool {
    let pause = think_time(t, rng);
    if pause.is_zero() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = halt.cancelled() => false,
    }
}

/// The `Cookie` header's value the jar holds for `url` (empty when none).
fn cookie_header(jar: &CookieStore, url: &url::Url) -> String {
    jar.get_request_values(url)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A think time drawn uniformly from `t`.
pub fn think_time(t: &Think, rng: &mut SmallRng) -> Duration {
    if t.min == t.max {
        t.min
    } else {
        rng.random_range(t.min..=t.max)
    }
}
