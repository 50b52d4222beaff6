//! `lobster target`: a fast built-in HTTP/1.1 server to aim load at, plain or over TLS
//! ([`PrivateCa`]).
//!
//! Endpoints: `/` (a fixed body), `/item/{id}` (a small JSON document), `/delay/{ms}` (answers
//! after a delay), `/status/{code}` (answers with that status), `/bytes/{n}` (n bytes),
//! `/headers/{n}` (a 200 with n extra header lines, n ≤ 1000), and a login app for journeys
//! (`/login/`, `/account/`: see `login`). Every
//! request except `/__lobster/*` is counted; `GET /__lobster/count` returns the count as JSON
//! (and the login app's `logged_in_views`) and `POST /__lobster/reset` zeroes the request count,
//! so tests can compare a report with what the server saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

mod login;
mod tls;

pub use tls::PrivateCa;

const HELLO: &[u8] = b"hello from lobster\n";
/// Largest `/bytes/{n}` body.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Longest `/delay/{ms}`.
const MAX_DELAY_MS: u64 = 600_000;
/// Most extra header lines of `/headers/{n}`.
const MAX_HEADERS: usize = 1000;

/// The target's shared state.
#[derive(Default)]
pub struct Counter {
    requests: AtomicU64,
    /// Connections that carried at least one counted request.
    connections: AtomicU64,
    /// The login app (journeys).
    login: login::Login,
}

impl Counter {
    pub fn get(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

pub struct Target {
    listener: TcpListener,
    counter: Arc<Counter>,
    /// Serve TLS with this acceptor instead of plain HTTP.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Target {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Target {
            listener: TcpListener::bind(addr).await?,
            counter: Arc::new(Counter::default()),
            tls: None,
        })
    }

    /// Serves TLS (every connection handshakes with `acceptor` first).
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn counter(&self) -> Arc<Counter> {
        self.counter.clone()
    }

    /// Serves until `shutdown`, one task per connection.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let counter = self.counter.clone();
            let shutdown = shutdown.clone();
            let tls = self.tls.clone();
            let secure = tls.is_some();
            tokio::spawn(async move {
                let used = Arc::new(AtomicBool::new(false));
                let svc = service_fn(move |req| handle(req, counter.clone(), used.clone(), secure));
                let builder = http1::Builder::new().keep_alive(true).clone();
                let served = async move {
                    match tls {
                        None => builder.serve_connection(TokioIo::new(stream), svc).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => builder.serve_connection(TokioIo::new(s), svc).await,
                            Err(e) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                        },
                    }
                };
                tokio::select! {
                    r = served => if let Err(e) = r { debug!(%peer, error = %e, "connection ended") },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    reply(status, "text/plain", body.into())
}

/// Answers one request; `used` says whether its connection carried a counted request before.
async fn handle(
    req: Request<Incoming>,
    counter: Arc<Counter>,
    used: Arc<AtomicBool>,
    secure: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // Read the request body so the connection stays usable for the next request.
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BYTES))
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path();
    if let Some(admin) = path.strip_prefix("/__lobster/") {
        return Ok(match (&parts.method, admin) {
            (&Method::GET, "count") => reply(
                StatusCode::OK,
                "application/json",
                format!(
                    "{{\"requests\":{},\"connections\":{},\"logged_in_views\":{}}}",
                    counter.get(),
                    counter.connections.load(Ordering::Relaxed),
                    counter.login.logged_in_views()
                )
                .into(),
            ),
            (&Method::POST, "reset") => {
                counter.requests.store(0, Ordering::Relaxed);
                text(StatusCode::OK, "reset\n")
            }
            _ => text(StatusCode::NOT_FOUND, "unknown admin endpoint\n"),
        });
    }
    counter.requests.fetch_add(1, Ordering::Relaxed);
    if !used.swap(true, Ordering::Relaxed) {
        counter.connections.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(r) = counter
        .login
        .handle(&parts.method, path, &parts.headers, &body, secure)
    {
        return Ok(r);
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let head = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    let resp = match head {
        "" => reply(StatusCode::OK, "text/plain", Bytes::from_static(HELLO)),
        "item" if !arg.is_empty() && arg.len() <= 128 => {
            let id: String = arg
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            reply(
                StatusCode::OK,
                "application/json",
                format!("{{\"id\":\"{id}\",\"name\":\"item {id}\",\"price\":42}}").into(),
            )
        }
        "delay" => match arg.parse::<u64>() {
            Ok(ms) if ms <= MAX_DELAY_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, "ok\n")
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "usage: /delay/{ms} with ms <= 600000\n",
            ),
        },
        "status" => match arg
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) if code.as_u16() >= 200 => text(code, format!("{}\n", code.as_u16())),
            _ => text(
                StatusCode::BAD_REQUEST,
                "usage: /status/{code} with 200 <= code <= 999\n",
            ),
        },
        "bytes" => match arg.parse::<usize>() {
            Ok(n) if n <= MAX_BYTES => reply(
                StatusCode::OK,
                "application/octet-stream",
                Bytes::from(vec![b'x'; n]),
            ),
            _ => text(
                StatusCode::BAD_REQUEST,
                "usage: /bytes/{n} with n <= 16777216\n",
            ),
        },
        "headers" => match arg.parse::<usize>() {
            Ok(n) if n <= MAX_HEADERS => {
                let mut r = text(StatusCode::OK, "ok\n");
                for i in 0..n {
                    let name = hyper::header::HeaderName::from_bytes(format!("x-h{i}").as_bytes())
                        .expect("a valid header name");
                    r.headers_mut()
                        .insert(name, hyper::header::HeaderValue::from_static("v"));
                }
                r
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "usage: /headers/{n} with n <= 1000\n",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}
