//! From the file as written ([`super::file`]) to the resolved [`Scenario`]: defaults, ranges,
//! cross-field rules. Every error carries the line and column of the value at fault.

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

mod data;
mod load;
mod markov;
mod requests;
mod sla;
mod steps;
mod targets;
mod tls;

pub(crate) use data::DataShape;
use data::resolve_data;
use load::resolve_load;
use markov::resolve_markov;
use requests::{check_headers, is_token, resolve_requests, resolve_step};
use sla::resolve_sla;
use steps::{
    check_flows, resolve_browse, resolve_capture, resolve_check, resolve_flows, resolve_think,
};
use targets::{check_targets, resolve_targets};
pub(crate) use tls::check_ca_pem;
use tls::resolve_tls;

use super::file::{LoadFile, RequestFile, ScenarioFile, SlaFile};
use super::journey::variables;
use super::value::{ThinkValue, Threshold, Whole};
use super::{
    Bound, Flow, ITEM, Metric, Model, Profile, Request, Scenario, ScenarioError, SlaRule, Stage,
    Target, Think,
};

/// Longest accepted run.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most users a scenario may ask for.
pub const MAX_USERS: u64 = 10_000_000;
/// Highest arrival rate a scenario may ask for, in requests per second.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Most requests in a mix.
pub const MAX_REQUESTS: usize = 1000;
/// Most data items.
pub const MAX_DATA_ITEMS: usize = 10_000_000;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_WINDOW_MS: u64 = 10_000;
const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

/// A validation failure at a location.
struct Fault {
    at: Location,
    message: String,
}

fn fault(at: Location, message: impl Into<String>) -> Fault {
    Fault {
        at,
        message: message.into(),
    }
}

type Res<T> = Result<T, Fault>;

pub(super) fn parse(
    text: &str,
    source: &str,
    read_file: &dyn Fn(&str) -> Result<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Scenario, ScenarioError> {
    let invalid = |line, column, message| ScenarioError::Invalid {
        path: source.to_string(),
        line,
        column,
        message,
    };
    if text.trim().is_empty() {
        return Err(invalid(
            0,
            0,
            "the file is empty: expected a scenario (see docs/scenario.md)".into(),
        ));
    }
    let file: ScenarioFile = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        invalid(line, column, yaml_message(&e))
    })?;
    resolve(file, read_file, env).map_err(|f| invalid(f.at.line(), f.at.column(), f.message))
}

/// The parser's message without its own location prefix or snippet (we print the location).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let text = e.render_with_options(options);
    // Plain rendering appends " at line L, column C"; we print the position ourselves.
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    text.trim().to_string()
}

pub(super) fn check_duration_ms(ms: u64) -> Result<(), String> {
    if ms == 0 {
        return Err("duration must be longer than zero".into());
    }
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "duration {}s is longer than the 30 days accepted",
            ms / 1000
        ));
    }
    Ok(())
}

