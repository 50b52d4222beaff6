//! `fleet up` as a library operation, in steps: the template image (found by tag; built for
//! the local cloud), the master the slaves will join, the user-data, the reconciler
//! ([`apply::converge`]) and the wait until every instance's slaves are registered.
//!
//! Every input is resolved into an [`UpRequest`] before any I/O. A dry run starts, writes and
//! builds nothing: with no local cloud running it plans against an empty fleet, and a missing
//! local template is reported as "would be built".

use std::time::{Duration, Instant};

use lobster_fleet::userdata::{self, SlaveSettings};
use lobster_provision::cloud::{Instance, InstanceState};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::apply::{self, FleetError, LaunchTemplate, MasterTags, Outcome};
use super::config::{CloudKind, FleetSettings};
use super::plan::{Desired, plan};
use super::{connect, connect_existing, image};
use crate::client::ApiClient;
use crate::daemon::{self, DaemonError, MasterListen};
use crate::home::Home;

/// Most instances one fleet may ask for.
pub const MAX_COUNT: u32 = 10_000;

/// A `fleet up`, fully resolved.
#[derive(Clone, Debug)]
pub struct UpRequest {
    pub settings: FleetSettings,
    /// Instances the fleet should have (1 ..= [`MAX_COUNT`]).
    pub count: u32,
    /// The template tag was given by the user: a missing template is an error, never built.
    pub explicit_template: bool,
    /// Plan only: start, write and build nothing.
    pub dry_run: bool,
    /// Wait until every instance runs and its slaves are registered.
    pub wait: bool,
    /// Longest wait for the fleet and its slaves.
    pub timeout: Duration,
    /// Where a master started for the fleet listens (an already running one is used as is).
    pub listen: MasterListen,
    /// Bearer token of the master's API, when it has one.
    pub api_token: Option<String>,
}

/// Why a `fleet up` failed; each maps to an exit code in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The template tag finds no image (bad input).
    #[error("{0}")]
    NoTemplate(String),
    /// The local template image could not be built.
    #[error("cannot build the local template image")]
    Image(#[source] image::BuildError),
    /// No `lobster-slave` binary to put in a local template image.
    #[error("{0}")]
    NoSlaveBinary(String),
    /// The local cloud or the master could not be started or reached.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The fleet's join token could not be read or made.
    #[error("cannot read the fleet's join token")]
    Token(#[source] std::io::Error),
    /// The cloud refused, capacity ran out, or waiting ran out while converging.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// Instances run but not all their slaves registered in time; says which and what to read.
    #[error(
        "{registered} of {expected} slave(s) registered within {secs} s; not registered: {missing}"
    )]
    NotRegistered {
        registered: u64,
        expected: u64,
        secs: u64,
        missing: String,
    },
    /// When waiting ran out, no instance of the fleet was pending or running: they were
    /// stopped or terminated (by the cloud, by themselves, by someone) before their slaves
    /// registered. Says which instances were seen in which state.
    #[error(
        "no instance of the fleet is pending or running after {secs} s (seen: {seen}); they stopped before their slaves registered"
    )]
    NoneUp { secs: u64, seen: String },
}

/// What `fleet up` did.
#[derive(Debug)]
pub enum UpReport {
    /// A dry run: the plan and what it saw.
    Planned {
        observed: usize,
        /// `ami-…`, or what would happen to get one.
        image: String,
        plan: String,
        endpoint: String,
    },
    /// The fleet is up.
    Up {
        outcome: Outcome,
        up: usize,
        registered: u64,
        elapsed: Duration,
        master_api: String,
        image: String,
    },
}

/// Where `fleet up` reports its progress (the CLI draws bars; a library caller may ignore it).
pub trait Progress {
    /// The instances after a reconcile pass or a wait step, and the slaves registered so far
    /// when known.
    fn observed(&self, instances: &[Instance], registered: Option<u64>);
    /// A line worth telling the user.
    fn note(&self, line: &str);
}

/// Slaves each instance should run: its type's vCPUs (as the cloud says) × slaves per core;
/// `None` when the cloud does not know the type.
async fn slaves_per_instance(
    s: &FleetSettings,
    cloud: &dyn lobster_provision::cloud::Cloud,
    instance_type: &str,
) -> Option<u64> {
    let v = cloud.vcpus(instance_type).await.ok()?;
    Some(u64::from(v * s.slaves_per_core))
}

