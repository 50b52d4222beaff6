//! `lobster master`: the control plane in the foreground.

use super::ExitStatus;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Failure, parse_duration};
use crate::home::Home;
use crate::server::{Master, MasterConfig, StartError};

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// gRPC address slaves dial (use 0.0.0.0:7401 to accept remote slaves).
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub grpc_listen: SocketAddr,
    /// HTTP API address (loopback unless an API token is set).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub api_listen: SocketAddr,
    /// gRPC URL given to slaves, if not the listen address (e.g. a private IP).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Heartbeat interval asked of slaves.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// A slave silent this long is declared lost and its share redistributed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Most slaves accepted at once (1 to 100000).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u64, 100_000, ""))]
    pub max_slaves: u64,
    /// Token the API requires (`Authorization: Bearer …`); mandatory off loopback.
    #[arg(long, env = "LOBSTER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Serve gRPC without TLS. For local debugging only: join tokens cross the network in clear.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

impl MasterArgs {
    /// Checks the flags and builds the config (no I/O).
    pub fn resolve(self, home: &Home) -> Result<MasterConfig, Failure> {
        if self.heartbeat < Duration::from_millis(100) || self.heartbeat > Duration::from_secs(60) {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "--heartbeat must be between 100ms and 60s"
            )));
        }
        if self.lease < self.heartbeat * 2 {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "--lease must be at least twice --heartbeat"
            )));
        }
        if let Some(a) = &self.advertise
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "--advertise must be an http(s) URL, got `{a}`"
            )));
        }
        Ok(MasterConfig {
            state_dir: home.master(),
            grpc_listen: self.grpc_listen,
            api_listen: self.api_listen,
            advertise: self.advertise,
            heartbeat: self.heartbeat,
            lease: self.lease,
            max_slaves: self.max_slaves as usize,
            api_token: self.api_token.filter(|t| !t.is_empty()),
            insecure_plaintext: self.insecure_plaintext,
            ephemeral: false,
        })
    }
}

/// Maps a start failure to its exit code.
pub fn start_failure(e: StartError) -> Failure {
    match e {
        StartError::ApiWithoutToken(_) => Failure::bad_input(e),
        _ => Failure::trouble(e),
    }
}

pub async fn master(
    args: MasterArgs,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    let config = args.resolve(home)?;
    let master = Master::bind(config).await.map_err(start_failure)?;
    let info = master.info().clone();
    println!(
        "lobster master {}: api {} grpc {} fingerprint {}",
        info.version,
        info.api,
        info.grpc,
        if info.fingerprint.is_empty() {
            "none (plaintext)"
        } else {
            &info.fingerprint
        }
    );
    master.run(shutdown).await.map_err(Failure::trouble)?;
    Ok(ExitStatus::Success)
}
