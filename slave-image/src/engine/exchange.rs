//! One request on a worker's connection: connect if needed, send, time, classify, record.
//!
//! A request is counted once, as the server saw it. A kept-alive connection that the server
//! closed while idle is not reused ([`Connection::is_stale`]); if the close races with the
//! request, so that a reused connection fails before any response byte arrived, the request
//! is sent again once on a fresh connection (RFC 9112 §9.3.1, as browsers and hyper's pool do)
//! and counted once, its latency running from the first attempt. A failure on a fresh
//! connection is the server's answer and counts as a failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lobster_fleet::scenario::Scenario;
use lobster_fleet::stats::ErrorClass;

use super::Gauges;
use super::deadline::Deadline;
use super::http::{Connection, HttpError, Kept, OpenError, Opened, Response};
use super::mix::Prepared;
use super::recorder::{Failure, Recorder, Sample, Timing};
use super::site::Sites;

/// What a worker needs to send requests: shared by all workers of a run.
pub struct Shared {
    pub scenario: Arc<Scenario>,
    /// The targets, each with its address, TLS client, mix and flows.
    pub sites: Sites,
    /// This slave's `{{serial}}` counter.
    pub serial: super::journey::Serial,
    pub timeout: Duration,
    pub recorder: Recorder,
    pub gauges: Arc<Gauges>,
    /// The run's trace on this slave (`trace:`), when the scenario asks for one.
    pub tracer: Option<crate::trace::Tracer>,
}

/// A worker's connection to one target, opened lazily and dropped after any error.
pub struct Worker {
    /// The target it talks to (an index into [`Shared::sites`]).
    site: usize,
    conn: Option<Connection>,
    /// The request timeout, one timer for all of this worker's exchanges.
    deadline: Deadline,
    scratch: Vec<u8>,
    /// The `trace.output` values the next requests are sent with (empty without them).
    trace_values: Vec<(String, String)>,
}

/// Whether the last exchange could not even connect (the caller may pause before retrying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    ConnectFailed,
}

impl Worker {
    /// A worker for target `site` (an index into [`Shared::sites`]).
    pub fn new(site: usize) -> Self {
        Worker {
            site,
            conn: None,
            deadline: Deadline::default(),
            scratch: Vec::new(),
            trace_values: Vec::new(),
        }
    }

