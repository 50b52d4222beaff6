//! `lobster runs`: the run history of this home, read from the run store directly, so it
//! works with or without a master running (SQLite's locking lets both share the file); and
//! the runs of a master (`wait`, `attach`, `stop`, in `runs/live.rs`).

use std::io::Write as _;

use anyhow::{Context, anyhow};
use clap::Subcommand;

mod live;
mod traces;

pub(crate) use traces::write_traces;

use super::exports::Exports;
use super::{ExitStatus, Failure};
use lobster_fleet::scenario::Scenario;

use crate::home::Home;
use crate::report::{Comparison, Report, Tolerances};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The latest runs, newest first: id, name, status, start, requests, failures, p95.
    List {
        /// How many runs (1 to 10000).
        #[arg(long, default_value_t = 20, allow_negative_numbers = true,
              value_parser = lobster_fleet::flags::whole(1u32, 10_000, ""))]
        limit: u32,
    },
    /// A finished run's summary, as `lobster run` printed it.
    Show {
        /// The run's id (see `lobster runs list`).
        run: String,
    },
    /// Write a finished run's report: --json FILE, --junit FILE, --csv PREFIX, --html FILE.
    Report {
        /// The run's id (see `lobster runs list`).
        run: String,
        #[command(flatten)]
        exports: Exports,
    },
    /// Compare a run with a baseline, endpoint by endpoint: p50/p95/p99, requests per
    /// second and error rate. Exit 0 with no regression, 1 when the run regressed.
    ///
    /// Example: lobster runs compare last-week tonight --latency-tolerance 10%
    Compare {
        /// The baseline run's id.
        base: String,
        /// The run judged against it.
        run: String,
        /// A p50/p95/p99 rise beyond this share of the baseline is a regression.
        #[arg(long, default_value = "20%", allow_hyphen_values = true,
              value_parser = lobster_fleet::flags::percent(10_000.0))]
        latency_tolerance: f64,
        /// ... unless the rise is at most this long (e.g. `2ms`): jitter of fast endpoints.
        #[arg(long, default_value = "2ms", value_parser = super::parse_duration)]
        latency_floor: std::time::Duration,
        /// A fall of requests per second beyond this share of the baseline is a regression.
        #[arg(long, default_value = "10%", allow_hyphen_values = true,
              value_parser = lobster_fleet::flags::percent(100.0))]
        throughput_tolerance: f64,
        /// A rise of the error rate beyond this many percentage points is a regression.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true,
              value_parser = lobster_fleet::flags::number(0.0, 100.0, false))]
        error_rate_tolerance: f64,
        /// Also write the comparison as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
    },
    /// Delete finished runs (report and statistics) from the run store.
    Rm {
        /// The runs' ids.
        #[arg(required = true)]
        runs: Vec<String>,
    },
    /// Wait for a run to end; exit with its verdict (0 passed, 1 failed or aborted). Ctrl-C
    /// leaves the run going.
    ///
    /// Example: lobster runs wait r-1a2b3c --html tonight.html --on-finish 'notify "$1"'
    Wait {
        /// The run's id.
        run: String,
        #[command(flatten)]
        master: live::MasterFlags,
        /// Give up (exit 3, the run goes on) after this long, e.g. `8h`.
        #[arg(long, value_parser = super::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Print only the summary, no live table.
        #[arg(long, short)]
        quiet: bool,
        /// When the run ends, run CMD (as `lobster run --on-finish`).
        #[arg(long, value_name = "CMD")]
        on_finish: Option<String>,
        #[command(flatten)]
        exports: Exports,
    },
    /// Follow a run's live table again (after `lobster run --detach`, or from another
    /// terminal); Ctrl-C leaves the run going. Exits with its verdict.
    Attach {
        /// The run's id.
        run: String,
        #[command(flatten)]
        master: live::MasterFlags,
    },
    /// Change the load of a run going on: users (closed model) or rate (open model), from half
    /// a second ahead for the rest of the run, over --ramp.
    ///
    /// Example: lobster runs scale r-1a2b3c --rate 500 --ramp 30s
    Scale {
        /// The run's id.
        run: String,
        #[command(flatten)]
        master: live::MasterFlags,
        /// Closed model: virtual users (0 to 10000000).
        #[arg(long, allow_negative_numbers = true, conflicts_with = "rate",
              required_unless_present = "rate",
              value_parser = lobster_fleet::flags::whole(0u64, 10_000_000, ""))]
        users: Option<u64>,
        /// Open model: arrivals per second (0 to 10000000).
        #[arg(long, allow_negative_numbers = true,
              value_parser = lobster_fleet::flags::number(0.0, 10_000_000.0, false))]
        rate: Option<f64>,
        /// Reach the new load over this long (default: at once).
        #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
        ramp: std::time::Duration,
    },
    /// Fetch the per-request records a run's slaves kept (its scenario's `trace:`) through
    /// the master, merged in time order, each tagged with its slave: to standard output, or
    /// --out FILE. Exit 1 when a slave's records could not be fetched (it is named).
    ///
    /// Example: lobster runs traces r-1a2b3c --out trace.jsonl
    Traces {
        /// The run's id.
        run: String,
        #[command(flatten)]
        master: live::MasterFlags,
        /// Write the merged records (JSON lines) to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Stop a run on its master; it ends `aborted` with the reason.
    Stop {
        /// The run's id.
        run: String,
        #[command(flatten)]
        master: live::MasterFlags,
        /// Who or why, shown in the report (at most 200 characters).
        #[arg(long, default_value = "stopped with `lobster runs stop`")]
        reason: String,
    },
}

