//! The routes that fetch a run's traces from its slaves (see `control/traces.rs`):
//! - `GET /api/runs/{id}/traces`: `{"traced", "slaves": [{"slave", "uid", "connected"}]}`;
//! - `GET /api/runs/{id}/traces/{uid}?offset=N`: one slice of that slave's records (whole
//!   lines of JSON, `application/x-ndjson`, at most 1 MiB) from byte `N`, with the size of all
//!   of them in `x-lobster-trace-total` and the records the slave could not keep in
//!   `x-lobster-trace-dropped`; `503` with `Retry-After` while the slave is still writing it
//!   (the run just ended there); `409` when the slave is not connected or has no trace of the
//!   run.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiState, Failure, unavailable};
use crate::control::Command;

/// Size of all of a slave's records of the run, in bytes.
pub const TOTAL: &str = "x-lobster-trace-total";
/// Records the slave could not keep.
pub const DROPPED: &str = "x-lobster-trace-dropped";

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/runs/{id}/traces", get(list))
        .route("/api/runs/{id}/traces/{uid}", get(slice))
}

async fn list(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    let v = s
        .control
        .ask(|tx| Command::TraceSlaves(id, tx))
        .await
        .ok_or_else(unavailable)??;
    Ok(Json(v))
}

#[derive(Deserialize)]
struct Offset {
    offset: Option<u64>,
}

async fn slice(
    State(s): State<ApiState>,
    Path((run_id, uid)): Path<(String, String)>,
    q: Result<Query<Offset>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = q.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let chunk = s
        .control
        .ask(|reply| Command::FetchTrace {
            run_id,
            uid,
            offset: q.offset.unwrap_or(0),
            reply,
        })
        .await
        .ok_or_else(unavailable)??;
    if chunk.writing {
        let mut r = Failure(StatusCode::SERVICE_UNAVAILABLE, chunk.error).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(r);
    }
    if !chunk.error.is_empty() {
        return Err(Failure(StatusCode::CONFLICT, chunk.error));
    }
    let mut r = chunk.data.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(TOTAL, HeaderValue::from(chunk.total_bytes));
    h.insert(DROPPED, HeaderValue::from(chunk.dropped));
    Ok(r)
}
