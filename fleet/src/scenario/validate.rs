//! From the file as written ([`super::file`]) to the resolved [`Scenario`]: defaults, ranges,
//! cross-field rules. Every error carries the line and column of the value at fault.

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

use super::file::{LoadFile, RequestFile, ScenarioFile, SlaFile};
use super::value::{Threshold, Whole};
use super::{
    Bound, ITEM, Metric, Model, Profile, Request, Scenario, ScenarioError, SlaRule, Stage, Target,
    Think,
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
    read_data: &dyn Fn(&str) -> Result<String, String>,
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
    resolve(file, read_data).map_err(|f| invalid(f.at.line(), f.at.column(), f.message))
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

fn resolve(f: ScenarioFile, read_data: &dyn Fn(&str) -> Result<String, String>) -> Res<Scenario> {
    let name = f.name.value.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(fault(f.name.referenced, "name must be 1 to 200 characters"));
    }
    let target = Target::parse(f.target.value.trim()).map_err(|m| fault(f.target.referenced, m))?;

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
        Some(t) => {
            let (min, max) = (t.value.min, t.value.max);
            if min > max {
                return Err(fault(
                    t.referenced,
                    "think: min must not be larger than max",
                ));
            }
            if max.as_secs() > 3600 {
                return Err(fault(t.referenced, "think time must be at most 1h"));
            }
            Think {
                min_ms: min.as_millis() as u64,
                max_ms: max.as_millis() as u64,
            }
        }
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

    let data = match &f.data {
        None => Vec::new(),
        Some(d) => match (&d.value.items, &d.value.file) {
            (Some(items), None) => items.clone(),
            (None, Some(file)) => read_data(&file.value)
                .map_err(|m| fault(file.referenced, m))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            _ => {
                return Err(fault(
                    d.referenced,
                    "data needs exactly one of `items` or `file`",
                ));
            }
        },
    };
    if let Some(d) = &f.data {
        if data.is_empty() {
            return Err(fault(d.referenced, "data has no items"));
        }
        if data.len() > MAX_DATA_ITEMS {
            return Err(fault(
                d.referenced,
                format!("more than {MAX_DATA_ITEMS} data items"),
            ));
        }
    }

    let requests = resolve_requests(&f.requests, !data.is_empty())?;
    let sla = f
        .sla
        .iter()
        .map(|r| resolve_sla(r, &requests))
        .collect::<Res<Vec<_>>>()?;

    Ok(Scenario {
        name,
        target,
        duration_ms,
        timeout_ms,
        think,
        load,
        max_connections,
        headers,
        requests,
        data,
        sla,
    })
}

fn users(v: &Spanned<Whole>) -> Res<u64> {
    if v.value.0 == 0 || v.value.0 > MAX_USERS {
        return Err(fault(
            v.referenced,
            format!("users must be between 1 and {MAX_USERS}"),
        ));
    }
    Ok(v.value.0)
}

fn rate(v: &Spanned<super::value::Number>) -> Res<u64> {
    let r = v.value.0;
    if !r.is_finite() || r <= 0.0 || r > MAX_RATE {
        return Err(fault(
            v.referenced,
            format!("rate must be a number of requests per second above 0 and at most {MAX_RATE}"),
        ));
    }
    Ok((r * 1000.0).round().max(1.0) as u64)
}

