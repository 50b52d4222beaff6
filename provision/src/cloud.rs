//! The `Cloud` trait: what Lobster asks of a cloud, and the errors it can act on.
//!
//! Both backends (EC2 through aws-sdk-ec2, and the local cloud, which speaks the same EC2 API)
//! implement it through the same SDK client, so the reconciler sees one behaviour.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// EC2 instance states with their EC2 codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    /// The EC2 state code (the low byte).
    pub fn code(self) -> u16 {
        match self {
            InstanceState::Pending => 0,
            InstanceState::Running => 16,
            InstanceState::ShuttingDown => 32,
            InstanceState::Terminated => 48,
            InstanceState::Stopping => 64,
            InstanceState::Stopped => 80,
        }
    }

    /// The EC2 state name (`running`, `shutting-down`, ...).
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
            InstanceState::Stopping,
            InstanceState::Stopped,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether the instance costs compute (pending or running).
    pub fn is_up(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tags as a sorted map.
pub type Tags = BTreeMap<String, String>;

/// A machine image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub state: String,
    /// RFC 3339 creation time as reported.
    pub created: Option<String>,
    /// Where the image comes from (EC2's `ImageLocation`; the local cloud: its recipe
    /// directory).
    pub location: Option<String>,
    pub tags: Tags,
}

/// An instance as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub instance_type: String,
    pub image_id: String,
    /// RFC 3339 launch time as reported.
    pub launch_time: Option<String>,
    pub private_ip: Option<String>,
    pub tags: Tags,
}

/// What to launch in one RunInstances call (`MinCount=1, MaxCount=count`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    pub count: u32,
    /// Idempotency token: the same token never launches twice.
    pub client_token: String,
    /// Plain text; backends encode it as the API wants (base64 for EC2).
    pub user_data: String,
    /// Tags applied at creation (instance and volumes).
    pub tags: Tags,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
}

/// A state change reported by start/stop/terminate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub id: String,
    pub previous: InstanceState,
    pub current: InstanceState,
}

/// Errors a reconciler can act on. Every variant keeps the cloud's code and message.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The API is rate limiting us: retry later with backoff.
    #[error("throttled by the cloud API ({code}): {message}")]
    Throttled { code: String, message: String },
    /// No capacity for this instance type here now: try another type or subnet, or later.
    #[error("insufficient capacity ({code}): {message}")]
    Capacity { code: String, message: String },
    /// Credentials missing, wrong, or not allowed to do this.
    #[error(
        "not authorized ({code}): {message} (the IAM policies Lobster needs: slave-image/image/iam/)"
    )]
    Unauthorized { code: String, message: String },
    /// The instance or image does not exist (maybe not yet: eventual consistency).
    #[error("not found ({code}): {message}")]
    NotFound { code: String, message: String },
    /// The request is wrong (a parameter, a dry run that would have succeeded is not an error).
    #[error("invalid request ({code}): {message}")]
    Invalid { code: String, message: String },
    /// The endpoint could not be reached at all.
    #[error(
        "cannot reach the cloud API at {endpoint}: {message} (check the endpoint URL, the region and the network)"
    )]
    Unreachable { endpoint: String, message: String },
    /// Anything else, with the cloud's code and message.
    #[error("cloud API error ({code}): {message}")]
    Other { code: String, message: String },
}

impl CloudError {
    /// Classifies an EC2 error code.
    pub fn from_code(code: &str, message: &str) -> CloudError {
        let (code, message) = (code.to_string(), message.to_string());
        match code.as_str() {
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "SlowDown"
            | "TooManyRequestsException" => CloudError::Throttled { code, message },
            "InsufficientInstanceCapacity"
            | "InsufficientHostCapacity"
            | "InsufficientCapacity"
            | "InsufficientReservedInstanceCapacity"
            | "InstanceLimitExceeded"
            | "VcpuLimitExceeded"
            | "Unsupported" => CloudError::Capacity { code, message },
            "UnauthorizedOperation"
            | "AuthFailure"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "MissingAuthenticationToken"
            | "AccessDenied"
            | "OptInRequired"
            | "Blocked"
            | "ExpiredToken" => CloudError::Unauthorized { code, message },
            c if c.ends_with(".NotFound") || c == "InvalidInstanceType" => {
                CloudError::NotFound { code, message }
            }
            c if c.starts_with("Invalid")
                || c.starts_with("Missing")
                || c == "IdempotentParameterMismatch"
                || c == "IncorrectInstanceState"
                || c == "IncorrectState"
                || c == "MalformedQueryString"
                || c == "UnknownParameter"
                || c == "InvalidAction" =>
            {
                CloudError::Invalid { code, message }
            }
            _ => CloudError::Other { code, message },
        }
    }