fn resolve(
    f: ScenarioFile,
    read_file: &dyn Fn(&str) -> Result<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Res<Scenario> {
    let name = f.name.value.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(fault(f.name.referenced, "name must be 1 to 200 characters"));
    }
    let (target, targets) = resolve_targets(&f)?;
    let tls = {
        let all = [target.clone()];
        let all: Vec<&Target> = if targets.is_empty() {
            all.iter().collect()
        } else {
            targets.iter().map(|t| &t.target).collect()
        };
        resolve_tls(f.tls.as_ref(), &all, read_file)?
    };

    let timeout_ms = match &f.timeout {
        Some(t) => {
            let ms = t.value.0.as_millis() as u64;
            if ms == 0 || ms > 3_600_000 {
                return Err(fault(t.referenced, "timeout must be between 1ms and 1h"));
            }
            ms
        }
        None => DEFAULT_TIMEOUT_MS,
    };

    let think = match &f.think {
        None => Think::default(),
        Some(t) => resolve_think(t)?,
    };

    let (load, max_connections) = resolve_load(&f.load)?;
    let stages_ms: u64 = load.stages.iter().map(|s| s.duration_ms).sum();
    let duration_ms = match &f.duration {
        Some(d) => {
            let ms = d.value.0.as_millis().min(u64::MAX as u128) as u64;
            check_duration_ms(ms).map_err(|m| fault(d.referenced, m))?;
            ms
        }
        None if f.load.value.stages.is_some() => stages_ms,
        None => {
            return Err(fault(
                f.load.referenced,
                "missing `duration` (e.g. `duration: 60s`); it may be left out only with `load.stages`",
            ));
        }
    };
    check_duration_ms(duration_ms).map_err(|m| fault(f.load.referenced, m))?;

    let headers = check_headers(&f.headers, f.name.referenced)?;

    let data = resolve_data(f.data.as_ref(), read_file)?;
    let shape = DataShape {
        has_items: !data.items.is_empty(),
        columns: data.columns.clone(),
    };

    let (requests, flows, markov) = match (&f.requests, &f.flows, &f.markov) {
        (Some(r), None, None) => {
            let (requests, flows) = resolve_requests(r, &shape, env)?;
            (requests, flows, None)
        }
        (None, Some(fl), None) => {
            let (requests, flows) = resolve_flows(fl, &shape, env)?;
            (requests, flows, None)
        }
        (None, None, Some(m)) => {
            let (requests, markov) = resolve_markov(m, load.model, &shape, env)?;
            (requests, Vec::new(), Some(markov))
        }
        _ => {
            return Err(fault(
                f.name.referenced,
                "a scenario takes exactly one of `requests` (a mix of single requests), `flows` (journeys of steps) or `markov` (a Markov mix of states)",
            ));
        }
    };
    let mut endpoints = BTreeSet::new();
    for r in &requests {
        endpoints.insert(r.name.clone());
    }
    for g in requests
        .iter()
        .filter_map(|r| r.browse.as_ref())
        .flat_map(|b| &b.groups)
    {
        if !endpoints.insert(g.name.clone()) {
            return Err(fault(
                f.name.referenced,
                format!(
                    "browse group `{}` has the name of another step or group (each is an endpoint of the report)",
                    g.name
                ),
            ));
        }
    }
    let target_urls: Vec<String> = targets.iter().map(|t| t.target.to_string()).collect();
    let sla = f
        .sla
        .iter()
        .map(|r| resolve_sla(r, &endpoints, &target_urls))
        .collect::<Res<Vec<_>>>()?;
    let max_error_rate = match &f.max_error_rate {
        None => None,
        Some(t) => match t.value {
            Threshold::Percent(p) | Threshold::Number(p) if (0.0..=100.0).contains(&p) => Some(p),
            _ => {
                return Err(fault(
                    t.referenced,
                    "max_error_rate must be a percentage from 0% to 100% (e.g. `1%`)",
                ));
            }
        },
    };

    Ok(Scenario {
        name,
        target,
        targets,
        tls,
        duration_ms,
        timeout_ms,
        think,
        load,
        max_connections,
        headers,
        requests,
        flows,
        markov,
        data: data.items,
        data_columns: data.columns,
        data_strategy: data.strategy,
        sla,
        max_error_rate,
    })
}

