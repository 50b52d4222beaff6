//! Fetching a run's traces from its slaves (`lobster runs traces`, `GET /api/runs/{id}/traces`):
//! the records stay on each slave's disk until asked for; the master relays one slice at a
//! time, so a slow reader slows only its own fetch and the control loop never waits.
//!
//! A fetch is one `TraceFetch` on the slave's session, answered by one `TraceChunk` naming the
//! same request id. An answer that does not come within [`FETCH_TIMEOUT`], or a session that
//! ends first, fails that fetch alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lobster_fleet::proto::{self, MasterMessage, master_message::Kind as Down};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{ApiError, Controller};

/// How long a slave has to answer one slice.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest slice asked for.
const SLICE_BYTES: u32 = 1024 * 1024;

/// A slave that took part in a run, as `GET /api/runs/{id}/traces` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSlave {
    /// The slave's name (`s-3`), or its uid when this master no longer knows it.
    pub slave: String,
    /// What the slice requests name it by.
    pub uid: String,
    /// Whether it has a session now (only then can its trace be fetched).
    pub connected: bool,
}

/// The answer of `GET /api/runs/{id}/traces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSlaves {
    /// Whether the run's scenario asked for a trace.
    pub traced: bool,
    pub slaves: Vec<TraceSlave>,
}

/// A reply owed to an API request.
type Reply = oneshot::Sender<Result<proto::TraceChunk, ApiError>>;

struct Pending {
    uid: String,
    reply: Reply,
    deadline: Instant,
}

/// The fetches waiting for their slave's answer.
#[derive(Default)]
pub(super) struct TraceFetches {
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

impl TraceFetches {
    /// A slave's answer: handed to its fetch when the request id is one of that slave's.
    pub(super) fn answer(&mut self, uid: &str, chunk: proto::TraceChunk) {
        if self
            .pending
            .get(&chunk.request_id)
            .is_some_and(|p| p.uid == uid)
        {
            let p = self.pending.remove(&chunk.request_id).expect("present");
            let _ = p.reply.send(Ok(chunk));
        }
    }

    /// Fails the fetches past their deadline.
    pub(super) fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let p = self.pending.remove(&id).expect("present");
            let _ = p.reply.send(Err(ApiError::Conflict(format!(
                "the slave did not answer within {}s",
                FETCH_TIMEOUT.as_secs()
            ))));
        }
    }

    /// Fails the fetches of a slave whose session ended.
    pub(super) fn lost(&mut self, uid: &str) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.uid == uid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let p = self.pending.remove(&id).expect("present");
            let _ = p.reply.send(Err(ApiError::Conflict(
                "the slave's session ended before it answered".into(),
            )));
        }
    }
}

impl Controller {
    /// The slaves that took part in run `id` (those that sent statistics), and whether each
    /// can be asked for its trace now.
    pub(super) fn trace_slaves(&self, id: &str) -> Result<TraceSlaves, ApiError> {
        let store = |e: crate::store::StoreError| ApiError::Store(format!("{e:#}"));
        let json = self
            .store
            .scenario(id)
            .map_err(store)?
            .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
        let traced = lobster_fleet::scenario::Scenario::from_json(&json)
            .map(|s| s.trace.is_some())
            .unwrap_or(false);
        let slaves = self
            .store
            .slaves_of(id)
            .map_err(store)?
            .into_iter()
            .map(|uid| {
                let known = self.registry.slaves.get(&uid);
                TraceSlave {
                    slave: known.map_or_else(|| uid.clone(), |s| s.id.clone()),
                    connected: known.is_some_and(|s| s.session.is_some()),
                    uid,
                }
            })
            .collect();
        Ok(TraceSlaves { traced, slaves })
    }

    /// Asks slave `uid` for the slice of run `id`'s trace from `offset`; `reply` gets its
    /// answer, or why there is none.
    pub(super) fn fetch_trace(
        &mut self,
        id: &str,
        uid: &str,
        offset: u64,
        reply: Reply,
        now: Instant,
    ) {
        let f = &mut self.traces;
        f.next_id += 1;
        let request_id = f.next_id;
        let msg = MasterMessage {
            kind: Some(Down::TraceFetch(proto::TraceFetch {
                run_id: id.to_string(),
                request_id,
                offset,
                max_bytes: SLICE_BYTES,
            })),
        };
        if !self.registry.send(uid, msg) {
            let _ = reply.send(Err(ApiError::Conflict(
                "that slave is not connected: its trace cannot be fetched".into(),
            )));
            return;
        }
        self.traces.pending.insert(
            request_id,
            Pending {
                uid: uid.to_string(),
                reply,
                deadline: now + FETCH_TIMEOUT,
            },
        );
    }
}
