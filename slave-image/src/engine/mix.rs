//! The request mix: every scenario request serialized once into HTTP/1.1 bytes, and a weighted
//! draw that picks the next one.
//!
//! A request without `{{item}}` is sent from its prepared bytes as is (no allocation per
//! request); one with `{{item}}` is rendered into a scratch buffer the caller reuses.

use lobster_fleet::scenario::{ITEM, Request, Scenario};

/// One request of the mix, ready to write.
pub struct Prepared {
    /// Index into the recorder's endpoints (the request's position in the scenario).
    pub endpoint: usize,
    /// True for HEAD requests (responses carry no body).
    pub head_method: bool,
    /// Head up to and including the header block's last header line, split at `{{item}}`.
    head: Vec<Part>,
    /// Body, split at `{{item}}`; `None` when the request has no body.
    body: Option<Vec<Part>>,
    /// The whole request when it uses no item.
    fixed: Option<Vec<u8>>,
}

enum Part {
    Literal(Vec<u8>),
    /// The item, percent-encoded when `true` (it lands in the path).
    Item {
        encode: bool,
    },
}

impl Prepared {
    fn new(endpoint: usize, scenario: &Scenario, r: &Request) -> Self {
        let mut head = String::new();
        head.push_str(&r.method);
        head.push(' ');
        let path_start = head.len();
        head.push_str(&scenario.target.base_path);
        head.push_str(&r.path);
        let path_end = head.len();
        head.push_str(" HTTP/1.1\r\n");
        head.push_str(&implied_headers(scenario, r));
        for (k, v) in &r.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in &scenario.headers {
            if !r.headers.iter().any(|(rk, _)| rk.eq_ignore_ascii_case(k)) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        let head_parts = split_parts(&head, Some(path_start..path_end));
        let body_parts = r.body.as_deref().map(|b| split_parts(b, None));
        let fixed = if r.uses_item() {
            None
        } else {
            let mut out = head.clone().into_bytes();
            finish(&mut out, r.body.as_deref().map(str::as_bytes));
            Some(out)
        };
        Prepared {
            endpoint,
            head_method: r.method == "HEAD",
            head: head_parts,
            body: body_parts,
            fixed,
        }
    }

    /// The request bytes; `item` fills `{{item}}` (rendered into `scratch`).
    pub fn bytes<'a>(&'a self, item: &str, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if let Some(fixed) = &self.fixed {
            return fixed;
        }
        scratch.clear();
        render(&self.head, item, scratch);
        match &self.body {
            None => finish(scratch, None),
            Some(parts) => {
                let mut body = Vec::new();
                render(parts, item, &mut body);
                finish(scratch, Some(&body));
            }
        }
        scratch
    }

    /// Whether the request needs a data item.
    pub fn uses_item(&self) -> bool {
        self.fixed.is_none()
    }
}

/// The `Host` and `User-Agent` lines a request gets unless it (or the scenario) sets them.
pub(crate) fn implied_headers(scenario: &Scenario, r: &Request) -> String {
    let has = |name: &str| {
        r.headers
            .iter()
            .chain(&scenario.headers)
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let mut out = String::new();
    if !has("host") {
        out.push_str(&format!("Host: {}\r\n", scenario.target.host_header()));
    }
    if !has("user-agent") {
        out.push_str(&format!(
            "User-Agent: lobster/{}\r\n",
            lobster_fleet::VERSION
        ));
    }
    out
}

fn finish(out: &mut Vec<u8>, body: Option<&[u8]>) {
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

fn render(parts: &[Part], item: &str, out: &mut Vec<u8>) {
    for p in parts {
        match p {
            Part::Literal(b) => out.extend_from_slice(b),
            Part::Item { encode: false } => out.extend_from_slice(item.as_bytes()),
            Part::Item { encode: true } => percent_encode(item, out),
        }
    }
}

/// Escapes what may not appear raw in a path segment.
pub(crate) fn percent_encode(text: &str, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// Splits `text` at every `{{item}}`; items inside `path` are percent-encoded.
fn split_parts(text: &str, path: Option<std::ops::Range<usize>>) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut last = 0;
    for (i, _) in text.match_indices(ITEM) {
        parts.push(Part::Literal(text.as_bytes()[last..i].to_vec()));
        let encode = path.as_ref().is_some_and(|p| p.contains(&i));
        parts.push(Part::Item { encode });
        last = i + ITEM.len();
    }
    parts.push(Part::Literal(text.as_bytes()[last..].to_vec()));
    parts
}

/// All requests of a scenario and their weights.
pub struct Mix {
    pub requests: Vec<Prepared>,
    /// Running sum of weights: request i is drawn for r in [cumulative[i-1], cumulative[i]).
    cumulative: Vec<u64>,
}

impl Mix {
    pub fn new(scenario: &Scenario) -> Self {
        let requests: Vec<_> = scenario
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| Prepared::new(i, scenario, r))
            .collect();
        let mut sum = 0u64;
        let cumulative = scenario
            .requests
            .iter()
            .map(|r| {
                sum += u64::from(r.weight.max(1));
                sum
            })
            .collect();
        Mix {
            requests,
            cumulative,
        }
    }

    /// Sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(1)
    }

    /// The request for a uniform draw `r` in `[0, total_weight)`.
    pub fn pick(&self, r: u64) -> &Prepared {
        let i = if self.cumulative.len() <= 8 {
            self.cumulative.iter().position(|&c| r < c)
        } else {
            Some(self.cumulative.partition_point(|&c| c <= r))
        };
        &self.requests[i.unwrap_or(0).min(self.requests.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::scenario;

    fn scenario(extra: &str) -> Scenario {
        scenario::parse(
            &format!(
                "name: t\ntarget: http://127.0.0.1:9/base\nduration: 1s\nload: {{users: 1}}\n{extra}"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn fixed_request_bytes() {
        let s = scenario(
            "headers: {X-A: a}\nrequests:\n  - {name: p, method: post, path: /x, body: hi, headers: {X-A: b}}\n",
        );
        let mix = Mix::new(&s);
        let mut scratch = Vec::new();
        let text = String::from_utf8(mix.requests[0].bytes("", &mut scratch).to_vec()).unwrap();
        assert!(
            text.starts_with("POST /base/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
            "{text}"
        );
        assert!(
            text.contains("X-A: b\r\n") && !text.contains("X-A: a"),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 2\r\n\r\nhi"), "{text}");
        assert!(!mix.requests[0].uses_item());
    }

    #[test]
    fn items_are_rendered_and_encoded_in_paths() {
        let s = scenario(
            "data: {items: [a b]}\nrequests:\n  - {name: p, path: '/u/{{item}}', body: 'id={{item}}'}\n",
        );
        let mix = Mix::new(&s);
        let mut scratch = Vec::new();
        let text = String::from_utf8(mix.requests[0].bytes("a b", &mut scratch).to_vec()).unwrap();
        assert!(text.starts_with("GET /base/u/a%20b HTTP/1.1\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 6\r\n\r\nid=a b"), "{text}");
    }

    #[test]
    fn weighted_pick_covers_each_weight_exactly() {
        let s = scenario(
            "requests:\n  - {name: a, path: /a}\n  - {name: b, path: /b, weight: 2}\n  - {name: c, path: /c, weight: 3}\n",
        );
        let mix = Mix::new(&s);
        assert_eq!(mix.total_weight(), 6);
        let picks: Vec<usize> = (0..6).map(|r| mix.pick(r).endpoint).collect();
        assert_eq!(picks, vec![0, 1, 1, 2, 2, 2]);
    }
}
