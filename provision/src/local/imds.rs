//! A per-instance IMDSv2 endpoint: each running local instance gets its own loopback port, and
//! its processes find it through `AWS_EC2_METADATA_SERVICE_ENDPOINT`, exactly as a VM finds
//! 169.254.169.254. Tokens are required (as with `HttpTokens=required`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Role name whose credentials instances get (the local cloud always accepts them).
pub const ROLE: &str = "lobster-slave";
/// Access key id of instance credentials.
pub const INSTANCE_ACCESS_KEY: &str = "LOBSTERLOCALINSTANCE";

#[derive(Clone)]
struct Imds {
    shared: Arc<Shared>,
    instance_id: String,
    tokens: Arc<Mutex<HashMap<String, Instant>>>,
}

/// Serves IMDS for `instance_id` on a fresh loopback port until `stop`; returns the port.
pub async fn serve(
    shared: Arc<Shared>,
    instance_id: String,
    stop: CancellationToken,
) -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let port = listener.local_addr()?.port();
    let state = Imds {
        shared,
        instance_id,
        tokens: Arc::new(Mutex::new(HashMap::new())),
    };
    let app = Router::new()
        .route("/latest/api/token", put(token))
        .route("/latest/user-data", get(user_data))
        .route("/latest/meta-data/", get(index))
        .route("/latest/meta-data/{*path}", get(meta))
        .route("/latest/dynamic/instance-identity/document", get(document))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(port)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

async fn token(State(s): State<Imds>, headers: HeaderMap) -> Response {
    if s.shared.faults().imds_unavailable {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    if headers.contains_key("x-forwarded-for") {
        return text(StatusCode::FORBIDDEN, "Forbidden");
    }
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Bad Request: X-aws-ec2-metadata-token-ttl-seconds must be 1..21600",
        );
    };
    let t = uuid::Uuid::new_v4().simple().to_string();
    let mut tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    tokens.retain(|_, exp| *exp > now);
    if tokens.len() > 10_000 {
        return text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    tokens.insert(t.clone(), now + Duration::from_secs(ttl));
    // As EC2: the granted TTL comes back as a header (SDKs require it).
    (
        StatusCode::OK,
        [("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())],
        t,
    )
        .into_response()
}

fn authorized(s: &Imds, headers: &HeaderMap) -> bool {
    let Some(t) = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
    tokens.get(t).is_some_and(|exp| *exp > Instant::now())
}

/// The instance's record as the IMDS answers from it.
struct Facts {
    instance_type: String,
    image_id: String,
    ip: String,
    user_data: String,
    tags: crate::cloud::Tags,
    launch_ms: u64,
}

fn facts(s: &Imds) -> Option<Facts> {
    let state = s.shared.state.lock().unwrap_or_else(|p| p.into_inner());
    state.instances.get(&s.instance_id).map(|i| Facts {
        instance_type: i.instance_type.clone(),
        image_id: i.image_id.clone(),
        ip: i.private_ip.clone(),
        user_data: i.user_data.clone(),
        tags: i.tags.clone(),
        launch_ms: i.launch_unix_ms,
    })
}

async fn user_data(State(s): State<Imds>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    match facts(&s) {
        Some(f) if !f.user_data.is_empty() => text(StatusCode::OK, f.user_data),
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn index(State(s): State<Imds>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    text(
        StatusCode::OK,
        "ami-id\nhostname\niam/\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\ntags/",
    )
}

async fn meta(State(s): State<Imds>, headers: HeaderMap, Path(path): Path<String>) -> Response {
    if !authorized(&s, &headers) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let Some(f) = facts(&s) else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let region = &s.shared.region;
    let host = format!("ip-{}.{region}.compute.internal", f.ip.replace('.', "-"));
    let body = match path.as_str() {
        "instance-id" => s.instance_id.clone(),
        "instance-type" => f.instance_type,
        "ami-id" => f.image_id,
        "local-ipv4" => f.ip,
        "hostname" | "local-hostname" => host,
        "placement/" => "availability-zone\nregion".into(),
        "placement/region" => region.clone(),
        "placement/availability-zone" => format!("{region}a"),
        "iam/" => "security-credentials/".into(),
        "iam/security-credentials" | "iam/security-credentials/" => ROLE.into(),
        p if p == format!("iam/security-credentials/{ROLE}") => credentials(f.launch_ms),
        "tags/" => "instance/".into(),
        "tags/instance" | "tags/instance/" => f.tags.keys().cloned().collect::<Vec<_>>().join("\n"),
        p => match p.strip_prefix("tags/instance/").and_then(|k| f.tags.get(k)) {
            Some(v) => v.clone(),
            None => return text(StatusCode::NOT_FOUND, "Not Found"),
        },
    };
    text(StatusCode::OK, body)
}

fn credentials(launch_ms: u64) -> String {
    let now = super::xml::iso8601(crate::local::unix_ms());
    let exp = super::xml::iso8601(crate::local::unix_ms() + 6 * 3_600_000);
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": now,
        "Type": "AWS-HMAC",
        "AccessKeyId": INSTANCE_ACCESS_KEY,
        "SecretAccessKey": format!("local-{launch_ms}"),
        "Token": "lobster-local-session",
        "Expiration": exp,
    })
    .to_string()
}

async fn document(State(s): State<Imds>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let Some(f) = facts(&s) else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let doc = serde_json::json!({
        "accountId": super::state::OWNER,
        "architecture": "x86_64",
        "availabilityZone": format!("{}a", s.shared.region),
        "imageId": f.image_id,
        "instanceId": s.instance_id,
        "instanceType": f.instance_type,
        "privateIp": f.ip,
        "region": s.shared.region,
        "pendingTime": super::xml::iso8601(f.launch_ms),
        "version": "2017-09-30",
    });
    text(StatusCode::OK, doc.to_string())
}
