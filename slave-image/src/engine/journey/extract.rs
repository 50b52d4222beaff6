//! Captures and checks over a kept response: its head (for headers and cookies) and body.

use lobster_fleet::scenario::{Capture, Check, Rule, Source};

use crate::engine::http::{Kept, Response};

/// A capture or check, compiled once per run.
#[derive(Debug)]
pub(crate) enum Finder {
    Header(String),
    Regex(regex::Regex),
    Json(String),
    Html {
        selector: scraper::Selector,
        attr: Option<String>,
    },
}

impl Finder {
    pub(crate) fn new(source: &Source) -> Result<Self, String> {
        Ok(match source {
            Source::Header(h) => Finder::Header(h.to_ascii_lowercase()),
            Source::Regex(r) => Finder::Regex(regex::Regex::new(r).map_err(|e| e.to_string())?),
            Source::Json(p) => Finder::Json(p.clone()),
            Source::Html { selector, attr } => Finder::Html {
                selector: scraper::Selector::parse(selector).map_err(|e| e.to_string())?,
                attr: attr.clone(),
            },
        })
    }

    /// The first value found, if any.
    pub(crate) fn find(&self, kept: &Kept) -> Option<String> {
        match self {
            Finder::Header(name) => header(&kept.head, name).map(str::to_string),
            Finder::Regex(re) => {
                let body = String::from_utf8_lossy(&kept.body);
                let c = re.captures(&body)?;
                let m = c.get(1).or_else(|| c.get(0))?;
                Some(m.as_str().to_string())
            }
            Finder::Json(pointer) => {
                let v: serde_json::Value = serde_json::from_slice(&kept.body).ok()?;
                Some(match v.pointer(pointer)? {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }
            Finder::Html { selector, attr } => {
                let body = String::from_utf8_lossy(&kept.body);
                let doc = scraper::Html::parse_document(&body);
                let el = doc.select(selector).next()?;
                match attr {
                    Some(a) => el.value().attr(a).map(str::to_string),
                    None => Some(el.text().collect::<String>().trim().to_string()),
                }
            }
        }
    }
}

/// A step's capture, compiled.
#[derive(Debug)]
pub(crate) struct CompiledCapture {
    pub name: String,
    pub finder: Finder,
    /// How the sample message names it.
    pub shown: String,
}

impl CompiledCapture {
    pub(crate) fn new(c: &Capture) -> Result<Self, String> {
        let shown = match &c.from {
            Source::Header(h) => format!("header {h}"),
            Source::Regex(r) => format!("regex {r:?}"),
            Source::Json(p) => format!("JSON pointer {p}"),
            Source::Html {
                selector,
                attr: Some(a),
            } => format!("html {selector:?} attribute {a}"),
            Source::Html {
                selector,
                attr: None,
            } => format!("html {selector:?}"),
        };
        Ok(CompiledCapture {
            name: c.name.clone(),
            finder: Finder::new(&c.from)?,
            shown,
        })
    }
}

/// A step's check, compiled.
#[derive(Debug)]
pub(crate) enum CompiledCheck {
    Status(Vec<u16>),
    BodyContains(String),
    BodyRegex(regex::Regex),
    Header(String),
    Json {
        pointer: String,
        equals: Option<String>,
    },
    MaxBytes(u64),
}

impl CompiledCheck {
    pub(crate) fn new(c: &Check) -> Result<Self, String> {
        Ok(match &c.rule {
            Rule::Status(codes) => CompiledCheck::Status(codes.clone()),
            Rule::BodyContains(t) => CompiledCheck::BodyContains(t.clone()),
            Rule::BodyRegex(r) => {
                CompiledCheck::BodyRegex(regex::Regex::new(r).map_err(|e| e.to_string())?)
            }
            Rule::Header(h) => CompiledCheck::Header(h.to_ascii_lowercase()),
            Rule::Json { pointer, equals } => CompiledCheck::Json {
                pointer: pointer.clone(),
                equals: equals.clone(),
            },
            Rule::MaxBytes(n) => CompiledCheck::MaxBytes(*n),
        })
    }

    /// Whether the response passes (`kept` is `None` when nothing came back).
    pub(crate) fn passes(&self, resp: Option<&Response>, kept: Option<&Kept>) -> bool {
        let (Some(resp), Some(kept)) = (resp, kept) else {
            return false;
        };
        match self {
            CompiledCheck::Status(codes) => codes.contains(&resp.status),
            CompiledCheck::BodyContains(t) => {
                !t.is_empty() && kept.body.windows(t.len()).any(|w| w == t.as_bytes())
            }
            CompiledCheck::BodyRegex(re) => re.is_match(&String::from_utf8_lossy(&kept.body)),
            CompiledCheck::Header(h) => header(&kept.head, h).is_some(),
            CompiledCheck::Json { pointer, equals } => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&kept.body) else {
                    return false;
                };
                match (v.pointer(pointer), equals) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(serde_json::Value::String(s)), Some(e)) => s == e,
                    (Some(other), Some(e)) => serde_json::from_str::<serde_json::Value>(e)
                        .is_ok_and(|want| &want == other),
                }
            }
            CompiledCheck::MaxBytes(n) => !kept.truncated && kept.body.len() as u64 <= *n,
        }
    }
}

