//! The EC2 Query protocol, request side: form-encoded parameters (`Action=…&Version=…`),
//! numbered lists (`InstanceId.1`), filters (`Filter.1.Name`, `Filter.1.Value.1`), tags and
//! tag specifications, as aws-sdk-ec2 and the aws CLI send them.

use std::collections::BTreeMap;

use crate::cloud::Tags;

/// Most parameters accepted in one request.
pub const MAX_PARAMS: usize = 2000;
/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Most items in one numbered list.
const MAX_LIST: usize = 1000;

/// A client error as EC2 reports it: a code and a message (HTTP 400 unless said otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// A parsed request.
#[derive(Debug)]
pub struct Query {
    pub action: String,
    params: BTreeMap<String, String>,
}

/// One filter: a name and the values any of which may match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Query {
    /// Parses the URL query and the form body together.
    pub fn parse(url_query: Option<&str>, body: &[u8]) -> Result<Query, ApiError> {
        if body.len() > MAX_BODY {
            return Err(
                ApiError::new("RequestEntityTooLarge", "request body larger than 1 MiB")
                    .with_status(413),
            );
        }
        let mut params = BTreeMap::new();
        let pairs = url_query
            .map(|q| form_urlencoded::parse(q.as_bytes()))
            .into_iter()
            .flatten()
            .chain(form_urlencoded::parse(body));
        for (k, v) in pairs {
            if params.len() >= MAX_PARAMS {
                return Err(ApiError::new(
                    "MalformedQueryString",
                    format!("more than {MAX_PARAMS} parameters"),
                ));
            }
            if k.is_empty() {
                return Err(ApiError::new(
                    "MalformedQueryString",
                    "a parameter has an empty name",
                ));
            }
            // Percent-decoding replaced bytes that are not UTF-8 with U+FFFD.
            if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
                return Err(ApiError::new(
                    "MalformedQueryString",
                    format!(
                        "parameter `{}` is not valid UTF-8 once decoded",
                        k.escape_debug()
                    ),
                ));
            }
            params.insert(k.into_owned(), v.into_owned());
        }
        let action = params.remove("Action").ok_or_else(|| {
            ApiError::new(
                "MissingAction",
                "The request must contain the parameter Action",
            )
        })?;
        match params.get("Version").map(String::as_str) {
            Some(_) => {}
            None => {
                return Err(ApiError::new(
                    "MissingParameter",
                    "The request must contain the parameter Version",
                ));
            }
        }
        Ok(Query { action, params })
    }

    /// An optional parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A required parameter.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing(name))
    }

    /// A list parameter (`NAME.1`, `NAME.2`, …) that must have at least one item.
    pub fn required_list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let items = self.list(prefix)?;
        if items.is_empty() {
            return Err(missing(prefix));
        }
        Ok(items)
    }

    /// A required integer parameter.
    pub fn required_int(&self, name: &str) -> Result<i64, ApiError> {
        self.int(name)?.ok_or_else(|| missing(name))
    }

    /// An optional integer parameter.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::new(
                        "InvalidParameterValue",
                        format!("{name} must be an integer, got `{v}`"),
                    )
                })
            })
            .transpose()
    }

    /// A boolean parameter (`true`/`false`), default false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ApiError::new(
                "InvalidParameterValue",
                format!("{name} must be true or false, got `{v}`"),
            )),
        }
    }

    /// A numbered list `Prefix.1`, `Prefix.2`, … in index order.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut items = BTreeMap::new();
        let dotted = format!("{prefix}.");
        for (k, v) in self.params.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else {
                break;
            };
            let n = index(rest, k)?;
            items.insert(n, v.clone());
        }
        if items.len() > MAX_LIST {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!("{prefix}: more than {MAX_LIST} items"),
            ));
        }
        Ok(items.into_values().collect())
    }

    /// Sub-parameters of numbered entries: `Prefix.N.Rest` → N → (Rest → value).
    fn groups(&self, prefix: &str) -> Result<BTreeMap<u32, BTreeMap<String, String>>, ApiError> {
        let mut out: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        let dotted = format!("{prefix}.");
        for (k, v) in self.params.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else {
                break;
            };
            let (n, sub) = rest.split_once('.').ok_or_else(|| {
                ApiError::new("InvalidParameter", format!("malformed parameter `{k}`"))
            })?;
            let n = index(n, k)?;
            out.entry(n).or_default().insert(sub.to_string(), v.clone());
            if out.len() > MAX_LIST {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    format!("{prefix}: more than {MAX_LIST} entries"),
                ));
            }
        }
        Ok(out)
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filters(&self) -> Result<Vec<Filter>, ApiError> {
        self.groups("Filter")?
            .into_values()
            .map(|g| {
                let name = g
                    .get("Name")
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::new("InvalidParameterValue", "a filter has no Name")
                    })?;
                let mut values: Vec<(u32, String)> = g
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix("Value.").map(|n| (n, v)))
                    .map(|(n, v)| Ok((index(n, "Filter Value")?, v.clone())))
                    .collect::<Result<_, ApiError>>()?;
                values.sort();
                Ok(Filter {
                    name,
                    values: values.into_iter().map(|(_, v)| v).collect(),
                })
            })
            .collect()
    }

    /// `Tag.N.Key` / `Tag.N.Value` (CreateTags, DeleteTags).
    pub fn tags(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, ApiError> {
        self.groups(prefix)?
            .into_values()
            .map(|g| {
                let key = g
                    .get("Key")
                    .cloned()
                    .ok_or_else(|| ApiError::new("InvalidParameterValue", "a tag has no Key"))?;
                check_tag(&key, g.get("Value").map(String::as_str))?;
                Ok((key, g.get("Value").cloned()))
            })
            .collect()
    }

    /// `TagSpecification.N.ResourceType` / `.Tag.M.Key|Value`: the tags for `resource_type`.
    pub fn tag_specifications(&self, resource_type: &str) -> Result<Tags, ApiError> {
        let mut out = Tags::new();
        for g in self.groups("TagSpecification")?.into_values() {
            let rt = g.get("ResourceType").ok_or_else(|| {
                ApiError::new(
                    "InvalidParameterValue",
                    "a tag specification has no ResourceType",
                )
            })?;
            let mut tags: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
            for (k, v) in &g {
                let Some(rest) = k.strip_prefix("Tag.") else {
                    continue;
                };
                let (n, field) = rest.split_once('.').ok_or_else(|| {
                    ApiError::new(
                        "InvalidParameter",
                        format!("malformed parameter `TagSpecification…{k}`"),
                    )
                })?;
                let e = tags.entry(index(n, k)?).or_default();
                match field {
                    "Key" => e.0 = Some(v.clone()),
                    "Value" => e.1 = Some(v.clone()),
                    _ => {
                        return Err(ApiError::new(
                            "InvalidParameter",
                            format!("unknown tag field `{field}`"),
                        ));
                    }
                }
            }
            if rt != resource_type {
                continue;
            }
            for (key, value) in tags.into_values() {
                let key =
                    key.ok_or_else(|| ApiError::new("InvalidParameterValue", "a tag has no Key"))?;
                check_tag(&key, value.as_deref())?;
                out.insert(key, value.unwrap_or_default());
            }
        }
        Ok(out)
    }
}

fn index(n: &str, param: &str) -> Result<u32, ApiError> {
    n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::new(
            "InvalidParameter",
            format!("malformed list index in `{param}`"),
        )
    })
}

/// EC2's tag limits: key 1–128 characters, value up to 256, no `aws:` prefix.
fn check_tag(key: &str, value: Option<&str>) -> Result<(), ApiError> {
    if key.is_empty() || key.chars().count() > 128 {
        return Err(ApiError::new(
            "InvalidParameterValue",
            "tag keys must be 1 to 128 characters",
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(ApiError::new(
            "InvalidParameterValue",
            "tag keys may not start with aws:",
        ));
    }
    if value.is_some_and(|v| v.chars().count() > 256) {
        return Err(ApiError::new(
            "InvalidParameterValue",
            "tag values must be at most 256 characters",
        ));
    }
    Ok(())
}

/// EC2 filter values may use `*` (any run) and `?` (any one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// EC2's error for a parameter the action needs.
pub fn missing(name: &str) -> ApiError {
    ApiError::new(
        "MissingParameter",
        format!("The request must contain the parameter {name}"),
    )
}

#[cfg(test)]
mod tests;
