//! `lobster fleet up|down|status`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lobster_fleet::userdata::{self, SlaveSettings};
use lobster_provision::cloud::{Instance, InstanceState};
use tokio_util::sync::CancellationToken;

use super::{Failure, parse_duration};
use crate::client::ApiClient;
use crate::control::SlaveView;
use crate::daemon::{self, MasterListen};
use crate::fleet::apply::{self, FleetError, LaunchTemplate};
use crate::fleet::config::{self, CloudKind, FleetSettings, Overrides};
use crate::fleet::plan::Desired;
use crate::fleet::{Connected, connect, image, status};
use crate::home::Home;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Bring the fleet to N instances: restart stopped ones first, launch the rest, wait for slaves.
    Up(UpArgs),
    /// Stop the fleet's instances (or terminate them).
    Down(DownArgs),
    /// Show each instance with its registered slaves.
    Status(StatusArgs),
}

/// Flags every fleet command takes.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// The cloud: local (default) or aws.
    #[arg(long, value_enum)]
    pub cloud: Option<CloudKind>,
    /// EC2 API endpoint (moto, a local cloud elsewhere).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Fleet name (tag lobster:fleet).
    #[arg(long)]
    pub fleet: Option<String>,
    /// Config file (default: LOBSTER_HOME/config.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many instances the fleet should have.
    #[arg(long)]
    pub count: i64,
    #[arg(long)]
    pub instance_type: Option<String>,
    /// Tag that finds the template image, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE")]
    pub template_tag: Option<String>,
    /// Minutes without slave activity before a VM stops itself (fractions allowed).
    #[arg(long)]
    pub idle_minutes: Option<f64>,
    #[arg(long)]
    pub slaves_per_core: Option<u32>,
    /// Longest life of one boot of a VM (its lobster:expires-at), e.g. 8h.
    #[arg(long, value_parser = parse_duration)]
    pub max_lifetime: Option<Duration>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Return once instances are launched or started, without waiting for slaves.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this long (default: register_timeout of the config, 5m).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub common: Common,
    /// Terminate instead of stop.
    #[arg(long)]
    pub terminate: bool,
    /// Return without waiting for the instances to stop.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Most instances one fleet may ask for.
const MAX_COUNT: i64 = 10_000;

fn settings(home: &Home, c: &Common, o: Overrides) -> Result<FleetSettings, Failure> {
    let (path, explicit) = config::path(home, c.config.clone());
    let file = config::read(&path, explicit).map_err(|e| Failure::bad_input(anyhow!(e)))?;
    let o = Overrides {
        cloud: c.cloud,
        endpoint_url: c.endpoint_url.clone(),
        region: c.region.clone(),
        fleet: c.fleet.clone(),
        ..o
    };
    config::resolve(file, o).map_err(|e| Failure::bad_input(anyhow!(e)))
}

fn fleet_failure(e: FleetError) -> Failure {
    match e {
        FleetError::Partial { .. } => Failure {
            code: 1,
            error: e.into(),
        },
        _ => Failure::trouble(e),
    }
}

async fn connected(s: &FleetSettings, home: &Home) -> Result<Connected, Failure> {
    connect(s, home).await.map_err(Failure::trouble)
}

