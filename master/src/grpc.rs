//! The gRPC control plane (`lobster.v1.Control`): forwards joins, sessions and drains to the
//! control loop. A session's first message must be `Attach` within a few seconds; inbound
//! messages go to the loop through its bounded channel, so a flooding slave only slows itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use lobster_fleet::proto::{
    DrainReply, DrainRequest, JoinReply, JoinRequest, MasterMessage, SlaveMessage,
    control_server::{Control, ControlServer},
    slave_message::Kind as Up,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info_span};

use crate::control::{Command, ControlHandle, Pulse, Queued, SESSION_QUEUE};

/// Largest gRPC message accepted from a slave.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Messages a session may send per second before it is cut off as a flood.
const MAX_MESSAGES_PER_SECOND: u32 = 1000;
/// Time a new session has to send `Attach`.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 flow-control window of a slave's session on the master (bytes): the most a slave
/// has in flight that the master has not read, about a dozen intervals of 10 endpoints.
const STREAM_WINDOW: u32 = 64 * 1024;
/// Most HTTP/2 streams open at once on one connection to the master's gRPC port. A slave
/// holds one session and, now and then, a unary call; the simulated slaves of
/// `scripts/bench/control-plane` share a connection a hundred at a time.
const MAX_STREAMS: u32 = 256;
/// HTTP/2 flow-control window of one connection (bytes): every stream's window at once, so
/// that what the master has not read on one session never stalls another on the same
/// connection. With a connection window of two streams' (128 KiB), a hundred sessions sharing
/// a connection stalled together as soon as a few dozen of them waited for a control loop
/// that had fallen behind; the rest were then silent to the master, which cut off whole
/// connections of live slaves by lease (9,437 of 10,000 in one bench run). What a connection
/// buffers stays bounded by its streams' windows: at most this, and one stream's for a
/// slave's own connection.
const CONNECTION_WINDOW: u32 = MAX_STREAMS * STREAM_WINDOW;

/// The gRPC server's transport: HTTP/2 windows and streams as above, keepalive pings every
/// 10 s (TLS is added by the caller).
pub(crate) fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        // What one slave may send ahead of the master's reading: a few intervals, not
        // HTTP/2's server default of 1 MiB, which at 10,000 slaves let a master that fell
        // behind buffer 12 GiB (a larger message still arrives, window by window).
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_concurrent_streams(Some(MAX_STREAMS))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

pub struct ControlService {
    control: ControlHandle,
}

impl ControlService {
    pub fn server(control: ControlHandle) -> ControlServer<Self> {
        ControlServer::new(ControlService { control })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

fn gone() -> Status {
    Status::unavailable("the master is shutting down")
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let req = req.into_inner();
        self.control
            .ask(|tx| Command::Join(req, tx))
            .await
            .ok_or_else(gone)?
            .map(Response::new)
    }

    type SessionStream =
        Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send + 'static>>;

    async fn session(
        &self,
        req: Request<Streaming<SlaveMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(ATTACH_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Attach within 10 s"))??;
        let Some(SlaveMessage {
            kind: Some(Up::Attach(attach)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first session message must be Attach",
            ));
        };
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let pulse = Arc::new(Pulse::new(std::time::Instant::now()));
        let session = self
            .control
            .ask(|reply| Command::Attach {
                attach: attach.clone(),
                tx,
                pulse: pulse.clone(),
                reply,
            })
            .await
            .ok_or_else(gone)??;
        let control = self.control.clone();
        let span = info_span!("session", session, uid = %attach.slave_uid);
        tokio::spawn(
            async move {
                let mut window = tokio::time::Instant::now();
                let mut count = 0u32;
                loop {
                    match inbound.message().await {
                        Ok(Some(SlaveMessage { kind: Some(kind) })) => {
                            // A slave sends a few messages a second (more while it resends its
                            // spool); one that floods is cut off, not the master.
                            count += 1;
                            if window.elapsed() >= Duration::from_secs(1) {
                                window = tokio::time::Instant::now();
                                count = 1;
                            }
                            if count > MAX_MESSAGES_PER_SECOND {
                                tracing::warn!("slave flooding the session: cut off");
                                break;
                            }
                            // The lease counts only the time the master listened (`Pulse`).
                            pulse.heard(std::time::Instant::now());
                            if !control.tell(Command::FromSlave(session, kind)).await {
                                break;
                            }
                            pulse.handed_over(std::time::Instant::now());
                        }
                        Ok(Some(SlaveMessage { kind: None })) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                control.tell(Command::Detached(session)).await;
            }
            .instrument(span),
        );
        // Each message is made as it leaves its queue: the run's clocks it carries are those
        // of now, not of when it was queued (`control/queued.rs`).
        let outbound = ReceiverStream::new(rx).map(|m| m.map(Queued::into_message));
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        let req = req.into_inner();
        self.control
            .ask(|tx| Command::Drain(req, tx))
            .await
            .ok_or_else(gone)?
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests;
