//! One request on a worker's connection: connect if needed, send, time, classify, record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lobster_fleet::scenario::Scenario;
use lobster_fleet::stats::ErrorClass;

use super::Gauges;
use super::http::{Connection, HttpError};
use super::mix::Prepared;
use super::recorder::{Recorder, Sample};

/// What a worker needs to send requests: shared by all workers of a run.
pub struct Shared {
    pub scenario: Arc<Scenario>,
    pub addr: SocketAddr,
    pub timeout: Duration,
    pub recorder: Recorder,
    pub gauges: Arc<Gauges>,
}

/// A worker's connection, opened lazily and dropped after any error.
pub struct Worker {
    conn: Option<Connection>,
    scratch: Vec<u8>,
}

/// Whether the last exchange could not even connect (the caller may pause before retrying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    ConnectFailed,
}

impl Worker {
    pub fn new() -> Self {
        Worker {
            conn: None,
            scratch: Vec::new(),
        }
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
        let start = intended.unwrap_or_else(Instant::now);
        let bytes = req.bytes(item, &mut self.scratch);
        let sent = bytes.len() as u64;
        let gauges = &shared.gauges;
        gauges.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(shared.timeout, async {
            if self.conn.is_none() {
                let c = Connection::connect(shared.addr)
                    .await
                    .map_err(|_| Failure::Connect)?;
                gauges.connections.fetch_add(1, Ordering::Relaxed);
                self.conn = Some(c);
            }
            let conn = self.conn.as_mut().expect("connection just opened");
            conn.send(bytes, req.head_method)
                .await
                .map_err(Failure::Http)
        })
        .await;
        gauges.in_flight.fetch_sub(1, Ordering::Relaxed);
        let latency_us = start.elapsed().as_micros() as u64;
        let mut sample = Sample {
            latency_us: Some(latency_us),
            error: None,
            bytes_sent: sent,
            bytes_received: 0,
        };
        let mut outcome = Outcome::Done;
        match result {
            Ok(Ok(resp)) => {
                sample.bytes_received = resp.bytes;
                let status = resp.status;
                if !shared.scenario.requests[req.endpoint].accepts(status) {
                    sample.error = Some(ErrorClass::of_status(status));
                }
                if !resp.keep_alive {
                    self.close(gauges);
                }
            }
            Ok(Err(Failure::Connect)) => {
                sample.latency_us = None;
                sample.error = Some(ErrorClass::Connect);
                outcome = Outcome::ConnectFailed;
            }
            Ok(Err(Failure::Http(e))) => {
                sample.latency_us = None;
                sample.error = Some(match e {
                    HttpError::Protocol(_) => ErrorClass::Protocol,
                    HttpError::Io(_) | HttpError::Closed => ErrorClass::Io,
                });
                self.close(gauges);
            }
            Err(_elapsed) => {
                sample.error = Some(ErrorClass::Timeout);
                self.close(gauges);
            }
        }
        shared.recorder.record(req.endpoint, sample);
        outcome
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

enum Failure {
    Connect,
    Http(HttpError),
}
