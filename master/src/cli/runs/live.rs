//! `lobster runs wait|attach|stop|scale`: runs as their master knows them (`traces` in `runs/traces.rs`). The master is `--master`,
//! else this home's; a finished run is answered from the run store when no master runs.

use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::super::exports::Exports;
use super::super::run::{Follow, OnSignal};
use super::super::{ExitStatus, Failure};
use crate::client::ApiClient;
use crate::home::Home;
use crate::report::Report;

/// Which master to ask.
#[derive(Debug, Clone, Args)]
pub struct MasterFlags {
    /// API URL of the master (default: the master of LOBSTER_HOME).
    #[arg(long, env = "LOBSTER_MASTER_API", value_name = "URL")]
    pub master: Option<String>,
    /// API token of that master.
    #[arg(long, env = "LOBSTER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// How `runs wait` (and `attach`) waits.
pub struct Wait {
    pub quiet: bool,
    pub timeout: Option<Duration>,
    pub on_finish: Option<String>,
    pub exports: Exports,
}

/// The master's client, if one answers.
pub(super) async fn client(flags: &MasterFlags, home: &Home) -> Result<Option<ApiClient>, Failure> {
    if let Some(url) = &flags.master {
        let c = ApiClient::new(url, flags.api_token.clone());
        c.health()
            .await
            .with_context(|| format!("no master answers at {url}"))
            .map_err(Failure::trouble)?;
        return Ok(Some(c));
    }
    let Some(info) = crate::server::discover(&home.master()) else {
        return Ok(None);
    };
    let c = ApiClient::new(&info.api, flags.api_token.clone());
    Ok(c.health().await.ok().map(|_| c))
}

/// The run's report from the store, or why there is none (no master runs).
fn from_store(home: &Home, id: &str) -> Result<Report, Failure> {
    let Some(store) = super::open_store(home)? else {
        return Err(Failure::bad_input(anyhow!(
            "no master of this home is running and it has no runs yet (give --master URL)"
        )));
    };
    if let Some(r) = super::finished(&store, id)? {
        return Ok(r);
    }
    Err(match store.status(id).map_err(Failure::trouble)? {
        Some(status) => Failure::trouble(anyhow!(
            "run {id} is {status} but no master of this home is running to finish it: start it again with `lobster master` (the run resumes), or give --master URL"
        )),
        None => Failure::bad_input(anyhow!(
            "no run `{id}` in this home's run store and no master running: `lobster runs list` shows the runs"
        )),
    })
}

pub async fn wait(
    id: &str,
    flags: &MasterFlags,
    home: &Home,
    wait: Wait,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    let report = match client(flags, home).await? {
        None => Some(from_store(home, id)?),
        Some(c) => {
            // An unknown id is bad input, said at once.
            if let Err(e) = c.run(id, u64::MAX).await {
                return Err(Failure::bad_input(e.context(format!(
                    "the master at {} does not know run `{id}`",
                    c.base()
                ))));
            }
            let follow = Follow {
                quiet: wait.quiet,
                on_signal: OnSignal::Leave,
                countdown: None,
            };
            let followed = follow.run(&c, home, id, shutdown);
            match wait.timeout {
                None => followed.await?,
                Some(t) => match tokio::time::timeout(t, followed).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(Failure::trouble(anyhow!(
                            "run {id} did not end within {} s; it goes on in the master",
                            t.as_secs()
                        )));
                    }
                },
            }
        }
    };
    let Some(report) = report else {
        return Ok(ExitStatus::Forced); // left on a signal: no verdict (130, as for Ctrl-C)
    };
    let scenario = super::open_store(home)
        .ok()
        .flatten()
        .and_then(|store| super::stored_scenario(&store, id));
    super::super::hook::ended(
        &report,
        scenario.as_ref(),
        &wait.exports,
        wait.on_finish.as_deref(),
        home,
    )
    .await
}

pub async fn stop(
    id: &str,
    flags: &MasterFlags,
    home: &Home,
    reason: &str,
) -> Result<ExitStatus, Failure> {
    let Some(c) = client(flags, home).await? else {
        return Err(Failure::trouble(anyhow!(
            "no master of this home is running (give --master URL)"
        )));
    };
    c.act(id, "stop", Some(reason))
        .await
        .with_context(|| format!("cannot stop run {id}"))
        .map_err(Failure::trouble)?;
    println!("stopping run {id}: `lobster runs wait {id}` gives its verdict");
    Ok(ExitStatus::Success)
}

pub async fn scale(
    id: &str,
    flags: &MasterFlags,
    home: &Home,
    body: &crate::api::LoadRequest,
) -> Result<ExitStatus, Failure> {
    let Some(c) = client(flags, home).await? else {
        return Err(Failure::trouble(anyhow!(
            "no master of this home is running (give --master URL)"
        )));
    };
    let at = c
        .change_load(id, body)
        .await
        .with_context(|| format!("cannot change the load of run {id}"))
        .map_err(Failure::trouble)?
        .map_err(|why| Failure::bad_input(anyhow!("cannot change the load of run {id}: {why}")))?;
    let what = match (body.users, body.rate) {
        (Some(u), _) => format!("{u} users"),
        (_, Some(r)) => format!("{r} requests per second"),
        _ => String::new(),
    };
    println!(
        "run {id}: {what} from {:.3} s of load{}",
        at as f64 / 1000.0,
        if body.ramp_ms > 0 {
            format!(", reached over {:.1} s", body.ramp_ms as f64 / 1000.0)
        } else {
            String::new()
        }
    );
    Ok(ExitStatus::Success)
}
