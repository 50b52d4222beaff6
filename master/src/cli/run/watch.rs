//! Following a run: creating it (waiting out one that is stopping), saying at once when no
//! slave can come, the countdown while it waits for slaves, the live table, Ctrl-C (stop the
//! run, or leave it going), and the report (from the store when the master went away).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use lobster_fleet::scenario::Model;
use tokio_util::sync::CancellationToken;

use super::{Attached, Failure, Plan};
use crate::api::CreateRun;
use crate::client::ApiClient;
use crate::home::Home;
use crate::report::{self, Report};

/// How long the CLI keeps trying when the master stops answering (e.g. while it restarts).
const MASTER_SILENCE: Duration = Duration::from_secs(90);

/// The report of run `id` from this home's run store, if it is there.
fn stored_report(home: &Home, id: &str) -> Option<Report> {
    let path = home.master().store();
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

/// Creates the run; returns its id and the slaves it waits for.
pub(super) async fn start(
    plan: &Plan,
    home: &Home,
    m: &Attached,
) -> Result<(String, u32), Failure> {
    let client = &m.client;
    check_someone_can_come(plan, home, m).await?;
    let quorum = match plan.min_slaves {
        Some(n) => n,
        None if plan.local_slaves > 0 => plan.local_slaves,
        None => free_slaves(client).await?.max(1),
    };
    let body = CreateRun {
        scenario: plan.document.clone(),
        quorum,
        quorum_timeout_ms: plan.quorum_timeout.as_millis() as u64,
    };
    let id = create(client, &body).await?;
    Ok((id, quorum))
}

/// Creates the run and follows it to its report.
pub(super) async fn watch(
    plan: &Plan,
    home: &Home,
    m: &Attached,
    shutdown: CancellationToken,
) -> Result<Report, Failure> {
    let (id, quorum) = start(plan, home, m).await?;
    if !plan.quiet {
        println!(
            "run {id}: {} against {} for {:.0}s, waiting for {quorum} slave(s) (up to {:.0}s)",
            plan.scenario.name,
            plan.scenario.target_label(),
            plan.scenario.duration.as_secs_f64(),
            plan.quorum_timeout.as_secs_f64()
        );
    }
    let follow = Follow {
        quiet: plan.quiet,
        on_signal: OnSignal::StopRun,
        countdown: Some((quorum, plan.quorum_timeout)),
    };
    let report = follow.run(&m.client, home, &id, shutdown).await?;
    Ok(report.expect("a followed run that is stopped on a signal ends with its report"))
}

/// What the first Ctrl-C (SIGINT, SIGTERM, SIGHUP) does while a run is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnSignal {
    /// Stop the run (`lobster run`): it ends `aborted`, with the signal as its reason.
    StopRun,
    /// Stop following and leave the run going (`runs attach`, `runs wait`).
    Leave,
}

/// How a run is followed to its report.
pub(crate) struct Follow {
    /// No live table.
    pub(crate) quiet: bool,
    pub(crate) on_signal: OnSignal,
    /// While the run waits for slaves: the quorum and its timeout, for the countdown.
    pub(crate) countdown: Option<(u32, Duration)>,
}

/// How often the live view prints the per-endpoint figures (closed seconds).
const ENDPOINTS_EVERY: u64 = 10;

/// The live table's load column: what the master stamped on each second (so a change of load
/// mid-run shows), in the run's unit.
fn load_label(model: &str) -> &'static str {
    if model == Model::Open.name() {
        "rate/s"
    } else {
        "users"
    }
}

impl Follow {
    /// Follows run `id` to its report (from the store when the master went away); `None`
    /// when it was left on a signal.
    pub(crate) async fn run(
        &self,
        client: &ApiClient,
        home: &Home,
        id: &str,
        shutdown: CancellationToken,
    ) -> Result<Option<Report>, Failure> {
        let created = Instant::now();
        let mut last_countdown = Instant::now();
        let mut after = 0u64;
        let mut header = false;
        let mut stopped = false;
        let mut attaching = self.countdown.is_none();
        let mut last_contact = Instant::now();
        let mut saturated_told = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled(), if !stopped => {
                    stopped = true;
                    if self.on_signal == OnSignal::Leave {
                        eprintln!("left run {id}: it goes on in the master (`lobster runs attach {id}` to follow it again)");
                        return Ok(None);
                    }
                    eprintln!("stopping the run (Ctrl-C again to exit at once)");
                    let who = match crate::cli::first_signal() {
                        Some("SIGINT") => "interrupted in `lobster run` (Ctrl-C, SIGINT)".to_string(),
                        Some("SIGHUP") => "`lobster run` received SIGHUP (its terminal closed; `--detach` keeps a run going)".to_string(),
                        Some(sig) => format!("`lobster run` received {sig}"),
                        None => "`lobster run` was stopped".to_string(),
                    };
                    if let Err(e) = client.act(id, "stop", Some(&who)).await {
                        eprintln!("warning: could not stop the run: {e:#}");
                    }
                }
            }
            let view = match client.run(id, after).await {
                Ok(v) => {
                    last_contact = Instant::now();
                    v
                }
                Err(e) => {
                    // A master of this home that stopped (e.g. SIGTERM) wrote the report first.
                    if let Some(r) = stored_report(home, id) {
                        return Ok(Some(r));
                    }
                    if last_contact.elapsed() > MASTER_SILENCE {
                        return Err(Failure::trouble(
                            e.context(format!("the master stopped answering about run {id}")),
                        ));
                    }
                    continue;
                }
            };
            if let Some((quorum, timeout)) = self.countdown
                && view.phase == "init"
                && last_countdown.elapsed() >= Duration::from_secs(5)
            {
                last_countdown = Instant::now();
                let left = timeout.saturating_sub(created.elapsed());
                let free = free_slaves(client).await.unwrap_or(0);
                eprintln!(
                    "waiting for {quorum} slave(s): {free} registered, {:.0} s left",
                    left.as_secs_f64()
                );
            }
            // Attaching mid-run: the table starts at the latest second, not the first.
            if attaching {
                attaching = false;
                if let Some(last) = view.points.last() {
                    after = last.index;
                }
            }
            let from = after;
            // A second that starts at or after the end of the load holds only the stop's tail
            // (late data of the last second): it is in the report, not a row of the live view.
            let rows = view
                .points
                .iter()
                .filter(|p| p.index >= from && (p.index as f64) < view.duration_s);
            for p in rows {
                if !self.quiet {
                    if !header {
                        println!("{}", report::live_header(load_label(&view.model)));
                        header = true;
                    }
                    let left = view.duration_s - (p.index + 1) as f64;
                    println!("{}", report::live_line(p, p.load, left));
                    if (p.index + 1) % ENDPOINTS_EVERY == 0 && view.endpoints.len() > 1 {
                        print!("{}", report::live_endpoints(&view.endpoints));
                    }
                }
                after = after.max(p.index + 1);
            }
            if let Some(last) = view.points.last() {
                after = after.max(last.index + 1);
            }
            for f in view.saturated.iter().skip(saturated_told) {
                eprintln!("warning: {}", f.warning());
            }
            saturated_told = saturated_told.max(view.saturated.len());
            let _ = std::io::stdout().flush();
            if let Some(r) = view.report {
                return Ok(Some(r));
            }
        }
    }
}