/// Checks the invariants of a resolved scenario (one that arrives as JSON, not from a file).
pub(super) fn check(s: &Scenario) -> Result<(), String> {
    if s.name.trim().is_empty() || s.name.len() > 200 {
        return Err("name must be 1 to 200 characters".into());
    }
    Target::parse(&s.target.to_string())?;
    if !s.targets.is_empty() {
        check_targets(&s.targets)?;
        if s.targets[0].target != s.target {
            return Err("`target` must be the first of `targets`".into());
        }
    }
    if s.tls.insecure_skip_verify && s.tls.ca_pem.is_some() {
        return Err("tls: either a CA or insecure_skip_verify, not both".into());
    }
    if let Some(pem) = &s.tls.ca_pem {
        check_ca_pem(pem).map_err(|m| format!("tls CA: {m}"))?;
    }
    check_duration_ms(s.duration_ms)?;
    if s.timeout_ms == 0 || s.timeout_ms > 3_600_000 {
        return Err("timeout must be between 1ms and 1h".into());
    }
    if s.think.min_ms > s.think.max_ms || s.think.max_ms > 3_600_000 {
        return Err("think time must have min <= max <= 1h".into());
    }
    let limit = match s.load.model {
        Model::Closed => MAX_USERS,
        Model::Open => (MAX_RATE * 1000.0) as u64,
    };
    if s.load.stages.len() > 1000
        || s.load
            .stages
            .iter()
            .any(|st| st.duration_ms == 0 || st.duration_ms > MAX_DURATION_MS)
    {
        return Err("stages must be 1 to 1000 and last longer than zero".into());
    }
    if s.load.amounts().iter().any(|&a| a > limit) || s.load.peak() == 0 {
        return Err("load out of range".into());
    }
    if s.max_connections == 0 || s.max_connections > 10_000_000 {
        return Err("max_connections must be between 1 and 10000000".into());
    }
    if s.requests.is_empty() || s.requests.len() > MAX_REQUESTS {
        return Err(format!("requests must be 1 to {MAX_REQUESTS}"));
    }
    if s.data.len() > MAX_DATA_ITEMS {
        return Err(format!("more than {MAX_DATA_ITEMS} data items"));
    }
    if !s.data_columns.is_empty() {
        let rows_ok = s.data.iter().all(|row| {
            serde_json::from_str::<Vec<String>>(row).is_ok_and(|r| r.len() == s.data_columns.len())
        });
        if !rows_ok || s.data_columns.iter().any(String::is_empty) {
            return Err("data rows must match the data's columns".into());
        }
    }
    let mut names = BTreeSet::new();
    let header_ok = |(k, v): &(String, String)| is_token(k) && !v.contains(['\r', '\n', '\0']);
    if !s.headers.iter().all(header_ok) {
        return Err("invalid header".into());
    }
    for r in &s.requests {
        if r.name.trim().is_empty() || r.name.len() > 100 || !names.insert(r.name.as_str()) {
            return Err(format!(
                "request name `{}` empty, too long or repeated",
                r.name
            ));
        }
        if !is_token(&r.method)
            || !r.path.starts_with('/')
            || r.path
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "request `{}` has an invalid method or path",
                r.name
            ));
        }
        if !r.headers.iter().all(header_ok) {
            return Err(format!("request `{}` has an invalid header", r.name));
        }
        if r.weight == 0
            || r.weight > 1_000_000
            || r.expect.iter().any(|c| !(100..=599).contains(c))
        {
            return Err(format!(
                "request `{}` has an invalid weight or expected status",
                r.name
            ));
        }
        if r.uses_item() && s.data.is_empty() {
            return Err(format!(
                "request `{}` uses {ITEM} but there is no data",
                r.name
            ));
        }
    }
    check_flows(s)?;
    if let Some(m) = &s.markov {
        let n = s.requests.len();
        let ok_row = |row: &Vec<f64>| {
            row.len() == n
                && row.iter().all(|p| (0.0..=1.0).contains(p))
                && (row.iter().sum::<f64>() - 1.0).abs() <= super::journey::SUM_TOLERANCE
        };
        if !s.flows.is_empty()
            || s.load.model != Model::Closed
            || !ok_row(&m.initial)
            || m.transitions.len() != n
            || !m.transitions.iter().all(ok_row)
        {
            return Err("markov: a closed-model mix with a row per state summing to 1".into());
        }
    }
    if s.max_error_rate
        .is_some_and(|p| !(0.0..=100.0).contains(&p))
    {
        return Err("max_error_rate must be from 0 to 100 (percent)".into());
    }
    let endpoints = s.endpoint_names();
    for rule in &s.sla {
        let v = match rule.bound {
            Bound::Max(v) | Bound::Min(v) => v,
        };
        if !v.is_finite() || v < 0.0 || !(1000..=3_600_000).contains(&rule.window_ms) {
            return Err(format!("SLA rule `{rule}` out of range"));
        }
        if rule.metric == Metric::InjectorCpu && (v > 100.0 || rule.request.is_some()) {
            return Err(format!(
                "SLA rule `{rule}`: injector_cpu takes a percentage up to 100% and no request"
            ));
        }
        if let Some(req) = &rule.request
            && !endpoints.contains(req)
        {
            return Err(format!("SLA rule names unknown request `{req}`"));
        }
        if let Some(url) = &rule.target
            && (rule.request.is_some()
                || rule.metric == Metric::InjectorCpu
                || !s.targets.iter().any(|t| t.target.to_string() == *url))
        {
            return Err(format!(
                "SLA rule `{rule}`: its target must be one of `targets`, without `request` or `injector_cpu`"
            ));
        }
    }
    Ok(())
}
