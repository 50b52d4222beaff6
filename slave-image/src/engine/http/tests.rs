//! The connection against raw servers on loopback: framings, heads, stale connections.
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves the given raw responses, one per request read, on a loopback listener.
async fn serve(responses: Vec<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        for r in responses {
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
            }
            // Write in two pieces to exercise partial reads.
            let mid = r.len() / 2;
            s.write_all(&r[..mid]).await.unwrap();
            s.flush().await.unwrap();
            tokio::task::yield_now().await;
            s.write_all(&r[mid..]).await.unwrap();
        }
    });
    addr
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn framings_on_one_keep_alive_connection() {
    let addr = serve(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ])
    .await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    let r = c.send(GET, false).await.unwrap();
    assert_eq!((r.status, r.keep_alive), (200, true));
    let r = c.send(GET, false).await.unwrap();
    assert_eq!((r.status, r.keep_alive), (404, true));
    let r = c.send(GET, false).await.unwrap();
    assert_eq!(r.status, 204);
    let r = c.send(GET, false).await.unwrap();
    assert_eq!((r.status, r.keep_alive), (200, false));
}

#[tokio::test]
async fn body_until_close_and_errors() {
    let addr = serve(vec![b"HTTP/1.0 200 OK\r\n\r\nall of it"]).await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    let r = c.send(GET, false).await.unwrap();
    assert_eq!((r.status, r.keep_alive), (200, false));
    assert!(r.bytes >= 9);

    let addr = serve(vec![b"NOT HTTP AT ALL\r\n\r\n"]).await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    assert!(matches!(
        c.send(GET, false).await,
        Err(HttpError::Protocol(_))
    ));

    let addr = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    assert!(matches!(c.send(GET, false).await, Err(HttpError::Closed)));

    let addr = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]).await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    assert!(matches!(
        c.send(GET, false).await,
        Err(HttpError::Protocol(_))
    ));
}

/// A response with `n` extra header lines of `width` bytes each.
fn many_headers(n: usize, width: usize) -> &'static [u8] {
    let mut r = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for i in 0..n {
        r.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(width)));
    }
    r.push_str("\r\nok");
    Box::leak(r.into_bytes().into_boxed_slice())
}

#[tokio::test]
async fn any_valid_head_within_the_limit_is_read() {
    // 70 header lines (the fault: more than 64 failed every request), then a head of
    // 2000 short lines, and one just under MAX_HEAD, on one keep-alive connection.
    let near_limit = many_headers(600, 90);
    assert!(near_limit.len() < MAX_HEAD && near_limit.len() > MAX_HEAD * 3 / 4);
    let addr = serve(vec![
        many_headers(70, 10),
        many_headers(2000, 1),
        near_limit,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Folded: a\r\n  b\r\nX-Space : c\r\n\r\nok",
    ])
    .await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    for _ in 0..4 {
        let r = c.send(GET, false).await.unwrap();
        assert_eq!((r.status, r.keep_alive), (200, true));
    }
    // Over the documented head size: a clear protocol error, not a hang.
    let addr = serve(vec![many_headers(1000, 90)]).await;
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    assert!(matches!(
        c.send(GET, false).await,
        Err(HttpError::Protocol("response head too large"))
    ));
}

#[tokio::test]
async fn a_connection_the_server_closed_is_stale() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        // Idle timeout: close the kept-alive connection.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    });
    let mut c = Connection::connect(addr, None).await.unwrap().0;
    assert!(!c.reused());
    c.send(GET, false).await.unwrap();
    assert!(c.reused());
    assert!(!c.is_stale(), "open and quiet");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !c.is_stale() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the close was never seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Sending anyway fails before any response byte.
    assert!(c.send(GET, false).await.is_err());
    assert!(c.received_nothing());
}