    /// Sets the `trace.output` values of the requests that follow: each name of the trace's
    /// output with `value(name)`, those without a value left out. Nothing without a trace
    /// that names values; the worker's strings are reused from request to request.
    pub fn set_trace_values<'a>(
        &mut self,
        shared: &Shared,
        value: impl Fn(&str) -> Option<&'a str>,
    ) {
        let Some(t) = shared.tracer.as_ref().filter(|t| !t.output().is_empty()) else {
            return;
        };
        let mut used = 0;
        for name in t.output() {
            let Some(v) = value(name) else { continue };
            match self.trace_values.get_mut(used) {
                Some((k, old)) => {
                    k.clone_from(name);
                    old.clear();
                    old.push_str(v);
                }
                None => self.trace_values.push((name.clone(), v.to_string())),
            }
            used += 1;
        }
        self.trace_values.truncate(used);
    }

    /// The target it talks to (an index into [`Shared::sites`]).
    pub fn site(&self) -> usize {
        self.site
    }

    /// Sends `req` and records it. Latency runs from `intended` (the open model's due time)
    /// or from now, and includes connecting when the worker had no open connection.
    pub async fn exchange(
        &mut self,
        shared: &Shared,
        req: &Prepared,
        item: &str,
        intended: Option<Instant>,
    ) -> Outcome {
        self.set_trace_values(shared, |name| (name == "item").then_some(item));
        let mut scratch = std::mem::take(&mut self.scratch);
        let bytes = req.bytes(item, &mut scratch);
        let (outcome, _) = self
            .exchange_bytes(
                shared,
                req.endpoint,
                bytes,
                req.head_method,
                intended,
                None,
                false,
                &mut |_, _| None,
            )
            .await;
        self.scratch = scratch;
        outcome
    }

    /// Sends request `bytes` of endpoint `endpoint` and records it, as [`Worker::exchange`].
    /// With `keep`, the response's head and body are kept there; `judge` then looks at a
    /// response whose status was expected and may fail it (a capture that found nothing).
    /// A `redirect_hop` also accepts any 3xx status (the step's `expect` judges its end).
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange_bytes(
        &mut self,
        shared: &Shared,
        endpoint: usize,
        bytes: &[u8],
        head_method: bool,
        intended: Option<Instant>,
        mut keep: Option<&mut Kept>,
        redirect_hop: bool,
        judge: &mut (dyn FnMut(&Response, Option<&Kept>) -> Option<Judged> + Send),
    ) -> (Outcome, Option<Response>) {
        // One clock read for the latency's start (closed model) and the timeout's.
        let now = Instant::now();
        let start = intended.unwrap_or(now);
        let sent = bytes.len() as u64;
        let gauges = &shared.gauges;
        gauges.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut opened: Option<Opened> = None;
        let mut deadline = std::mem::take(&mut self.deadline);
        let result = deadline.run((now + shared.timeout).into(), async {
            if self.conn.as_mut().is_some_and(Connection::is_stale) {
                self.conn = None;
                gauges.connections.fetch_sub(1, Ordering::Relaxed);
            }
            let mut retried = false;
            loop {
                if self.conn.is_none() {
                    let site = shared.sites.get(self.site);
                    let (c, o) = Connection::connect(site.addr, site.tls.as_ref())
                        .await
                        .map_err(Trouble::Open)?;
                    gauges.connections.fetch_add(1, Ordering::Relaxed);
                    self.conn = Some(c);
                    opened = Some(o);
                }
                let conn = self.conn.as_mut().expect("connection just opened");
                let reused = conn.reused();
                match conn.send_keeping(bytes, head_method, keep.as_deref_mut()).await {
                    Ok(resp) => return Ok(resp),
                    Err(e @ (HttpError::Io(_) | HttpError::Closed))
                        if reused && !retried && conn.received_nothing() =>
                    {
                        tracing::debug!(error = %e, "kept-alive connection closed by the server: sending again");
                        retried = true;
                        self.conn = None;
                        gauges.connections.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(Trouble::Http(e)),
                }
            }
        })
        .await;
        self.deadline = deadline;
        gauges.in_flight.fetch_sub(1, Ordering::Relaxed);
        let latency_us = start.elapsed().as_micros() as u64;
        let mut sample = Sample {
            latency_us: Some(latency_us),
            status: None,
            error: None,
            bytes_sent: sent,
            bytes_received: 0,
            timing: Timing {
                connecting: opened.map(|o| o.connecting),
                tls_handshaking: opened.and_then(|o| o.tls_handshaking),
                waiting: None,
                receiving: None,
            },
        };
        let mut outcome = Outcome::Done;
        // A browse group's endpoint has no request of its own: any 2xx or 3xx succeeds.
        let request = shared.scenario.requests.get(endpoint);
        let expect = request.map_or(&[][..], |r| &r.expect[..]);
        let timeout = TimeoutDetail(shared.timeout);
        let status_detail;
        let judged;
        match &result {
            Ok(Ok(resp)) => {
                sample.bytes_received = resp.bytes;
                sample.status = Some(resp.status);
                sample.timing.waiting = Some(resp.waiting);
                sample.timing.receiving = Some(resp.receiving);
                let status = resp.status;
                let hop_ok = redirect_hop && (300..400).contains(&status);
                let accepted = request.map_or((200..400).contains(&status), |r| r.accepts(status));
                if !hop_ok && !accepted {
                    status_detail = StatusDetail { status, expect };
                    sample.error = Some(Failure {
                        class: ErrorClass::of_status(status),
                        status: Some(status),
                        detail: &status_detail,
                    });
                } else if let Some(j) = judge(resp, keep.as_deref()) {
                    judged = j;
                    sample.error = Some(Failure {
                        class: judged.class,
                        status: None,
                        detail: &judged.detail,
                    });
                }
                if !resp.keep_alive {
                    self.close(gauges);
                }
            }
            Ok(Err(Trouble::Open(e))) => {
                sample.latency_us = None;
                sample.error = Some(Failure {
                    class: match e {
                        OpenError::Connect(_) => ErrorClass::Connect,
                        OpenError::Handshake(_) => ErrorClass::Tls,
                    },
                    status: None,
                    detail: e,
                });
                outcome = Outcome::ConnectFailed;
            }
            Ok(Err(Trouble::Http(e))) => {
                sample.latency_us = None;
                let class = match e {
                    HttpError::Protocol(_) => ErrorClass::Protocol,
                    HttpError::Io(_) | HttpError::Closed => ErrorClass::Io,
                };
                sample.error = Some(Failure {
                    class,
                    status: None,
                    detail: e,
                });
                self.close(gauges);
            }
            Err(_elapsed) => {
                sample.error = Some(Failure {
                    class: ErrorClass::Timeout,
                    status: None,
                    detail: &timeout,
                });
                self.close(gauges);
            }
        }
        if let Some(t) = &shared.tracer {
            t.offer(endpoint, self.site, &sample, start, &self.trace_values);
        }
        shared.recorder.record_at(endpoint, self.site, sample);
        (outcome, result.ok().and_then(Result::ok))
    }

    fn close(&mut self, gauges: &Gauges) {
        if self.conn.take().is_some() {
            gauges.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Closes the connection (at the end of the worker).
    pub fn finish(mut self, gauges: &Gauges) {
        self.close(gauges);
    }
}

/// Why a response that came as expected still failed its step.
pub struct Judged {
    pub class: ErrorClass,
    /// The sample message (what was looked for, and where).
    pub detail: String,
}

/// Why an exchange got no response.
enum Trouble {
    Open(OpenError),
    Http(HttpError),
}

/// The sample message of an unexpected status.
struct StatusDetail<'a> {
    status: u16,
    expect: &'a [u16],
}

impl std::fmt::Display for StatusDetail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected status {} (expected ", self.status)?;
        if self.expect.is_empty() {
            write!(f, "2xx or 3xx)")
        } else {
            let list: Vec<String> = self.expect.iter().map(u16::to_string).collect();
            write!(f, "{})", list.join(", "))
        }
    }
}