pub async fn runs(
    c: RunsCommand,
    home: &Home,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<ExitStatus, Failure> {
    match c {
        RunsCommand::Wait {
            run,
            master,
            timeout,
            quiet,
            on_finish,
            exports,
        } => {
            exports.check()?;
            let wait = live::Wait {
                quiet,
                timeout,
                on_finish,
                exports,
            };
            return live::wait(&run, &master, home, wait, shutdown).await;
        }
        RunsCommand::Attach { run, master } => {
            let wait = live::Wait {
                quiet: false,
                timeout: None,
                on_finish: None,
                exports: Exports::default(),
            };
            return live::wait(&run, &master, home, wait, shutdown).await;
        }
        RunsCommand::Stop {
            run,
            master,
            reason,
        } => return live::stop(&run, &master, home, &reason).await,
        RunsCommand::Traces { run, master, out } => {
            return traces::traces(&run, &master, home, out.as_deref()).await;
        }
        RunsCommand::Scale {
            run,
            master,
            users,
            rate,
            ramp,
        } => {
            let body = crate::api::LoadRequest {
                users,
                rate,
                ramp_ms: u64::try_from(ramp.as_millis()).unwrap_or(u64::MAX),
            };
            return live::scale(&run, &master, home, &body).await;
        }
        _ => {}
    }
    stored(c, home)
}

/// This home's run store; `None` when it has none yet (opening would create it).
pub(super) fn open_store(home: &Home) -> Result<Option<Store>, Failure> {
    let path = home.master().store();
    if !path.is_file() {
        return Ok(None);
    }
    Store::open(&path)
        .map(Some)
        .with_context(|| format!("cannot open the run store {}", path.display()))
        .map_err(Failure::trouble)
}

/// The scenario run `id` was created with, when the store has one it can read (a scenario of
/// another version only costs an HTML page its scenario section and load curve).
pub(super) fn stored_scenario(store: &Store, id: &str) -> Option<Scenario> {
    let json = store.scenario(id).ok()??;
    Scenario::from_json(&json).ok()
}

/// The commands that read the run store only.
fn stored(c: RunsCommand, home: &Home) -> Result<ExitStatus, Failure> {
    let Some(store) = open_store(home)? else {
        let path = home.master().store();
        if let RunsCommand::List { .. } = c {
            println!("no runs yet (no run store at {})", path.display());
            return Ok(ExitStatus::Success);
        }
        return Err(Failure::bad_input(anyhow!(
            "no runs yet: there is no run store at {}",
            path.display()
        )));
    };
    match c {
        RunsCommand::List { limit } => {
            let rows = store.runs(limit).map_err(Failure::trouble)?;
            let mut out = String::new();
            out.push_str(&format!(
                "{:<22} {:<20} {:<9} {:<20} {:>10} {:>8} {:>9}\n",
                "run", "name", "status", "started", "requests", "failed", "p95 ms"
            ));
            for row in rows {
                let report = finished(&store, &row.id)?;
                let (started, requests, failures, p95) = match &report {
                    Some(r) => (
                        r.started_at.clone(),
                        r.totals.requests.to_string(),
                        r.totals.failures.to_string(),
                        format!("{:.1}", r.totals.latency_ms.p95),
                    ),
                    None => (
                        crate::clock::rfc3339(row.created_unix_ms),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ),
                };
                out.push_str(&format!(
                    "{:<22} {:<20} {:<9} {:<20} {:>10} {:>8} {:>9}\n",
                    row.id,
                    row.name.chars().take(20).collect::<String>(),
                    row.status,
                    started.chars().take(20).collect::<String>(),
                    requests,
                    failures,
                    p95
                ));
            }
            print!("{out}");
            let _ = std::io::stdout().flush();
            Ok(ExitStatus::Success)
        }
        RunsCommand::Show { run } => {
            let r = report_of(&store, &run)?;
            println!("{}", r.render());
            Ok(ExitStatus::Success)
        }
        RunsCommand::Report { run, exports } => {
            if exports.is_empty() {
                return Err(Failure::bad_input(anyhow!(
                    "say which report to write: --json FILE, --junit FILE, --csv PREFIX and/or --html FILE"
                )));
            }
            exports.check()?;
            let report = report_of(&store, &run)?;
            exports.write(&report, stored_scenario(&store, &run).as_ref())?;
            Ok(ExitStatus::Success)
        }
        RunsCommand::Compare {
            base,
            run,
            latency_tolerance,
            latency_floor,
            throughput_tolerance,
            error_rate_tolerance,
            json,
        } => {
            if let Some(path) = &json {
                Exports {
                    json: Some(path.clone()),
                    ..Default::default()
                }
                .check()?;
            }
            let tolerances = Tolerances {
                latency: latency_tolerance,
                latency_floor,
                throughput: throughput_tolerance,
                error_rate_points: error_rate_tolerance,
            };
            let c = Comparison::of(
                &report_of(&store, &base)?,
                &report_of(&store, &run)?,
                tolerances,
            );
            print!("{}", c.render());
            if let Some(path) = &json {
                let text = serde_json::to_string_pretty(&c).expect("a comparison serializes");
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write the comparison to {}", path.display()))
                    .map_err(Failure::trouble)?;
            }
            Ok(if c.regressed() {
                ExitStatus::Failed
            } else {
                ExitStatus::Success
            })
        }
        RunsCommand::Rm { runs } => {
            // Every id is checked before anything is deleted: a typo deletes nothing.
            for id in &runs {
                report_of(&store, id)?;
            }
            for id in &runs {
                store.delete_finished_run(id).map_err(Failure::trouble)?;
                println!("deleted run {id}");
            }
            Ok(ExitStatus::Success)
        }
        // Answered by `runs` above, through the master.
        RunsCommand::Wait { .. }
        | RunsCommand::Attach { .. }
        | RunsCommand::Stop { .. }
        | RunsCommand::Traces { .. }
        | RunsCommand::Scale { .. } => Err(Failure::trouble(anyhow!(
            "this command needs the master, not the run store"
        ))),
    }
}

/// The report of a finished run, `None` while it has none.
pub(super) fn finished(store: &Store, id: &str) -> Result<Option<Report>, Failure> {
    let Some(text) = store.report(id).map_err(Failure::trouble)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("the stored report of run {id} is unreadable"))
        .map_err(Failure::trouble)
}

fn report_of(store: &Store, id: &str) -> Result<Report, Failure> {
    if let Some(r) = finished(store, id)? {
        return Ok(r);
    }
    Err(Failure::bad_input(
        match store.status(id).map_err(Failure::trouble)? {
            Some(status) => anyhow!("run {id} has no report yet: it is {status}"),
            None => {
                anyhow!(
                    "no run `{id}` in this home's run store: `lobster runs list` shows the runs"
                )
            }
        },
    ))
}