/// The value of the first header named `name` (lowercase) in a response head.
pub(crate) fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    headers(head)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Every header line of a response head as (name, value), values trimmed.
pub(crate) fn headers(head: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            Some((k.trim(), v.trim()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(head: &str, body: &str) -> Kept {
        Kept {
            head: head.as_bytes().to_vec(),
            body: body.as_bytes().to_vec(),
            truncated: false,
            want_body: true,
        }
    }

    #[test]
    fn each_capture_kind_finds_its_value_or_nothing() {
        let k = kept(
            "HTTP/1.1 200 OK\r\nX-Token: abc\r\nSet-Cookie: a=1\r\n\r\n",
            r#"<html><form><input type="hidden" name="csrf_token" value="t0k3n"><p class="who"> Ann </p></form>{"id": 7}</html>"#,
        );
        let find = |s: Source| Finder::new(&s).unwrap().find(&k);
        assert_eq!(
            find(Source::Header("x-token".into())).as_deref(),
            Some("abc")
        );
        assert_eq!(find(Source::Header("x-none".into())), None);
        assert_eq!(
            find(Source::Regex(r#"value="(\w+)""#.into())).as_deref(),
            Some("t0k3n")
        );
        assert_eq!(find(Source::Regex("nomatch".into())), None);
        let html = |sel: &str, attr: Option<&str>| Source::Html {
            selector: sel.into(),
            attr: attr.map(str::to_string),
        };
        assert_eq!(
            find(html("input[name=csrf_token]", Some("value"))).as_deref(),
            Some("t0k3n")
        );
        assert_eq!(find(html("p.who", None)).as_deref(), Some("Ann"));
        assert_eq!(find(html("input[name=other]", Some("value"))), None);
        let json = kept(
            "HTTP/1.1 200 OK\r\n\r\n",
            r#"{"user": {"id": 42, "name": "Ann"}, "tags": ["a~b"]}"#,
        );
        let jfind = |p: &str| Finder::new(&Source::Json(p.into())).unwrap().find(&json);
        assert_eq!(jfind("/user/id").as_deref(), Some("42"));
        assert_eq!(jfind("/user/name").as_deref(), Some("Ann"));
        assert_eq!(jfind("/tags/0").as_deref(), Some("a~b"));
        assert_eq!(jfind("/user/missing"), None);
    }

    #[test]
    fn each_check_kind_passes_and_fails() {
        let resp = Response {
            status: 200,
            bytes: 0,
            keep_alive: true,
            waiting: std::time::Duration::ZERO,
            receiving: std::time::Duration::ZERO,
        };
        let k = kept(
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n",
            r#"{"ok": true, "name": "Signed in"}"#,
        );
        let check = |r: Rule| {
            CompiledCheck::new(&Check {
                label: "x".into(),
                rule: r,
            })
            .unwrap()
            .passes(Some(&resp), Some(&k))
        };
        assert!(check(Rule::Status(vec![200, 201])));
        assert!(!check(Rule::Status(vec![404])));
        assert!(check(Rule::BodyContains("Signed in".into())));
        assert!(!check(Rule::BodyContains("Signed out".into())));
        assert!(check(Rule::BodyRegex(r#""ok":\s*true"#.into())));
        assert!(!check(Rule::BodyRegex("^nope".into())));
        assert!(check(Rule::Header("x-a".into())));
        assert!(!check(Rule::Header("x-b".into())));
        let json = |p: &str, e: Option<&str>| Rule::Json {
            pointer: p.into(),
            equals: e.map(str::to_string),
        };
        assert!(check(json("/ok", None)));
        assert!(check(json("/ok", Some("true"))));
        assert!(check(json("/name", Some("Signed in"))));
        assert!(!check(json("/name", Some("x"))));
        assert!(!check(json("/missing", None)));
        assert!(check(Rule::MaxBytes(100)));
        assert!(!check(Rule::MaxBytes(5)));
        // No response at all: every check fails.
        let c = CompiledCheck::new(&Check {
            label: "x".into(),
            rule: Rule::Status(vec![200]),
        })
        .unwrap();
        assert!(!c.passes(None, None));
    }
}
