//! The `tls` section: which certificates an `https://` target may present.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::*;
use crate::scenario::file::TlsFile;
use crate::scenario::{Scheme, TlsSettings};

/// Most bytes of a `tls.ca_file`.
const MAX_CA_BYTES: usize = 1024 * 1024;

pub(super) fn resolve_tls(
    tls: Option<&Spanned<TlsFile>>,
    targets: &[&Target],
    read_file: &dyn Fn(&str) -> Result<String, String>,
) -> Res<TlsSettings> {
    let Some(tls) = tls else {
        return Ok(TlsSettings::default());
    };
    if targets.iter().all(|t| t.scheme != Scheme::Https) {
        let list: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        return Err(fault(
            tls.referenced,
            format!(
                "`tls` applies to https:// targets; the target is {}",
                list.join(", ")
            ),
        ));
    }
    let insecure_skip_verify = tls.value.insecure_skip_verify.unwrap_or(false);
    let ca_pem = match &tls.value.ca_file {
        None => None,
        Some(_) if insecure_skip_verify => {
            return Err(fault(
                tls.referenced,
                "give either `ca_file` (trust this CA) or `insecure_skip_verify: true` (trust anything), not both",
            ));
        }
        Some(file) => {
            let pem = read_file(&file.value)
                .map_err(|m| fault(file.referenced, format!("tls.ca_file: {m}")))?;
            check_ca_pem(&pem).map_err(|m| {
                fault(
                    file.referenced,
                    format!("tls.ca_file `{}`: {m}", file.value),
                )
            })?;
            Some(pem)
        }
    };
    Ok(TlsSettings {
        ca_pem,
        insecure_skip_verify,
    })
}

/// Checks that `pem` holds one or more PEM certificates and nothing unreadable.
pub(crate) fn check_ca_pem(pem: &str) -> Result<(), String> {
    if pem.len() > MAX_CA_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_CA_BYTES} accepted",
            pem.len()
        ));
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a readable PEM file ({e})"))?;
    if certs.is_empty() {
        return Err(
            "holds no certificate: expected PEM text with `-----BEGIN CERTIFICATE-----`".into(),
        );
    }
    Ok(())
}