/// Brings the fleet of `req` up (see the module doc for the steps).
pub async fn up(
    req: &UpRequest,
    home: &Home,
    progress: &dyn Progress,
    shutdown: &CancellationToken,
) -> Result<UpReport, UpError> {
    let span = tracing::info_span!("fleet_up", fleet = %req.settings.fleet, count = req.count);
    async {
        if req.dry_run {
            return dry_run(req, home).await;
        }
        let s = &req.settings;
        let started = Instant::now();
        let c = connect(s, home).await?;
        let cloud = c.cloud.as_ref();
        let image = template(req, home, cloud, progress).await?;
        let master = daemon::ensure_master(home, &req.listen).await?;
        let token = crate::tokens::fleet_token(&home.master(), &s.fleet).map_err(UpError::Token)?;
        let expires_at =
            crate::clock::rfc3339(crate::clock::unix_ms() + s.max_lifetime.as_millis() as u64);
        let user_data = userdata::render(
            image::USER_DATA,
            &SlaveSettings {
                fleet: s.fleet.clone(),
                master: master.grpc.clone(),
                join_token: token,
                fingerprint: master.fingerprint.clone(),
                idle_minutes: s.idle_minutes,
                slaves_per_core: s.slaves_per_core,
                max_lifetime: humantime::format_duration(s.max_lifetime)
                    .to_string()
                    .replace(' ', ""),
                expires_at: expires_at.clone(),
            },
        );
        let pointer = MasterTags {
            url: master.grpc.clone(),
            fingerprint: master.fingerprint.clone(),
        };
        let template = LaunchTemplate {
            image_id: image.clone(),
            user_data,
            expires_at,
            master: pointer.clone(),
        };
        let desired = desired(req);
        let deadline = Instant::now() + req.timeout;
        let outcome = apply::converge(cloud, s, &desired, &template, deadline, shutdown, |obs| {
            progress.observed(obs, None)
        })
        .await?;
        // Instances that run on point at the master as it is now (it may have moved).
        let moved = apply::point_at_master(cloud, &s.fleet, &pointer).await?;
        if moved > 0 {
            progress.note(&format!(
                "told {moved} running instance(s) where the master is now ({})",
                pointer.url
            ));
        }
        let api = ApiClient::new(&master.api, req.api_token.clone());
        let (instances, registered) = if req.wait {
            wait_for_slaves(req, cloud, &api, deadline, progress, shutdown).await?
        } else {
            let instances = apply::observe(cloud, &s.fleet).await?;
            progress.observed(&instances, None);
            (instances, 0)
        };
        let up = instances.iter().filter(|i| i.state.is_up()).count();
        if let Some(reason) = &outcome.partial {
            return Err(FleetError::Partial {
                up,
                want: req.count as usize,
                reason: reason.clone(),
            }
            .into());
        }
        Ok(UpReport::Up {
            outcome,
            up,
            registered,
            elapsed: started.elapsed(),
            master_api: master.api,
            image,
        })
    }
    .instrument(span)
    .await
}

fn desired(req: &UpRequest) -> Desired {
    Desired {
        fleet: req.settings.fleet.clone(),
        count: req.count,
        batch_size: req.settings.batch_size,
    }
}

/// The plan, with nothing started, written or built.
async fn dry_run(req: &UpRequest, home: &Home) -> Result<UpReport, UpError> {
    let s = &req.settings;
    let desired = desired(req);
    let Some(c) = connect_existing(s, home).await else {
        return Ok(UpReport::Planned {
            observed: 0,
            image: "none yet: `fleet up` would build one for the local cloud".into(),
            plan: plan(&desired, &[], crate::clock::unix_ms()).describe(),
            endpoint: "the local cloud (not running: `fleet up` would start it)".into(),
        });
    };
    let cloud = c.cloud.as_ref();
    let image = match image::find_template(cloud, &s.template_tag).await? {
        Ok(img) => img.id,
        Err(_) if s.cloud == CloudKind::Local && !req.explicit_template => {
            "none yet: `fleet up` would build one for the local cloud".into()
        }
        Err(missing) => return Err(UpError::NoTemplate(missing.to_string())),
    };
    let (p, observed) = apply::current_plan(cloud, &desired).await?;
    Ok(UpReport::Planned {
        observed: observed.len(),
        image,
        plan: p.describe(),
        endpoint: c.endpoint,
    })
}

/// The template image: found by tag, or built for the local cloud when none exists yet.
async fn template(
    req: &UpRequest,
    home: &Home,
    cloud: &dyn lobster_provision::cloud::Cloud,
    progress: &dyn Progress,
) -> Result<String, UpError> {
    let s = &req.settings;
    match image::find_template(cloud, &s.template_tag).await? {
        Ok(img) => Ok(img.id),
        Err(_) if s.cloud == CloudKind::Local && !req.explicit_template => {
            let bin = crate::local_slaves::slave_binary().map_err(UpError::NoSlaveBinary)?;
            progress.note("no template image yet: building one for the local cloud");
            image::build_local(cloud, &home.images(), &bin, &s.template_tag, None)
                .await
                .map_err(UpError::Image)
        }
        Err(missing) => Err(UpError::NoTemplate(missing.to_string())),
    }
}

