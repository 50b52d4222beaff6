//! The slave's channel to the master: TLS with the master's certificate pinned by its SHA-256
//! fingerprint (from user-data), so no CA is involved and a man in the middle with any other
//! certificate is refused. Plaintext (`http://`) only when the master was started with its
//! explicit insecure flag; the slave then says so loudly.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::warn;

/// The master could not be reached securely.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not `http(s)://host:port`.
    #[error("invalid master URL `{0}`")]
    Url(String),
    /// An https master without a fingerprint to pin.
    #[error(
        "the master URL is https but no certificate fingerprint was given (LOBSTER_MASTER_FINGERPRINT)"
    )]
    NoFingerprint,
    /// TCP, TLS or HTTP/2 failed.
    #[error("cannot connect to the master at {0}")]
    Transport(String, #[source] tonic::transport::Error),
}

/// Accepts exactly the certificate whose fingerprint is pinned.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = lobster_fleet::pin::fingerprint(end_entity.as_ref());
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(seen.as_bytes(), self.fingerprint.as_bytes()).into();
        if same {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the master's certificate ({seen}) is not the pinned one"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client_config(fingerprint: &str) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_string(),
            provider,
        }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

fn endpoint(url: &str) -> Result<Endpoint, ConnectError> {
    Endpoint::from_shared(url.to_string())
        .map_err(|_| ConnectError::Url(url.to_string()))
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
        })
}

/// A channel to `master`, pinned to `fingerprint` when the URL is https.
pub async fn connect(master: &str, fingerprint: &str) -> Result<Channel, ConnectError> {
    if let Some(rest) = master.strip_prefix("http://") {
        warn!(
            master,
            "plaintext connection to the master: the master runs with --insecure-plaintext"
        );
        let e = endpoint(&format!("http://{rest}"))?;
        return e
            .connect()
            .await
            .map_err(|err| ConnectError::Transport(master.to_string(), err));
    }
    let rest = master
        .strip_prefix("https://")
        .ok_or_else(|| ConnectError::Url(master.to_string()))?;
    if !lobster_fleet::pin::is_fingerprint(fingerprint) {
        return Err(ConnectError::NoFingerprint);
    }
    let uri: Uri = format!("http://{rest}")
        .parse()
        .map_err(|_| ConnectError::Url(master.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::Url(master.to_string()))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| ConnectError::Url(master.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(fingerprint)));
    let e = endpoint(&format!("http://{rest}"))?;
    let connect = tower::service_fn(move |_: Uri| {
        let (host, connector, server_name) = (host.clone(), connector.clone(), server_name.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    e.connect_with_connector(connect)
        .await
        .map_err(|err| ConnectError::Transport(master.to_string(), err))
}

/// An error with every cause after it (`a: b: c`), repeated texts dropped.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = c.source();
    }
    parts.join(": ")
}
