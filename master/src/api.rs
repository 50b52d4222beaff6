//! The master's HTTP API, used by the CLI (`lobster run`, `fleet status`) and scrapers.
//!
//! Bound to loopback by default. Routes:
//! - `GET /api/health`: version and the gRPC address slaves dial.
//! - `GET /api/slaves`: registered slaves.
//! - `GET /api/runs`, `POST /api/runs` (`{scenario, quorum, quorum_timeout_ms}`; the scenario
//!   is a [`Document`]: its YAML or JSON text with the files and environment values it uses,
//!   validated here by the same code as `lobster run FILE`).
//! - `GET /api/runs/{id}?after=N`: phase, the closed seconds after N, the report once done.
//! - `POST /api/runs/{id}/load` (`{"users": N}` or `{"rate": R}`, optional `"ramp_ms"`): the
//!   load from half a second ahead, for the rest of the run; answers `{"at_load_ms"}`.
//! - `POST /api/runs/{id}/stop|suspend|resume`; a stop may carry `{"reason": "..."}` (who
//!   stopped it, shown in the report; at most 200 characters).
//! - the dashboard (`dashboard.rs`): `GET /`, `/ui/*`, `GET /api/runs/{id}/events` (SSE),
//!   `GET /api/compare?base=&run=`.
//! - the traces (`api/traces.rs`): `GET /api/runs/{id}/traces`, `GET
//!   /api/runs/{id}/traces/{uid}?offset=N`.
//! - `GET /metrics`: Prometheus text format: the master's metrics and the run's (see
//!   `metrics/run.rs` for the series).

pub(crate) mod traces;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lobster_fleet::scenario::{Document, Load, Scenario};
use serde::{Deserialize, Serialize};

use crate::control::run::RunOptions;
use crate::control::{Action, ApiError, Command, ControlHandle};
use crate::metrics::Metrics;

/// Largest request body (a scenario with its data items).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub control: ControlHandle,
    pub metrics: Arc<Metrics>,
    /// gRPC URL slaves dial.
    pub grpc_url: String,
    /// Fingerprint of the gRPC certificate.
    pub fingerprint: String,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<String>,
}

/// `POST /api/runs` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// The scenario as written, with what it uses; resolved by [`Document::resolve`].
    pub scenario: Document,
    /// Slaves needed to start.
    pub quorum: u32,
    /// How long to wait for the quorum, in milliseconds (default a minute).
    #[serde(default = "default_quorum_timeout_ms")]
    pub quorum_timeout_ms: u64,
}

fn default_quorum_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    pub run_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub grpc: String,
    pub pid: u32,
    /// Fingerprint of the gRPC certificate (empty without TLS).
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Deserialize)]
struct After {
    after: Option<u64>,
}

/// An error as the API answers it: a status and `{"error": "..."}`.
pub struct Failure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The answer to a run request while another run is in progress: 409 with `run_id`.
struct Busy(String);

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let error = ApiError::Busy(self.0.clone()).to_string();
        let body = serde_json::json!({ "error": error, "run_id": self.0 });
        (StatusCode::CONFLICT, Json(body)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = match e {
            ApiError::Busy(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

pub(crate) fn unavailable() -> Failure {
    Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is shutting down".into(),
    )
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/slaves", get(slaves))
        .route("/api/runs", get(runs).post(create_run))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/{action}", post(act))
        .route("/api/runs/{id}/load", post(change_load))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .merge(traces::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

async fn auth(
    State(s): State<ApiState>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A browser page of another site must not act on the fleet (CSRF): a state-changing
    // request that carries an `Origin` (browsers add it to every cross-site POST) must come
    // from this listener's own origin. The CLI sends none.
    if !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && let Some(origin) = headers.get(header::ORIGIN)
    {
        let own = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let from = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority);
        if from.is_none() || from != own {
            return Failure(
                StatusCode::FORBIDDEN,
                "cross-site request refused: the API acts only for its own pages and for clients that send no Origin".into(),
            )
            .into_response();
        }
    }
    // The dashboard's page and assets hold no data: served to anyone who can reach the
    // listener, so that it can ask for the token.
    let path = req.uri().path();
    if let Some(token) = s
        .token
        .as_ref()
        .filter(|_| !crate::dashboard::is_public(path))
    {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        // The dashboard sends the token as a cookie (EventSource cannot set headers).
        let given = bearer
            .or_else(|| crate::dashboard::token_cookie(&headers))
            .unwrap_or_default();
        let ok: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into();
        if !ok {
            return Failure(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(s): State<ApiState>) -> Json<Health> {
    Json(Health {
        version: lobster_fleet::VERSION.to_string(),
        grpc: s.grpc_url.clone(),
        pid: std::process::id(),
        fingerprint: s.fingerprint.clone(),
    })
}

async fn slaves(State(s): State<ApiState>) -> Result<impl IntoResponse, Failure> {
    let v = s
        .control
        .ask(Command::Slaves)
        .await
        .ok_or_else(unavailable)?;
    Ok(Json(v))
}

async fn runs(State(s): State<ApiState>) -> Result<impl IntoResponse, Failure> {
    let v = s
        .control
        .ask(Command::Runs)
        .await
        .ok_or_else(unavailable)??;
    Ok(Json(v))
}

async fn create_run(
    State(s): State<ApiState>,
    body: Result<Json<CreateRun>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let Json(body) = body.map_err(|e| {
        // 400 for bad JSON, 413 for a body over the limit, 415 without the JSON content type.
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        Failure(status, format!("invalid run request: {}", e.body_text()))
    })?;
    let CreateRun {
        scenario,
        quorum,
        quorum_timeout_ms,
    } = body;
    // Validation reads up to the body's size of text and data: off the async workers.
    let scenario = tokio::task::spawn_blocking(move || scenario.resolve())
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))?
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("invalid scenario: {e}")))?;
    start_run(&s, scenario, quorum, quorum_timeout_ms).await
}

/// Creates a run of a checked scenario: 201 with its id, 409 while another run is going.
pub(crate) async fn start_run(
    s: &ApiState,
    scenario: Scenario,
    quorum: u32,
    quorum_timeout_ms: u64,
) -> Result<Response, Failure> {
    if quorum == 0 || quorum > 100_000 {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "quorum must be between 1 and 100000".into(),
        ));
    }
    let options = RunOptions {
        quorum,
        quorum_timeout_ms: quorum_timeout_ms.clamp(1, 24 * 3600 * 1000),
    };
    let id = match s
        .control
        .ask(|tx| Command::CreateRun(Box::new(scenario), options, tx))
        .await
        .ok_or_else(unavailable)?
    {
        Ok(id) => id,
        Err(ApiError::Busy(other)) => return Ok(Busy(other).into_response()),
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::CREATED, Json(Created { run_id: id })).into_response())
}