/// Waits until every instance that is up runs and has its slaves registered, or the
/// deadline; then says which instances lack slaves, or that none is up ([`not_registered`]).
async fn wait_for_slaves(
    req: &UpRequest,
    cloud: &dyn lobster_provision::cloud::Cloud,
    api: &ApiClient,
    deadline: Instant,
    progress: &dyn Progress,
    shutdown: &CancellationToken,
) -> Result<(Vec<Instance>, u64), UpError> {
    let mut per_type: std::collections::BTreeMap<String, Option<u64>> = Default::default();
    loop {
        let instances = apply::observe(cloud, &req.settings.fleet).await?;
        let up: Vec<&Instance> = instances.iter().filter(|i| i.state.is_up()).collect();
        let slaves = api.slaves().await.unwrap_or_default();
        let of = |i: &Instance| {
            slaves
                .iter()
                .filter(|sl| sl.connected && sl.instance_id == i.id)
                .count() as u64
        };
        for i in &up {
            if !per_type.contains_key(&i.instance_type) {
                let per = slaves_per_instance(&req.settings, cloud, &i.instance_type).await;
                per_type.insert(i.instance_type.clone(), per);
            }
        }
        let want = |i: &Instance| per_type.get(&i.instance_type).copied().flatten();
        let registered: u64 = up.iter().map(|i| of(i)).sum();
        progress.observed(&instances, Some(registered));
        let short: Vec<&&Instance> = up
            .iter()
            .filter(|i| i.state != InstanceState::Running || of(i) < want(i).unwrap_or(1))
            .collect();
        if short.is_empty() && !up.is_empty() {
            return Ok((instances, registered));
        }
        if Instant::now() > deadline || shutdown.is_cancelled() {
            let (secs, cloud) = (req.timeout.as_secs(), req.settings.cloud);
            return Err(not_registered(secs, cloud, &instances, &of, &want));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Why waiting for the fleet's slaves ran out: which instances that are up lack slaves, or
/// that none is up (then which were seen, in which state: "0 of 0 slaves registered" told
/// nothing).
fn not_registered(
    secs: u64,
    cloud: CloudKind,
    instances: &[Instance],
    of: &dyn Fn(&Instance) -> u64,
    want: &dyn Fn(&Instance) -> Option<u64>,
) -> UpError {
    let up: Vec<&Instance> = instances.iter().filter(|i| i.state.is_up()).collect();
    if up.is_empty() {
        let seen = if instances.is_empty() {
            "no instance".to_string()
        } else {
            instances
                .iter()
                .map(|i| format!("{} {}", i.id, i.state.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return UpError::NoneUp { secs, seen };
    }
    let short = up
        .iter()
        .filter(|i| i.state != InstanceState::Running || of(i) < want(i).unwrap_or(1));
    let missing = short
        .map(|i| {
            let want = want(i).map_or("its".to_string(), |p| p.to_string());
            let log = match cloud {
                CloudKind::Local => format!(
                    "; its logs: LOBSTER_HOME/cloud/instances/{}/root/var/log/lobster/",
                    i.id
                ),
                CloudKind::Aws => "; see its console output".to_string(),
            };
            format!(
                "{} ({}, {} of {want} slave(s){log})",
                i.id,
                i.state.name(),
                of(i)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    UpError::NotRegistered {
        registered: up.iter().map(|i| of(i)).sum(),
        expected: up.iter().map(|i| want(i).unwrap_or(1)).sum(),
        secs,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, state: InstanceState) -> Instance {
        Instance {
            id: id.into(),
            state,
            instance_type: "t3.micro".into(),
            image_id: "ami-1".into(),
            launch_time: None,
            private_ip: None,
            tags: Default::default(),
        }
    }

    /// Waiting that runs out with no instance up names the instances and their states
    /// (a `fleet up` in the chaos suite once said only "0 of 0 slave(s) registered within
    /// 300 s; not registered: "); with instances up, it names those that lack slaves.
    #[test]
    fn a_wait_that_runs_out_says_what_it_saw() {
        let (of, want) = (|_: &Instance| 1u64, |_: &Instance| Some(2u64));
        let gone = [
            instance("i-1", InstanceState::Terminated),
            instance("i-2", InstanceState::Stopped),
        ];
        let e = not_registered(300, CloudKind::Local, &gone, &of, &want).to_string();
        assert_eq!(
            e,
            "no instance of the fleet is pending or running after 300 s (seen: i-1 terminated, \
             i-2 stopped); they stopped before their slaves registered"
        );
        let e = not_registered(300, CloudKind::Aws, &[], &of, &want).to_string();
        assert!(e.contains("(seen: no instance)"), "{e}");
        let some = [
            instance("i-3", InstanceState::Running),
            instance("i-4", InstanceState::Terminated),
        ];
        let e = not_registered(300, CloudKind::Aws, &some, &of, &want).to_string();
        assert_eq!(
            e,
            "1 of 2 slave(s) registered within 300 s; not registered: i-3 (running, 1 of 2 \
             slave(s); see its console output)"
        );
    }
}
