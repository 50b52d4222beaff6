//! Journeys: the `flows` section, and each step's `capture`, `check` and `think` (regular
//! expressions, CSS selectors and JSON pointers are checked here, so a bad one is an error at
//! its line and column before anything runs).

use super::*;
use crate::scenario::file::{BrowseFile, CaptureFile, CheckFile, FlowFile};
use crate::scenario::journey::{is_json_pointer, is_variable_name};
use crate::scenario::{Browse, Capture, Check, Flow, Group, Rule, Source};

/// Most flows in a scenario.
const MAX_FLOWS: usize = 100;

/// The `flows` list: every step resolved (an endpoint each), and the flows over them.
pub(super) fn resolve_flows(
    list: &Spanned<Vec<Spanned<FlowFile>>>,
    data: &DataShape,
    env: &dyn Fn(&str) -> Option<String>,
) -> Res<(Vec<Request>, Vec<Flow>)> {
    if list.value.is_empty() || list.value.len() > MAX_FLOWS {
        return Err(fault(
            list.referenced,
            format!("flows must list 1 to {MAX_FLOWS} flows"),
        ));
    }
    let mut step_names = BTreeSet::new();
    let mut flow_names = BTreeSet::new();
    let mut requests = Vec::new();
    let mut flows = Vec::new();
    for f in &list.value {
        let f = &f.value;
        let name = f.name.value.trim();
        if name.is_empty() || name.len() > 100 || !flow_names.insert(name.to_string()) {
            return Err(fault(
                f.name.referenced,
                format!("flow name `{name}` must be 1 to 100 characters and unique"),
            ));
        }
        if f.steps.value.is_empty() {
            return Err(fault(f.steps.referenced, "a flow needs at least one step"));
        }
        let weight = match &f.weight {
            None => 1,
            Some(w) => w
                .value
                .in_range("weight", 1, 1_000_000)
                .map_err(|e| fault(w.referenced, e))? as u32,
        };
        let mut known = BTreeSet::new();
        let mut steps = Vec::new();
        for step in &f.steps.value {
            if requests.len() == MAX_REQUESTS {
                return Err(fault(
                    step.referenced,
                    format!("more than {MAX_REQUESTS} steps"),
                ));
            }
            let r = resolve_step(&step.value, &mut step_names, data, &known, env)?;
            known.extend(r.capture.iter().map(|c| c.name.clone()));
            steps.push(requests.len());
            requests.push(r);
        }
        flows.push(Flow {
            name: name.to_string(),
            weight,
            steps,
        });
    }
    Ok((requests, flows))
}

pub(super) fn resolve_think(t: &Spanned<ThinkValue>) -> Res<Think> {
    let (min, max) = (t.value.min, t.value.max);
    if min > max {
        return Err(fault(
            t.referenced,
            "think: min must not be larger than max",
        ));
    }
    if max > MAX_PAUSE {
        return Err(fault(t.referenced, "think time must be at most 1h"));
    }
    Ok(Think { min, max })
}

pub(super) fn resolve_capture(c: &Spanned<CaptureFile>) -> Res<Capture> {
    let f = &c.value;
    let name = f.name.value.trim();
    if !is_variable_name(name) || ["item", "env", "row", "serial", "uuid"].contains(&name) {
        return Err(fault(
            f.name.referenced,
            format!(
                "capture name `{name}` must be a letter or `_` then letters, digits or `_` (at most 64), not item, env, row, serial or uuid"
            ),
        ));
    }
    let from = match (&f.header, &f.regex, &f.json, &f.html) {
        (Some(h), None, None, None) => Source::Header(header_name(h)?),
        (None, Some(r), None, None) => Source::Regex(regex(r)?),
        (None, None, Some(j), None) => Source::Json(pointer(j)?),
        (None, None, None, Some(h)) => Source::Html {
            selector: selector(h)?,
            attr: f.attr.as_ref().map(|a| a.value.trim().to_string()),
        },
        _ => {
            return Err(fault(
                c.referenced,
                "a capture takes exactly one of `header`, `regex`, `json` (a JSON pointer) or `html` (a CSS selector, with an optional `attr`)",
            ));
        }
    };
    if f.attr.is_some() && !matches!(from, Source::Html { .. }) {
        return Err(fault(
            c.referenced,
            "`attr` goes with `html` (the attribute of the element the selector finds)",
        ));
    }
    Ok(Capture {
        name: name.to_string(),
        from,
    })
}

