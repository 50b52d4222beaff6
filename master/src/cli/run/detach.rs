//! `lobster run --detach`: the run is created on a master that outlives this command (this
//! home's background master, started if needed, or `--master`), its id printed, and the
//! command returns. Report files and `--on-finish` are left to a background
//! `lobster runs wait RUN`, in its own process group (a closing terminal does not reach it).

use std::process::Stdio;

use anyhow::{Context, anyhow};

use super::{Attached, ExitStatus, Failure, Plan};
use crate::client::ApiClient;
use crate::daemon::{self, MasterListen};
use crate::home::Home;

/// Where a master started for a detached run listens (`lobster master`'s defaults).
const GRPC: &str = "127.0.0.1:7401";
const API: &str = "127.0.0.1:7400";

pub(super) async fn detach(plan: &Plan, home: &Home) -> Result<ExitStatus, Failure> {
    let attached = master(plan, home).await?;
    let (id, quorum) = super::watch::start(plan, home, &attached).await?;
    let api = attached.client.base().to_string();
    println!(
        "run {id}: {} against {} for {:.0}s on the master at {api}, waiting for {quorum} slave(s); detached",
        plan.scenario.name,
        plan.scenario.target_label(),
        plan.scenario.duration.as_secs_f64(),
    );
    if plan.on_finish.is_some() || !plan.exports.is_empty() {
        let log = waiter(plan, home, &id, &api)?;
        println!(
            "  a background `lobster runs wait` writes the report files and runs --on-finish (log: {})",
            log.display()
        );
    }
    println!("  follow it:        lobster runs attach {id}");
    println!("  wait for verdict: lobster runs wait {id}");
    println!("  stop it:          lobster runs stop {id}");
    Ok(ExitStatus::Success)
}

/// `--master`, else this home's running master, else one started in the background.
async fn master(plan: &Plan, home: &Home) -> Result<Attached, Failure> {
    let url = match &plan.master {
        Some(url) => url.clone(),
        None => {
            let listen = MasterListen {
                grpc: GRPC.into(),
                api: API.into(),
                advertise: None,
            };
            daemon::ensure_master(home, &listen)
                .await
                .context("cannot start a background master for the detached run")
                .map_err(Failure::trouble)?
                .api
        }
    };
    let client = ApiClient::new(&url, plan.api_token.clone());
    let h = client
        .health()
        .await
        .with_context(|| format!("no master answers at {url}"))
        .map_err(Failure::trouble)?;
    Ok(Attached {
        client,
        grpc: h.grpc,
        fingerprint: h.fingerprint,
        join_token: None,
        embedded: None,
    })
}

/// Starts `lobster runs wait RUN` in the background with this run's report flags and hook.
fn waiter(plan: &Plan, home: &Home, id: &str, api: &str) -> Result<std::path::PathBuf, Failure> {
    use std::os::unix::process::CommandExt;
    let logs = Home::ensure(&home.logs())
        .context("cannot create the log directory")
        .map_err(Failure::trouble)?;
    let log_path = logs.join(format!("wait-{id}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))
        .map_err(Failure::trouble)?;
    let exe = std::env::current_exe()
        .context("cannot find this program")
        .map_err(Failure::trouble)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--home")
        .arg(&home.root)
        .args(["runs", "wait", id, "--quiet", "--master", api]);
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    for (flag, path) in plan.exports.flags() {
        if let Some(p) = path {
            cmd.arg(flag).arg(absolute(p));
        }
    }
    if let Some(c) = &plan.on_finish {
        cmd.arg("--on-finish").arg(c);
    }
    if let Some(t) = &plan.api_token {
        cmd.env("LOBSTER_API_TOKEN", t);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Failure::trouble(anyhow!(e)))?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the background `lobster runs wait`")
        .map_err(Failure::trouble)?;
    Ok(log_path)
}
