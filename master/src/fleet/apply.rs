//! The reconciler's acting half: observe (from tags), plan, act, and again, until the plan is
//! empty. Throttling is retried with backoff; capacity errors try the next instance type or
//! subnet, then end in a clearly reported partial fleet; `InvalidInstanceID.NotFound` right
//! after a launch is eventual consistency and simply waited out.

use std::future::Future;
use std::time::{Duration, Instant};

use lobster_fleet::tags;
use lobster_provision::cloud::{Cloud, CloudError, Instance, InstanceState, LaunchSpec, Tags};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::config::FleetSettings;
use super::plan::{Desired, Plan, plan};
use super::{fleet_selector, launch_tags};

/// A fleet operation that did not fully succeed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The cloud refused or failed a call.
    #[error("{what}")]
    Cloud {
        what: String,
        #[source]
        source: CloudError,
    },
    /// Fewer instances than asked could be had.
    #[error("partial fleet: {up} of {want} instances ({reason})")]
    Partial {
        up: usize,
        want: usize,
        reason: String,
    },
    /// Waiting ran out.
    #[error("{0}")]
    Timeout(String),
    /// Stopped by a signal between two passes (nothing half done: each pass is whole).
    #[error("interrupted")]
    Interrupted,
}

impl FleetError {
    fn cloud(what: impl Into<String>, source: CloudError) -> Self {
        FleetError::Cloud {
            what: what.into(),
            source,
        }
    }

    /// Whether credentials or permissions are the problem.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            FleetError::Cloud {
                source: CloudError::Unauthorized { .. },
                ..
            }
        )
    }
}

/// Calls `f` again while the cloud throttles (backoff 0.5 s … 8 s, up to 8 tries; 3 for an
/// endpoint that does not answer).
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, FleetError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CloudError>>,
{
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        match f().await {
            Ok(v) => return Ok(v),
            // Throttling passes: keep trying. An endpoint that does not answer at all is
            // retried briefly only (the SDK already retried each call).
            Err(e)
                if e.is_retryable()
                    && attempt
                        < if matches!(e, CloudError::Unreachable { .. }) {
                            3
                        } else {
                            8
                        } =>
            {
                info!(what, attempt, error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            Err(e) => return Err(FleetError::cloud(what.to_string(), e)),
        }
    }
    unreachable!("the loop returns")
}

/// What every new or restarted instance gets.
pub struct LaunchTemplate {
    pub image_id: String,
    /// Rendered user-data.
    pub user_data: String,
    /// RFC 3339 expiry written to `lobster:expires-at`.
    pub expires_at: String,
    /// The master slaves find through `lobster:master` and `lobster:master-fingerprint`.
    pub master: MasterTags,
}

/// Where the fleet's master is now, as the instances' tags say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterTags {
    /// gRPC URL.
    pub url: String,
    /// Certificate fingerprint (empty without TLS).
    pub fingerprint: String,
}

impl MasterTags {
    pub fn tags(&self) -> Tags {
        Tags::from([
            (tags::MASTER.to_string(), self.url.clone()),
            (
                tags::MASTER_FINGERPRINT.to_string(),
                self.fingerprint.clone(),
            ),
        ])
    }
}

/// Tags every instance of the fleet that is up with where the master is now, where its tags
/// say otherwise; returns how many were retagged.
pub async fn point_at_master(
    cloud: &dyn Cloud,
    fleet: &str,
    master: &MasterTags,
) -> Result<usize, FleetError> {
    let want = master.tags();
    let stale: Vec<String> = observe(cloud, fleet)
        .await?
        .into_iter()
        .filter(|i| i.state.is_up() && want.iter().any(|(k, v)| i.tags.get(k) != Some(v)))
        .map(|i| i.id)
        .collect();
    for chunk in stale.chunks(500) {
        retry("tagging instances with the master", || {
            cloud.tag(chunk, &want)
        })
        .await?;
    }
    Ok(stale.len())
}

/// What a converge pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub started: Vec<String>,
    pub launched: Vec<String>,
    pub stopped: Vec<String>,
    /// Instances stopped because they were past `lobster:expires-at`.
    pub expired: Vec<String>,
    /// Set when capacity ran out.
    pub partial: Option<String>,
    pub passes: u32,
}

