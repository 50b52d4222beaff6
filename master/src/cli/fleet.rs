//! `lobster fleet up|down|status`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::{ExitStatus, Failure, parse_duration};

mod bars;

use crate::client::ApiClient;
use crate::control::SlaveView;
use crate::daemon::{self, MasterListen};
use crate::fleet::apply::{self, FleetError};
use crate::fleet::config::{self, CloudKind, FleetSettings, Overrides};
use crate::fleet::up::{MAX_COUNT, UpError, UpReport, UpRequest};
use crate::fleet::{Connected, connect, status};
use crate::home::Home;
pub(crate) use bars::Bars;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Bring the fleet to N instances: restart stopped ones first, launch the rest, wait for slaves.
    #[command(after_help = "\
Examples:
  lobster fleet up --count 20                        # the local cloud (started if needed)
  lobster fleet up --count 5 --instance-type local.medium --idle-minutes 10
  lobster fleet up --count 50 --cloud aws --region eu-west-1 --dry-run
  lobster fleet up --count 3 --no-wait && lobster fleet status

Exit codes: 0 up, 1 a partial fleet (capacity), 2 bad input, 3 the cloud or the master
failed (unreachable, credentials) or the slaves did not register in time.")]
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
    /// Cloud region (default: AWS_REGION or the profile's for AWS; `local` for the local cloud).
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
    /// How many instances the fleet should have (1 to 10000).
    #[arg(long, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, MAX_COUNT, "to stop the fleet: lobster fleet down"))]
    pub count: u32,
    /// Instance type of new instances (default: local.small on the local cloud, c6i.large on
    /// AWS; `fallback_instance_types` in config.yaml are tried when capacity runs out).
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
    /// Tag that finds the template image, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE")]
    pub template_tag: Option<String>,
    /// Minutes without slave activity before a VM stops itself (fractions allowed; above 0, at
    /// most a week).
    #[arg(long, allow_negative_numbers = true, value_parser = lobster_fleet::flags::number(0.0, 10_080.0, true))]
    pub idle_minutes: Option<f64>,
    /// Slave processes per vCPU of each VM (1 to 64; default 1).
    #[arg(long, allow_negative_numbers = true, value_parser = lobster_fleet::flags::whole(1u32, 64, ""))]
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
    /// Address a master started for the fleet listens on for slaves (default: 127.0.0.1:0 for
    /// the local cloud, 0.0.0.0:7401 for AWS).
    #[arg(long, env = "LOBSTER_MASTER_GRPC_LISTEN", value_name = "ADDR")]
    pub master_listen: Option<String>,
    /// API token of the master of this home, if it has one.
    #[arg(long, env = "LOBSTER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
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

/// The fleet's settings: `config.yaml` (or `--config`), then the flags.
pub(crate) fn settings(home: &Home, c: &Common, o: Overrides) -> Result<FleetSettings, Failure> {
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
            code: ExitStatus::Failed,
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
) -> Result<ExitStatus, Failure> {
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

/// Flags → one resolved request, before any I/O.
fn resolve_up(a: UpArgs, home: &Home) -> Result<UpRequest, Failure> {
    let settings = settings(
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
    let listen = match settings.cloud {
        CloudKind::Local => MasterListen {
            grpc: a.master_listen.unwrap_or_else(|| "127.0.0.1:0".into()),
            api: "127.0.0.1:0".into(),
            advertise: None,
        },
        CloudKind::Aws => MasterListen {
            grpc: a.master_listen.unwrap_or_else(|| "0.0.0.0:7401".into()),
            api: "127.0.0.1:0".into(),
            advertise: settings.master_url.clone(),
        },
    };
    Ok(UpRequest {
        timeout: a.timeout.unwrap_or(settings.register_timeout),
        count: a.count,
        explicit_template: a.template_tag.is_some(),
        dry_run: a.dry_run,
        wait: !a.no_wait,
        listen,
        api_token: a.api_token,
        settings,
    })
}

/// Maps a `fleet up` failure to its exit code.
pub(crate) fn up_failure(e: UpError) -> Failure {
    match e {
        UpError::NoTemplate(_) => Failure::bad_input(e),
        UpError::Fleet(f) if !f.is_auth() => fleet_failure(f),
        e => Failure::trouble(e),
    }
}

pub(crate) async fn up(
    a: UpArgs,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    let req = resolve_up(a, home)?;
    if req.settings.cloud == CloudKind::Aws && req.settings.master_url.is_none() && !req.dry_run {
        eprintln!(
            "warning: no master_url in the config: slaves on EC2 will be told to dial the master's local address"
        );
    }
    let bars = Bars::new(u64::from(req.count), None);
    let report = crate::fleet::up::up(&req, home, &bars, &shutdown).await;
    bars.finish();
    match report.map_err(up_failure)? {
        UpReport::Planned {
            observed,
            image,
            plan,
            endpoint,
        } => {
            println!(
                "fleet {} on {endpoint}: {observed} instance(s) observed, template image {image}\n{plan}",
                req.settings.fleet
            );
        }
        UpReport::Up {
            outcome,
            up,
            registered,
            elapsed,
            master_api,
            image,
        } => {
            if !outcome.expired.is_empty() {
                println!(
                    "stopped {} instance(s) past their lobster:expires-at: {}",
                    outcome.expired.len(),
                    outcome.expired.join(" ")
                );
            }
            println!(
                "fleet {}: {up} instance(s) up ({} started, {} launched, {} stopped), {registered} slave(s) registered in {:.1} s (master {master_api}, template {image})",
                req.settings.fleet,
                outcome.started.len(),
                outcome.launched.len(),
                outcome.stopped.len(),
                elapsed.as_secs_f64(),
            )
        }
    }
    Ok(ExitStatus::Success)
}

async fn down(a: DownArgs, home: &Home) -> Result<ExitStatus, Failure> {
    let s = settings(home, &a.common, Overrides::default())?;
    if s.cloud == CloudKind::Local
        && s.endpoint_url.is_none()
        && daemon::running_cloud(home).await.is_none()
    {
        println!(
            "fleet {}: no local cloud is running, nothing to stop",
            s.fleet
        );
        return Ok(ExitStatus::Success);
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
    Ok(ExitStatus::Success)
}

async fn status_cmd(a: StatusArgs, home: &Home) -> Result<ExitStatus, Failure> {
    let s = settings(home, &a.common, Overrides::default())?;
    let (instances, vcpus) = if s.cloud == CloudKind::Local
        && s.endpoint_url.is_none()
        && daemon::running_cloud(home).await.is_none()
    {
        (Vec::new(), Default::default())
    } else {
        let c = connected(&s, home).await?;
        let instances = apply::observe(c.cloud.as_ref(), &s.fleet)
            .await
            .map_err(fleet_failure)?;
        let vcpus = status::type_vcpus(c.cloud.as_ref(), &instances).await;
        (instances, vcpus)
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
    let st = status::join(
        &s.fleet,
        &endpoint,
        &instances,
        &slaves,
        s.slaves_per_core,
        &vcpus,
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st).expect("json"));
    } else {
        print!("{}", status::render(&st));
    }
    Ok(ExitStatus::Success)
}
