//! The report files a command writes (`--json`, `--junit`, `--csv`, `--html`): one set of flags for
//! `lobster run` and `lobster runs report`, checked before any I/O and written once.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use lobster_fleet::scenario::Scenario;

use super::Failure;
use crate::report::Report;

#[derive(Debug, Default, Clone, Args)]
pub struct Exports {
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the verdict, SLA rules and checks as JUnit XML to FILE (for CI systems).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write PREFIX_stats.csv, PREFIX_stats_history.csv and PREFIX_failures.csv (as
    /// Locust's --csv).
    #[arg(long, value_name = "PREFIX")]
    pub csv: Option<PathBuf>,
    /// Write the report as one self-contained HTML page to FILE (charts and tables; opens
    /// with no network access).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl Exports {
    /// Whether no file is asked for.
    pub fn is_empty(&self) -> bool {
        self.json.is_none() && self.junit.is_none() && self.csv.is_none() && self.html.is_none()
    }

    /// Each flag with the path it was given.
    pub fn flags(&self) -> [(&'static str, &Option<PathBuf>); 4] {
        [
            ("--json", &self.json),
            ("--junit", &self.junit),
            ("--csv", &self.csv),
            ("--html", &self.html),
        ]
    }

    /// Refuses a file in a directory that does not exist (bad input, before the run).
    pub fn check(&self) -> Result<(), Failure> {
        for (flag, path) in self.flags() {
            let Some(path) = path else { continue };
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(Failure::bad_input(anyhow!(
                    "{flag}: directory {} does not exist",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// Writes every file asked for; `scenario` is the run's, when known (the HTML page shows
    /// it and the load it asked for).
    pub fn write(&self, report: &Report, scenario: Option<&Scenario>) -> Result<(), Failure> {
        if let Some(path) = &self.json {
            let json = serde_json::to_string_pretty(report).expect("report serializes");
            std::fs::write(path, json)
                .with_context(|| format!("cannot write the report to {}", path.display()))
                .map_err(Failure::trouble)?;
        }
        if let Some(path) = &self.junit {
            std::fs::write(path, crate::report::junit(report))
                .with_context(|| format!("cannot write the JUnit XML to {}", path.display()))
                .map_err(Failure::trouble)?;
        }
        if let Some(prefix) = &self.csv {
            crate::report::write_csv(report, prefix)
                .with_context(|| format!("cannot write the CSV files {}_*.csv", prefix.display()))
                .map_err(Failure::trouble)?;
        }
        if let Some(path) = &self.html {
            std::fs::write(path, crate::report::html(report, scenario))
                .with_context(|| format!("cannot write the HTML report to {}", path.display()))
                .map_err(Failure::trouble)?;
        }
        Ok(())
    }
}
