//! A lean HTTP/1.1 keep-alive client connection, plain or over TLS: the engine's hot path.
//!
//! One connection per user (closed model) or per worker (open model); requests are written
//! from bytes prepared once per scenario request and responses are parsed with `httparse`
//! into a buffer owned by the connection, so a request allocates nothing. The body is
//! counted and discarded. Framing follows RFC 9112: `Content-Length`, `chunked`, or
//! read-until-close; 1xx interim responses are skipped; HEAD, 204 and 304 have no body.
//!
//! Why not hyper's client: it costs a task hand-off and a channel per request; this loop
//! does one write and (usually) one read per request, which is what the benchmark against
//! wrk rewards (see `scripts/bench/engine`).
//!
//! Syscalls: the socket sits in an `AsyncFd` ([`transport`]) so that readiness is ours to manage. After a
//! read that did not fill the buffer the socket is drained, so the readable flag is cleared
//! right away; the next response is then awaited from epoll instead of costing a read that
//! would only return `EAGAIN` (tokio's `TcpStream` pays that extra read on every request).
//! Only `READABLE` is cleared, never `READ_CLOSED`, so a peer's close is still seen.
//!
//! Idle keep-alive connections: servers close them (nginx after `keepalive_timeout`, Apache
//! and Node after 5 s). Before reusing a connection, [`Connection::is_stale`] looks at the
//! readiness tokio already holds (no syscall unless something arrived): a connection the peer
//! closed, or on which it sent something unasked (a `408`), is not reused. A close that races
//! with the request shows as a failure before any response byte
//! ([`Connection::received_nothing`]), which the caller may retry once on a fresh connection
//! (RFC 9112 §9.3.1).
//!
//! Heads: any valid response head up to [`MAX_HEAD`] bytes is read, whatever its number of
//! header lines (the first parse uses a fixed array; a longer head is parsed again with room
//! for every line). Obsolete line folding and spaces before a header's colon are accepted, as
//! curl and browsers accept them.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::tls::TlsClient;
use transport::Transport;
pub use transport::{OpenError, Opened};

/// Largest response head (status line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Initial (and usual) size of the read buffer.
const BUF: usize = 16 * 1024;
/// Headers parsed without allocating; a head with more lines is parsed again.
const INLINE_HEADERS: usize = 64;

/// A completed response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of the whole response (head and body) read from the socket.
    pub bytes: u64,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// From the request written to the first byte of the response (k6's `http_req_waiting`).
    pub waiting: Duration,
    /// From the first byte of the response to its last (k6's `http_req_receiving`).
    pub receiving: Duration,
}

/// Most body bytes kept for captures and checks; the rest is read and counted, not kept.
pub const MAX_KEPT_BODY: usize = 8 * 1024 * 1024;

/// A response's head and body, kept for a step that captures or checks (see
/// [`Connection::send_keeping`]).
#[derive(Debug, Default)]
pub struct Kept {
    /// The final response's head: status line and header lines, up to the empty line.
    pub head: Vec<u8>,
    /// The body, decoded from chunked framing, at most [`MAX_KEPT_BODY`] bytes.
    pub body: Vec<u8>,
    /// Whether the body was longer than what was kept.
    pub truncated: bool,
    /// Keep the body too (captures, checks, browsing); else only the head (cookies).
    pub want_body: bool,
}

impl Kept {
    fn clear(&mut self) {
        self.head.clear();
        self.body.clear();
        self.truncated = false;
    }

