//! The `requests` section: methods, paths, headers, bodies, weights, expected statuses and
//! `{{item}}` variables.

use super::*;

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn check_headers(
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

/// The `requests:` list: each request an endpoint of the mix. Requests with checks run as
/// one-step flows (their responses are read); a capture needs a later step, so it is refused.
pub(super) fn resolve_requests(
    list: &Spanned<Vec<Spanned<RequestFile>>>,
    data: &DataShape,
    env: &dyn Fn(&str) -> Option<String>,
) -> Res<(Vec<Request>, Vec<Flow>)> {
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
        if let Some(c) = r.value.capture.first() {
            return Err(fault(
                c.referenced,
                "`capture` keeps a value for a later step: write the steps in `flows`",
            ));
        }
        out.push(resolve_step(
            &r.value,
            &mut names,
            data,
            &BTreeSet::new(),
            env,
        )?);
    }
    let flows = if out.iter().any(|r| r.reads_response() || r.uses_generated()) {
        out.iter()
            .enumerate()
            .map(|(i, r)| Flow {
                name: r.name.clone(),
                weight: r.weight,
                steps: vec![i],
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok((out, flows))
}

/// One request or flow step. `known` holds the variables earlier steps of its flow capture;
/// `{{env.NAME}}` is replaced by the environment's value here.
pub(super) fn resolve_step(
    r: &RequestFile,
    names: &mut BTreeSet<String>,
    data: &DataShape,
    known: &BTreeSet<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Res<Request> {
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
    let expand = |text: &str| expand_env(text, env).map_err(|m| fault(r.name.referenced, m));
    let path = expand(path)?;
    let headers = check_headers(&r.headers, r.name.referenced)?
        .into_iter()
        .map(|(k, v)| Ok((k, expand(&v)?)))
        .collect::<Res<Vec<_>>>()?;
    if headers.iter().any(|(_, v)| v.contains(['\r', '\n', '\0'])) {
        return Err(fault(
            r.name.referenced,
            "an environment value put a line break into a header",
        ));
    }
    let body = r.body.as_deref().map(expand).transpose()?;
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
        Some(w) => w
            .value
            .in_range("weight", 1, 1_000_000)
            .map_err(|e| fault(w.referenced, e))? as u32,
    };
    let think = r.think.as_ref().map(resolve_think).transpose()?;
    let continue_on_failure = match &r.on_failure {
        None => false,
        Some(v) => match v.value.trim() {
            "stop" => false,
            "continue" => true,
            _ => {
                return Err(fault(
                    v.referenced,
                    "on_failure must be `stop` (the default: a failed step ends its flow instance) or `continue` (go on with the next step)",
                ));
            }
        },
    };
    let capture = r
        .capture
        .iter()
        .map(resolve_capture)
        .collect::<Res<Vec<_>>>()?;
    let check = r
        .check
        .iter()
        .map(|c| resolve_check(name, c))
        .collect::<Res<Vec<_>>>()?;
    let req = Request {
        name: name.to_string(),
        method,
        path,
        headers,
        body,
        expect,
        weight,
        capture,
        check,
        think,
        follow_redirects: r.follow_redirects.unwrap_or(false),
        browse: r.browse.as_ref().map(resolve_browse).transpose()?,
        continue_on_failure,
    };
    let texts = std::iter::once(req.path.as_str())
        .chain(req.body.as_deref())
        .chain(req.headers.iter().map(|(_, v)| v.as_str()));
    for t in texts {
        for var in variables(t) {
            if known.contains(var) {
                continue;
            }
            if var == "item" && !data.columns.is_empty() {
                return Err(fault(
                    r.name.referenced,
                    format!(
                        "the data file has columns ({}): use {{{{row.NAME}}}}, not {ITEM}",
                        data.columns.join(", ")
                    ),
                ));
            }
            if var == "item" || var == "serial" || var == "uuid" {
                continue;
            }
            if let Some(col) = var.strip_prefix("row.") {
                if data.columns.iter().any(|c| c == col) {
                    continue;
                }
                let have = if data.columns.is_empty() {
                    "the scenario's data has no columns (a .csv or .tsv file with a header row gives them)".to_string()
                } else {
                    format!("its columns are {}", data.columns.join(", "))
                };
                return Err(fault(
                    r.name.referenced,
                    format!("unknown column in `{{{{{var}}}}}`: {have}"),
                ));
            }
            let have: Vec<String> = known.iter().map(|k| format!("{{{{{k}}}}}")).collect();
            let have = if have.is_empty() {
                String::new()
            } else {
                format!(" (captured so far: {})", have.join(", "))
            };
            return Err(fault(
                r.name.referenced,
                format!(
                    "unknown variable `{{{{{var}}}}}`: a variable is captured by an earlier step of the same flow{have}, or is {ITEM}, {{{{row.NAME}}}}, {{{{serial}}}}, {{{{uuid}}}} or {{{{env.NAME}}}}"
                ),
            ));
        }
    }
    if req.uses_item() && !data.has_items {
        return Err(fault(
            r.name.referenced,
            format!("request `{name}` uses {ITEM} but the scenario has no `data`"),
        ));
    }
    Ok(req)
}

/// Replaces every `{{env.NAME}}` with the environment's value; a missing one is an error.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else { break };
        let var = after[..end].trim();
        out.push_str(&rest[..i]);
        match var.strip_prefix("env.") {
            Some(key) => {
                let value = env(key).ok_or_else(|| {
                    format!(
                        "`{{{{env.{key}}}}}`: the environment variable {key} is not set (set it where `lobster run` runs; through the API, give it under `env`)"
                    )
                })?;
                out.push_str(&value);
            }
            None => out.push_str(&rest[i..i + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
