//! The fleet: slave VMs in a cloud, reconciled from tags.
//!
//! - [`config`]: settings from `config.yaml` and flags.
//! - [`plan`]: the pure reconciler (`plan(desired, observed) -> Plan`).
//! - [`apply`]: carries a plan out against a [`Cloud`], pass after pass until converged.
//! - [`image`]: the template image (found by tag; built for the local cloud or baked on EC2).
//! - [`status`]: instances joined with the slaves the master sees.
//! - [`up`]: `fleet up` as one library operation (template, master, user-data, converge, wait).
//!
//! Invariant: fleet state is never kept locally; every pass rebuilds it from the cloud's tags,
//! so a master can restart at any time and `--dry-run` costs nothing.

pub mod apply;
pub mod config;
pub mod image;
pub mod plan;
pub mod rootfs;
pub mod status;
pub mod up;

use std::sync::Arc;

use lobster_fleet::tags;
use lobster_provision::cloud::{Cloud, Tags};
use lobster_provision::ec2::{Ec2Cloud, Ec2Config};

use crate::daemon::{self, DaemonError};
use crate::home::Home;
use config::{CloudKind, FleetSettings};

/// Static credentials the local cloud is called with (it checks none by default).
pub const LOCAL_CREDENTIALS: (&str, &str) = ("lobster-local", "lobster-local-secret");
/// Region name of the local cloud.
pub const LOCAL_REGION: &str = "local";

/// A connected cloud and how it was reached.
pub struct Connected {
    pub cloud: Arc<dyn Cloud>,
    /// The API endpoint (for messages).
    pub endpoint: String,
}

/// Connects to the fleet's cloud; for the local cloud without an endpoint, starts it.
pub async fn connect(s: &FleetSettings, home: &Home) -> Result<Connected, DaemonError> {
    let (cfg, endpoint) = match s.cloud {
        CloudKind::Local => {
            let (endpoint, region) = match &s.endpoint_url {
                Some(e) => (
                    e.clone(),
                    s.region.clone().unwrap_or_else(|| LOCAL_REGION.into()),
                ),
                None => {
                    let info = daemon::ensure_cloud(home).await?;
                    (info.endpoint, info.region)
                }
            };
            let cfg = Ec2Config {
                region: Some(region),
                endpoint_url: Some(endpoint.clone()),
                profile: None,
                credentials: Some((LOCAL_CREDENTIALS.0.into(), LOCAL_CREDENTIALS.1.into())),
                max_attempts: Some(5),
            };
            (cfg, endpoint)
        }
        CloudKind::Aws => {
            let cfg = Ec2Config {
                region: s.region.clone(),
                endpoint_url: s.endpoint_url.clone(),
                profile: s.profile.clone(),
                credentials: None,
                max_attempts: Some(5),
            };
            (cfg, s.endpoint_url.clone().unwrap_or_else(|| "AWS".into()))
        }
    };
    Ok(Connected {
        cloud: Arc::new(Ec2Cloud::connect(&cfg).await),
        endpoint,
    })
}

/// Connects to the fleet's cloud only if it is there already: `None` for the local cloud of
/// this home when it is not running (nothing is started).
pub async fn connect_existing(s: &FleetSettings, home: &Home) -> Option<Connected> {
    if s.cloud == CloudKind::Local
        && s.endpoint_url.is_none()
        && daemon::running_cloud(home).await.is_none()
    {
        return None;
    }
    connect(s, home).await.ok()
}

/// Fleet instances of this home's local cloud that are starting or running (their slaves
/// may still register), or `None` when no local cloud runs here. Starts nothing.
pub async fn local_instances_up(home: &Home) -> Option<usize> {
    let info = daemon::running_cloud(home).await?;
    let cfg = Ec2Config {
        region: Some(info.region),
        endpoint_url: Some(info.endpoint),
        profile: None,
        credentials: Some((LOCAL_CREDENTIALS.0.into(), LOCAL_CREDENTIALS.1.into())),
        max_attempts: Some(1),
    };
    let cloud = Ec2Cloud::connect(&cfg).await;
    let managed = Tags::from([(tags::MANAGED.to_string(), "true".to_string())]);
    let all = cloud.instances(&managed).await.ok()?;
    Some(
        all.iter()
            .filter(|i| {
                matches!(
                    i.state,
                    lobster_provision::cloud::InstanceState::Pending
                        | lobster_provision::cloud::InstanceState::Running
                )
            })
            .count(),
    )
}

/// The tags that select a fleet's instances.
pub fn fleet_selector(fleet: &str) -> Tags {
    Tags::from([
        (tags::MANAGED.to_string(), "true".to_string()),
        (tags::FLEET.to_string(), fleet.to_string()),
    ])
}

/// The tags a new instance is created with.
pub fn launch_tags(fleet: &str, expires_at: &str) -> Tags {
    let mut t = fleet_selector(fleet);
    t.insert(tags::ROLE.into(), tags::ROLE_SLAVE.into());
    t.insert(tags::EXPIRES_AT.into(), expires_at.into());
    t.insert(tags::NAME.into(), format!("lobster-{fleet}"));
    t
}
