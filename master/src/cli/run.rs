//! `lobster run SCENARIO`: runs a test on the fleet and prints a live table and a summary.
//!
//! Finds the master of `LOBSTER_HOME` (or `--master`); with none running, starts one inside
//! this process for the run. `--local-slaves N` starts N slave processes beside it. The first
//! Ctrl-C stops the run (the report is still written); the second exits at once.

use super::ExitStatus;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use lobster_fleet::scenario::{Document, Scenario};
use tokio_util::sync::CancellationToken;

use super::exports::Exports;
use super::{Failure, parse_duration};
use crate::client::ApiClient;
use crate::home::Home;
use crate::local_slaves::LocalSlaves;
use crate::server::{self, Master, MasterConfig};

mod detach;
mod watch;

pub(crate) use watch::{Follow, OnSignal};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file (see docs/scenario.md).
    pub scenario: PathBuf,
    /// Also start N slaves on this host (0 to 256).
    #[arg(long, default_value_t = 0, value_name = "N", allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(0u32, MAX_LOCAL_SLAVES, ""))]
    pub local_slaves: u32,
    #[command(flatten)]
    pub exports: Exports,
    /// Override the scenario's duration (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Override the scenario's target base URL.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Start once this many slaves are available (default: the local slaves, else those
    /// registered now, at least 1).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 100_000, ""))]
    pub min_slaves: Option<u32>,
    /// Give up if the slaves are not there within this time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub quorum_timeout: Duration,
    /// API URL of a running master (default: the master of LOBSTER_HOME, else one started here).
    #[arg(long, env = "LOBSTER_MASTER_API", value_name = "URL")]
    pub master: Option<String>,
    /// API token of that master.
    #[arg(long, env = "LOBSTER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// No live table, only the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Start the run and return at once, printing its id: the run goes on in a background
    /// master (this home's, started if needed, or --master) whatever happens to this terminal.
    /// Follow it with `lobster runs attach RUN`, wait for its verdict with `lobster runs wait
    /// RUN`. Not with --local-slaves (they would end with this command): use a fleet.
    #[arg(long)]
    pub detach: bool,
    /// When the run ends, run CMD with `sh -c` (the report's JSON path as $1, and
    /// LOBSTER_REPORT, LOBSTER_RUN_ID, LOBSTER_RUN_STATUS in its environment); with --detach,
    /// a background `lobster runs wait` runs it.
    #[arg(long, value_name = "CMD")]
    pub on_finish: Option<String>,
    /// When the run ends, fetch its trace (the scenario's `trace:`) from the slaves, merged
    /// in time order, into FILE, before local slaves end with this command (as `lobster runs
    /// traces RUN --out FILE`).
    #[arg(long, value_name = "FILE")]
    pub trace_out: Option<PathBuf>,
}

/// Most local slaves one command may start.
const MAX_LOCAL_SLAVES: u32 = 256;

/// Everything a run needs, checked before any I/O.
pub(crate) struct Plan {
    /// Said before the run starts (things the user should know, not errors).
    pub(crate) warnings: Vec<String>,
    /// The scenario as resolved here, to show and check.
    pub(crate) scenario: Scenario,
    /// The same as sent to the master, which resolves it again with the same validator.
    pub(crate) document: Document,
    /// Slave processes to start on this host.
    pub(crate) local_slaves: u32,
    /// The report files to write.
    pub(crate) exports: Exports,
    /// Slaves to wait for (default: the local slaves, else the registered ones, at least 1).
    pub(crate) min_slaves: Option<u32>,
    pub(crate) quorum_timeout: Duration,
    /// API URL of the master to use (default: this home's, else one started here).
    pub(crate) master: Option<String>,
    pub(crate) api_token: Option<String>,
    /// No live table.
    pub(crate) quiet: bool,
    /// Return once the run is created.
    pub(crate) detach: bool,
    /// Run when the run ends (`sh -c`).
    pub(crate) on_finish: Option<String>,
    /// Where to write the run's traces before the local slaves end (`--trace-out`).
    pub(crate) trace_out: Option<PathBuf>,
}

