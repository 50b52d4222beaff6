//! `lobster-slave`: parse flags, build the runtime, run the agent until a signal.

use std::process::ExitCode;

use clap::Parser;
use lobster_slave::config::{Cli, Command};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    lobster_slave::logging::init();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Some(Command::IdleWatch) => runtime.block_on(async {
            let imds = lobster_provision::imds::Imds::from_env();
            let settings = match lobster_slave::idle::IdleSettings::learn(&imds).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let cloud = ec2(settings.facts.region.clone()).await;
            let shutdown = CancellationToken::new();
            tokio::spawn(signals(shutdown.clone(), CancellationToken::new()));
            lobster_slave::idle::run(settings, imds, cloud, shutdown).await;
            ExitCode::SUCCESS
        }),
        Some(Command::Lifetime) => runtime.block_on(async {
            let shutdown = CancellationToken::new();
            tokio::spawn(signals(shutdown.clone(), CancellationToken::new()));
            let root = lobster_slave::boot::root();
            let imds = lobster_provision::imds::Imds::from_env();
            lobster_slave::lifetime::run(&root, imds, ec2, shutdown).await;
            ExitCode::SUCCESS
        }),
        Some(Command::Boot) => match runtime.block_on(lobster_slave::boot::boot()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Some(Command::Bench(args)) => {
            let scenario = match lobster_slave::bench::scenario_for(&args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let r = runtime.block_on(lobster_slave::bench::run(scenario));
            if args.json {
                println!("{}", serde_json::to_string(&r).expect("result serializes"));
            } else {
                println!(
                    "requests {} failures {} in {:.2}s: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                    r.requests, r.failures, r.seconds, r.rps, r.latency_ms.p50, r.latency_ms.p99
                );
            }
            ExitCode::SUCCESS
        }
        Some(Command::Simulate(args)) => {
            let config = match agent_config(cli.agent) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let summary = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone(), CancellationToken::new()));
                lobster_slave::simulate::run(config, args, shutdown).await
            });
            println!(
                "{}",
                serde_json::to_string(&summary).expect("summary serializes")
            );
            ExitCode::SUCCESS
        }
        None => {
            let config = match agent_config(cli.agent) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let forced = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let force = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone(), force.clone()));
                if let Some(parent) = std::env::var("LOBSTER_PARENT_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    tokio::spawn(exit_with_parent(parent, shutdown.clone()));
                }
                tokio::select! {
                    _ = lobster_slave::agent::Agent::new(config).run(shutdown) => false,
                    _ = force.cancelled() => true,
                }
            });
            if forced {
                eprintln!("second signal: exiting now");
                return ExitCode::from(130);
            }
            ExitCode::SUCCESS
        }
    }
}

/// The agent's flags resolved before any I/O; a bad one is said once, exit 2.
fn agent_config(
    flags: lobster_slave::config::AgentArgs,
) -> Result<lobster_slave::agent::AgentConfig, ExitCode> {
    flags.resolve().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The EC2 client this VM uses on itself (`AWS_ENDPOINT_URL_EC2` under the local cloud).
async fn ec2(region: Option<String>) -> std::sync::Arc<dyn lobster_provision::cloud::Cloud> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_EC2")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok();
    let cloud = lobster_provision::ec2::Ec2Cloud::connect(&lobster_provision::ec2::Ec2Config {
        region: Some(region.unwrap_or_else(|| "us-east-1".into())),
        endpoint_url: endpoint,
        ..Default::default()
    })
    .await;
    std::sync::Arc::new(cloud)
}

/// Slaves started by `lobster run --local-slaves` sit in their own process group (a Ctrl-C
/// is for the command, which stops them itself) and must not outlive it: when the parent is
/// gone (this process was re-parented), shut down as if signalled.
async fn exit_with_parent(parent: u32, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            eprintln!("the lobster process that started this slave is gone: shutting down");
            shutdown.cancel();
            return;
        }
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
async fn signals(shutdown: CancellationToken, force: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    force.cancel();
}
