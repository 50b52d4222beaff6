//! The master process: gRPC for slaves, the HTTP API, the control loop and the run store,
//! started together and stopped in order (the control loop first drains the active run while
//! both servers still run, then the servers stop).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::control::{ControlHandle, Controller, Settings};
use crate::grpc::ControlService;
use crate::home::{Home, MasterDir, write_private};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// How to run a master.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Holds the run store, the join tokens, the TLS identity, the lock and `master.json`.
    pub state_dir: MasterDir,
    pub grpc_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// gRPC URL slaves are told to dial (default: from the bound address).
    pub advertise: Option<String>,
    pub heartbeat: Duration,
    pub lease: Duration,
    pub max_slaves: usize,
    /// Required on the API when set (mandatory off loopback).
    pub api_token: Option<String>,
    /// Serve gRPC without TLS (local debugging only; loudly logged).
    pub insecure_plaintext: bool,
    /// Started by `lobster run` for one run, on random ports: a run that an earlier master
    /// left unfinished cannot go on here (its slaves cannot find this master), so it is
    /// closed as aborted, with the reason, before anything is served.
    pub ephemeral: bool,
}

/// Where a running master can be reached; written to `master.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasterInfo {
    pub pid: u32,
    pub api: String,
    pub grpc: String,
    pub version: String,
    /// SHA-256 fingerprint slaves pin (empty when the master runs without TLS).
    #[serde(default)]
    pub fingerprint: String,
}

/// The addresses a master listened on (`master/listen.json`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct KeptAddresses {
    grpc: SocketAddr,
    api: SocketAddr,
}

/// Binds `requested`; when it asks for any port (0) and the master listened on the same
/// interface before, binds that address again (a clear error if something else has it).
async fn bind(
    requested: SocketAddr,
    kept: Option<SocketAddr>,
    what: &'static str,
) -> Result<TcpListener, StartError> {
    if requested.port() == 0
        && let Some(k) = kept.filter(|k| k.ip() == requested.ip())
    {
        return TcpListener::bind(k)
            .await
            .map_err(|source| StartError::Taken {
                what,
                addr: k,
                source,
            });
    }
    TcpListener::bind(requested)
        .await
        .map_err(|source| StartError::Bind {
            addr: requested,
            source,
        })
}

/// The master could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another master holds this state directory.
    #[error("another master is running on {0} (see master.json there)")]
    Locked(String),
    /// The state directory is unusable.
    #[error("cannot use the state directory {path}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A listen address is taken or not ours.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The address this master used before is taken by another process.
    #[error(
        "the {what} address {addr} this master listened on before (kept so that its slaves and runs find it again) is taken by another process; stop that process, or move the master with --{what}-listen (fleet slaves follow the instances' lobster:master tag)"
    )]
    Taken {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The API would be reachable off this host without a token.
    #[error(
        "the API listens on {0}, off loopback: set an API token (--api-token or LOBSTER_API_TOKEN)"
    )]
    ApiWithoutToken(SocketAddr),
    /// The run store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An unfinished run could not be recovered.
    #[error("cannot recover the unfinished run")]
    Recover(#[source] anyhow::Error),
    /// The TLS identity could not be read or made.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A bound, ready master; [`Master::run`] serves it.
pub struct Master {
    config: MasterConfig,
    grpc: TcpListener,
    api: TcpListener,
    controller: Controller,
    control: ControlHandle,
    metrics: Arc<Metrics>,
    info: MasterInfo,
    join_token: String,
    tls: Option<crate::tls::MasterTls>,
    /// Held for the master's life: one master per state directory.
    _lock: File,
}

fn state_err(dir: &std::path::Path) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |source| StartError::StateDir {
        path: dir.display().to_string(),
        source,
    }
}

/// The join token of the default fleet (local slaves), created on first use.
pub fn join_token(dir: &MasterDir) -> std::io::Result<String> {
    crate::tokens::fleet_token(dir, crate::tokens::DEFAULT_FLEET)
}

