//! `lobster target --tls`: a private CA made at start and a server certificate it signed for
//! the target's names, so a scenario trusts the target with `tls: {ca_file: …}` exactly as it
//! would trust a company's internal CA (the CA's certificate is the file to name).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and one server certificate it signed, as PEM.
#[derive(Clone)]
pub struct PrivateCa {
    /// The CA's certificate: what clients trust (`tls.ca_file`).
    pub ca_pem: String,
    /// The server's certificate, for the names it was made for.
    pub cert_pem: String,
    /// The server certificate's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for PrivateCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCa").finish_non_exhaustive()
    }
}

/// The target's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetTlsError {
    #[error("cannot make the target's certificates")]
    Generate(#[from] rcgen::Error),
    #[error("cannot configure TLS")]
    Rustls(#[from] rustls::Error),
    #[error("cannot read the certificate made for the target")]
    Pem(#[from] rustls_pki_types::pem::Error),
}

impl PrivateCa {
    /// Makes a CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn new(names: &[String]) -> Result<Self, TargetTlsError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lobster target CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "lobster target");
        let cert = params.signed_by(&key, &ca)?;
        Ok(PrivateCa {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS 1.2/1.3 acceptor serving the server certificate (HTTP/1.1 by ALPN).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TargetTlsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