    /// The cloud's error code.
    pub fn code(&self) -> &str {
        match self {
            CloudError::Throttled { code, .. }
            | CloudError::Capacity { code, .. }
            | CloudError::Unauthorized { code, .. }
            | CloudError::NotFound { code, .. }
            | CloudError::Invalid { code, .. }
            | CloudError::Other { code, .. } => code,
            CloudError::Unreachable { .. } => "Unreachable",
        }
    }

    /// Worth retrying as is (after a pause).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CloudError::Throttled { .. } | CloudError::Unreachable { .. }
        )
    }
}

/// What Lobster asks of a cloud.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// Self-owned, available images carrying every given tag.
    async fn find_images(&self, tags: &Tags) -> Result<Vec<Image>, CloudError>;
    /// Every self-owned image (to tell the user which tags exist).
    async fn own_images(&self) -> Result<Vec<Image>, CloudError>;
    /// Instances carrying every given tag, in any state but terminated.
    async fn instances(&self, tags: &Tags) -> Result<Vec<Instance>, CloudError>;
    /// Instances by id (any state).
    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, CloudError>;
    /// One RunInstances call.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<Instance>, CloudError>;
    async fn start(&self, ids: &[String]) -> Result<Vec<StateChange>, CloudError>;
    /// Stops instances; with `dry_run` only checks the permission (Ok means it would succeed).
    async fn stop(&self, ids: &[String], dry_run: bool) -> Result<Vec<StateChange>, CloudError>;
    async fn terminate(&self, ids: &[String]) -> Result<Vec<StateChange>, CloudError>;
    async fn tag(&self, ids: &[String], tags: &Tags) -> Result<(), CloudError>;
    /// Removes tags by key (DeleteTags).
    async fn untag(&self, ids: &[String], keys: &[String]) -> Result<(), CloudError>;
    /// Replaces a stopped instance's user-data (ModifyInstanceAttribute).
    async fn set_user_data(&self, id: &str, user_data: &str) -> Result<(), CloudError>;
    /// Changes a stopped instance's type (ModifyInstanceAttribute).
    async fn set_instance_type(&self, id: &str, instance_type: &str) -> Result<(), CloudError>;
    /// Registers an image from a location (the local cloud: a directory) with tags.
    async fn register_image(
        &self,
        name: &str,
        location: &str,
        tags: &Tags,
    ) -> Result<String, CloudError>;
    /// Creates an image from an instance (EC2 `CreateImage`) with tags.
    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        tags: &Tags,
    ) -> Result<String, CloudError>;
    /// The vCPUs of an instance type (EC2 `DescribeInstanceTypes`: `vCpuInfo.defaultVCpus`);
    /// `NotFound` for a type the cloud does not have.
    async fn vcpus(&self, instance_type: &str) -> Result<u32, CloudError>;
    /// Deregisters an image (EC2 `DeregisterImage`; its snapshots stay, as on EC2).
    async fn deregister_image(&self, id: &str) -> Result<(), CloudError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_actionable_variants() {
        let cases = [
            ("RequestLimitExceeded", "Throttled"),
            ("InsufficientInstanceCapacity", "Capacity"),
            ("UnauthorizedOperation", "Unauthorized"),
            ("AuthFailure", "Unauthorized"),
            ("InvalidInstanceID.NotFound", "NotFound"),
            ("InvalidAMIID.NotFound", "NotFound"),
            ("InvalidParameterValue", "Invalid"),
            ("IdempotentParameterMismatch", "Invalid"),
            ("InternalError", "Other"),
        ];
        for (code, variant) in cases {
            let e = CloudError::from_code(code, "m");
            let got = format!("{e:?}");
            assert!(got.starts_with(variant), "{code} -> {got}");
            assert_eq!(e.code(), code);
        }
        assert!(CloudError::from_code("Throttling", "").is_retryable());
        assert!(!CloudError::from_code("AuthFailure", "").is_retryable());
    }

    #[test]
    fn state_codes_are_ec2_codes() {
        assert_eq!(InstanceState::Running.code(), 16);
        assert_eq!(InstanceState::Stopped.code(), 80);
        assert_eq!(
            InstanceState::from_name("shutting-down"),
            Some(InstanceState::ShuttingDown)
        );
        assert_eq!(InstanceState::from_name("nope"), None);
    }
}
