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

pub(super) fn resolve_requests(
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
            Some(w) => w
                .value
                .in_range("weight", 1, 1_000_000)
                .map_err(|e| fault(w.referenced, e))? as u32,
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

pub(super) fn unknown_variable(text: &str) -> Option<String> {
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
