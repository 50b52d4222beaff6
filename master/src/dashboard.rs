//! The web dashboard, served by the master on its API listener: one page (`/`) with its
//! script, styles and uPlot embedded in the binary (no network access needed), driving the same
//! API the CLI uses. Routes added here:
//! - `GET /`, `GET /ui/{file}`: the page and its assets (public: they hold no data);
//! - `GET /api/runs/{id}/events`: Server-Sent Events, one `view` event per change (the run's
//!   phase, times, slaves, its new closed seconds, each endpoint's figures so far), the last one
//!   carrying the report;
//! - `GET /api/compare?base=RUN&run=RUN`: `runs compare` with its default tolerances.
//!
//! With an API token, the page asks for it and keeps it in the `lobster_token` cookie
//! (`SameSite=Strict`), which the API accepts as it accepts `Authorization: Bearer`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{ApiState, Failure, unavailable};
use crate::control::Command;
use crate::report::{Comparison, Tolerances};

const PAGE: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");
/// How often the event stream looks for a change.
const EVENT_TICK: Duration = Duration::from_millis(500);

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(page))
        .route("/ui/{file}", get(asset))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/compare", get(compare))
}

/// Whether `path` is served without the API token.
pub(crate) fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

/// The token from the `lobster_token` cookie, if any (the page percent-encodes it, as a cookie
/// value cannot hold every character a token may have).
pub(crate) fn token_cookie(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("lobster_token="))?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|t| t.into_owned())
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "uplot.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uplot.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn events(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, crate::api::Failure> {
    // An unknown run is a 404 now, not an empty stream.
    s.control
        .ask(|tx| Command::GetRun(id.clone(), u64::MAX, tx))
        .await
        .ok_or_else(unavailable)??;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(8);
    tokio::spawn(async move {
        let mut after = 0u64;
        let mut last_phase = String::new();
        loop {
            // Ends when the master shuts down, the run is gone, or the page went away.
            let Some(Ok(view)) = s
                .control
                .ask(|reply| Command::GetRun(id.clone(), after, reply))
                .await
            else {
                return;
            };
            let done = view.report.is_some();
            if !view.points.is_empty() || view.phase != last_phase || done {
                last_phase.clone_from(&view.phase);
                if let Some(p) = view.points.last() {
                    after = p.index + 1;
                }
                let json = serde_json::to_string(&view).expect("a run view serializes");
                if tx
                    .send(Ok(Event::default().event("view").data(json)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if done {
                return;
            }
            // A page that went away ends its stream now, not at the next change (a suspended
            // run may not change for hours).
            tokio::select! {
                _ = tokio::time::sleep(EVENT_TICK) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct ComparePair {
    base: String,
    run: String,
}

async fn compare(
    State(s): State<ApiState>,
    q: Result<Query<ComparePair>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut reports = Vec::new();
    for id in [&q.base, &q.run] {
        let view = s
            .control
            .ask(|tx| Command::GetRun(id.clone(), u64::MAX, tx))
            .await
            .ok_or_else(unavailable)??;
        let report = view.report.ok_or_else(|| {
            Failure(
                StatusCode::CONFLICT,
                format!("run {id} has no report yet: it is {}", view.phase),
            )
        })?;
        reports.push(report);
    }
    Ok(Json(Comparison::of(
        &reports[0],
        &reports[1],
        Tolerances::default(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cookie_is_found_among_others_and_decoded() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "theme=dark; lobster_token=p%2Bq%3D%3B".parse().unwrap(),
        );
        assert_eq!(token_cookie(&h).as_deref(), Some("p+q=;"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "lobster_tokens=x; other=1".parse().unwrap());
        assert_eq!(token_cookie(&h), None);
    }
}
