//! `lobster quickstart`: the whole loop once, for a newcomer, with nothing set up: the local
//! cloud, a template image, a fleet of a few instances whose slaves register, the built-in
//! target, a short run with the live table and the report, and the fleet going idle and
//! stopping itself. Everything it started is stopped at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use lobster_provision::cloud::InstanceState;

use super::fleet::{Bars, Common};
use super::run::Plan;
use super::{ExitStatus, Failure};
use crate::daemon::MasterListen;
use crate::fleet::config::{CloudKind, Overrides};
use crate::fleet::up::{UpReport, UpRequest};
use crate::home::Home;
use crate::target::Target;

/// The fleet quickstart brings up.
const FLEET: &str = "quickstart";

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Instances in the fleet (one slave each; 1 to 50).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 50, ""))]
    pub instances: u32,
    /// How long the run lasts.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Minutes of idleness before the fleet stops itself (above 0, at most a week).
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::number(0.0, 10_080.0, true))]
    pub idle_minutes: f64,
    /// Write the JSON report here (default: LOBSTER_HOME/quickstart-report.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Leave the fleet and the background processes running at the end.
    #[arg(long)]
    pub keep: bool,
}

pub async fn quickstart(
    args: QuickstartArgs,
    home: &Home,
    shutdown: CancellationToken,
) -> Result<ExitStatus, Failure> {
    let common = Common {
        cloud: Some(CloudKind::Local),
        endpoint_url: None,
        region: None,
        fleet: Some(FLEET.into()),
        config: None,
    };
    let settings = super::fleet::settings(
        home,
        &common,
        Overrides {
            instance_type: Some("local.small".into()),
            idle_minutes: Some(args.idle_minutes),
            slaves_per_core: Some(1),
            ..Default::default()
        },
    )?;
    let req = UpRequest {
        settings,
        count: args.instances,
        explicit_template: false,
        dry_run: false,
        wait: true,
        timeout: Duration::from_secs(120),
        listen: MasterListen {
            grpc: "127.0.0.1:0".into(),
            api: "127.0.0.1:0".into(),
            advertise: None,
        },
        api_token: None,
    };
    Home::ensure(&home.root).map_err(Failure::trouble)?;
    println!(
        "1/5 fleet: {} instance(s) on the local cloud (started in the background)",
        args.instances
    );
    let bars = Bars::new(u64::from(args.instances), None);
    let report = crate::fleet::up::up(&req, home, &bars, &shutdown).await;
    bars.finish();
    if let UpReport::Up {
        registered,
        elapsed,
        image,
        ..
    } = report.map_err(super::fleet::up_failure)?
    {
        println!(
            "    {registered} slave(s) registered in {:.1} s (template {image})",
            elapsed.as_secs_f64()
        );
    }

    let target = Target::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .map_err(Failure::trouble)?;
    let addr = target.local_addr().map_err(Failure::trouble)?;
    let counter = target.counter();
    let stop_target = CancellationToken::new();
    tokio::spawn(target.run(stop_target.clone()));
    println!("2/5 built-in target listening on http://{addr}");

    let scenario = home.quickstart_scenario();
    let text = format!(
        "# Written by `lobster quickstart`. Its target is the built-in one on port {port}: start it\n# again with `lobster target --listen {addr}`, then `lobster run {file} --local-slaves 2`.\nname: quickstart\ntarget: http://{addr}\nduration: {}ms\nload:\n  users: 20\n  ramp: 2s\nthink: 1ms\nrequests:\n  - name: home\n    path: /\n  - name: item\n    path: /item/42\n    weight: 2\nsla:\n  - metric: p99\n    max: 500ms\n    window: {window}s\n  - metric: error_rate\n    max: 1%\n    window: {window}s\n",
        args.duration.as_millis(),
        port = addr.port(),
        file = scenario.display(),
        // A window no longer than the run, or the rules could never be judged.
        window = args.duration.as_secs().clamp(1, 10)
    );
    std::fs::write(&scenario, text)
        .with_context(|| format!("cannot write {}", scenario.display()))
        .map_err(Failure::trouble)?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| home.quickstart_report());
    println!("3/5 running {} on the fleet\n", scenario.display());
    let (document, resolved) =
        lobster_fleet::scenario::Document::read(&scenario).map_err(Failure::bad_input)?;
    let plan = Plan {
        warnings: Vec::new(),
        scenario: resolved,
        document,
        local_slaves: 0,
        exports: super::exports::Exports {
            json: Some(json.clone()),
            ..Default::default()
        },
        min_slaves: Some(args.instances),
        quorum_timeout: Duration::from_secs(60),
        master: None,
        api_token: None,
        quiet: false,
        detach: false,
        on_finish: None,
        trace_out: None,
    };
    let code = super::run::execute(plan, home, shutdown.clone()).await?;
    stop_target.cancel();
    println!(
        "4/5 the target counted {} requests; JSON report: {}",
        counter.get(),
        json.display()
    );

    if args.keep {
        println!(
            "5/5 kept running: see `lobster fleet status --fleet {FLEET}`; `lobster stop` ends everything"
        );
        next_steps(&scenario, addr);
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
        if let Some(c) = crate::fleet::connect_existing(&req.settings, home).await
            && let Ok(list) = crate::fleet::apply::observe(c.cloud.as_ref(), FLEET).await
            && !list.is_empty()
            && list.iter().all(|i| i.state == InstanceState::Stopped)
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
            "warning: the fleet did not stop by itself in time; see `lobster fleet status --fleet {FLEET}`"
        );
    }
    super::stop::stop(home).await?;
    next_steps(&scenario, addr);
    Ok(code)
}

/// What to try next, with commands that work as printed.
fn next_steps(scenario: &std::path::Path, addr: std::net::SocketAddr) {
    println!(
        "\nnext:\n  lobster target --listen {addr} &          # the same built-in target again\n  lobster run {} --local-slaves 2   # the run again, no fleet needed\n  lobster fleet up --count 3                 # a fleet of your own (lobster fleet down stops it)\n  docs/scenario.md                            # write your own scenario",
        scenario.display()
    );
}
