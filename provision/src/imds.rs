//! An IMDSv2 client: how a VM (or a local-cloud instance) learns who it is.
//!
//! Token first (`PUT /latest/api/token`), then reads with the token. The endpoint comes from
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` (the local cloud sets it per instance), else the
//! link-local address EC2 uses.

use std::time::Duration;

/// EC2's metadata address.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_S: u32 = 21_600;

/// What an instance knows about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub instance_type: String,
    pub region: String,
}

/// IMDS could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// Nothing answers at the endpoint.
    #[error("instance metadata service unreachable at {endpoint}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error status.
    #[error("instance metadata {path}: HTTP {status}")]
    Status { path: String, status: u16 },
}

pub struct Imds {
    endpoint: String,
    http: reqwest::Client,
}

impl Imds {
    /// The endpoint of `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else EC2's.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
        Imds::new(&endpoint)
    }

    pub fn new(endpoint: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .expect("http client");
        Imds {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn unreachable(&self, source: reqwest::Error) -> ImdsError {
        ImdsError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    async fn token(&self) -> Result<String, ImdsError> {
        let r = self
            .http
            .put(format!("{}/latest/api/token", self.endpoint))
            .header(
                "X-aws-ec2-metadata-token-ttl-seconds",
                TOKEN_TTL_S.to_string(),
            )
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !r.status().is_success() {
            return Err(ImdsError::Status {
                path: "/latest/api/token".into(),
                status: r.status().as_u16(),
            });
        }
        r.text().await.map_err(|e| self.unreachable(e))
    }

    /// Reads one path (e.g. `/latest/meta-data/instance-id`); `Ok(None)` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let token = self.token().await?;
        let r = self
            .http
            .get(format!("{}{path}", self.endpoint))
            .header("X-aws-ec2-metadata-token", token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        match r.status().as_u16() {
            200 => Ok(Some(r.text().await.map_err(|e| self.unreachable(e))?)),
            404 => Ok(None),
            status => Err(ImdsError::Status {
                path: path.to_string(),
                status,
            }),
        }
    }

    /// Instance id, type and region.
    pub async fn identity(&self) -> Result<Identity, ImdsError> {
        let get = |p: &'static str| async move {
            self.get(p).await?.ok_or(ImdsError::Status {
                path: p.to_string(),
                status: 404,
            })
        };
        Ok(Identity {
            instance_id: get("/latest/meta-data/instance-id")
                .await?
                .trim()
                .to_string(),
            instance_type: get("/latest/meta-data/instance-type")
                .await?
                .trim()
                .to_string(),
            region: get("/latest/meta-data/placement/region")
                .await?
                .trim()
                .to_string(),
        })
    }

    /// The instance's user-data (`None` if it has none).
    pub async fn user_data(&self) -> Result<Option<String>, ImdsError> {
        self.get("/latest/user-data").await
    }
}