    fn keep_body(&mut self, bytes: &[u8]) {
        if !self.want_body {
            return;
        }
        let room = MAX_KEPT_BODY.saturating_sub(self.body.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection broke while writing or reading.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before a complete response.
    #[error("connection closed before a complete response")]
    Closed,
    /// The response was not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Protocol(&'static str),
}

/// One open HTTP/1.1 connection, plain or over TLS.
pub struct Connection {
    transport: Transport,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Responses completed on this connection.
    completed: u64,
    /// Whether any byte of the current response arrived.
    received: bool,
    /// When the first byte of the current response arrived.
    first_byte: Option<Instant>,
}

impl Connection {
    /// Opens a TCP connection (no delay) to `addr`, over TLS with `tls`; says how long the
    /// connect and the handshake took.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<(Self, Opened), OpenError> {
        let (transport, opened) = Transport::open(addr, tls).await?;
        let conn = Connection {
            transport,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            completed: 0,
            received: false,
            first_byte: None,
        };
        Ok((conn, opened))
    }

    /// Whether this connection already carried a response (a failure on it may be a stale
    /// keep-alive connection rather than the server's answer).
    pub fn reused(&self) -> bool {
        self.completed > 0
    }

    /// Whether the last request failed before any byte of its response arrived.
    pub fn received_nothing(&self) -> bool {
        !self.received
    }

    /// Whether the peer closed this idle connection or sent something unasked: then it must
    /// not carry another request. Reads only when tokio saw the socket become readable.
    pub fn is_stale(&mut self) -> bool {
        if self.end > self.start {
            return true; // bytes nobody asked for
        }
        self.transport.is_stale()
    }

    /// Sends one request (head and body already serialized in `request`) and reads the whole
    /// response. `head_request` tells that the method was HEAD (no response body).
    #[cfg(test)]
    pub async fn send(
        &mut self,
        request: &[u8],
        head_request: bool,
    ) -> Result<Response, HttpError> {
        self.send_keeping(request, head_request, None).await
    }

    /// As [`Connection::send`], keeping the final response's head and body in `keep`.
    pub async fn send_keeping(
        &mut self,
        request: &[u8],
        head_request: bool,
        mut keep: Option<&mut Kept>,
    ) -> Result<Response, HttpError> {
        if let Some(k) = keep.as_deref_mut() {
            k.clear();
        }
        self.received = false;
        self.first_byte = None;
        self.transport.write_all(request).await?;
        let sent = Instant::now();
        let mut bytes = 0u64;
        loop {
            let (status, head_len, framing, keep_alive) = self.read_head().await?;
            self.start += head_len;
            bytes += head_len as u64;
            if (100..200).contains(&status) && status != 101 {
                continue; // interim response; the final one follows
            }
            if let Some(k) = keep.as_deref_mut() {
                k.head.clear();
                k.head
                    .extend_from_slice(&self.buf[self.start - head_len..self.start]);
            }
            let no_body = head_request || status == 204 || status == 304 || status < 200;
            let body = if no_body {
                0
            } else {
                match framing {
                    Framing::Length(n) => self.skip(n, keep.as_deref_mut()).await?,
                    Framing::Chunked => self.skip_chunked(keep.as_deref_mut()).await?,
                    Framing::UntilClose => self.skip_until_close(keep.as_deref_mut()).await?,
                }
            };
            let keep_alive = keep_alive && (no_body || !matches!(framing, Framing::UntilClose));
            self.completed += 1;
            let first = self.first_byte.unwrap_or(sent);
            return Ok(Response {
                status,
                bytes: bytes + body,
                keep_alive,
                waiting: first.saturating_duration_since(sent),
                receiving: first.elapsed(),
            });
        }
    }

    /// Reads more bytes into the buffer; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(HttpError::Protocol("response head too large"));
            }
        }
        let n = self.transport.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        if n > 0 && !self.received {
            self.received = true;
            self.first_byte = Some(Instant::now());
        }
        Ok(n > 0)
    }

    async fn read_head(&mut self) -> Result<Head, HttpError> {
        loop {
            if self.end > self.start {
                let head = &self.buf[self.start..self.end];
                let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
                let parsed = match parse_head(head, &mut inline) {
                    Err(HeadError::Room) => {
                        // A long head: room for every line it can have (this allocates, but
                        // only for responses with more than INLINE_HEADERS header lines).
                        let lines = head.iter().filter(|&&b| b == b'\n').count();
                        let mut many = vec![httparse::EMPTY_HEADER; lines + 1];
                        parse_head(head, &mut many)
                    }
                    other => other,
                };
                match parsed {
                    Ok(Some(h)) => return Ok(h),
                    Ok(None) => {}
                    Err(HeadError::Invalid(e)) => return Err(e),
                    Err(HeadError::Room) => {
                        return Err(HttpError::Protocol("more header lines than the head has"));
                    }
                }
            }
            if !self.fill().await? {
                return Err(HttpError::Closed);
            }
        }
    }

    /// Consumes `n` body bytes (kept in `keep` when given).
    async fn skip(&mut self, mut n: u64, mut keep: Option<&mut Kept>) -> Result<u64, HttpError> {
        let total = n;
        loop {
            let have = (self.end - self.start) as u64;
            let take = have.min(n);
            if let Some(k) = keep.as_deref_mut() {
                k.keep_body(&self.buf[self.start..self.start + take as usize]);
            }
            self.start += take as usize;
            n -= take;
            if n == 0 {
                return Ok(total);
            }
            if !self.fill().await? {
                return Err(HttpError::Closed);
            }
        }
    }

    async fn skip_until_close(&mut self, mut keep: Option<&mut Kept>) -> Result<u64, HttpError> {
        let mut total = 0u64;
        loop {
            total += (self.end - self.start) as u64;
            if let Some(k) = keep.as_deref_mut() {
                k.keep_body(&self.buf[self.start..self.end]);
            }
            self.start = self.end;
            if !self.fill().await? {
                return Ok(total);
            }
        }
    }

    /// Consumes a chunked body, its last chunk and trailers (the data kept in `keep`).
    async fn skip_chunked(&mut self, mut keep: Option<&mut Kept>) -> Result<u64, HttpError> {
        let mut total = 0u64;
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        self.start += n;
                        total += n as u64;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if !self.fill().await? {
                            return Err(HttpError::Closed);
                        }
                    }
                    Err(_) => return Err(HttpError::Protocol("malformed chunk size")),
                }
            };
            if size == 0 {
                // Trailers: header lines up to an empty line.
                loop {
                    match self.buf[self.start..self.end]
                        .windows(2)
                        .position(|w| w == b"\r\n")
                    {
                        Some(0) => {
                            self.start += 2;
                            return Ok(total + 2);
                        }
                        Some(i) => {
                            self.start += i + 2;
                            total += i as u64 + 2;
                        }
                        None => {
                            if !self.fill().await? {
                                return Err(HttpError::Closed);
                            }
                        }
                    }
                }
            }
            total += self.skip(size, keep.as_deref_mut()).await?;
            total += self.skip(2, None).await?;
        }
    }
}

mod head;
mod transport;

use head::{Framing, Head, HeadError, parse_head};

#[cfg(test)]
mod tests;
