//! `lobster run SCENARIO`: runs a test on the fleet and prints a live table and a summary.
//!
//! Finds the master of `LOBSTER_HOME` (or `--master`); with none running, starts one inside
//! this process for the run. `--local-slaves N` starts N slave processes beside it. The first
//! Ctrl-C stops the run (the report is still written); the second exits at once.

use super::ExitStatus;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Args;
use lobster_fleet::scenario::{self, Scenario};
use tokio_util::sync::CancellationToken;

use super::{Failure, parse_duration};
use crate::api::CreateRun;
use crate::client::ApiClient;
use crate::home::Home;
use crate::local_slaves::LocalSlaves;
use crate::report::{self, Report, Status};
use crate::server::{self, Master, MasterConfig};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file (see docs/scenario.md).
    pub scenario: PathBuf,
    /// Also start N slaves on this host.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub local_slaves: u32,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Override the scenario's duration (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Override the scenario's target base URL.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Start once this many slaves are available (default: the local slaves, else those
    /// registered now, at least 1).
    #[arg(long, value_name = "N")]
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
}

/// Most local slaves one command may start.
const MAX_LOCAL_SLAVES: u32 = 256;
/// How long the CLI keeps trying when the master stops answering (e.g. while it restarts).
const MASTER_SILENCE: Duration = Duration::from_secs(90);

/// Everything a run needs, checked before any I/O.
pub(crate) struct Plan {
    /// Said before the run starts (things the user should know, not errors).
    pub(crate) warnings: Vec<String>,
    pub(crate) scenario: Scenario,
    /// Slave processes to start on this host.
    pub(crate) local_slaves: u32,
    /// Where to write the JSON report.
    pub(crate) json: Option<PathBuf>,
    /// Slaves to wait for (default: the local slaves, else the registered ones, at least 1).
    pub(crate) min_slaves: Option<u32>,
    pub(crate) quorum_timeout: Duration,
    /// API URL of the master to use (default: this home's, else one started here).
    pub(crate) master: Option<String>,
    pub(crate) api_token: Option<String>,
    /// No live table.
    pub(crate) quiet: bool,
}

fn plan(args: RunArgs) -> Result<Plan, Failure> {
    let mut scenario = scenario::load(&args.scenario).map_err(Failure::bad_input)?;
    if let Some(t) = &args.target {
        scenario
            .set_target(t)
            .map_err(|e| Failure::bad_input(anyhow!("--target: {e}")))?;
    }
    let mut warnings = Vec::new();
    if let Some(d) = args.duration {
        scenario
            .set_duration_ms(d.as_millis() as u64)
            .map_err(|e| Failure::bad_input(anyhow!("--duration: {e}")))?;
        let stages_ms: u64 = scenario.load.stages.iter().map(|s| s.duration_ms).sum();
        if stages_ms > scenario.duration_ms {
            let unit = if scenario.is_open() {
                " req/s"
            } else {
                " users"
            };
            let mut at = scenario.load.value_at(scenario.duration_ms);
            if scenario.is_open() {
                at /= 1000.0;
            }
            warnings.push(format!(
                "--duration {}s cuts the load profile: its stages last {}s, so the load stops at {at:.0}{unit} and the rest of the stages never run",
                d.as_secs_f64(),
                stages_ms as f64 / 1000.0
            ));
        }
    }
    warnings.extend(scenario.warnings());
    if args.local_slaves > MAX_LOCAL_SLAVES {
        return Err(Failure::bad_input(anyhow!(
            "--local-slaves must be at most {MAX_LOCAL_SLAVES}"
        )));
    }
    if args.min_slaves == Some(0) {
        return Err(Failure::bad_input(anyhow!(
            "--min-slaves must be at least 1"
        )));
    }
    if args.quorum_timeout.is_zero() {
        return Err(Failure::bad_input(anyhow!(
            "--quorum-timeout must be longer than zero"
        )));
    }
    if let Some(j) = &args.json {
        let dir = j
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(Failure::bad_input(anyhow!(
                "--json: directory {} does not exist",
                dir.display()
            )));
        }
    }
    Ok(Plan {
        warnings,
        scenario,
        local_slaves: args.local_slaves,
        json: args.json,
        min_slaves: args.min_slaves,
        quorum_timeout: args.quorum_timeout,
        master: args.master,
        api_token: args.api_token,
        quiet: args.quiet,
    })
}

/// A master this command uses: found running, or started here for the run.
struct Attached {
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
    let result = watch(plan, home, m, shutdown).await;
    if let Some(l) = locals {
        l.stop(Duration::from_secs(10)).await;
    }
    let report = result?;
    println!("{}", report.render());
    if let Some(path) = &plan.json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes");
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))
            .map_err(Failure::trouble)?;
    }
    Ok(match report.status {
        Status::Passed => ExitStatus::Success,
        Status::Failed | Status::Aborted => ExitStatus::Failed,
    })
}

/// The report of run `id` from this home's run store, if it is there.
fn stored_report(home: &Home, id: &str) -> Option<Report> {
    let path = home.master().join("lobster.db");
    if !path.is_file() {
        return None;
    }
    let json = crate::store::Store::open(&path).ok()?.report(id).ok()??;
    serde_json::from_str(&json).ok()
}