async fn get_run(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let v = s
        .control
        .ask(|tx| Command::GetRun(id, q.after.unwrap_or(0), tx))
        .await
        .ok_or_else(unavailable)??;
    Ok(Json(v))
}

/// Optional body of `POST /api/runs/{id}/stop`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StopRequest {
    /// Who or what stopped the run, e.g. `Ctrl-C in lobster run`.
    #[serde(default)]
    pub reason: Option<String>,
}

async fn act(
    State(s): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let why = if body.is_empty() {
        None
    } else {
        let r: StopRequest = serde_json::from_slice(&body).map_err(|e| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("invalid action body: {e}: expected {{\"reason\": \"...\"}}"),
            )
        })?;
        r.reason
    };
    if let Some(w) = &why
        && (w.chars().count() > 200 || w.chars().any(char::is_control))
    {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "reason must be at most 200 characters with no control characters".into(),
        ));
    }
    let action = match action.as_str() {
        "stop" => Action::Stop,
        "suspend" => Action::Suspend,
        "resume" => Action::Resume,
        other => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: expected stop, suspend or resume"),
            ));
        }
    };
    s.control
        .ask(|tx| Command::Act(id, action, why, tx))
        .await
        .ok_or_else(unavailable)??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/runs/{id}/load` body: exactly one of `users` and `rate`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// Closed model: virtual users (0 to 10 000 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    /// Open model: arrivals per second (0 to 10 000 000, to a thousandth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Reach it over this many milliseconds (a step when 0; at most a day).
    #[serde(default)]
    pub ramp_ms: u64,
}

/// The answer to a load change: the load time it starts at.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoadChanged {
    pub at_load_ms: u64,
}

/// Largest users or rate a change may ask for.
const MAX_LOAD: u64 = 10_000_000;

async fn change_load(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<LoadRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, Failure> {
    let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
    let Json(b) = body.map_err(|e| bad(format!("invalid load change: {}", e.body_text())))?;
    let rule = "give `users` (0 to 10000000) or `rate` (0 to 10000000 per second), not both";
    let load = match (b.users, b.rate) {
        (Some(u), None) if u <= MAX_LOAD => Load::Users(u),
        (None, Some(r)) if r.is_finite() && (0.0..=MAX_LOAD as f64).contains(&r) => {
            Load::MilliRate((r * 1000.0).round() as u64)
        }
        _ => return Err(bad(rule.into())),
    };
    if b.ramp_ms > 24 * 3600 * 1000 {
        return Err(bad("ramp_ms must be at most a day (86400000)".into()));
    }
    let change = crate::control::LoadChange {
        load,
        ramp: std::time::Duration::from_millis(b.ramp_ms),
    };
    let at = s
        .control
        .ask(|tx| Command::ChangeLoad(id, change, tx))
        .await
        .ok_or_else(unavailable)??;
    Ok(Json(LoadChanged { at_load_ms: at }))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    // While the master shuts down its own metrics are still served, without the run's.
    let run = s.control.ask(Command::RunMetrics).await.flatten();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(run),
    )
}