fn resolve_load(l: &Spanned<LoadFile>) -> Res<(Profile, u32)> {
    let at = l.referenced;
    let lf = &l.value;
    let both = "load takes either `users` (closed model) or `rate` (open model), not both";
    let (model, start) = match (&lf.users, &lf.rate) {
        (Some(_), Some(r)) => return Err(fault(r.referenced, both)),
        (Some(u), None) => (Some(Model::Closed), Some(users(u)?)),
        (None, Some(r)) => (Some(Model::Open), Some(rate(r)?)),
        (None, None) => (None, None),
    };
    let max_connections = match &lf.max_connections {
        Some(m) if m.value.0 == 0 || m.value.0 > 10_000_000 => {
            return Err(fault(
                m.referenced,
                "max_connections must be between 1 and 10000000",
            ));
        }
        Some(m) => m.value.0 as u32,
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let profile = match (&lf.stages, &lf.ramp) {
        (Some(stages), Some(ramp)) => {
            let _ = stages;
            return Err(fault(
                ramp.referenced,
                "use either `ramp` or `stages`, not both",
            ));
        }
        (None, ramp) => {
            let (Some(model), Some(value)) = (model, start) else {
                return Err(fault(
                    at,
                    "load needs `users: N` (closed model), `rate: R` (open model) or `stages`",
                ));
            };
            match ramp {
                Some(r) if !r.value.0.is_zero() => Profile {
                    model,
                    start: 0,
                    stages: vec![Stage {
                        duration_ms: r.value.0.as_millis() as u64,
                        target: value,
                    }],
                },
                _ => Profile::constant(model, value),
            }
        }
        (Some(stages), None) => {
            if stages.value.is_empty() {
                return Err(fault(stages.referenced, "stages must not be empty"));
            }
            let mut model = model;
            let mut out = Vec::new();
            for s in &stages.value {
                let (m, target) = match (&s.value.users, &s.value.rate) {
                    (Some(u), None) => (Model::Closed, users_or_zero(u)?),
                    (None, Some(r)) => (Model::Open, rate_or_zero(r)?),
                    _ => {
                        return Err(fault(
                            s.referenced,
                            "each stage needs exactly one of `users` or `rate`",
                        ));
                    }
                };
                if model.is_some_and(|known| known != m) {
                    return Err(fault(
                        s.referenced,
                        "all stages must use the same model as `load` (`users` or `rate`)",
                    ));
                }
                model = Some(m);
                let d = s.value.duration.value.0.as_millis() as u64;
                if d == 0 {
                    return Err(fault(
                        s.value.duration.referenced,
                        "a stage must last longer than zero",
                    ));
                }
                out.push(Stage {
                    duration_ms: d,
                    target,
                });
            }
            Profile {
                model: model.unwrap_or(Model::Closed),
                start: start.unwrap_or(0),
                stages: out,
            }
        }
    };
    if profile.peak() == 0 {
        return Err(fault(at, "the load never rises above zero"));
    }
    Ok((profile, max_connections))
}

fn users_or_zero(v: &Spanned<Whole>) -> Res<u64> {
    if v.value.0 == 0 { Ok(0) } else { users(v) }
}

fn rate_or_zero(v: &Spanned<super::value::Number>) -> Res<u64> {
    if v.value.0 == 0.0 { Ok(0) } else { rate(v) }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_headers(
    headers: &std::collections::BTreeMap<String, String>,
    at: Location,
) -> Res<Vec<(String, String)>> {
    headers
        .iter()
        .map(|(k, v)| {
            if !is_token(k) {
                return Err(fault(at, format!("invalid header name `{k}`")));
            }
            if v.contains(['\r', '\n', '\0']) {
                return Err(fault(
                    at,
                    format!("header `{k}` has a line break in its value"),
                ));
            }
            if k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding")
            {
                return Err(fault(at, format!("header `{k}` is set by the engine")));
            }
            Ok((k.clone(), v.clone()))
        })
        .collect()
}

fn resolve_requests(
    list: &Spanned<Vec<Spanned<RequestFile>>>,
    has_data: bool,
) -> Res<Vec<Request>> {
    if list.value.is_empty() {
        return Err(fault(
            list.referenced,
            "requests must list at least one request",
        ));
    }
    if list.value.len() > MAX_REQUESTS {
        return Err(fault(
            list.referenced,
            format!("more than {MAX_REQUESTS} requests"),
        ));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for r in &list.value {
        let r = &r.value;
        let name = r.name.value.trim();
        if name.is_empty() || name.len() > 100 || name.contains(char::is_control) {
            return Err(fault(
                r.name.referenced,
                "request name must be 1 to 100 printable characters",
            ));
        }
        if !names.insert(name.to_string()) {
            return Err(fault(
                r.name.referenced,
                format!("duplicate request name `{name}`"),
            ));
        }
        let method = match &r.method {
            None => "GET".to_string(),
            Some(m) => {
                let up = m.value.trim().to_ascii_uppercase();
                if !is_token(&up) || up.len() > 20 {
                    return Err(fault(
                        m.referenced,
                        format!("invalid method `{}`: expected e.g. GET or POST", m.value),
                    ));
                }
                up
            }
        };
        let path = r.path.value.trim();
        if !path.starts_with('/') {
            return Err(fault(
                r.path.referenced,
                format!("path `{path}` must start with `/`"),
            ));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(fault(
                r.path.referenced,
                format!("path `{path}` contains white space"),
            ));
        }
        let headers = check_headers(&r.headers, r.name.referenced)?;
        let expect = match &r.expect {
            None => Vec::new(),
            Some(e) => {
                let codes = e.value.0.clone();
                if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
                    return Err(fault(
                        e.referenced,
                        "expect takes HTTP status codes between 100 and 599",
                    ));
                }
                codes
            }
        };
        let weight = match &r.weight {
            None => 1,
            Some(w) if w.value.0 == 0 || w.value.0 > 1_000_000 => {
                return Err(fault(w.referenced, "weight must be between 1 and 1000000"));
            }
            Some(w) => w.value.0 as u32,
        };
        let req = Request {
            name: name.to_string(),
            method,
            path: path.to_string(),
            headers,
            body: r.body.clone(),
            expect,
            weight,
        };
        let texts = std::iter::once(req.path.as_str())
            .chain(req.body.as_deref())
            .chain(req.headers.iter().map(|(_, v)| v.as_str()));
        for t in texts {
            if let Some(var) = unknown_variable(t) {
                return Err(fault(
                    r.name.referenced,
                    format!("unknown variable `{var}`: only {ITEM} is defined"),
                ));
            }
        }
        if req.uses_item() && !has_data {
            return Err(fault(
                r.name.referenced,
                format!("request `{name}` uses {ITEM} but the scenario has no `data`"),
            ));
        }
        out.push(req);
    }
    Ok(out)
}

fn unknown_variable(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i..];
        let end = after.find("}}").map_or(after.len(), |e| e + 2);
        let var = &after[..end];
        if var != ITEM {
            return Some(var.to_string());
        }
        rest = &after[end..];
    }
    None
}