/// How long a new run waits for a run that is finishing its stop on the same master.
const BUSY_WAIT: Duration = Duration::from_secs(120);

/// Slaves registered and free for a run now.
async fn free_slaves(client: &ApiClient) -> Result<u32, Failure> {
    let slaves = client.slaves().await.map_err(Failure::trouble)?;
    Ok(slaves.iter().filter(|s| s.connected && !s.draining).count() as u32)
}

/// Fails at once, with the way out, when no slave can ever join this run.
async fn check_someone_can_come(plan: &Plan, home: &Home, m: &Attached) -> Result<(), Failure> {
    if plan.local_slaves > 0 {
        return Ok(());
    }
    let hint = "give `--local-slaves N` to run N slaves on this host, or start a fleet with `lobster fleet up --count N`";
    if m.embedded.is_some() {
        return Err(Failure::trouble(anyhow!(
            "no slaves to run on: no master runs on this home (so no fleet can reach this run) and no local slaves were asked for; {hint}"
        )));
    }
    if plan.min_slaves.is_some() || free_slaves(&m.client).await? > 0 {
        return Ok(()); // told to wait, or someone is there
    }
    match crate::fleet::local_instances_up(home).await {
        Some(n) if n > 0 => Ok(()),
        _ => Err(Failure::trouble(anyhow!(
            "no slaves to run on: no slave is registered with the master at {} and no fleet instance of this home is starting; {hint}",
            m.client.base()
        ))),
    }
}

/// Creates the run; a run still stopping on the same master is waited for (bounded), any
/// other run in progress is an error that says how to end it.
async fn create(client: &ApiClient, body: &CreateRun) -> Result<String, Failure> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let other = match client.create_run(body).await.map_err(Failure::trouble)? {
            Ok(id) => return Ok(id),
            Err(other) => other,
        };
        let phase = client
            .run(&other, u64::MAX)
            .await
            .map(|v| v.phase)
            .unwrap_or_default();
        if phase == "stopping" && started.elapsed() < BUSY_WAIT {
            if !told {
                eprintln!("run {other} is finishing its stop; waiting for it to end");
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        return Err(Failure::trouble(anyhow!(
            "run {other} is still in progress on the master at {base} ({phase}): wait for it to end, or stop it with `curl -X POST {base}/api/runs/{other}/stop`",
            base = client.base()
        )));
    }
}

/// Creates the run and follows it to its report.
async fn watch(
    plan: &Plan,
    home: &Home,
    m: &Attached,
    shutdown: CancellationToken,
) -> Result<Report, Failure> {
    let client = &m.client;
    check_someone_can_come(plan, home, m).await?;
    let quorum = match plan.min_slaves {
        Some(n) => n,
        None if plan.local_slaves > 0 => plan.local_slaves,
        None => free_slaves(client).await?.max(1),
    };
    let body = CreateRun {
        scenario: plan.scenario.clone(),
        quorum,
        quorum_timeout_ms: plan.quorum_timeout.as_millis() as u64,
    };
    let id = create(client, &body).await?;
    if !plan.quiet {
        println!(
            "run {id}: {} against {} for {:.0}s, waiting for {quorum} slave(s) (up to {:.0}s)",
            plan.scenario.name,
            plan.scenario.target,
            plan.scenario.duration_ms as f64 / 1000.0,
            plan.quorum_timeout.as_secs_f64()
        );
    }
    let created = Instant::now();
    let mut last_countdown = Instant::now();
    let mut after = 0u64;
    let mut header = false;
    let mut stopped = false;
    let mut last_contact = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled(), if !stopped => {
                stopped = true;
                eprintln!("stopping the run (Ctrl-C again to exit at once)");
                let who = match super::first_signal() {
                    Some("SIGINT") => "interrupted in `lobster run` (Ctrl-C, SIGINT)".to_string(),
                    Some(sig) => format!("`lobster run` received {sig}"),
                    None => "`lobster run` was stopped".to_string(),
                };
                if let Err(e) = client.act(&id, "stop", Some(&who)).await {
                    eprintln!("warning: could not stop the run: {e:#}");
                }
            }
        }
        let view = match client.run(&id, after).await {
            Ok(v) => {
                last_contact = Instant::now();
                v
            }
            Err(e) => {
                // A master of this home that stopped (e.g. SIGTERM) wrote the report first.
                if let Some(r) = stored_report(home, &id) {
                    return Ok(r);
                }
                if last_contact.elapsed() > MASTER_SILENCE {
                    return Err(Failure::trouble(
                        e.context(format!("the master stopped answering about run {id}")),
                    ));
                }
                continue;
            }
        };
        if view.phase == "init" && last_countdown.elapsed() >= Duration::from_secs(5) {
            last_countdown = Instant::now();
            let left = plan.quorum_timeout.saturating_sub(created.elapsed());
            let free = free_slaves(client).await.unwrap_or(0);
            eprintln!(
                "waiting for {quorum} slave(s): {free} registered, {:.0} s left",
                left.as_secs_f64()
            );
        }
        for p in &view.points {
            if !plan.quiet {
                if !header {
                    println!("{}", report::live_header());
                    header = true;
                }
                println!("{}", report::live_line(p));
            }
            after = after.max(p.index + 1);
        }
        let _ = std::io::stdout().flush();
        if let Some(r) = view.report {
            return Ok(r);
        }
    }
}
