//! The target: the base URL every request path is joined to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A parsed `http://host:port/base` target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path prefix joined before every request path, without trailing slash (may be empty).
    pub base_path: String,
}

impl Target {
    /// Parses a target URL. Only `http` is supported by the engine today.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "target `{url}`: https targets are not supported yet (use http://)"
            ));
        } else {
            return Err(format!(
                "target `{url}` is not a URL: expected e.g. `http://127.0.0.1:8080`"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("target `{url}` has no host"));
        }
        if authority.contains('@') {
            return Err(format!(
                "target `{url}`: credentials in the URL are not supported"
            ));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("target `{url}`: invalid host or port"))?;
        if path.contains(['?', '#', ' ']) {
            return Err(format!(
                "target `{url}`: the base URL may not have a query or fragment"
            ));
        }
        Ok(Target {
            host,
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port` as sent in the `Host` header and used to connect.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.base_path)
    }
}

fn split_host_port(authority: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let port = match &rest[end + 1..] {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_string(), port))
}
