//! The local cloud's HTTP side: the EC2 Query endpoint (`/`, GET or POST), its health and
//! fault-injection routes, and every rejection answered as EC2 answers: an error document
//! (`<Response><Errors><Error><Code>…`) with an EC2 error code and status, never a web
//! framework's plain-text page — a body over 1 MiB (`RequestEntityTooLarge`, 413), an unknown
//! path (`InvalidAction`, 404), another method (`UnsupportedOperation`, 405), a body that is
//! not a form (`InvalidParameterValue`), bytes that do not decode (`MalformedQueryString`).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tracing::info;

use super::api::{self, Ctx};
use super::faults::Faults;
use super::query::{self, ApiError, Query};
use super::{Shared, check_recipe, imds, runtime, unix_ms, xml};

/// The routes of the local cloud.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", any(ec2))
        .route("/__lobster/health", get(|| async { "ok" }))
        .route("/__lobster/faults", get(get_faults).post(set_faults))
        .fallback(unknown_path)
        // The body limit is ours (an EC2 error document), not the framework's.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn unknown_path(uri: Uri) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    error_response(
        &ApiError::new(
            "InvalidAction",
            format!(
                "The path {} is not served: the EC2 Query API is at /",
                uri.path()
            ),
        )
        .with_status(404),
        &request_id,
    )
}

fn xml_response(status: u16, body: String) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn error_response(e: &ApiError, request_id: &str) -> Response {
    xml_response(e.status, xml::error(&e.code, &e.message, request_id))
}

/// The access key id of a SigV4 `Authorization` header.
fn access_key_id(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    Some(cred.split('/').next()?.to_string())
}

/// Reads a request body up to [`query::MAX_BODY`]; a larger one is EC2's
/// `RequestEntityTooLarge`.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, query::MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                "RequestEntityTooLarge",
                format!("the request body is larger than {} bytes", query::MAX_BODY),
            )
            .with_status(413)
        })
}

/// What the request is, before its parameters: the method and content type EC2 accepts.
fn check_request(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::new(
            "UnsupportedOperation",
            format!("The EC2 Query API takes GET or POST, not {method}"),
        )
        .with_status(405));
    }
    if method == Method::POST
        && let Some(ct) = headers.get(header::CONTENT_TYPE)
    {
        let ct = ct.to_str().unwrap_or("");
        if !ct
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!(
                    "Content-Type {ct} is not supported: send application/x-www-form-urlencoded"
                ),
            ));
        }
    }
    Ok(())
}

async fn ec2(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Err(e) = check_request(&method, &headers) {
        return error_response(&e, &request_id);
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e, &request_id),
    };
    if let Some(allowed) = &shared.access_key {
        match access_key_id(&headers) {
            Some(k) if k == *allowed || k == imds::INSTANCE_ACCESS_KEY => {}
            Some(_) => {
                return error_response(
                    &ApiError::new(
                        "AuthFailure",
                        "AWS was not able to validate the provided access credentials",
                    )
                    .with_status(401),
                    &request_id,
                );
            }
            None => {
                return error_response(
                    &ApiError::new(
                        "MissingAuthenticationToken",
                        "The request must contain a valid AWS access key",
                    )
                    .with_status(401),
                    &request_id,
                );
            }
        }
    }
    let faults = shared.faults();
    if faults.api_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.api_delay_ms)).await;
    }
    if faults.deny_instance_api
        && access_key_id(&headers).as_deref() == Some(imds::INSTANCE_ACCESS_KEY)
    {
        return error_response(
            &ApiError::new(
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
            )
            .with_status(403),
            &request_id,
        );
    }
    if Faults::hit(faults.throttle) {
        return error_response(
            &ApiError::new("RequestLimitExceeded", "Request limit exceeded.").with_status(503),
            &request_id,
        );
    }
    let q = match Query::parse(uri.query(), &body) {
        Ok(q) => q,
        Err(e) => return error_response(&e, &request_id),
    };
    let ctx = Ctx {
        region: &shared.region,
        now_ms: unix_ms(),
        request_id: &request_id,
        faults: &faults,
        check_location: &check_recipe,
    };
    let result = {
        let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = api::handle(&q, &mut s, &ctx);
        if r.is_ok() && !q.action.starts_with("Describe") {
            shared.save(&s);
        }
        r
    };
    match result {
        Ok((xml, effects)) => {
            runtime::apply(&shared, effects);
            xml_response(200, xml)
        }
        Err(e) => error_response(&e, &request_id),
    }
}

async fn get_faults(AxState(shared): AxState<Arc<Shared>>) -> Response {
    axum::Json(shared.faults()).into_response()
}

async fn set_faults(AxState(shared): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let parsed: Result<Faults, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
    match parsed.and_then(|f| f.check().map(|_| f)) {
        Ok(f) => {
            info!(faults = ?f, "fault injection changed");
            *shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid faults: {e}\n")).into_response(),
    }
}