/// Observes the fleet (instances carrying its tags, not terminated).
pub async fn observe(cloud: &dyn Cloud, fleet: &str) -> Result<Vec<Instance>, FleetError> {
    let sel = fleet_selector(fleet);
    retry("listing the fleet's instances", || cloud.instances(&sel)).await
}

/// The plan for the fleet as it is now.
pub async fn current_plan(
    cloud: &dyn Cloud,
    desired: &Desired,
) -> Result<(Plan, Vec<Instance>), FleetError> {
    let observed = observe(cloud, &desired.fleet).await?;
    Ok((plan(desired, &observed, crate::clock::unix_ms()), observed))
}

/// Reconciles until the plan is empty, capacity runs out, `deadline`, or `shutdown` (checked
/// between passes, so a pass is never left half done). Each pass runs in a `reconcile` span.
pub async fn converge(
    cloud: &dyn Cloud,
    s: &FleetSettings,
    desired: &Desired,
    t: &LaunchTemplate,
    deadline: Instant,
    shutdown: &CancellationToken,
    mut on_pass: impl FnMut(&[Instance]),
) -> Result<Outcome, FleetError> {
    let mut r = Reconciler::default();
    loop {
        if shutdown.is_cancelled() {
            return Err(FleetError::Interrupted);
        }
        let span =
            tracing::info_span!("reconcile", fleet = %desired.fleet, pass = r.out.passes + 1);
        let (p, observed) = current_plan(cloud, desired)
            .instrument(span.clone())
            .await?;
        on_pass(&observed);
        r.out.passes += 1;
        if p.is_empty() || r.out.partial.is_some() {
            return Ok(r.out);
        }
        if Instant::now() > deadline {
            return Err(FleetError::Timeout(format!(
                "the fleet did not converge in time; last plan:\n{}",
                p.describe()
            )));
        }
        r.act(cloud, s, desired, t, &p).instrument(span).await?;
        if !p.wait.is_empty() || !p.launch.is_empty() || !p.start.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = shutdown.cancelled() => return Err(FleetError::Interrupted),
            }
        }
    }
}

/// What the passes of one converge share: what was done, and how far capacity errors moved
/// along the fallback instance types and subnets.
#[derive(Default)]
struct Reconciler {
    out: Outcome,
    type_index: usize,
    subnet_index: usize,
}

