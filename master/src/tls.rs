//! The master's TLS identity: a self-signed certificate created on first start (rcgen) and kept
//! in the state directory (owner-only). Slaves do not trust a CA: they pin this certificate's
//! SHA-256 fingerprint, which travels in user-data (and in `master.json` for local slaves).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::home::write_private;

/// The master's certificate, key and fingerprint.
#[derive(Clone)]
pub struct MasterTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// `sha256:…` of the certificate.
    pub fingerprint: String,
}

impl std::fmt::Debug for MasterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterTls")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// The TLS identity could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write the master's certificate in {0}")]
    Io(String, #[source] std::io::Error),
    #[error("cannot create the master's certificate")]
    Generate(#[from] rcgen::Error),
    #[error("the master's certificate in {0} is unreadable (delete it to make a new one)")]
    Corrupt(String),
}

fn fingerprint_of(cert_pem: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    Some(lobster_fleet::pin::fingerprint(der.as_ref()))
}

/// Loads the identity from the master's `tls/`, creating it on first use for the given host
/// names.
pub fn load_or_create(
    dir: &crate::home::MasterDir,
    names: &[String],
) -> Result<MasterTls, TlsError> {
    let tls = dir.tls();
    let (cert_path, key_path) = (tls.join("cert.pem"), tls.join("key.pem"));
    let shown = tls.display().to_string();
    if cert_path.is_file() && key_path.is_file() {
        let cert_pem =
            std::fs::read_to_string(&cert_path).map_err(|e| TlsError::Io(shown.clone(), e))?;
        let key_pem =
            std::fs::read_to_string(&key_path).map_err(|e| TlsError::Io(shown.clone(), e))?;
        let fingerprint = fingerprint_of(&cert_pem).ok_or(TlsError::Corrupt(shown))?;
        return Ok(MasterTls {
            cert_pem,
            key_pem,
            fingerprint,
        });
    }
    crate::home::Home::ensure(&tls).map_err(|e| TlsError::Io(shown.clone(), e))?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lobster master");
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    write_private(&key_path, &key_pem).map_err(|e| TlsError::Io(shown.clone(), e))?;
    write_private(&cert_path, &cert_pem).map_err(|e| TlsError::Io(shown.clone(), e))?;
    let fingerprint = lobster_fleet::pin::fingerprint(cert.der());
    Ok(MasterTls {
        cert_pem,
        key_pem,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_the_same_fingerprint_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let master = crate::home::MasterDir::at(dir.path().to_path_buf());
        let a = load_or_create(&master, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let b = load_or_create(&master, &["other".into()]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert!(lobster_fleet::pin::is_fingerprint(&a.fingerprint));
        use std::os::unix::fs::PermissionsExt;
        for f in ["tls/key.pem", "tls/cert.pem"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert!(!format!("{a:?}").contains("PRIVATE KEY"));
    }
}
