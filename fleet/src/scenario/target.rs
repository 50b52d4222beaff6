//! The target: the base URL every request path is joined to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How the engine talks to the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// HTTP/1.1 over TCP (default port 80).
    #[default]
    Http,
    /// HTTP/1.1 over TLS 1.2 or 1.3 (default port 443; RFC 9110 §4.2.2).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A parsed `http://host:port/base` or `https://host:port/base` target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `http` when absent (scenarios sent by an older master).
    #[serde(default)]
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path prefix joined before every request path, without trailing slash (may be empty).
    pub base_path: String,
}

impl Target {
    /// Parses a target URL: `http://` or `https://`, a host (name, IPv4 or `[IPv6]`), an
    /// optional port (default 80 or 443) and an optional base path.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(format!(
                "target `{url}` is not a URL: expected e.g. `http://127.0.0.1:8080` or `https://example.com`"
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
        let (host, port) = split_host_port(authority, scheme.default_port())
            .ok_or_else(|| format!("target `{url}`: invalid host or port"))?;
        if path.contains(['?', '#', ' ']) {
            return Err(format!(
                "target `{url}`: the base URL may not have a query or fragment"
            ));
        }
        Ok(Target {
            scheme,
            host,
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port` as used to connect.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header's value: the port only when it is not the scheme's default
    /// (RFC 9110 §7.2), as browsers and curl send it; virtual hosts match on it.
    pub fn host_header(&self) -> String {
        if self.port == self.scheme.default_port() {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.authority()
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
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
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_string(), port))
}
