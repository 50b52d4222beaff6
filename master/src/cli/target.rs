//! `lobster target`: the built-in HTTP target in the foreground, plain or over TLS.

use super::ExitStatus;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::target::{PrivateCa, Target};

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
    /// Serve HTTPS: a private CA is made at start and signs the target's certificate (for
    /// localhost, 127.0.0.1, ::1 and the listen address); its certificate is written to
    /// --ca-file for scenarios to trust with `tls: {ca_file: ...}`.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: where to write the CA's certificate (PEM).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "lobster-target-ca.pem",
        requires = "tls"
    )]
    pub ca_file: PathBuf,
}

pub async fn target(args: TargetArgs, shutdown: CancellationToken) -> Result<ExitStatus, Failure> {
    let mut t = Target::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(Failure::trouble)?;
    let addr = t.local_addr().map_err(Failure::trouble)?;
    let scheme = if args.tls {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if !addr.ip().is_unspecified() && !names.contains(&addr.ip().to_string()) {
            names.push(addr.ip().to_string());
        }
        let ca = PrivateCa::new(&names).map_err(Failure::trouble)?;
        std::fs::write(&args.ca_file, &ca.ca_pem)
            .with_context(|| format!("cannot write {}", args.ca_file.display()))
            .map_err(Failure::trouble)?;
        t = t.with_tls(ca.acceptor().map_err(Failure::trouble)?);
        eprintln!(
            "the target's CA certificate is in {} (trust it with `tls: {{ca_file: {}}}`)",
            args.ca_file.display(),
            args.ca_file.display()
        );
        "https"
    } else {
        "http"
    };
    if let Some(f) = &args.addr_file {
        std::fs::write(f, addr.to_string())
            .with_context(|| format!("cannot write {}", f.display()))
            .map_err(Failure::trouble)?;
    }
    println!("lobster target listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
    let counter = t.counter();
    t.run(shutdown).await;
    eprintln!("lobster target stopped after {} requests", counter.get());
    Ok(ExitStatus::Success)
}
