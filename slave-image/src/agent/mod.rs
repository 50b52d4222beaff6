//! The slave agent: joins the master, holds one session, runs the shares it is given, and
//! survives the master going away.
//!
//! Lifecycle: connect → `Join` (token) → `Session` (first message `Attach`) → heartbeats,
//! statistics and events up; work and acks down. When the session breaks the agent reconnects
//! with capped exponential backoff and jitter; the run in progress goes on and its intervals
//! wait in the [`Spool`]. If the master stays silent longer than its lease, the agent pauses
//! its load (dead-man switch) until the master is back and says what to do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lobster_fleet::proto::{
    self, EventKind, MasterMessage, SlaveMessage, SlaveState, control_client::ControlClient,
    master_message::Kind as Down, slave_message::Kind as Up,
};
use lobster_fleet::scenario::Scenario;
use lobster_fleet::stripe::Stripe;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::backoff::Backoff;
use crate::engine::{Gauges, LoadControl, Output, Run, Striping};
use crate::spool::Spool;

mod main_loop;
mod state;

use state::State;

/// Who this slave is, as told to the master in `Join`.
#[derive(Clone, Debug)]
pub struct Identity {
    pub instance_id: String,
    pub instance_type: String,
    pub region: String,
    /// The host's `lobster:expires-at` (RFC 3339), empty when unknown.
    pub expires_at: String,
    pub host: String,
    /// Cores of the host.
    pub cores: u32,
    /// 1-based index of this slave on its host.
    pub slave_index: u32,
    pub slaves_on_host: u32,
    pub boot_id: String,
    /// Random per process; keys this slave's statistics at the master.
    pub slave_uid: String,
}

impl Identity {
    /// Thousandths of a core this slave may use: the host's cores shared by its slaves.
    pub fn millicores(&self) -> u32 {
        (self.cores.max(1) * 1000 / self.slaves_on_host.max(1)).max(1)
    }
}

/// Everything the agent needs, resolved before any I/O.
#[derive(Clone)]
pub struct AgentConfig {
    /// gRPC endpoint of the master, e.g. `http://127.0.0.1:7401`.
    pub master: String,
    /// The fleet's join token (secret: never logged).
    pub join_token: String,
    /// SHA-256 fingerprint of the master's certificate (empty for a plaintext master).
    pub fingerprint: String,
    pub identity: Identity,
    /// How to find a master that moved (IMDS tags on a VM).
    pub discovery: crate::config::MasterDiscovery,
    /// First reconnect delay ceiling.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_cap: Duration,
    /// On shutdown, how long to wait for the last interval to be acknowledged.
    pub drain_deadline: Duration,
    /// Where the traces of runs are kept (see `crate::trace`).
    pub trace_dir: std::path::PathBuf,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("master", &self.master)
            .field("join_token", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .field("identity", &self.identity)
            .finish()
    }
}

/// Log target of the lines that mean "this slave carries load" (see the idle watcher).
pub const ACTIVITY: &str = "lobster::activity";

/// Largest gRPC message the agent accepts (an assignment carries the scenario and data items).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Most spooled intervals sent at once (the rest follow on the next heartbeats), so a slave
/// back after a long cut does not look like a flood.
const FLUSH_BATCH: usize = 100;
/// Unacked intervals are sent again after this long (the master acknowledges within half).
const RESEND_AFTER: Duration = lobster_fleet::RESEND_AFTER;

/// Where the master is: its gRPC URL and the fingerprint to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MasterAddress {
    pub(crate) url: String,
    pub(crate) fingerprint: String,
}

/// The master the instance's tags name now (`None` when IMDS or the tags are not there, or
/// they name an address that is not a gRPC URL with a fingerprint to pin).
pub(crate) async fn discover_master() -> Option<MasterAddress> {
    let imds = lobster_provision::imds::Imds::from_env();
    let url = tag(&imds, lobster_fleet::tags::MASTER).await?;
    let fingerprint = tag(&imds, lobster_fleet::tags::MASTER_FINGERPRINT)
        .await
        .unwrap_or_default();
    let https = url.starts_with("https://");
    let ok = (https && lobster_fleet::pin::is_fingerprint(&fingerprint))
        || (url.starts_with("http://") && fingerprint.is_empty());
    ok.then_some(MasterAddress { url, fingerprint })
}

async fn tag(imds: &lobster_provision::imds::Imds, key: &str) -> Option<String> {
    imds.get(&format!("/latest/meta-data/tags/instance/{key}"))
        .await
        .ok()
        .flatten()
        .map(|v| v.trim().to_string())
}

/// A live session with the master.
pub(crate) struct Session {
    tx: mpsc::Sender<SlaveMessage>,
    inbound: tonic::Streaming<MasterMessage>,
    heartbeat: Duration,
    lease: Duration,
    slave_id: String,
    /// The master this session is with.
    master: MasterAddress,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The master could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The master refused the join (wrong token, too many slaves, ...).
    #[error("the master refused the join: {0}")]
    Refused(String),
    /// The call failed on the way.
    #[error("session call failed: {0}")]
    Call(String),
}

pub struct Agent {
    config: AgentConfig,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Agent { config }
    }

    /// Runs until `shutdown`, then stops the load, waits (bounded) for the last interval to be
    /// acknowledged, and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let cfg = Arc::new(self.config);
        let id = &cfg.identity;
        let span = info_span!("slave", instance = %id.instance_id, index = id.slave_index);
        main_loop::Loop::new(cfg.clone())
            .run(shutdown)
            .instrument(span)
            .await;
    }
}

/// Connects, joins and opens the session stream (with `Attach` as its first message).
async fn open_session(
    cfg: Arc<AgentConfig>,
    master: MasterAddress,
    run_id: Option<Arc<str>>,
) -> Result<Session, SessionError> {
    let channel: Channel = crate::tls::connect(&master.url, &master.fingerprint)
        .await
        .map_err(|e| SessionError::Connect(crate::tls::chain(&e)))?;
    let mut client = ControlClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let id = &cfg.identity;
    let reply = client
        .join(proto::JoinRequest {
            join_token: cfg.join_token.clone(),
            instance_id: id.instance_id.clone(),
            host: id.host.clone(),
            cores: id.cores,
            slave_index: id.slave_index,
            version: lobster_fleet::VERSION.to_string(),
            boot_id: id.boot_id.clone(),
            slave_uid: id.slave_uid.clone(),
            millicores: id.millicores(),
            instance_type: id.instance_type.clone(),
            region: id.region.clone(),
            slaves_on_host: id.slaves_on_host,
            expires_at: id.expires_at.clone(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::ResourceExhausted
            | tonic::Code::AlreadyExists
            | tonic::Code::InvalidArgument => SessionError::Refused(s.message().to_string()),
            _ => SessionError::Call(format!("{:?}: {}", s.code(), s.message())),
        })?
        .into_inner();
    let (tx, rx) = mpsc::channel::<SlaveMessage>(256);
    tx.try_send(SlaveMessage {
        kind: Some(Up::Attach(proto::Attach {
            slave_uid: id.slave_uid.clone(),
            session_secret: reply.session_secret.clone(),
            run_id: run_id.map(|r| r.to_string()).unwrap_or_default(),
        })),
    })
    .expect("fresh channel has room");
    let inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| SessionError::Call(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    Ok(Session {
        tx,
        inbound,
        heartbeat: Duration::from_millis(u64::from(reply.heartbeat_ms.clamp(100, 60_000))),
        lease: Duration::from_millis(u64::from(reply.lease_ms.clamp(500, 600_000))),
        slave_id: reply.slave_id,
        master,
    })
}
