//! TLS against a rustls server on loopback with a private CA: trusted when named, refused
//! with the certificate problem named, accepted when verification is skipped, and kept alive
//! across the TLS 1.3 session tickets a server sends after the handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::engine::http::{Connection, OpenError};

/// The certificate (PEM) of a CA named `ca_name`, and a server certificate it signed for
/// `names`, with its key.
fn pki(ca_name: &str, names: &[&str]) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    (ca.pem(), cert.der().clone(), key)
}

/// A TLS server answering every request head with a 200 (with `close_notify_after_first`,
/// only the first, then a TLS close); counts handshakes.
async fn serve(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    close_notify_after_first: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..i + 4);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() || s.flush().await.is_err() {
                            return;
                        }
                        if close_notify_after_first {
                            // A graceful TLS close while the client is idle.
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            s.get_mut().1.send_close_notify();
                            let _ = s.flush().await;
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

fn scenario(host: &str, port: u16, tls: TlsSettings) -> Scenario {
    let text = format!(
        "name: t\ntarget: https://{host}:{port}\nduration: 1s\nload: {{users: 1}}\nrequests: [{{name: r, path: /}}]\n"
    );
    let mut s = lobster_fleet::scenario::parse(&text, "t.yaml").unwrap();
    s.tls = tls;
    s
}

use lobster_fleet::scenario::TlsSettings;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn trusting(ca_pem: &str) -> TlsSettings {
    TlsSettings {
        ca_pem: Some(ca_pem.to_string()),
        insecure_skip_verify: false,
    }
}

#[tokio::test]
async fn a_named_ca_is_trusted_and_the_connection_is_kept_alive() {
    let (ca, cert, key) = pki("test CA", &["127.0.0.1"]);
    let (addr, handshakes) = serve(cert, key, false).await;
    let client = client(&scenario("127.0.0.1", addr.port(), trusting(&ca)))
        .unwrap()
        .unwrap();
    let (mut c, opened) = Connection::connect(addr, Some(&client)).await.unwrap();
    assert!(opened.tls_handshaking.is_some());
    let r = c.send(GET, false).await.unwrap();
    assert_eq!((r.status, r.bytes > 2), (200, true));
    // Idle: a TLS record that is not data arrives (a KeyUpdate, like a late session ticket);
    // it does not make the connection stale.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !c.is_stale(),
        "session tickets made a healthy connection stale"
    );
    assert_eq!(c.send(GET, false).await.unwrap().status, 200);
    assert!(c.reused());
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}

/// A server that ends the session with `close_notify` while the connection is idle: the
/// connection is stale, not reused for the next request.
#[tokio::test]
async fn a_tls_close_on_an_idle_connection_makes_it_stale() {
    let (ca, cert, key) = pki("test CA", &["127.0.0.1"]);
    let (addr, _) = serve(cert, key, true).await;
    let client = client(&scenario("127.0.0.1", addr.port(), trusting(&ca)))
        .unwrap()
        .unwrap();
    let (mut c, _) = Connection::connect(addr, Some(&client)).await.unwrap();
    assert_eq!(c.send(GET, false).await.unwrap().status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        c.is_stale(),
        "a connection the server closed with close_notify was kept"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_the_reason() {
    let (_ca, cert, key) = pki("test CA", &["127.0.0.1"]);
    let (other_ca, _, _) = pki("another CA", &["127.0.0.1"]);
    let (addr, handshakes) = serve(cert, key, false).await;
    let client = client(&scenario("127.0.0.1", addr.port(), trusting(&other_ca)))
        .unwrap()
        .unwrap();
    let err = Connection::connect(addr, Some(&client))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::Handshake(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("TLS handshake failed") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_by_name() {
    let (ca, cert, key) = pki("test CA", &["other.example"]);
    let (addr, _) = serve(cert, key, false).await;
    // SNI and verification use the target's host: `localhost` is not `other.example`.
    let client = client(&scenario("localhost", addr.port(), trusting(&ca)))
        .unwrap()
        .unwrap();
    let err = Connection::connect(addr, Some(&client))
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("not valid for name \"localhost\"") && text.contains("other.example"),
        "{text}"
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_certificate() {
    let (_ca, cert, key) = pki("test CA", &["other.example"]);
    let (addr, handshakes) = serve(cert, key, false).await;
    let tls = TlsSettings {
        ca_pem: None,
        insecure_skip_verify: true,
    };
    let client = client(&scenario("127.0.0.1", addr.port(), tls))
        .unwrap()
        .unwrap();
    let (mut c, _) = Connection::connect(addr, Some(&client)).await.unwrap();
    assert_eq!(c.send(GET, false).await.unwrap().status, 200);
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}

#[test]
fn a_plain_target_needs_no_tls_and_a_bad_ca_is_an_error() {
    let plain = lobster_fleet::scenario::parse(
        "name: t\ntarget: http://127.0.0.1:1\nduration: 1s\nload: {users: 1}\nrequests: [{name: r, path: /}]\n",
        "t.yaml",
    )
    .unwrap();
    assert!(client(&plain).unwrap().is_none());
    let bad = scenario("127.0.0.1", 1, trusting("not a certificate"));
    assert!(matches!(client(&bad), Err(TlsSetupError::NoCaCertificate)));
}