pub(super) fn resolve_check(step: &str, c: &Spanned<CheckFile>) -> Res<Check> {
    let f = &c.value;
    let given = [
        f.status.is_some(),
        f.body_contains.is_some(),
        f.body_regex.is_some(),
        f.header.is_some(),
        f.json.is_some(),
        f.max_bytes.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(fault(
            c.referenced,
            "a check takes exactly one of `status`, `body_contains`, `body_regex`, `header`, `json` (with an optional `equals`) or `max_bytes`",
        ));
    }
    if f.equals.is_some() && f.json.is_none() {
        return Err(fault(c.referenced, "`equals` goes with `json`"));
    }
    let (rule, shown) = if let Some(s) = &f.status {
        let codes = s.value.0.clone();
        if codes.iter().any(|c| !(100..=599).contains(c)) {
            return Err(fault(
                s.referenced,
                "status takes HTTP status codes between 100 and 599",
            ));
        }
        let list: Vec<String> = codes.iter().map(u16::to_string).collect();
        (Rule::Status(codes), format!("status {}", list.join(" or ")))
    } else if let Some(t) = &f.body_contains {
        (
            Rule::BodyContains(t.value.clone()),
            format!("body_contains {:?}", t.value),
        )
    } else if let Some(r) = &f.body_regex {
        (
            Rule::BodyRegex(regex(r)?),
            format!("body_regex {:?}", r.value),
        )
    } else if let Some(h) = &f.header {
        let h = header_name(h)?;
        (Rule::Header(h.clone()), format!("header {h}"))
    } else if let Some(j) = &f.json {
        let pointer = pointer(j)?;
        let equals = f.equals.as_ref().map(|e| e.value.clone());
        let shown = match &equals {
            Some(e) => format!("json {pointer} == {e:?}"),
            None => format!("json {pointer}"),
        };
        (Rule::Json { pointer, equals }, shown)
    } else {
        let m = f.max_bytes.as_ref().expect("one rule is given");
        let n = m
            .value
            .in_range("max_bytes", 0, 1 << 40)
            .map_err(|e| fault(m.referenced, e))?;
        (Rule::MaxBytes(n), format!("max_bytes {n}"))
    };
    Ok(Check {
        label: format!("{step}: {shown}"),
        rule,
    })
}

/// Most browse groups of a step (each an endpoint of the report).
const MAX_GROUPS: usize = 50;

pub(super) fn resolve_browse(b: &Spanned<BrowseFile>) -> Res<Browse> {
    let f = &b.value;
    let depth = f
        .depth
        .as_ref()
        .map(|d| {
            d.value
                .in_range("browse.depth", 1, 1_000_000)
                .map_err(|e| fault(d.referenced, e))
        })
        .transpose()?;
    if f.groups.len() > MAX_GROUPS {
        return Err(fault(
            b.referenced,
            format!("at most {MAX_GROUPS} browse groups (each is an endpoint of the report)"),
        ));
    }
    let groups = f
        .groups
        .iter()
        .map(|g| {
            let name = g.value.name.value.trim();
            if name.is_empty() || name.len() > 100 {
                return Err(fault(
                    g.value.name.referenced,
                    "a browse group's name must be 1 to 100 characters",
                ));
            }
            Ok(Group {
                name: name.to_string(),
                path: regex(&g.value.path)?,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(Browse {
        depth,
        include: f.include.iter().map(regex).collect::<Res<_>>()?,
        exclude: f.exclude.iter().map(regex).collect::<Res<_>>()?,
        think: f.think.as_ref().map(resolve_think).transpose()?,
        groups,
    })
}

fn header_name(h: &Spanned<String>) -> Res<String> {
    let name = h.value.trim();
    if !is_token(name) {
        return Err(fault(
            h.referenced,
            format!("`{name}` is not a header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn regex(r: &Spanned<String>) -> Res<String> {
    regex::Regex::new(&r.value).map_err(|e| {
        let first = e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        fault(
            r.referenced,
            format!("invalid regular expression `{}`: {first}", r.value),
        )
    })?;
    Ok(r.value.clone())
}

fn pointer(j: &Spanned<String>) -> Res<String> {
    let p = j.value.trim();
    if !is_json_pointer(p) {
        return Err(fault(
            j.referenced,
            format!(
                "`{p}` is not a JSON pointer (RFC 6901): expected e.g. `/user/id` or `/items/0/name`"
            ),
        ));
    }
    Ok(p.to_string())
}

fn selector(h: &Spanned<String>) -> Res<String> {
    let text = h.value.trim();
    scraper::Selector::parse(text)
        .map_err(|e| fault(h.referenced, format!("invalid CSS selector `{text}`: {e}")))?;
    Ok(text.to_string())
}
