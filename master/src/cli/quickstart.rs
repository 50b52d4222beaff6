//! `lobster quickstart`: the whole loop once, for a newcomer, with nothing set up: the local
//! cloud, a template image, a fleet of a few instances whose slaves register, the built-in
//! target, a short run with the live table and the report, and the fleet going idle and
//! stopping itself. Everything it started is stopped at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::fleet::{Common, UpArgs};
use super::run::RunArgs;
use crate::home::Home;
use crate::target::Target;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Instances in the fleet (one slave each).
    #[arg(long, default_value_t = 3)]
    pub instances: u32,
    /// How long the run lasts.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Minutes of idleness before the fleet stops itself.
    #[arg(long, default_value_t = 0.25)]
    pub idle_minutes: f64,
    /// Write the JSON report here (default: LOBSTER_HOME/quickstart-report.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Leave the fleet and the background processes running at the end.
    #[arg(long)]
    pub keep: bool,
}

fn common() -> Common {
    Common {
        cloud: None,
        endpoint_url: None,
        region: None,
        fleet: Some("quickstart".into()),
        config: None,
    }
}

pub async fn quickstart(
    args: QuickstartArgs,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<u8, Failure> {
    if args.instances == 0 || args.instances > 50 {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--instances must be between 1 and 50"
        )));
    }
    Home::ensure(&home.root).map_err(Failure::trouble)?;
    println!(
        "1/5 fleet: {} instance(s) on the local cloud (started in the background)",
        args.instances
    );
    super::fleet::fleet(
        super::fleet::FleetCommand::Up(UpArgs {
            common: common(),
            count: i64::from(args.instances),
            instance_type: Some("local.small".into()),
            template_tag: None,
            idle_minutes: Some(args.idle_minutes),
            slaves_per_core: Some(1),
            max_lifetime: None,
            dry_run: false,
            no_wait: false,
            timeout: Some(Duration::from_secs(120)),
        }),
        home,
        shutdown.clone(),
    )
    .await?;

    let target = Target::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .map_err(Failure::trouble)?;
    let addr = target.local_addr().map_err(Failure::trouble)?;
    let counter = target.counter();
    let stop_target = CancellationToken::new();
    tokio::spawn(target.run(stop_target.clone()));
    println!("2/5 built-in target listening on http://{addr}");

    let scenario = home.root.join("quickstart.yaml");
    let text = format!(
        "# Written by `lobster quickstart`; edit it and run `lobster run {}`.\nname: quickstart\ntarget: http://{addr}\nduration: {}ms\nload:\n  users: 20\n  ramp: 2s\nthink: 1ms\nrequests:\n  - name: home\n    path: /\n  - name: item\n    path: /item/42\n    weight: 2\nsla:\n  - metric: p99\n    max: 500ms\n    window: {window}s\n  - metric: error_rate\n    max: 1%\n    window: {window}s\n",
        scenario.display(),
        args.duration.as_millis(),
        // A window no longer than the run, or the rules could never be judged.
        window = args.duration.as_secs().clamp(1, 10)
    );
    std::fs::write(&scenario, text)
        .with_context(|| format!("cannot write {}", scenario.display()))
        .map_err(Failure::trouble)?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| home.root.join("quickstart-report.json"));
    println!("3/5 running {} on the fleet\n", scenario.display());
    let code = super::run::run(
        RunArgs {
            scenario,
            local_slaves: 0,
            json: Some(json.clone()),
            duration: None,
            target: None,
            min_slaves: Some(args.instances),
            quorum_timeout: Duration::from_secs(60),
            master: None,
            api_token: None,
            quiet: false,
        },
        home,
        shutdown.clone(),
    )
    .await?;
    stop_target.cancel();
    println!(
        "4/5 the target counted {} requests; JSON report: {}",
        counter.get(),
        json.display()
    );

    if args.keep {
        println!(
            "5/5 kept running: see `lobster fleet status --fleet quickstart`; `lobster stop` ends everything"
        );
        return Ok(code);
    }
    println!(
        "5/5 waiting for the idle fleet to stop itself ({} min of idleness)…",
        args.idle_minutes
    );
    let deadline = Instant::now()
        + Duration::from_secs_f64(args.idle_minutes * 60.0)
        + Duration::from_secs(60);
    let mut stopped = false;
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        let s = crate::fleet::config::resolve(Default::default(), Default::default())
            .expect("defaults are valid");
        let s = crate::fleet::config::FleetSettings {
            fleet: "quickstart".into(),
            ..s
        };
        if let Ok(c) = crate::fleet::connect(&s, home).await
            && let Ok(list) = crate::fleet::apply::observe(c.cloud.as_ref(), "quickstart").await
            && !list.is_empty()
            && list
                .iter()
                .all(|i| i.state == lobster_provision::cloud::InstanceState::Stopped)
        {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if stopped {
        println!(
            "    every instance stopped itself (lobster:stop-reason=idle); nobody pays for an idle fleet"
        );
    } else {
        eprintln!(
            "warning: the fleet did not stop by itself in time; see `lobster fleet status --fleet quickstart`"
        );
    }
    super::stop::stop(home).await?;
    Ok(code)
}
