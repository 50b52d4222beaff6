//! `lobster cloud local` (the local cloud in the foreground), `cloud start` (in the
//! background), `cloud endpoint` and `cloud env` (what the aws CLI or an SDK needs to call it).

use super::ExitStatus;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use lobster_provision::local::faults::Faults;
use lobster_provision::local::{LocalCloud, LocalCloudConfig, LocalCloudError, Runtime};
use tokio_util::sync::CancellationToken;

use super::{Failure, parse_duration};
use crate::daemon::{self, CloudInfo};
use crate::fleet::LOCAL_REGION;
use crate::home::{Home, write_private};

#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Run the local cloud (EC2 API on loopback, instances as local processes) in the foreground.
    Local(LocalArgs),
    /// Start this home's local cloud in the background (if it is not running) and print its
    /// endpoint.
    Start,
    /// Print the URL of the local cloud in use (for `aws --endpoint-url "$(lobster cloud endpoint)"`).
    Endpoint,
    /// Print the shell exports the aws CLI and the SDKs need to call the local cloud: endpoint,
    /// region and the (unchecked) credentials. Use: `eval "$(lobster cloud env)"`.
    Env,
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Address of the EC2 API (port 0 picks a free port; see `lobster cloud endpoint`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The region name the local cloud reports (SDKs and the aws CLI send it back).
    #[arg(long, default_value = LOCAL_REGION)]
    pub region: String,
    /// Accept only this access key id (default: any).
    #[arg(long)]
    pub access_key_id: Option<String>,
    /// Fault injection: share (0-1) of API requests throttled.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::number(0.0, 1.0, false))]
    pub throttle: f64,
    /// Fault injection: share (0-1) of launches and starts refused for capacity.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::number(0.0, 1.0, false))]
    pub capacity_errors: f64,
    /// Fault injection: most instances up at once (0 to 100000).
    #[arg(long, allow_negative_numbers = true, value_parser = lobster_fleet::flags::whole(0u32, 100_000, ""))]
    pub capacity_limit: Option<u32>,
    /// How long terminated instances stay visible in DescribeInstances (EC2: about an hour).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub terminated_retention: Duration,
    /// Fault injection: time from pending to running.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub boot_delay: Duration,
    /// How instances run: `emulated` (the image's units as local processes under an emulated
    /// init) or `nspawn` (the image's root file system booted under a real systemd with
    /// systemd-nspawn; needs root, and images built with `image build --local --rootfs`).
    #[arg(long, value_enum, default_value_t = RuntimeArg::Emulated)]
    pub runtime: RuntimeArg,
}

/// `--runtime` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    Emulated,
    Nspawn,
}

fn no_cloud(home: &Home) -> Failure {
    Failure::trouble(anyhow!(
        "no local cloud is running for {} (start one: lobster cloud start, or lobster fleet up)",
        home.root.display()
    ))
}

pub async fn cloud(
    cmd: CloudCommand,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    match cmd {
        CloudCommand::Start => {
            let info = daemon::ensure_cloud(home).await.map_err(Failure::trouble)?;
            println!("{}", info.endpoint);
            Ok(ExitStatus::Success)
        }
        CloudCommand::Env => match daemon::running_cloud(home).await {
            Some(info) => {
                let (key, secret) = crate::fleet::LOCAL_CREDENTIALS;
                println!(
                    "export AWS_ENDPOINT_URL={endpoint}\nexport AWS_ENDPOINT_URL_EC2={endpoint}\nexport AWS_REGION={region}\nexport AWS_DEFAULT_REGION={region}\nexport AWS_ACCESS_KEY_ID={key}\nexport AWS_SECRET_ACCESS_KEY={secret}",
                    endpoint = info.endpoint,
                    region = info.region,
                );
                Ok(ExitStatus::Success)
            }
            None => Err(no_cloud(home)),
        },
        CloudCommand::Endpoint => match daemon::running_cloud(home).await {
            Some(info) => {
                println!("{}", info.endpoint);
                Ok(ExitStatus::Success)
            }
            None => Err(no_cloud(home)),
        },
        CloudCommand::Local(a) => {
            let faults = Faults {
                throttle: a.throttle,
                capacity_errors: a.capacity_errors,
                capacity_limit: a.capacity_limit,
                boot_delay_ms: a.boot_delay.as_millis() as u64,
                ..Faults::default()
            };
            faults
                .check()
                .map_err(|e| Failure::bad_input(anyhow!("{e}")))?;
            if a.region.is_empty() || a.region.len() > 64 {
                return Err(Failure::bad_input(anyhow!(
                    "--region must be 1-64 characters"
                )));
            }
            let dir = daemon::cloud_dir(home);
            let cloud = LocalCloud::bind(LocalCloudConfig {
                dir: dir.clone(),
                listen: a.listen,
                region: a.region.clone(),
                access_key: a.access_key_id,
                faults,
                terminated_retention: a.terminated_retention,
                runtime: match a.runtime {
                    RuntimeArg::Emulated => Runtime::Emulated,
                    RuntimeArg::Nspawn => Runtime::Nspawn,
                },
            })
            .await
            .map_err(|e| match e {
                LocalCloudError::Faults(_) => Failure::bad_input(e),
                _ => Failure::trouble(e),
            })?;
            let info = CloudInfo {
                pid: std::process::id(),
                endpoint: cloud.endpoint(),
                region: a.region,
            };
            let discovery = home.cloud_discovery();
            write_private(
                &discovery,
                &serde_json::to_string_pretty(&info).expect("json"),
            )
            .map_err(Failure::trouble)?;
            println!(
                "lobster local cloud: endpoint {} region {}",
                info.endpoint, info.region
            );
            cloud.run(shutdown).await;
            let _ = std::fs::remove_file(&discovery);
            Ok(ExitStatus::Success)
        }
    }
}
