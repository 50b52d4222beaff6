//! Certificate pinning: the master's TLS certificate is known to slaves by its SHA-256
//! fingerprint (carried in user-data), not by a CA; both sides compute it the same way here.

use sha2::{Digest, Sha256};

/// `sha256:` and the lowercase hex SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether a fingerprint is well formed (`sha256:` + 64 hex digits).
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        let f = fingerprint(b"cert");
        assert!(is_fingerprint(&f), "{f}");
        assert_ne!(f, fingerprint(b"other"));
        assert!(!is_fingerprint("sha256:xyz"));
        assert!(!is_fingerprint(""));
    }
}