/// The sample message of a timeout.
struct TimeoutDetail(Duration);

impl std::fmt::Display for TimeoutDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no complete response within the {} s timeout",
            self.0.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mix::Mix;
    use std::sync::atomic::AtomicU32;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one request head; false at end of stream.
    async fn read_request(s: &mut TcpStream) -> bool {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    fn shared(addr: std::net::SocketAddr) -> Shared {
        let text = format!(
            "name: x\ntarget: http://{addr}\nduration: 1s\nload: {{users: 1}}\nrequests: [{{name: r, path: /}}]\n"
        );
        let scenario = Arc::new(lobster_fleet::scenario::parse(&text, "x.yaml").unwrap());
        let site = crate::engine::site::Site {
            target: scenario.target.clone(),
            addr,
            tls: None,
            mix: Mix::new(&scenario),
            journeys: None,
        };
        Shared {
            tracer: None,
            scenario,
            sites: Sites::one(site),
            serial: Default::default(),
            timeout: Duration::from_secs(10),
            recorder: Recorder::new(vec!["r".into()], Vec::new(), Vec::new()),
            gauges: Arc::new(Gauges::default()),
        }
    }

    /// The race a keep-alive timeout makes: the server reads the next request on an idle
    /// connection and closes it without an answer. Sent again once on a fresh connection,
    /// counted once, no failure; the server answered exactly the requests counted.
    #[tokio::test]
    async fn a_request_on_a_closing_kept_alive_connection_is_sent_again_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicU32::new(0));
        let server = {
            let answered = answered.clone();
            tokio::spawn(async move {
                // Connection 1: one answer, then the close races with the second request.
                let (mut s, _) = listener.accept().await.unwrap();
                assert!(read_request(&mut s).await);
                s.write_all(OK).await.unwrap();
                answered.fetch_add(1, Ordering::SeqCst);
                assert!(read_request(&mut s).await);
                drop(s);
                // Connection 2: the retry.
                let (mut s, _) = listener.accept().await.unwrap();
                assert!(read_request(&mut s).await);
                s.write_all(OK).await.unwrap();
                answered.fetch_add(1, Ordering::SeqCst);
                // Connection 3 (fresh, for the second check): closes at once; no retry.
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.write_all(b"").await;
                assert!(read_request(&mut s).await);
                drop(s);
                let accepted_more =
                    tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
                assert!(
                    accepted_more.is_err(),
                    "a fresh connection's failure was retried"
                );
            })
        };
        let shared = shared(addr);
        let mut w = Worker::new(0);
        let req = shared.sites.get(0).mix.pick(0);
        w.exchange(&shared, req, "", None).await;
        w.exchange(&shared, req, "", None).await;
        let first = shared.recorder.take();
        let r = &first.endpoints["r"];
        assert_eq!((r.requests, r.failures), (2, 0), "{:?}", r.errors);
        assert_eq!(answered.load(Ordering::SeqCst), 2);
        // A failure on a fresh connection is the server's answer: one failure, no retry.
        let mut fresh = Worker::new(0);
        fresh.exchange(&shared, req, "", None).await;
        let second = shared.recorder.take();
        let r = &second.endpoints["r"];
        assert_eq!((r.requests, r.failures), (1, 1));
        assert_eq!(r.errors.get("io"), Some(&1));
        assert_eq!(
            r.failure_kinds["io"].sample,
            "connection closed before a complete response"
        );
        server.await.unwrap();
    }

    /// A request with no answer fails as a timeout at its own start + the timeout, even
    /// though the worker's timer was set for an earlier request (the lazy [`Deadline`]); the
    /// connection is closed and the next request opens a fresh one and succeeds.
    #[tokio::test]
    async fn a_request_without_an_answer_times_out_at_its_own_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // Connection 1: one answer, then silence until the client closes it.
            let (mut s, _) = listener.accept().await.unwrap();
            assert!(read_request(&mut s).await);
            s.write_all(OK).await.unwrap();
            assert!(read_request(&mut s).await);
            assert!(!read_request(&mut s).await, "the client closed it");
            // Connection 2: answers.
            let (mut s, _) = listener.accept().await.unwrap();
            assert!(read_request(&mut s).await);
            s.write_all(OK).await.unwrap();
            let _ = read_request(&mut s).await;
        });
        let mut shared = shared(addr);
        let timeout = Duration::from_millis(600);
        shared.timeout = timeout;
        let mut w = Worker::new(0);
        let req = shared.sites.get(0).mix.pick(0);
        w.exchange(&shared, req, "", None).await;
        // Half the timeout later, the request that gets no answer: a timer left at the first
        // request's due time would end it after about 300 ms.
        tokio::time::sleep(timeout / 2).await;
        let start = Instant::now();
        w.exchange(&shared, req, "", None).await;
        let waited = start.elapsed();
        assert!(waited >= timeout, "ended after {waited:?}");
        w.exchange(&shared, req, "", None).await;
        let got = shared.recorder.take();
        let r = &got.endpoints["r"];
        assert_eq!((r.requests, r.failures), (3, 1), "{:?}", r.errors);
        assert_eq!(r.errors.get("timeout"), Some(&1), "{:?}", r.errors);
        assert_eq!(
            r.failure_kinds["timeout"].sample,
            "no complete response within the 0.6 s timeout"
        );
        // Its recorded latency is the timeout's (the histogram's top is the timed-out one).
        assert!(r.latency_us.max() >= 600_000, "{}", r.latency_us.max());
        w.finish(&shared.gauges);
        server.await.unwrap();
    }
}