fn plan(args: RunArgs) -> Result<Plan, Failure> {
    let (mut document, mut scenario) =
        Document::read(&args.scenario).map_err(Failure::bad_input)?;
    if let Some(t) = &args.target {
        scenario
            .set_target(t)
            .map_err(|e| Failure::bad_input(anyhow!("--target: {e}")))?;
        document.target = Some(t.clone());
    }
    let mut warnings = Vec::new();
    if let Some(d) = args.duration {
        scenario
            .set_duration(d)
            .map_err(|e| Failure::bad_input(anyhow!("--duration: {e}")))?;
        document.duration = Some(d);
        let stages_ms: u64 = scenario.load.stages.iter().map(|s| s.duration_ms).sum();
        if stages_ms > scenario.duration_ms() {
            let unit = if scenario.is_open() {
                " req/s"
            } else {
                " users"
            };
            let at = scenario.load.load_at(scenario.duration_ms());
            warnings.push(format!(
                "--duration {}s cuts the load profile: its stages last {}s, so the load stops at {at:.0}{unit} and the rest of the stages never run",
                d.as_secs_f64(),
                stages_ms as f64 / 1000.0
            ));
        }
    }
    warnings.extend(scenario.warnings());
    if args.quorum_timeout.is_zero() {
        return Err(Failure::bad_input(anyhow!(
            "--quorum-timeout must be longer than zero"
        )));
    }
    args.exports.check()?;
    if args.trace_out.is_some() && scenario.trace.is_none() {
        return Err(Failure::bad_input(anyhow!(
            "--trace-out needs a scenario with `trace:` (see docs/scenario.md, \"Traces\")"
        )));
    }
    if args.trace_out.is_some() && args.detach {
        return Err(Failure::bad_input(anyhow!(
            "--trace-out cannot take --detach: fetch the trace with `lobster runs traces RUN --out FILE` once the run ended"
        )));
    }
    if args.detach && args.local_slaves > 0 {
        return Err(Failure::bad_input(anyhow!(
            "--detach cannot take --local-slaves: local slaves end with this command; start slaves that outlive it with `lobster fleet up --count N`"
        )));
    }
    if args
        .on_finish
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err(Failure::bad_input(anyhow!(
            "--on-finish needs a command, e.g. --on-finish 'mail -s lobster me < \"$1\"'"
        )));
    }
    Ok(Plan {
        warnings,
        scenario,
        document,
        local_slaves: args.local_slaves,
        exports: args.exports,
        min_slaves: args.min_slaves,
        quorum_timeout: args.quorum_timeout,
        master: args.master,
        api_token: args.api_token,
        quiet: args.quiet,
        detach: args.detach,
        on_finish: args.on_finish,
        trace_out: args.trace_out,
    })
}

/// A master this command uses: found running, or started here for the run.
pub(crate) struct Attached {
    client: ApiClient,
    grpc: String,
    /// The master's certificate fingerprint, for local slaves to pin.
    fingerprint: String,
    join_token: Option<String>,
    embedded: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

async fn attach(plan: &Plan, home: &Home) -> Result<Attached, Failure> {
    if let Some(url) = &plan.master {
        let client = ApiClient::new(url, plan.api_token.clone());
        let h = client
            .health()
            .await
            .with_context(|| format!("no master answers at {url}"))
            .map_err(Failure::trouble)?;
        let token = std::env::var("LOBSTER_JOIN_TOKEN").ok();
        return Ok(Attached {
            client,
            grpc: h.grpc,
            fingerprint: h.fingerprint,
            join_token: token,
            embedded: None,
        });
    }
    if let Some(info) = server::discover(&home.master()) {
        let client = ApiClient::new(&info.api, plan.api_token.clone());
        if let Ok(h) = client.health().await {
            let token = server::join_token(&home.master()).ok();
            return Ok(Attached {
                client,
                grpc: h.grpc,
                fingerprint: h.fingerprint,
                join_token: token,
                embedded: None,
            });
        }
    }
    let config = MasterConfig {
        state_dir: home.master(),
        grpc_listen: "127.0.0.1:0".parse().expect("address"),
        api_listen: "127.0.0.1:0".parse().expect("address"),
        advertise: None,
        heartbeat: Duration::from_secs(1),
        lease: Duration::from_secs(5),
        max_slaves: 10_000,
        api_token: None,
        insecure_plaintext: false,
        ephemeral: true,
    };
    let master = Master::bind(config)
        .await
        .map_err(super::master::start_failure)?;
    let info = master.info().clone();
    let token = master.join_token().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(master.run(stop.clone()));
    Ok(Attached {
        client: ApiClient::new(&info.api, None),
        grpc: info.grpc,
        fingerprint: info.fingerprint,
        join_token: Some(token),
        embedded: Some((stop, task)),
    })
}

pub async fn run(
    args: RunArgs,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    execute(plan(args)?, home, shutdown).await
}

/// Runs a resolved plan: attach to (or start) a master, start local slaves, follow the run.
pub(crate) async fn execute(
    plan: Plan,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if plan.detach {
        return detach::detach(&plan, home).await;
    }
    let attached = attach(&plan, home).await?;
    let result = drive(&plan, home, &attached, shutdown).await;
    if let Some((stop, task)) = attached.embedded {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    }
    result
}

async fn drive(
    plan: &Plan,
    home: &Home,
    m: &Attached,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    let locals = if plan.local_slaves > 0 {
        let token = m.join_token.as_deref().ok_or_else(|| {
            Failure::bad_input(anyhow!(
                "local slaves need the fleet's join token: set LOBSTER_JOIN_TOKEN"
            ))
        })?;
        Some(
            LocalSlaves::start(
                plan.local_slaves,
                &m.grpc,
                token,
                &m.fingerprint,
                &home.logs(),
            )
            .map_err(|e| Failure::trouble(anyhow!(e)))?,
        )
    } else {
        None
    };
    let result = watch::watch(plan, home, m, shutdown).await;
    // Before the local slaves end with this command: their traces go with them.
    if let (Ok(report), Some(out)) = (&result, &plan.trace_out) {
        match crate::cli::runs::write_traces(&m.client, &report.run_id, Some(out)).await {
            Ok(ExitStatus::Success) => {}
            Ok(_) => eprintln!(
                "warning: the trace in {} lacks the slaves named above",
                out.display()
            ),
            Err(e) => eprintln!("warning: no trace written: {:#}", e.error),
        }
    }
    if let Some(l) = locals {
        l.stop(Duration::from_secs(10)).await;
    }
    let report = result?;
    super::hook::ended(
        &report,
        Some(&plan.scenario),
        &plan.exports,
        plan.on_finish.as_deref(),
        home,
    )
    .await
}
