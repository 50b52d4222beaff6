//! Command-line flags of `lobster-slave`, resolved into an [`AgentConfig`] before any I/O.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::agent::{AgentConfig, Identity};
use crate::bench::BenchArgs;

/// The Lobster slave: joins a master and generates the load it is given.
#[derive(Debug, Parser)]
#[command(name = "lobster-slave", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Worker threads of this slave's runtime (one slave per core is the usual layout; 1 to
    /// 1024).
    #[arg(long, env = "LOBSTER_THREADS", default_value_t = 1, global = true,
          allow_negative_numbers = true, value_parser = lobster_fleet::flags::whole(1u64, 1024, ""))]
    pub threads: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load engine alone against a URL (no master), for benchmarks.
    Bench(BenchArgs),
    /// Many simulated slaves in one process (real wire contract, no HTTP load), for measuring
    /// the master's control plane; prints one JSON line of measurements at SIGINT/SIGTERM.
    Simulate(crate::simulate::SimulateArgs),
    /// The VM's boot step: read IMDS and user-data, write /run/lobster/slave.env, start slaves.
    Boot,
    /// The VM's idle watcher: stop this instance once its slaves have been idle.
    IdleWatch,
    /// The VM's lifetime backstop: power this instance off at its lobster:expires-at.
    Lifetime,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The master's gRPC URL, e.g. http://10.0.0.5:7401.
    #[arg(long, env = "LOBSTER_MASTER")]
    pub master: Option<String>,
    /// The fleet's join token (prefer the environment variable: arguments are visible to `ps`).
    #[arg(long, env = "LOBSTER_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// SHA-256 fingerprint of the master's certificate (`sha256:…`), pinned for https masters.
    #[arg(long, env = "LOBSTER_MASTER_FINGERPRINT")]
    pub master_fingerprint: Option<String>,
    /// Instance id (from IMDS on a cloud VM); defaults to `local-<host>`.
    #[arg(long, env = "LOBSTER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Instance type of this VM (from IMDS; shown by `fleet status`).
    #[arg(long, env = "LOBSTER_INSTANCE_TYPE", default_value = "local")]
    pub instance_type: String,
    /// Region of this VM (from IMDS; used to call the cloud API).
    #[arg(long, env = "LOBSTER_REGION", default_value = "local")]
    pub region: String,
    /// When this VM stops whatever it does (its `lobster:expires-at`, RFC 3339; written by the
    /// boot step), told to the master for its fleet view.
    #[arg(long, env = "LOBSTER_EXPIRES_AT", default_value = "")]
    pub expires_at: String,
    /// 1-based index of this slave on its host (1 to 4096).
    #[arg(long, env = "LOBSTER_SLAVE_INDEX", default_value_t = 1, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 4096, ""))]
    pub slave_index: u32,
    /// How many slaves share this host (1 to 4096).
    #[arg(long, env = "LOBSTER_SLAVES_ON_HOST", default_value_t = 1, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 4096, ""))]
    pub slaves_on_host: u32,
    /// Cores of the host (default: what the OS reports; 1 to 4096).
    #[arg(long, env = "LOBSTER_CORES", allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 4096, ""))]
    pub cores: Option<u32>,
    /// How to find a master that moved: `imds-tags` (on a VM: the instance's `lobster:master`
    /// and `lobster:master-fingerprint` tags through IMDS, which the master keeps current) or
    /// `none`.
    #[arg(
        long,
        env = "LOBSTER_MASTER_DISCOVERY",
        value_enum,
        default_value = "none"
    )]
    pub master_discovery: MasterDiscovery,
    /// Boot id of the host (default: the kernel's).
    #[arg(long, env = "LOBSTER_BOOT_ID")]
    pub boot_id: Option<String>,
    /// Where this slave keeps the traces of runs that ask for one (`trace:`), the last 10
    /// runs' (default: `lobster-traces/<slave uid>` under the system's temporary directory).
    #[arg(long, env = "LOBSTER_TRACE_DIR")]
    pub trace_dir: Option<std::path::PathBuf>,
}

/// How a slave finds a master that moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MasterDiscovery {
    /// Keep dialling the master it was given.
    None,
    /// Read the instance's tags through IMDS (`/latest/meta-data/tags/instance/`).
    ImdsTags,
}

/// Flags that cannot make a working agent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No master address.
    #[error("no master: pass --master URL or set LOBSTER_MASTER")]
    NoMaster,
    /// The master address is not an http(s) URL.
    #[error("invalid master URL `{0}`: expected e.g. http://127.0.0.1:7401")]
    BadMaster(String),
    /// No join token.
    #[error("no join token: set LOBSTER_JOIN_TOKEN (or pass --join-token)")]
    NoToken,
    /// A count out of range.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// An https master without a well-formed fingerprint.
    #[error(
        "an https master needs its certificate fingerprint: LOBSTER_MASTER_FINGERPRINT=sha256:<64 hex digits>"
    )]
    Fingerprint,
}

impl AgentArgs {
    /// Resolves the flags (reads the host name and boot id, nothing else).
    pub fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let master = self.master.ok_or(ConfigError::NoMaster)?;
        if !(master.starts_with("http://") || master.starts_with("https://")) || master.len() < 10 {
            return Err(ConfigError::BadMaster(master));
        }
        let join_token = self
            .join_token
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::NoToken)?;
        let fingerprint = self.master_fingerprint.unwrap_or_default();
        if master.starts_with("https://") && !lobster_fleet::pin::is_fingerprint(&fingerprint) {
            return Err(ConfigError::Fingerprint);
        }
        if self.slave_index == 0 {
            return Err(ConfigError::Zero("--slave-index"));
        }
        if self.slaves_on_host == 0 {
            return Err(ConfigError::Zero("--slaves-on-host"));
        }
        let host = hostname();
        let cores = match self.cores {
            Some(0) => return Err(ConfigError::Zero("--cores")),
            Some(c) => c,
            None => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        };
        let slave_uid = uuid::Uuid::new_v4().to_string();
        Ok(AgentConfig {
            master,
            join_token,
            fingerprint,
            identity: Identity {
                instance_id: self.instance_id.unwrap_or_else(|| format!("local-{host}")),
                instance_type: self.instance_type,
                region: self.region,
                expires_at: self.expires_at.chars().take(64).collect(),
                host,
                cores,
                slave_index: self.slave_index,
                slaves_on_host: self.slaves_on_host,
                boot_id: self.boot_id.unwrap_or_else(boot_id),
                slave_uid: slave_uid.clone(),
            },
            trace_dir: self
                .trace_dir
                .unwrap_or_else(|| crate::trace::default_dir(&slave_uid)),
            discovery: self.master_discovery,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(10),
            drain_deadline: Duration::from_secs(10),
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod help_tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of `lobster-slave` says what it is.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lobster-slave", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
