//! A flow step's request as a template: its head and body split at `{{name}}` and `{{item}}`,
//! rendered per request with the user's variables and cookies.

use std::collections::HashMap;

use lobster_fleet::scenario::{Request, Scenario};

/// A piece of a template.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A variable (`item` for the data item); percent-encoded when `encode` (in the path).
    Var {
        name: String,
        encode: bool,
    },
}

/// A step's request, ready to render.
#[derive(Debug)]
pub(crate) struct Template {
    /// `METHOD ` + path (+ ` HTTP/1.1\r\n` and the header lines after it).
    head: Vec<Part>,
    body: Option<Vec<Part>>,
    /// The path's parts alone (for the cookie jar's URL).
    path: Vec<Part>,
}

impl Template {
    pub(crate) fn new(scenario: &Scenario, r: &Request) -> Self {
        let path_text = format!("{}{}", scenario.target.base_path, r.path);
        let mut head = vec![Part::Literal(format!("{} ", r.method))];
        head.extend(split(&path_text, true));
        let mut lines = String::from(" HTTP/1.1\r\n");
        lines.push_str(&crate::engine::mix::implied_headers(scenario, r));
        head.push(Part::Literal(lines));
        let own = r.headers.iter();
        let shared = scenario
            .headers
            .iter()
            .filter(|(k, _)| !r.headers.iter().any(|(rk, _)| rk.eq_ignore_ascii_case(k)));
        for (k, v) in own.chain(shared) {
            head.push(Part::Literal(format!("{k}: ")));
            head.extend(split(v, false));
            head.push(Part::Literal("\r\n".into()));
        }
        Template {
            head,
            body: r.body.as_deref().map(|b| split(b, false)),
            path: split(&path_text, true),
        }
    }

    /// Renders the request into `out`: the head, a `Cookie` header when `cookie` is not
    /// empty, `Content-Length` and the body.
    pub(crate) fn render(&self, vars: &Vars<'_>, cookie: &str, out: &mut Vec<u8>) {
        out.clear();
        render(&self.head, vars, out, true);
        if !cookie.is_empty() {
            out.extend_from_slice(b"Cookie: ");
            out.extend_from_slice(cookie.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match &self.body {
            None => out.extend_from_slice(b"\r\n"),
            Some(parts) => {
                let mut body = Vec::new();
                render(parts, vars, &mut body, true);
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
        }
    }

    /// The request's path as rendered (for matching cookies; `{{serial}}` and `{{uuid}}`
    /// render empty here).
    pub(crate) fn path(&self, vars: &Vars<'_>) -> String {
        let mut out = Vec::new();
        render(&self.path, vars, &mut out, false);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What `{{name}}` stands for: the user's captured variables, its data item, and that item's
/// fields when the data has columns (`{{row.NAME}}`).
pub(crate) struct Vars<'a> {
    pub captured: &'a HashMap<String, String>,
    pub item: &'a str,
    pub columns: &'a [String],
    pub row: &'a [String],
    /// This slave's `{{serial}}` counter.
    pub serial: &'a Serial,
}

/// `{{serial}}`: numbers unique across all slaves of a run without coordination: use `k` on
/// the slave with run ordinal `o` (given by the master, never reused) is `k × 2^24 + o`.
#[derive(Debug, Default)]
pub struct Serial {
    ordinal: u64,
    next: std::sync::atomic::AtomicU64,
}

/// Ordinals below this keep serials unique (16 777 216 slaves in one run).
const SERIAL_STRIDE: u64 = 1 << 24;

impl Serial {
    pub fn new(ordinal: u32) -> Self {
        Serial {
            ordinal: u64::from(ordinal) % SERIAL_STRIDE,
            next: Default::default(),
        }
    }

    fn take(&self) -> u64 {
        let k = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        k * SERIAL_STRIDE + self.ordinal
    }
}

impl Vars<'_> {
    fn get(&self, name: &str) -> &str {
        if name == "item" {
            return self.item;
        }
        if let Some(col) = name.strip_prefix("row.") {
            let i = self.columns.iter().position(|c| c == col);
            return i.and_then(|i| self.row.get(i)).map_or("", String::as_str);
        }
        self.captured.get(name).map_or("", String::as_str)
    }
}

/// Renders `parts`; `fresh` draws `{{serial}}` and `{{uuid}}` values (else they render empty,
/// for a path only used to match cookies).
fn render(parts: &[Part], vars: &Vars<'_>, out: &mut Vec<u8>, fresh: bool) {
    for p in parts {
        match p {
            Part::Literal(t) => out.extend_from_slice(t.as_bytes()),
            Part::Var { name, .. } if name == "serial" => {
                if fresh {
                    out.extend_from_slice(vars.serial.take().to_string().as_bytes());
                }
            }
            Part::Var { name, .. } if name == "uuid" => {
                if fresh {
                    out.extend_from_slice(uuid::Uuid::new_v4().to_string().as_bytes());
                }
            }
            Part::Var { name, encode } => {
                let v = vars.get(name);
                if *encode {
                    crate::engine::mix::percent_encode(v, out);
                } else {
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
}

fn split(text: &str, encode: bool) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else { break };
        if i > 0 {
            parts.push(Part::Literal(rest[..i].to_string()));
        }
        parts.push(Part::Var {
            name: after[..end].trim().to_string(),
            encode,
        });
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_render_raw_in_bodies_and_encoded_in_paths_with_cookies() {
        let s = lobster_fleet::scenario::parse(
            "name: t\ntarget: http://127.0.0.1:9/base\nduration: 1s\nload: {users: 1}\nflows:\n  - name: f\n    steps:\n      - name: a\n        path: /\n        capture: [{name: tok, header: x-token}]\n      - {name: b, method: post, path: '/u/{{tok}}', body: 'csrf={{tok}}&x=1', headers: {X-T: '{{tok}}'}}\n",
            "t.yaml",
        )
        .unwrap();
        let t = Template::new(&s, &s.requests[1]);
        let captured = HashMap::from([("tok".to_string(), "a b&c".to_string())]);
        let columns = ["email".to_string()];
        let row = ["a@x.io".to_string()];
        let serial = Serial::new(3);
        let vars = Vars {
            captured: &captured,
            item: "",
            columns: &columns,
            row: &row,
            serial: &serial,
        };
        let mut out = Vec::new();
        t.render(&vars, "sid=1; lang=en", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("POST /base/u/a%20b&c HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
            "{text}"
        );
        assert!(
            text.contains("X-T: a b&c\r\nCookie: sid=1; lang=en\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Content-Length: 14\r\n\r\ncsrf=a b&c&x=1"),
            "{text}"
        );
        assert_eq!(t.path(&vars), "/base/u/a%20b&c");
        let mut r = s.requests[1].clone();
        r.path = "/u/{{row.email}}/{{row.none}}".into();
        assert_eq!(Template::new(&s, &r).path(&vars), "/base/u/a@x.io/");
        r.path = "/s/{{serial}}/{{serial}}/{{uuid}}".into();
        let mut out = Vec::new();
        Template::new(&s, &r).render(&vars, "", &mut out);
        let text = String::from_utf8(out).unwrap();
        let path = text.split(' ').nth(1).unwrap();
        let parts: Vec<&str> = path.split('/').collect();
        assert_eq!(&parts[..5], ["", "base", "s", "3", "16777219"], "{path}");
        assert!(
            uuid::Uuid::parse_str(parts[5]).is_ok_and(|u| u.get_version_num() == 4),
            "{path}"
        );
    }
}