fn resolve_sla(r: &Spanned<SlaFile>, requests: &[Request]) -> Res<SlaRule> {
    let s = &r.value;
    let metric = Metric::from_name(s.metric.value.trim()).ok_or_else(|| {
        let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        fault(
            s.metric.referenced,
            format!(
                "unknown metric `{}`: expected one of {}",
                s.metric.value,
                names.join(", ")
            ),
        )
    })?;
    let (threshold, is_max) = match (&s.max, &s.min) {
        (Some(t), None) => (t, true),
        (None, Some(t)) => (t, false),
        _ => {
            return Err(fault(
                r.referenced,
                "an SLA rule needs exactly one of `max` or `min`",
            ));
        }
    };
    let value = match (&threshold.value, metric) {
        (Threshold::Duration(d), m) if m.is_latency() => d.as_secs_f64() * 1000.0,
        (Threshold::Number(n), m) if m.is_latency() => *n,
        (Threshold::Percent(p), Metric::ErrorRate) | (Threshold::Number(p), Metric::ErrorRate) => {
            *p
        }
        (Threshold::Number(n), Metric::Rps) => *n,
        (_, m) => {
            let want = match m {
                Metric::ErrorRate => "a percentage such as `1%`",
                Metric::Rps => "a number of requests per second",
                _ => "a duration such as `800ms`",
            };
            return Err(fault(
                threshold.referenced,
                format!("threshold of `{}` must be {want}", m.name()),
            ));
        }
    };
    if !value.is_finite() || value < 0.0 {
        return Err(fault(
            threshold.referenced,
            "threshold must be a finite number ≥ 0",
        ));
    }
    let window_ms = match &s.window {
        None => DEFAULT_WINDOW_MS,
        Some(w) => {
            let ms = w.value.0.as_millis() as u64;
            if !(1000..=3_600_000).contains(&ms) {
                return Err(fault(w.referenced, "window must be between 1s and 1h"));
            }
            ms
        }
    };
    if let Some(req) = &s.request
        && !requests.iter().any(|q| q.name == req.value)
    {
        let names: Vec<_> = requests.iter().map(|q| q.name.as_str()).collect();
        return Err(fault(
            req.referenced,
            format!(
                "unknown request `{}`: expected one of {}",
                req.value,
                names.join(", ")
            ),
        ));
    }
    Ok(SlaRule {
        metric,
        bound: if is_max {
            Bound::Max(value)
        } else {
            Bound::Min(value)
        },
        window_ms,
        request: s.request.as_ref().map(|r| r.value.clone()),
        abort: s.abort.unwrap_or(true),
    })
}

/// Checks the invariants of a resolved scenario (one that arrives as JSON, not from a file).
pub(super) fn check(s: &Scenario) -> Result<(), String> {
    if s.name.trim().is_empty() || s.name.len() > 200 {
        return Err("name must be 1 to 200 characters".into());
    }
    Target::parse(&s.target.to_string())?;
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
    for rule in &s.sla {
        let v = match rule.bound {
            Bound::Max(v) | Bound::Min(v) => v,
        };
        if !v.is_finite() || v < 0.0 || !(1000..=3_600_000).contains(&rule.window_ms) {
            return Err(format!("SLA rule `{rule}` out of range"));
        }
        if let Some(req) = &rule.request
            && !names.contains(req.as_str())
        {
            return Err(format!("SLA rule names unknown request `{req}`"));
        }
    }
    Ok(())
}
