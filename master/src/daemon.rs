//! Background processes started on demand: the local cloud and the master, so that
//! `lobster fleet up --count 20` works with nothing started by hand.
//!
//! Each is this same binary (`lobster cloud local`, `lobster master`) detached into its own
//! process group, logging to `LOBSTER_HOME/logs/`, announcing itself in a discovery file
//! (`cloud/cloud.json`, `master/master.json`) once it serves. `lobster stop` ends them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::home::Home;
use crate::server::{self, MasterInfo};

/// The local cloud's discovery file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloudInfo {
    pub pid: u32,
    pub endpoint: String,
    pub region: String,
}

/// A background process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start the {name}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {name} exited at start; its log ({log}) ends with:\n{tail}")]
    Died {
        name: &'static str,
        log: String,
        tail: String,
    },
    #[error("the {name} did not come up within {secs} s; see {log}")]
    Timeout {
        name: &'static str,
        secs: u64,
        log: String,
    },
}

/// The local cloud's directory.
pub fn cloud_dir(home: &Home) -> PathBuf {
    home.cloud()
}

pub fn discover_cloud(home: &Home) -> Option<CloudInfo> {
    let text = std::fs::read_to_string(home.cloud_discovery()).ok()?;
    serde_json::from_str(&text).ok()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("http client")
}

async fn healthy(url: &str) -> bool {
    matches!(http().get(url).send().await, Ok(r) if r.status().is_success())
}

/// The running local cloud of this home, if it answers.
pub async fn running_cloud(home: &Home) -> Option<CloudInfo> {
    let info = discover_cloud(home)?;
    healthy(&format!("{}/__lobster/health", info.endpoint))
        .await
        .then_some(info)
}

/// The running master of this home, if it answers.
pub async fn running_master(home: &Home) -> Option<MasterInfo> {
    let info = server::discover(&home.master())?;
    healthy(&format!("{}/api/health", info.api))
        .await
        .then_some(info)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts `lobster <args>` detached, logging to `logs/<name>.log`.
fn spawn(
    home: &Home,
    name: &'static str,
    log_name: &str,
    args: &[String],
) -> Result<(std::process::Child, PathBuf), DaemonError> {
    use std::os::unix::process::CommandExt;
    let spawn_err = |source| DaemonError::Spawn { name, source };
    let logs = Home::ensure(&home.logs()).map_err(spawn_err)?;
    let log_path = logs.join(log_name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(spawn_err)?;
    let exe = std::env::current_exe().map_err(spawn_err)?;
    let child = std::process::Command::new(exe)
        .arg("--home")
        .arg(&home.root)
        .args(args)
        .env(
            "LOBSTER_LOG",
            std::env::var("LOBSTER_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(spawn_err)?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    Ok((child, log_path))
}

/// Waits until `ready` answers for the child's pid, or it dies, or the timeout.
async fn wait_ready<T, F, Fut>(
    name: &'static str,
    mut child: std::process::Child,
    log: &Path,
    ready: F,
) -> Result<T, DaemonError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<(u32, T)>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((pid, v)) = ready().await
            && pid == child.id()
        {
            // Dropping a std `Child` neither kills nor waits: the daemon outlives this process.
            drop(child);
            return Ok(v);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(DaemonError::Died {
                name,
                log: log.display().to_string(),
                tail: tail(log),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(DaemonError::Timeout {
                name,
                secs: 60,
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The local cloud of this home, started in the background if needed.
pub async fn ensure_cloud(home: &Home) -> Result<CloudInfo, DaemonError> {
    if let Some(info) = running_cloud(home).await {
        return Ok(info);
    }
    let (child, log) = spawn(
        home,
        "local cloud",
        "cloud.log",
        &["cloud".into(), "local".into()],
    )?;
    wait_ready("local cloud", child, &log, || async {
        let info = running_cloud(home).await?;
        Some((info.pid, info))
    })
    .await
}

/// Where a background master listens.
#[derive(Clone, Debug)]
pub struct MasterListen {
    pub grpc: String,
    pub api: String,
    pub advertise: Option<String>,
}

/// The master of this home, started in the background if needed.
pub async fn ensure_master(home: &Home, listen: &MasterListen) -> Result<MasterInfo, DaemonError> {
    if let Some(info) = running_master(home).await {
        return Ok(info);
    }
    let mut args = vec![
        "master".to_string(),
        "--grpc-listen".into(),
        listen.grpc.clone(),
        "--api-listen".into(),
        listen.api.clone(),
    ];
    if let Some(a) = &listen.advertise {
        args.push("--advertise".into());
        args.push(a.clone());
    }
    let (child, log) = spawn(home, "master", "master.log", &args)?;
    wait_ready("master", child, &log, || async {
        let info = running_master(home).await?;
        Some((info.pid, info))
    })
    .await
}

/// Whether a process exists.
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 is the state; a zombie has exited already.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    Path::new(&format!("/proc/{pid}")).exists() && state != Some("Z")
}

/// Stops a daemon by pid: SIGTERM, then SIGKILL after `grace`. Returns whether it was running.
pub async fn stop_pid(pid: u32, grace: Duration) -> bool {
    if !alive(pid) {
        return false;
    }
    let _ = crate::local_slaves::signal(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if alive(pid) {
        let _ = crate::local_slaves::signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
    true
}
