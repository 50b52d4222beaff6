//! A client of the master's HTTP API (control-plane calls from the CLI).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use crate::api::{CreateRun, Created, Health};
use crate::control::{RunView, SlaveView};

/// A slice of one slave's trace (see [`ApiClient::trace_slice`]).
pub struct TraceSlice {
    /// Whole lines, one JSON record each.
    pub data: bytes::Bytes,
    /// Size of all the slave's records of the run.
    pub total: u64,
    /// Records the slave could not keep.
    pub dropped: u64,
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .expect("http client");
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let msg = body
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no details");
            bail!("the master answered {status}: {msg}");
        }
        resp.json()
            .await
            .context("unreadable answer from the master")
    }

    pub async fn health(&self) -> anyhow::Result<Health> {
        let r = self
            .req(reqwest::Method::GET, "/api/health")
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        Self::decode(r).await
    }

    pub async fn slaves(&self) -> anyhow::Result<Vec<SlaveView>> {
        Self::decode(self.req(reqwest::Method::GET, "/api/slaves").send().await?).await
    }

    /// Creates a run; `Ok(Err(id))` when run `id` is still in progress on this master.
    pub async fn create_run(&self, body: &CreateRun) -> anyhow::Result<Result<String, String>> {
        let r = self
            .req(reqwest::Method::POST, "/api/runs")
            .json(body)
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::CONFLICT {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if let Some(id) = body.get("run_id").and_then(|v| v.as_str()) {
                return Ok(Err(id.to_string()));
            }
            bail!(
                "the master answered 409 Conflict: {}",
                body.get("error").and_then(|e| e.as_str()).unwrap_or("")
            );
        }
        Ok(Ok(Self::decode::<Created>(r).await?.run_id))
    }

    pub async fn run(&self, id: &str, after: u64) -> anyhow::Result<RunView> {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/api/runs/{id}?after={after}"),
            )
            .send()
            .await?;
        Self::decode(r).await
    }

    /// Sends an action; a stop may say who stopped the run (`reason`).
    pub async fn act(&self, id: &str, action: &str, reason: Option<&str>) -> anyhow::Result<()> {
        let mut req = self.req(reqwest::Method::POST, &format!("/api/runs/{id}/{action}"));
        if let Some(r) = reason {
            req = req.json(&crate::api::StopRequest {
                reason: Some(r.to_string()),
            });
        }
        let r = req.send().await?;
        if !r.status().is_success() {
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            bail!(
                "the master answered {status}: {}",
                body.get("error").and_then(|e| e.as_str()).unwrap_or("")
            );
        }
        Ok(())
    }

    /// The slaves that took part in run `id`, for fetching its trace.
    pub async fn trace_slaves(&self, id: &str) -> anyhow::Result<crate::control::TraceSlaves> {
        let r = self
            .req(reqwest::Method::GET, &format!("/api/runs/{id}/traces"))
            .send()
            .await?;
        Self::decode(r).await
    }

    /// One slice of slave `uid`'s trace of run `id` from byte `offset`: the records (whole
    /// lines), the size of all of them, and the records the slave could not keep; `None`
    /// while the slave is still writing it (ask again shortly).
    pub async fn trace_slice(
        &self,
        id: &str,
        uid: &str,
        offset: u64,
    ) -> anyhow::Result<Option<TraceSlice>> {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/api/runs/{id}/traces/{uid}?offset={offset}"),
            )
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        let status = r.status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Ok(None);
        }
        if !status.is_success() {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            bail!(
                "{}",
                body.get("error")
                    .and_then(|e| e.as_str())
                    .map_or_else(|| format!("the master answered {status}"), str::to_string)
            );
        }
        let number = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("the master's answer lacks {name}"))
        };
        let total = number(crate::api::traces::TOTAL)?;
        let dropped = number(crate::api::traces::DROPPED)?;
        let data = r.bytes().await.context("the trace slice was cut off")?;
        Ok(Some(TraceSlice {
            data,
            total,
            dropped,
        }))
    }

    /// Changes the load of run `id`; returns the load time (ms) the change starts at, or the
    /// master's reason when it refused the request as not fitting the run (400).
    pub async fn change_load(
        &self,
        id: &str,
        body: &crate::api::LoadRequest,
    ) -> anyhow::Result<Result<u64, String>> {
        let r = self
            .req(reqwest::Method::POST, &format!("/api/runs/{id}/load"))
            .json(body)
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::BAD_REQUEST {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let msg = body
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("refused");
            return Ok(Err(msg.to_string()));
        }
        let answer: crate::api::LoadChanged = Self::decode(r).await?;
        Ok(Ok(answer.at_load_ms))
    }
}
