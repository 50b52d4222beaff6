//! `lobster target`: the built-in HTTP target in the foreground.

use super::ExitStatus;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::target::Target;

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker threads (default: one per core; 1 to 1024).
    #[arg(long, allow_negative_numbers = true, value_parser = lobster_fleet::flags::whole(1u64, 1024, ""))]
    pub threads: Option<u64>,
    /// Write the bound address (`host:port`) to this file once listening.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
}

pub async fn target(args: TargetArgs, shutdown: CancellationToken) -> Result<ExitStatus, Failure> {
    let t = Target::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(Failure::trouble)?;
    let addr = t.local_addr().map_err(Failure::trouble)?;
    if let Some(f) = &args.addr_file {
        std::fs::write(f, addr.to_string())
            .with_context(|| format!("cannot write {}", f.display()))
            .map_err(Failure::trouble)?;
    }
    println!("lobster target listening on http://{addr}");
    let _ = std::io::stdout().flush();
    let counter = t.counter();
    t.run(shutdown).await;
    eprintln!("lobster target stopped after {} requests", counter.get());
    Ok(ExitStatus::Success)
}