pub async fn fleet(
    cmd: FleetCommand,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<u8, Failure> {
    match cmd {
        FleetCommand::Up(a) => up(a, home, shutdown).await,
        FleetCommand::Down(a) => down(a, home).await,
        FleetCommand::Status(a) => status_cmd(a, home).await,
    }
}

/// The slaves the master of this home sees (empty if no master runs).
async fn master_slaves(home: &Home) -> Vec<SlaveView> {
    match daemon::running_master(home).await {
        Some(info) => ApiClient::new(&info.api, std::env::var("LOBSTER_API_TOKEN").ok())
            .slaves()
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

struct Bars {
    up: ProgressBar,
    running: ProgressBar,
    slaves: ProgressBar,
    _multi: MultiProgress,
}

impl Bars {
    fn new(count: u64, expected_slaves: Option<u64>) -> Self {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> ");
        let bar = |name: &str, len: u64| {
            let b = multi.add(ProgressBar::new(len));
            b.set_style(style.clone());
            b.set_prefix(name.to_string());
            b
        };
        Bars {
            up: bar("launched/started", count),
            running: bar("running", count),
            slaves: bar("slaves registered", expected_slaves.unwrap_or(count)),
            _multi: multi,
        }
    }

    fn show(&self, instances: &[Instance], slaves: Option<u64>) {
        let up = instances.iter().filter(|i| i.state.is_up()).count() as u64;
        let running = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count() as u64;
        self.up.set_position(up);
        self.running.set_position(running);
        if let Some(s) = slaves {
            self.slaves.set_position(s);
        }
    }

    fn finish(&self) {
        self.up.finish();
        self.running.finish();
        self.slaves.finish();
    }
}

async fn up(a: UpArgs, home: &Home, shutdown: CancellationToken) -> Result<u8, Failure> {
    if a.count < 1 {
        return Err(Failure::bad_input(anyhow!(
            "--count must be at least 1 (to stop the fleet: lobster fleet down)"
        )));
    }
    if a.count > MAX_COUNT {
        return Err(Failure::bad_input(anyhow!(
            "--count {} is more than the {MAX_COUNT} instances one fleet may have",
            a.count
        )));
    }
    let count = a.count as u32;
    let s = settings(
        home,
        &a.common,
        Overrides {
            instance_type: a.instance_type.clone(),
            template_tag: a.template_tag.clone(),
            idle_minutes: a.idle_minutes,
            slaves_per_core: a.slaves_per_core,
            max_lifetime: a.max_lifetime,
            ..Default::default()
        },
    )?;
    let started = Instant::now();
    let timeout = a.timeout.unwrap_or(s.register_timeout);
    let c = connected(&s, home).await?;
    let cloud = c.cloud.as_ref();

    // The template image, found by tag (built on the spot for the local cloud).
    let image = match image::find_template(cloud, &s.template_tag)
        .await
        .map_err(fleet_failure)?
    {
        Ok(img) => img.id,
        Err(missing) if s.cloud == CloudKind::Local && a.template_tag.is_none() => {
            let bin =
                crate::local_slaves::slave_binary().map_err(|e| Failure::trouble(anyhow!(e)))?;
            eprintln!("no template image yet: building one for the local cloud");
            let id = image::build_local(
                cloud,
                &daemon::cloud_dir(home).join("images"),
                &bin,
                &s.template_tag,
            )
            .await
            .map_err(Failure::trouble)?;
            let _ = missing;
            id
        }
        Err(missing) => return Err(Failure::bad_input(missing)),
    };
    let desired = Desired {
        fleet: s.fleet.clone(),
        count,
        batch_size: s.batch_size,
    };
    if a.dry_run {
        let (p, observed) = apply::current_plan(cloud, &desired)
            .await
            .map_err(fleet_failure)?;
        println!(
            "fleet {} on {}: {} instance(s) observed, template image {image}",
            s.fleet,
            c.endpoint,
            observed.len()
        );
        println!("{}", p.describe());
        return Ok(0);
    }

    // The master the slaves will join.
    let listen = match s.cloud {
        CloudKind::Local => MasterListen {
            grpc: std::env::var("LOBSTER_MASTER_GRPC_LISTEN")
                .unwrap_or_else(|_| "127.0.0.1:0".into()),
            api: "127.0.0.1:0".into(),
            advertise: None,
        },
        CloudKind::Aws => MasterListen {
            grpc: std::env::var("LOBSTER_MASTER_GRPC_LISTEN")
                .unwrap_or_else(|_| "0.0.0.0:7401".into()),
            api: "127.0.0.1:0".into(),
            advertise: s.master_url.clone(),
        },
    };
    if s.cloud == CloudKind::Aws && s.master_url.is_none() {
        eprintln!(
            "warning: no master_url in the config: slaves on EC2 will be told to dial the master's local address"
        );
    }
    let master = daemon::ensure_master(home, &listen)
        .await
        .map_err(Failure::trouble)?;
    let token = crate::tokens::fleet_token(&home.master(), &s.fleet)
        .context("cannot read the fleet's join token")
        .map_err(Failure::trouble)?;
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
    let template = LaunchTemplate {
        image_id: image.clone(),
        user_data,
        expires_at,
    };
    let expected_per =
        crate::fleet::vcpus(&s.instance_types[0]).map(|v| u64::from(v * s.slaves_per_core));
    let bars = Bars::new(u64::from(count), expected_per.map(|e| e * u64::from(count)));
    let deadline = Instant::now() + timeout;
    let outcome = apply::converge(cloud, &s, &desired, &template, deadline, |obs| {
        bars.show(obs, None)
    })
    .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            bars.finish();
            return Err(if e.is_auth() {
                Failure::trouble(e)
            } else {
                fleet_failure(e)
            });
        }
    };
    let api = ApiClient::new(&master.api, None);
    let mut instances;
    let mut registered = 0u64;
    let mut waited_out = false;
    if !a.no_wait {
        loop {
            instances = apply::observe(cloud, &s.fleet)
                .await
                .map_err(fleet_failure)?;
            let up: Vec<&Instance> = instances.iter().filter(|i| i.state.is_up()).collect();
            let slaves = api.slaves().await.unwrap_or_default();
            registered = slaves
                .iter()
                .filter(|sl| sl.connected && up.iter().any(|i| i.id == sl.instance_id))
                .count() as u64;
            bars.show(&instances, Some(registered));
            let all_running = up.iter().all(|i| i.state == InstanceState::Running);
            let enough = match expected_per {
                Some(e) => registered >= e * up.len() as u64,
                None => up.iter().all(|i| {
                    slaves
                        .iter()
                        .any(|sl| sl.connected && sl.instance_id == i.id)
                }),
            };
            if all_running && enough && !up.is_empty() {
                break;
            }
            if Instant::now() > deadline || shutdown.is_cancelled() {
                waited_out = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    } else {
        instances = apply::observe(cloud, &s.fleet)
            .await
            .map_err(fleet_failure)?;
        bars.show(&instances, None);
    }
    bars.finish();
    let up = instances.iter().filter(|i| i.state.is_up()).count();
    println!(
        "fleet {}: {up} instance(s) up ({} started, {} launched, {} stopped), {registered} slave(s) registered in {:.1} s (master {}, template {image})",
        s.fleet,
        outcome.started.len(),
        outcome.launched.len(),
        outcome.stopped.len(),
        started.elapsed().as_secs_f64(),
        master.api,
    );
    if let Some(reason) = outcome.partial {
        return Err(fleet_failure(FleetError::Partial {
            up,
            want: count as usize,
            reason,
        }));
    }
    if waited_out {
        return Err(Failure::trouble(anyhow!(
            "only {registered} slave(s) registered within {} s (see lobster fleet status and LOBSTER_HOME/logs)",
            timeout.as_secs()
        )));
    }
    Ok(0)
}

async fn down(a: DownArgs, home: &Home) -> Result<u8, Failure> {
    let s = settings(home, &a.common, Overrides::default())?;
    if s.cloud == CloudKind::Local
        && s.endpoint_url.is_none()
        && daemon::running_cloud(home).await.is_none()
    {
        println!(
            "fleet {}: no local cloud is running, nothing to stop",
            s.fleet
        );
        return Ok(0);
    }
    let c = connected(&s, home).await?;
    let ids = apply::down(c.cloud.as_ref(), &s.fleet, a.terminate)
        .await
        .map_err(fleet_failure)?;
    let verb = if a.terminate {
        "terminating"
    } else {
        "stopping"
    };
    if !a.no_wait && !ids.is_empty() {
        apply::settle(
            c.cloud.as_ref(),
            &s.fleet,
            Instant::now() + Duration::from_secs(300),
            |_| {},
        )
        .await
        .map_err(fleet_failure)?;
    }
    let left = apply::observe(c.cloud.as_ref(), &s.fleet)
        .await
        .map_err(fleet_failure)?;
    let running = left.iter().filter(|i| i.state.is_up()).count();
    println!(
        "fleet {}: {verb} {} instance(s); {running} running now",
        s.fleet,
        ids.len()
    );
    Ok(0)
}

async fn status_cmd(a: StatusArgs, home: &Home) -> Result<u8, Failure> {
    let s = settings(home, &a.common, Overrides::default())?;
    let instances = if s.cloud == CloudKind::Local
        && s.endpoint_url.is_none()
        && daemon::running_cloud(home).await.is_none()
    {
        Vec::new()
    } else {
        let c = connected(&s, home).await?;
        apply::observe(c.cloud.as_ref(), &s.fleet)
            .await
            .map_err(fleet_failure)?
    };
    let slaves = master_slaves(home).await;
    let endpoint = match s.cloud {
        CloudKind::Local => s
            .endpoint_url
            .clone()
            .or_else(|| daemon::discover_cloud(home).map(|i| i.endpoint))
            .unwrap_or_else(|| "the local cloud (not running)".into()),
        CloudKind::Aws => s.endpoint_url.clone().unwrap_or_else(|| "AWS".into()),
    };
    let st = status::join(&s.fleet, &endpoint, &instances, &slaves, s.slaves_per_core);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st).expect("json"));
    } else {
        print!("{}", status::render(&st));
    }
    Ok(0)
}
