//! TLS for `https://` targets: the client configuration one run shares over all its
//! connections (rustls, TLS 1.2 and 1.3, the `aws-lc-rs` provider).
//!
//! Trust, in order of the scenario's `tls` settings (see `docs/scenario.md`, "HTTPS"):
//! `insecure_skip_verify` accepts any certificate (the handshake's signatures are still
//! checked, so the connection is real TLS, only the peer is unauthenticated); else `ca_pem`
//! (the scenario's `ca_file`, read by the master) is the only trusted root; else the system's
//! roots (`rustls-native-certs`: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or the distribution's store).
//! Sessions are resumed from rustls' in-memory cache, shared by the run's connections, so a
//! reconnect costs an abbreviated handshake, as a browser's would.

use std::sync::Arc;

use lobster_fleet::scenario::{Scenario, Scheme};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What a run's connections need to speak TLS to the target.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    /// The name sent as SNI and verified against the certificate (a DNS name or an address).
    pub server_name: ServerName<'static>,
}

/// Why a run cannot speak TLS to its target.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the target host `{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("tls.ca_file holds no PEM certificate")]
    NoCaCertificate,
    #[error("tls.ca_file: {0}")]
    BadCaCertificate(String),
    #[error(
        "no system root certificates found (install the ca-certificates package, set SSL_CERT_FILE, or name the CA in tls.ca_file)"
    )]
    NoSystemRoots,
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The run's TLS client, or `None` for an `http://` target.
pub fn client(scenario: &Scenario) -> Result<Option<TlsClient>, TlsSetupError> {
    if scenario.target.scheme != Scheme::Https {
        return Ok(None);
    }
    let host = scenario.target.host.clone();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| TlsSetupError::ServerName(host))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let tls = &scenario.tls;
    let mut config = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(tls.ca_pem.as_deref())?)
            .with_no_client_auth()
    };
    // HTTP/1.1 only: the engine speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsClient {
        config: Arc::new(config),
        server_name,
    }))
}

/// The certificates of a PEM text; `Err` when it holds none or one does not parse.
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::BadCaCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCaCertificate);
    }
    Ok(certs)
}

fn roots(ca_pem: Option<&str>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in pem_certificates(pem)? {
                store
                    .add(cert)
                    .map_err(|e| TlsSetupError::BadCaCertificate(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

/// `insecure_skip_verify`: any certificate chain is accepted; the handshake's signatures are
/// verified as usual.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