impl Reconciler {
    /// Carries out one pass's plan.
    async fn act(
        &mut self,
        cloud: &dyn Cloud,
        s: &FleetSettings,
        desired: &Desired,
        t: &LaunchTemplate,
        p: &Plan,
    ) -> Result<(), FleetError> {
        info!(plan = %p.describe().replace('\n', "; "), "reconcile pass");
        if !p.expired.is_empty() {
            warn!(instances = %p.expired.join(" "), "stopping instances past lobster:expires-at");
            let reason = Tags::from([(tags::STOP_REASON.to_string(), "expired".to_string())]);
            retry("tagging expired instances", || {
                cloud.tag(&p.expired, &reason)
            })
            .await?;
            retry("stopping expired instances", || {
                cloud.stop(&p.expired, false)
            })
            .await?;
            self.out.expired.extend(p.expired.iter().cloned());
        }
        if !p.stop.is_empty() {
            retry("stopping surplus instances", || cloud.stop(&p.stop, false)).await?;
            self.out.stopped.extend(p.stop.iter().cloned());
        }
        if !p.start.is_empty() {
            // Started instances boot with today's settings: current user-data (master, token)
            // and a fresh expiry.
            for id in &p.start {
                retry("refreshing user-data", || {
                    cloud.set_user_data(id, &t.user_data)
                })
                .await?;
            }
            let mut expiry = Tags::from([(tags::EXPIRES_AT.to_string(), t.expires_at.clone())]);
            expiry.extend(t.master.tags());
            retry("refreshing lobster:expires-at", || {
                cloud.tag(&p.start, &expiry)
            })
            .await?;
            let stale = vec![tags::STOP_REASON.to_string()];
            retry("clearing lobster:stop-reason", || {
                cloud.untag(&p.start, &stale)
            })
            .await?;
            match retry("starting stopped instances", || cloud.start(&p.start)).await {
                Ok(_) => self.out.started.extend(p.start.iter().cloned()),
                Err(FleetError::Cloud {
                    source: e @ CloudError::Capacity { .. },
                    ..
                }) => {
                    self.out.partial = Some(format!("cannot start stopped instances: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        for batch in &p.launch {
            if self.out.partial.is_some() {
                break;
            }
            loop {
                let spec = LaunchSpec {
                    image_id: t.image_id.clone(),
                    instance_type: s.instance_types[self.type_index].clone(),
                    count: batch.count,
                    client_token: if self.type_index + self.subnet_index == 0 {
                        batch.client_token.clone()
                    } else {
                        format!(
                            "{}-{}-{}",
                            &batch.client_token[..50.min(batch.client_token.len())],
                            self.type_index,
                            self.subnet_index
                        )
                    },
                    user_data: t.user_data.clone(),
                    tags: {
                        let mut tags = launch_tags(&desired.fleet, &t.expires_at);
                        tags.extend(t.master.tags());
                        tags
                    },
                    subnet_id: s.subnet_ids.get(self.subnet_index).cloned(),
                    security_group_ids: s.security_group_ids.clone(),
                    iam_instance_profile: s.iam_instance_profile.clone(),
                    key_name: s.key_name.clone(),
                };
                match retry("launching instances", || cloud.launch(&spec)).await {
                    Ok(list)
                        if !list.is_empty()
                            && list.iter().all(|i| i.state == InstanceState::Terminated) =>
                    {
                        // A token from an earlier, since terminated launch: launch anew.
                        let mut fresh = spec.clone();
                        fresh.client_token = format!(
                            "{}-{}",
                            &spec.client_token[..40.min(spec.client_token.len())],
                            crate::clock::unix_ms()
                        );
                        let list = retry("launching instances", || cloud.launch(&fresh)).await?;
                        self.out.launched.extend(list.into_iter().map(|i| i.id));
                        break;
                    }
                    Ok(list) => {
                        if (list.len() as u32) < batch.count {
                            warn!(
                                asked = batch.count,
                                got = list.len(),
                                "launched fewer instances than asked"
                            );
                        }
                        self.out.launched.extend(list.into_iter().map(|i| i.id));
                        break;
                    }
                    Err(FleetError::Cloud {
                        source: e @ CloudError::Capacity { .. },
                        ..
                    }) => {
                        if self.subnet_index + 1 < s.subnet_ids.len() {
                            self.subnet_index += 1;
                            warn!(error = %e, subnet = %s.subnet_ids[self.subnet_index], "no capacity: trying the next subnet");
                        } else if self.type_index + 1 < s.instance_types.len() {
                            self.type_index += 1;
                            self.subnet_index = 0;
                            warn!(error = %e, instance_type = %s.instance_types[self.type_index], "no capacity: trying the next instance type");
                        } else {
                            self.out.partial = Some(e.to_string());
                            break;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Stops (or terminates) every instance of the fleet; returns their ids.
pub async fn down(
    cloud: &dyn Cloud,
    fleet: &str,
    terminate: bool,
) -> Result<Vec<String>, FleetError> {
    let observed = observe(cloud, fleet).await?;
    let ids: Vec<String> = observed
        .iter()
        .filter(|i| {
            if terminate {
                i.state != InstanceState::ShuttingDown
            } else {
                i.state.is_up()
            }
        })
        .map(|i| i.id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    for chunk in ids.chunks(500) {
        if terminate {
            retry("terminating instances", || cloud.terminate(chunk)).await?;
        } else {
            retry("stopping instances", || cloud.stop(chunk, false)).await?;
        }
    }
    Ok(ids)
}

/// Waits until none of the fleet's instances is in a transition (`pending`, `stopping`,
/// `shutting-down`), or `deadline`.
pub async fn settle(
    cloud: &dyn Cloud,
    fleet: &str,
    deadline: Instant,
    mut on_pass: impl FnMut(&[Instance]),
) -> Result<Vec<Instance>, FleetError> {
    loop {
        let observed = observe(cloud, fleet).await?;
        on_pass(&observed);
        let moving = observed
            .iter()
            .filter(|i| {
                matches!(
                    i.state,
                    InstanceState::Pending | InstanceState::Stopping | InstanceState::ShuttingDown
                )
            })
            .count();
        if moving == 0 {
            return Ok(observed);
        }
        if Instant::now() > deadline {
            return Err(FleetError::Timeout(format!(
                "{moving} instance(s) still changing state"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
