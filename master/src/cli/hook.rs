//! A run's end as `lobster run` and `lobster runs wait` show it ([`ended`]: the summary, the
//! report files, the hook, the exit status), and `--on-finish CMD`: a command run when a run
//! ends (a hook for mail, chat or an upload).
//!
//! It runs as `sh -c CMD lobster-on-finish REPORT`, so `$1` is the JSON report's path (the
//! `--json` file, else `$LOBSTER_HOME/reports/RUN.json`), with `LOBSTER_REPORT`,
//! `LOBSTER_RUN_ID` and `LOBSTER_RUN_STATUS` in its environment. It may take up to
//! [`HOOK_LIMIT`]; its failure is reported and does not change the run's exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use lobster_fleet::scenario::Scenario;

use super::exports::Exports;
use super::{ExitStatus, Failure};
use crate::home::Home;
use crate::report::{Report, Status};

/// Longest a hook may run before it is killed.
pub const HOOK_LIMIT: Duration = Duration::from_secs(600);

/// Prints the summary of a finished run, writes the report files asked for, runs the hook,
/// and gives the exit status of its verdict (0 passed, 1 failed or aborted).
pub async fn ended(
    report: &Report,
    scenario: Option<&Scenario>,
    exports: &Exports,
    on_finish: Option<&str>,
    home: &Home,
) -> Result<ExitStatus, Failure> {
    println!("{}", report.render());
    exports.write(report, scenario)?;
    if let Some(cmd) = on_finish {
        on_finish_hook(cmd, report, home, exports.json.as_deref()).await?;
    }
    Ok(match report.status {
        Status::Passed => ExitStatus::Success,
        Status::Failed | Status::Aborted => ExitStatus::Failed,
    })
}

/// Runs `cmd` for `report`; `json` is where the report was written, if it was.
async fn on_finish_hook(
    cmd: &str,
    report: &Report,
    home: &Home,
    json: Option<&Path>,
) -> Result<(), Failure> {
    let path: PathBuf = match json {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        None => {
            let dir = Home::ensure(&home.root.join("reports"))
                .context("cannot create the reports directory")
                .map_err(Failure::trouble)?;
            let p = dir.join(format!("{}.json", report.run_id));
            let text = serde_json::to_string_pretty(report).expect("a report serializes");
            std::fs::write(&p, text)
                .with_context(|| format!("cannot write the report to {}", p.display()))
                .map_err(Failure::trouble)?;
            p
        }
    };
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .arg("lobster-on-finish")
        .arg(&path)
        .env("LOBSTER_REPORT", &path)
        .env("LOBSTER_RUN_ID", &report.run_id)
        .env("LOBSTER_RUN_STATUS", report.status.as_str())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: --on-finish: cannot start `sh`: {e}");
            return Ok(());
        }
    };
    match tokio::time::timeout(HOOK_LIMIT, child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => eprintln!("warning: --on-finish `{cmd}` failed ({s})"),
        Ok(Err(e)) => eprintln!("warning: --on-finish `{cmd}`: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            eprintln!(
                "warning: --on-finish `{cmd}` ran longer than {} s and was killed",
                HOOK_LIMIT.as_secs()
            );
        }
    }
    Ok(())
}
