//! The `lobster` command line: flags parsed into resolved settings before any I/O, one error
//! printed once with its chain, and exit codes that scripts can rely on:
//! 0 success (a run passed), 1 a run failed or aborted, 2 bad input, 3 the environment failed
//! (unreachable master, busy port, ...), 130 interrupted twice.

mod cloud;
mod exports;
pub(crate) mod fleet;
mod hook;
mod image;
mod master;
mod quickstart;
pub(crate) mod run;
mod runs;
pub(crate) mod stop;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::home::Home;

/// Lobster: a cloud-elastic fleet manager for distributed load testing.
#[derive(Debug, Parser)]
#[command(name = "lobster", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory (default: $LOBSTER_HOME or ~/.lobster).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Log filter, e.g. `info` or `lobster_master=debug` (logs go to stderr).
    #[arg(long, global = true, env = "LOBSTER_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the control plane in the foreground (gRPC for slaves, HTTP API on loopback).
    Master(master::MasterArgs),
    /// Run a load test on the registered fleet (and optional local slaves).
    #[command(after_help = RUN_HELP)]
    Run(run::RunArgs),
    /// Serve a fast built-in HTTP target with a request counter.
    Target(target::TargetArgs),
    /// Run the whole loop once on this machine, with nothing set up.
    Quickstart(quickstart::QuickstartArgs),
    /// The fleet of slave VMs: up, down, status.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Print a shell completion script: `lobster completions bash > /etc/bash_completion.d/lobster`.
    Completions(CompletionsArgs),
    /// The local cloud: run it, or print its endpoint.
    #[command(subcommand)]
    Cloud(cloud::CloudCommand),
    /// Template images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The run history of this home: list, show, report.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Stop the background master and local cloud of this home.
    Stop,
}

/// `lobster completions SHELL`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// The verdict rules and exit codes, shown by `lobster run --help`.
const RUN_HELP: &str = "\
Verdict:
  passed   the run reached its end, every SLA rule was judged and held, and failed requests
           are within `max_error_rate` (default: none may fail unless an SLA rule on
           error_rate over all requests says what is accepted)
  failed   it reached its end, but an SLA rule was violated or never judged (its window
           longer than the run, or no sample), or too many requests failed
  aborted  it stopped before its end: an aborting SLA rule, Ctrl-C, a signal, the API, no
           slaves left; `stop.reason` in the report says which

Exit codes:
  0    the run passed
  1    the run failed or was aborted (the report is still written)
  2    bad input (scenario, flags)
  3    the environment failed (no slaves, master or cloud unreachable, port busy)
  130  interrupted twice (exit at once)

Examples:
  lobster run examples/smoke.yaml --local-slaves 2
  lobster run scenario.yaml --json report.json --duration 30s";

/// The exit codes Lobster documents (README, `lobster run --help`); scripts rely on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what it was asked; a run passed.
    Success = 0,
    /// A run failed or was aborted; a fleet is partial.
    Failed = 1,
    /// Bad input: a scenario, a config, a flag.
    BadInput = 2,
    /// The environment failed: no slaves, the master or the cloud unreachable, credentials
    /// refused, a port busy.
    Trouble = 3,
    /// Interrupted twice: exited at once.
    Forced = 130,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// How a command failed: its exit status and the error, printed once with its chain.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitStatus,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: ExitStatus::BadInput,
            error: error.into(),
        }
    }

    pub fn trouble(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: ExitStatus::Trouble,
            error: error.into(),
        }
    }
}

/// Parses the command line and runs the command; the returned code is the process's.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let status = if e.use_stderr() {
                ExitStatus::BadInput
            } else {
                ExitStatus::Success
            };
            return ExitCode::from(status.code());
        }
    };
    let default_log = match cli.command {
        Commands::Run(_)
        | Commands::Quickstart(_)
        | Commands::Fleet(_)
        | Commands::Image(_)
        | Commands::Completions(_)
        | Commands::Runs(_)
        | Commands::Stop => "warn,aws_config=off,aws_smithy_runtime=off",
        _ => "info,aws_config=off,aws_smithy_runtime=off",
    };
    let filter = cli.log.clone().unwrap_or_else(|| default_log.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let home = Home::resolve(cli.home.clone());
    let threads = match &cli.command {
        Commands::Target(t) => t.threads,
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1) as usize);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(ExitStatus::Trouble.code());
        }
    };
    let result = runtime.block_on(async move {
        let (shutdown, force) = signals();
        let work = async {
            match cli.command {
                Commands::Master(a) => master::master(a, &home, shutdown).await,
                Commands::Run(a) => run::run(a, &home, shutdown).await,
                Commands::Target(a) => target::target(a, shutdown).await,
                Commands::Quickstart(a) => quickstart::quickstart(a, &home, shutdown).await,
                Commands::Fleet(c) => fleet::fleet(c, &home, shutdown).await,
                Commands::Cloud(c) => cloud::cloud(c, &home, shutdown).await,
                Commands::Image(c) => image::image(c, &home).await,
                Commands::Runs(c) => runs::runs(c, &home, shutdown).await,
                Commands::Stop => stop::stop(&home).await,
                Commands::Completions(a) => {
                    use clap::CommandFactory;
                    clap_complete::generate(a.shell, &mut Cli::command(), "lobster", &mut std::io::stdout());
                    Ok(ExitStatus::Success)
                }
            }
        };
        tokio::select! {
            r = work => r,
            _ = force.cancelled() => Err(Failure { code: ExitStatus::Forced, error: anyhow::anyhow!("interrupted twice: exiting now") }),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code.code())
        }
    }
}

/// The first signal this process received (`SIGINT`, `SIGTERM` or `SIGHUP`), once it did: the reason a
/// stopped run gives for its end.
static FIRST_SIGNAL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The first terminating signal received, if any.
pub(crate) fn first_signal() -> Option<&'static str> {
    FIRST_SIGNAL.get().copied()
}

/// The first SIGINT/SIGTERM/SIGHUP (a closed terminal) cancels `shutdown` (drain); the second
/// cancels `force`.
fn signals() -> (CancellationToken, CancellationToken) {
    let shutdown = CancellationToken::new();
    let force = CancellationToken::new();
    let (s, f) = (shutdown.clone(), force.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        let _ = FIRST_SIGNAL.set(first);
        s.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {}, _ = hup.recv() => {} }
        f.cancel();
    });
    (shutdown, force)
}

/// Parses a duration flag (`20s`, `1m30s`, `500ms`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    lobster_fleet::scenario::value::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lobster", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
