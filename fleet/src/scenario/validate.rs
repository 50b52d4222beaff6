//! From the file as written ([`super::file`]) to the resolved [`Scenario`]: defaults, ranges,
//! cross-field rules. Every error carries the line and column of the value at fault.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

mod data;
mod load;
mod markov;
mod requests;
mod sla;
mod steps;
mod targets;
mod tls;
mod trace;

pub(crate) use data::DataShape;
use data::resolve_data;
use load::resolve_load;
use markov::resolve_markov;
use requests::{check_headers, is_token, resolve_requests, resolve_step};
use sla::resolve_sla;
use steps::{resolve_browse, resolve_capture, resolve_check, resolve_flows, resolve_think};
use targets::resolve_targets;
use tls::resolve_tls;
use trace::resolve_trace;

use super::file::{LoadFile, RequestFile, ScenarioFile, SlaFile};
use super::journey::variables;
use super::value::{ThinkValue, Threshold, Whole};
use super::{
    Bound, Flow, ITEM, Load, Metric, Model, Profile, Request, Scenario, ScenarioError, SlaRule,
    Stage, Target, Think,
};

/// Longest accepted run: 30 days.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most users a scenario may ask for.
pub const MAX_USERS: u64 = 10_000_000;
/// Highest arrival rate a scenario may ask for, in requests per second.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Most stages of a load profile.
pub const MAX_STAGES: usize = 1000;
/// Most requests in a mix.
pub const MAX_REQUESTS: usize = 1000;
/// Most data items.
pub const MAX_DATA_ITEMS: usize = 10_000_000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Longest request timeout, think time and SLA window: an hour.
const MAX_PAUSE: Duration = Duration::from_secs(3600);
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

pub(super) fn check_duration(d: Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err("duration must be longer than zero".into());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "duration {}s is longer than the 30 days accepted",
            d.as_secs()
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

    let timeout = match &f.timeout {
        Some(t) => {
            let d = t.value.0;
            if d < Duration::from_millis(1) || d > MAX_PAUSE {
                return Err(fault(t.referenced, "timeout must be between 1ms and 1h"));
            }
            d
        }
        None => DEFAULT_TIMEOUT,
    };

    let think = match &f.think {
        None => Think::default(),
        Some(t) => resolve_think(t)?,
    };

    let (load, max_connections) = resolve_load(&f.load)?;
    let stages_ms: u64 = load.stages.iter().map(|s| s.duration_ms).sum();
    let duration = match &f.duration {
        Some(d) => {
            check_duration(d.value.0).map_err(|m| fault(d.referenced, m))?;
            d.value.0
        }
        None if f.load.value.stages.is_some() => Duration::from_millis(stages_ms),
        None => {
            return Err(fault(
                f.load.referenced,
                "missing `duration` (e.g. `duration: 60s`); it may be left out only with `load.stages`",
            ));
        }
    };
    check_duration(duration).map_err(|m| fault(f.load.referenced, m))?;

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

    let trace = f
        .trace
        .as_ref()
        .map(|t| resolve_trace(t, &requests, &data.items, &data.columns))
        .transpose()?;

    Ok(Scenario {
        name,
        target,
        targets,
        tls,
        duration,
        timeout,
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
        trace,
    })
}
