//! Join tokens: one per fleet, 128 random bits, stored owner-only in the master's state
//! directory (`tokens/<fleet>`). A join is admitted when its token is one of them (compared in
//! constant time); the fleet it belongs to is recorded with the slave. Tokens never appear in
//! logs, errors, `fleet status` or reports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::home::{Home, MasterDir, write_private};

/// The fleet of slaves started beside the master (`--local-slaves`) and of unnamed fleets.
pub const DEFAULT_FLEET: &str = "default";

fn token_path(dir: &MasterDir, fleet: &str) -> PathBuf {
    dir.tokens().join(fleet)
}

/// The token of `fleet`, created (128 random bits, hex) on first use.
pub fn fleet_token(dir: &MasterDir, fleet: &str) -> std::io::Result<String> {
    let path = token_path(dir, fleet);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => Ok(t.trim().to_string()),
        _ => {
            Home::ensure(&dir.tokens())?;
            let bytes: [u8; 16] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, &token)?;
            Ok(token)
        }
    }
}

/// The tokens the master accepts, reloaded from disk when an unknown one shows up (a new fleet
/// made by `fleet up` while the master runs), at most once a second.
pub struct TokenBook {
    dir: MasterDir,
    tokens: Vec<(String, String)>,
    loaded: Option<Instant>,
}

impl TokenBook {
    pub fn new(dir: &MasterDir) -> Self {
        let mut b = TokenBook {
            dir: dir.clone(),
            tokens: Vec::new(),
            loaded: None,
        };
        b.reload();
        b
    }

    fn reload(&mut self) {
        self.loaded = Some(Instant::now());
        self.tokens.clear();
        if let Ok(entries) = std::fs::read_dir(self.dir.tokens()) {
            for e in entries.flatten() {
                let fleet = e.file_name().to_string_lossy().to_string();
                if let Ok(t) = std::fs::read_to_string(e.path())
                    && t.trim().len() >= 32
                {
                    self.tokens.push((fleet, t.trim().to_string()));
                }
            }
        }
    }

    fn find(&self, token: &str) -> Option<String> {
        let mut found = None;
        // Compare against every token, in constant time each, whatever matches first.
        for (fleet, t) in &self.tokens {
            let same: bool = subtle::ConstantTimeEq::ct_eq(token.as_bytes(), t.as_bytes()).into();
            if same && found.is_none() {
                found = Some(fleet.clone());
            }
        }
        found
    }

    /// The fleet whose token this is, if any.
    pub fn check(&mut self, token: &str) -> Option<String> {
        if token.is_empty() {
            return None;
        }
        if let Some(f) = self.find(token) {
            return Some(f);
        }
        if self
            .loaded
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.reload();
            return self.find(token);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_fleet_tokens_are_random_private_and_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterDir::at(dir.path().to_path_buf());
        let a = fleet_token(&master, "a").unwrap();
        let b = fleet_token(&master, "b").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32, "128 bits in hex");
        assert_eq!(fleet_token(&master, "a").unwrap(), a, "stable");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens/a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mut book = TokenBook::new(&master);
        assert_eq!(book.check(&a).as_deref(), Some("a"));
        assert_eq!(book.check(&b).as_deref(), Some("b"));
        assert_eq!(book.check("nope"), None);
        assert_eq!(book.check(""), None);
    }
}
