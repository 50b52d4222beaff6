//! The bytes under a [`super::Connection`]: a non-blocking TCP socket registered with tokio's
//! reactor, plain or with TLS.
//!
//! TLS is rustls' `ClientConnection` driven by hand over the same socket (`read_tls`,
//! `process_new_packets`, `write_tls`), so an `https://` request costs the same wake-ups as a
//! plain one and the HTTP layer above sees only plaintext. On an idle connection,
//! [`Transport::is_stale`] takes in records that are not data (a late TLS 1.3 session ticket)
//! without calling the connection stale; a `close_notify`, an end of stream, or application
//! data nobody asked for make it stale.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::super::tls::TlsClient;

/// A connection that could not be opened: where it failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// TCP: refused, unreachable, reset.
    #[error("{0}")]
    Connect(io::Error),
    /// The TLS handshake failed (a certificate not trusted, no common protocol, a reset).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
}

/// How long opening a connection took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// TCP connect.
    pub connecting: Duration,
    /// TLS handshake; `None` for plain HTTP.
    pub tls_handshaking: Option<Duration>,
}

pub(super) struct Transport {
    fd: AsyncFd<TcpStream>,
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Transport {
    /// Connects to `addr` (no delay) and, with `tls`, completes the handshake.
    pub async fn open(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<(Self, Opened), OpenError> {
        let begin = Instant::now();
        let fd = tcp(addr).await.map_err(OpenError::Connect)?;
        let connecting = begin.elapsed();
        let Some(client) = tls else {
            let opened = Opened {
                connecting,
                tls_handshaking: None,
            };
            return Ok((Transport { fd, tls: None }, opened));
        };
        let conn = rustls::ClientConnection::new(client.config.clone(), client.server_name.clone())
            .map_err(|e| OpenError::Handshake(io::Error::other(e)))?;
        let mut t = Transport {
            fd,
            tls: Some(Box::new(conn)),
        };
        let shake = Instant::now();
        t.handshake().await.map_err(OpenError::Handshake)?;
        let opened = Opened {
            connecting,
            tls_handshaking: Some(shake.elapsed()),
        };
        Ok((t, opened))
    }

    async fn handshake(&mut self) -> io::Result<()> {
        let Transport { fd, tls } = self;
        let tls = tls.as_mut().expect("a TLS transport");
        while tls.is_handshaking() {
            if tls.wants_write() {
                flush_tls(fd, tls).await?;
            } else if tls.wants_read() {
                if read_tls(fd, tls).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection during the handshake",
                    ));
                }
                if let Err(e) = tls.process_new_packets() {
                    // Tell the server why (an alert), as far as the socket takes it.
                    let _ = flush_tls(fd, tls).await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            } else {
                break;
            }
        }
        flush_tls(fd, tls).await
    }

    /// Writes all of `data` (plaintext; encrypted here under TLS).
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Transport { fd, tls } = self;
        if let Some(tls) = tls {
            while !data.is_empty() {
                let n = tls.writer().write(data)?;
                data = &data[n..];
                flush_tls(fd, tls).await?;
            }
            return Ok(());
        }
        while !data.is_empty() {
            // Try first: a small request almost always fits the socket buffer at once.
            match fd.get_ref().write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut guard = fd.writable().await?;
                    guard.clear_ready();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads some plaintext into `buf`, waiting for it; `Ok(0)` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Transport { fd, tls } = self;
        let Some(tls) = tls else {
            return read_plain(fd, buf).await;
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed without `close_notify`, as many do after `Connection:
                // close`; for HTTP's framing that is an end of stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let n = read_tls(fd, tls).await?;
            let processed = tls.process_new_packets();
            if tls.wants_write() {
                flush_tls(fd, tls).await?;
            }
            processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if n == 0 {
                // End of stream: the reader now says how (close_notify or not).
                continue;
            }
        }
    }

    /// Whether the peer closed this idle connection or sent data nobody asked for (then it
    /// must not carry another request). Reads only when tokio saw the socket readable.
    pub fn is_stale(&mut self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let Transport { fd, tls } = self;
        let mut guard = match fd.poll_read_ready(&mut cx) {
            std::task::Poll::Pending => return false,
            std::task::Poll::Ready(Err(_)) => return true,
            std::task::Poll::Ready(Ok(guard)) => guard,
        };
        match tls {
            None => {
                let mut probe = [0u8; 1];
                match guard.try_io(|s| s.get_ref().read(&mut probe)) {
                    Err(_would_block) => false, // stale readiness; cleared by try_io
                    Ok(Err(e)) => e.kind() != io::ErrorKind::Interrupted,
                    Ok(Ok(_)) => true, // end of stream, or bytes before any request
                }
            }
            Some(tls) => match guard.try_io(|s| tls.read_tls(&mut s.get_ref())) {
                Err(_would_block) => false,
                Ok(Err(e)) => e.kind() != io::ErrorKind::Interrupted,
                Ok(Ok(0)) => true,
                // Records arrived: a session ticket is fine; a close or data are not.
                Ok(Ok(_)) => match tls.process_new_packets() {
                    Err(_) => true,
                    Ok(state) => state.peer_has_closed() || state.plaintext_bytes_to_read() > 0,
                },
            },
        }
    }
}

async fn tcp(addr: SocketAddr) -> io::Result<AsyncFd<TcpStream>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(true)?;
    // `with_interest` is deprecated because an arbitrary `AsRawFd` may hand out a descriptor
    // it does not own (tokio#8587). A `std::net::TcpStream` owns its descriptor for its whole
    // life, which is exactly what the unsafe `register_with_interest` requires; the workspace
    // forbids `unsafe`, so the safe deprecated entry point is used on purpose.
    #[allow(deprecated)]
    AsyncFd::with_interest(stream, Interest::READABLE | Interest::WRITABLE)
}

/// One plain read into `buf`, waiting for readiness (see the parent module on syscalls).
async fn read_plain(fd: &AsyncFd<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        let space = buf.len();
        match guard.try_io(|s| s.get_ref().read(buf)) {
            Ok(Ok(n)) => {
                if n > 0 && n < space {
                    // Drained: wait for the next epoll edge instead of an EAGAIN read.
                    guard.clear_ready_matching(tokio::io::Ready::READABLE);
                }
                return Ok(n);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

/// Reads TLS records from the socket into rustls, waiting for them; `Ok(0)` at end of stream.
async fn read_tls(
    fd: &AsyncFd<TcpStream>,
    tls: &mut rustls::ClientConnection,
) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|s| tls.read_tls(&mut s.get_ref())) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(r) => return r,
            Err(_would_block) => {}
        }
    }
}

/// Writes every TLS record rustls holds to the socket.
async fn flush_tls(fd: &AsyncFd<TcpStream>, tls: &mut rustls::ClientConnection) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(&mut fd.get_ref()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut guard = fd.writable().await?;
                if let Ok(r) = guard.try_io(|s| tls.write_tls(&mut s.get_ref())) {
                    match r {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
