//! The target's login app, for journeys: a login form with a hidden CSRF token, a session
//! cookie, and a page that needs it — what a scenario's flow logs in to, captures from and
//! checks (see `docs/scenario.md`, "Flows").
//!
//! - `GET /login/`: an HTML form with a fresh single-use `csrf_token`.
//! - `POST /login/` (form: `csrf_token`, `username`, `password`, both non-empty): with a
//!   token this target handed out and not yet used, `303` to `/account/` and a `session`
//!   cookie; else `403`.
//! - `GET /account/`: with a valid `session` cookie, a page saying `Signed in as NAME` (each
//!   such view counted as `logged_in_views` in `/__lobster/count`); else `302` to `/login/`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};

/// Most tokens or sessions remembered; past that they are forgotten all at once (a load
/// test's users then log in again).
const MAX_REMEMBERED: usize = 1_000_000;

/// Tokens handed out, sessions opened, and logged-in page views.
#[derive(Default)]
pub struct Login {
    tokens: Mutex<HashSet<String>>,
    sessions: Mutex<HashMap<String, String>>,
    views: AtomicU64,
}

impl Login {
    /// Pages seen by a logged-in user (`GET /account/` with a valid session).
    pub fn logged_in_views(&self) -> u64 {
        self.views.load(Ordering::Relaxed)
    }

    /// The answer for the login app's paths, `None` for any other path.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        secure: bool,
    ) -> Option<Response<Full<Bytes>>> {
        Some(match (method, path) {
            (&Method::GET, "/login/") => {
                let token = random_hex();
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                if tokens.len() >= MAX_REMEMBERED {
                    tokens.clear();
                }
                tokens.insert(token.clone());
                drop(tokens);
                html(
                    StatusCode::OK,
                    format!(
                        "<!doctype html><title>Log in</title><form method=\"post\" action=\"/login/\"><input type=\"hidden\" name=\"csrf_token\" value=\"{token}\"><input name=\"username\"><input name=\"password\" type=\"password\"><button>Log in</button></form>"
                    ),
                )
            }
            (&Method::POST, "/login/") => {
                let form: HashMap<String, String> =
                    form_urlencoded::parse(body).into_owned().collect();
                let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
                let token_ok = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(field("csrf_token"));
                if !token_ok {
                    return Some(html(StatusCode::FORBIDDEN, "invalid CSRF token".into()));
                }
                if field("username").is_empty() || field("password").is_empty() {
                    return Some(html(
                        StatusCode::FORBIDDEN,
                        "username and password are required".into(),
                    ));
                }
                let session = random_hex();
                let user = field("username").to_string();
                let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                if sessions.len() >= MAX_REMEMBERED {
                    sessions.clear();
                }
                sessions.insert(session.clone(), user);
                drop(sessions);
                let mut r = html(StatusCode::SEE_OTHER, String::new());
                let cookie = format!(
                    "session={session}; Path=/; HttpOnly; SameSite=Lax{}",
                    if secure { "; Secure" } else { "" }
                );
                let h = r.headers_mut();
                h.insert(header::LOCATION, HeaderValue::from_static("/account/"));
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    h.insert(header::SET_COOKIE, v);
                }
                r
            }
            (&Method::GET, "/account/") => {
                let user = session_of(headers).and_then(|s| {
                    self.sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&s)
                        .cloned()
                });
                match user {
                    Some(name) => {
                        self.views.fetch_add(1, Ordering::Relaxed);
                        let name = escape(&name);
                        html(
                            StatusCode::OK,
                            format!(
                                "<!doctype html><title>Account</title><p>Signed in as {name}</p><a href=\"/account/\">account</a> <a href=\"/\">home</a>"
                            ),
                        )
                    }
                    None => {
                        let mut r = html(StatusCode::FOUND, String::new());
                        r.headers_mut()
                            .insert(header::LOCATION, HeaderValue::from_static("/login/"));
                        r
                    }
                }
            }
            _ => return None,
        })
    }
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == "session")
        .map(|(_, v)| v.to_string())
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