impl Master {
    /// Takes the state directory, opens the store (recovering an unfinished run) and binds
    /// both listeners. Nothing is served until [`Master::run`].
    pub async fn bind(config: MasterConfig) -> Result<Self, StartError> {
        if !config.api_listen.ip().is_loopback() && config.api_token.is_none() {
            return Err(StartError::ApiWithoutToken(config.api_listen));
        }
        let dir = &config.state_dir;
        Home::ensure(dir.path()).map_err(state_err(dir.path()))?;
        let lock = File::create(dir.lock()).map_err(state_err(dir.path()))?;
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(dir.path().display().to_string()));
        }
        let join_token = join_token(dir).map_err(state_err(dir.path()))?;
        let store = Store::open(&dir.store())?;
        let metrics = Arc::new(Metrics::default());
        let settings = Settings {
            state_dir: dir.clone(),
            heartbeat: config.heartbeat,
            lease: config.lease,
            max_slaves: config.max_slaves,
        };
        let (mut controller, control) = Controller::new(settings, store, metrics.clone());
        controller
            .recover(config.ephemeral)
            .map_err(StartError::Recover)?;
        // A master restarted on the same home listens where the last one did (an ephemeral
        // one, for one `lobster run`, takes fresh ports).
        let kept: Option<KeptAddresses> = if config.ephemeral {
            None
        } else {
            std::fs::read_to_string(dir.kept_addresses())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        };
        let grpc = bind(config.grpc_listen, kept.as_ref().map(|k| k.grpc), "grpc").await?;
        let api = bind(config.api_listen, kept.as_ref().map(|k| k.api), "api").await?;
        let grpc_addr = grpc.local_addr().map_err(state_err(dir.path()))?;
        let api_addr = api.local_addr().map_err(state_err(dir.path()))?;
        if !config.ephemeral {
            let now = KeptAddresses {
                grpc: grpc_addr,
                api: api_addr,
            };
            write_private(
                &dir.kept_addresses(),
                &serde_json::to_string_pretty(&now).expect("json"),
            )
            .map_err(state_err(dir.path()))?;
        }
        let tls = if config.insecure_plaintext {
            tracing::warn!(
                "INSECURE: gRPC without TLS (--insecure-plaintext); join tokens cross the network in clear text"
            );
            None
        } else {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            if let Some(h) = config.advertise.as_deref().and_then(url_host) {
                names.push(h);
            }
            Some(crate::tls::load_or_create(dir, &names)?)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let info = MasterInfo {
            pid: std::process::id(),
            api: format!("http://{api_addr}"),
            grpc: config
                .advertise
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{}", advertised(grpc_addr))),
            version: lobster_fleet::VERSION.to_string(),
            fingerprint: tls
                .as_ref()
                .map(|t| t.fingerprint.clone())
                .unwrap_or_default(),
        };
        Ok(Master {
            config,
            grpc,
            api,
            controller,
            control,
            metrics,
            info,
            join_token,
            tls,
            _lock: lock,
        })
    }

    pub fn info(&self) -> &MasterInfo {
        &self.info
    }

    /// The fleet's join token (give it to slaves; never log it).
    pub fn join_token(&self) -> &str {
        &self.join_token
    }

    /// Serves until `shutdown`; then stops the active run (bounded) and the servers.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let discovery = self.config.state_dir.discovery();
        write_private(&discovery, &serde_json::to_string_pretty(&self.info)?)?;
        info!(api = %self.info.api, grpc = %self.info.grpc, "master ready");
        let servers = CancellationToken::new();

        let grpc_stop = servers.clone();
        let mut builder = crate::grpc::transport();
        if let Some(t) = &self.tls {
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem),
            ))?;
        }
        // `tcp_nodelay` on the builder applies only to listeners tonic makes itself: with our
        // own, Nagle's algorithm held a response's second write until the slave's delayed
        // ACK, up to 40 ms (a join took 25 ms on average once the writes were not coalesced).
        let incoming = TcpListenerStream::new(self.grpc).map(|conn| {
            let conn = conn?;
            conn.set_nodelay(true)?;
            Ok::<_, std::io::Error>(conn)
        });
        let grpc = builder
            .add_service(ControlService::server(self.control.clone()))
            .serve_with_incoming_shutdown(incoming, grpc_stop.cancelled_owned());
        let grpc = tokio::spawn(grpc);

        let state = ApiState {
            control: self.control.clone(),
            metrics: self.metrics.clone(),
            grpc_url: self.info.grpc.clone(),
            fingerprint: self.info.fingerprint.clone(),
            token: self.config.api_token.clone(),
        };
        let api_stop = servers.clone();
        // As for gRPC: axum leaves Nagle's algorithm on for a listener it is given.
        let api = self.api.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let api =
            axum::serve(api, api::router(state)).with_graceful_shutdown(api_stop.cancelled_owned());
        let api = tokio::spawn(async move { api.await });

        // A task of the runtime like the sessions that feed it, not the future `block_on`
        // drives: on the thread that drives it, every command a session sent crossed threads
        // (a futex wake and a context switch, per message; with the master on one core that
        // was a tenth of its CPU at 2,000 slaves).
        let controller = self
            .controller
            .run(shutdown, || match crate::cli::first_signal() {
                Some(sig) => format!("the master received {sig}"),
                None => "the master shut down".to_string(),
            });
        if let Err(e) = tokio::spawn(controller).await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        servers.cancel();
        if tokio::time::timeout(Duration::from_secs(5), grpc)
            .await
            .is_err()
        {
            warn!("gRPC server did not stop within 5 s");
        }
        if tokio::time::timeout(Duration::from_secs(5), api)
            .await
            .is_err()
        {
            warn!("API server did not stop within 5 s");
        }
        let _ = std::fs::remove_file(&discovery);
        info!("master stopped");
        Ok(())
    }
}

/// The host of an `http(s)://host:port` URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The address to tell slaves: a wildcard bind is reached through loopback locally.
fn advertised(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Reads `master.json` from a state directory.
pub fn discover(state_dir: &MasterDir) -> Option<MasterInfo> {
    let text = std::fs::read_to_string(state_dir.discovery()).ok()?;
    serde_json::from_str(&text).ok()
}
