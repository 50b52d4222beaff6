//! `lobster quickstart`: the whole loop once, for a newcomer, with nothing set up: the built-in
//! target, a master for the run, local slaves, a short run with the live table and a report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::run::{RunArgs, run};
use crate::home::Home;
use crate::target::Target;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Local slaves to start.
    #[arg(long, default_value_t = 2)]
    pub slaves: u32,
    /// How long the run lasts.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Write the JSON report here (default: LOBSTER_HOME/quickstart-report.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub async fn quickstart(
    args: QuickstartArgs,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<u8, Failure> {
    if args.slaves == 0 || args.slaves > 64 {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--slaves must be between 1 and 64"
        )));
    }
    Home::ensure(&home.root).map_err(Failure::trouble)?;
    let target = Target::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .map_err(Failure::trouble)?;
    let addr = target.local_addr().map_err(Failure::trouble)?;
    let counter = target.counter();
    let stop_target = CancellationToken::new();
    tokio::spawn(target.run(stop_target.clone()));
    println!("1/3 built-in target listening on http://{addr}");

    let scenario = home.root.join("quickstart.yaml");
    let text = format!(
        "# Written by `lobster quickstart`; edit it and run `lobster run {}`.\nname: quickstart\ntarget: http://{addr}\nduration: {}ms\nload:\n  users: 20\n  ramp: 2s\nthink: 1ms\nrequests:\n  - name: home\n    path: /\n  - name: item\n    path: /item/42\n    weight: 2\nsla:\n  - metric: p99\n    max: 500ms\n  - metric: error_rate\n    max: 1%\n",
        home.root.join("quickstart.yaml").display(),
        args.duration.as_millis()
    );
    std::fs::write(&scenario, text)
        .with_context(|| format!("cannot write {}", scenario.display()))
        .map_err(Failure::trouble)?;
    let json = args
        .json
        .unwrap_or_else(|| home.root.join("quickstart-report.json"));
    println!("2/3 scenario written to {}", scenario.display());
    println!("3/3 running it on {} local slave(s)\n", args.slaves);
    let code = run(
        RunArgs {
            scenario,
            local_slaves: args.slaves,
            json: Some(json.clone()),
            duration: None,
            target: None,
            min_slaves: None,
            quorum_timeout: Duration::from_secs(60),
            master: None,
            api_token: None,
            quiet: false,
        },
        home,
        shutdown,
    )
    .await?;
    stop_target.cancel();
    println!(
        "the target counted {} requests; JSON report: {}",
        counter.get(),
        json.display()
    );
    Ok(code)
}
