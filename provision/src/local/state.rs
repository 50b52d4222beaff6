//! The local cloud's state: images, instances, tags and client tokens, persisted as one JSON
//! file (written atomically after every change) so it survives a restart of the local cloud.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cloud::{InstanceState, Tags};

/// Account id the local cloud reports as owner.
pub const OWNER: &str = "000000000000";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRec {
    pub id: String,
    pub name: String,
    /// Directory holding the image recipe (`bin/`, `systemd/`, `recipe.json`).
    pub location: String,
    pub state: String,
    pub created_unix_ms: u64,
    pub tags: Tags,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRec {
    pub id: String,
    pub reservation_id: String,
    pub image_id: String,
    pub instance_type: String,
    pub state: InstanceState,
    /// Why it last changed state (EC2's `stateTransitionReason`).
    pub reason: String,
    pub launch_unix_ms: u64,
    pub client_token: String,
    pub launch_index: u32,
    /// Plain text user-data.
    pub user_data: String,
    pub tags: Tags,
    /// Loopback port of this instance's IMDS while it runs.
    pub imds_port: Option<u16>,
    /// Process groups of its units while it runs (to clean up after a crash of the cloud).
    pub pgids: Vec<i32>,
    pub private_ip: String,
    /// When it reached `terminated` (purged an hour later, like EC2).
    pub terminated_unix_ms: Option<u64>,
    /// Its boot started the units the boot step asked for (its slaves): DescribeInstanceStatus
    /// says `ok` from then on, `initializing` before.
    #[serde(default)]
    pub units_started: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub images: BTreeMap<String, ImageRec>,
    pub instances: BTreeMap<String, InstanceRec>,
    /// RunInstances client token → the instance ids it launched.
    pub tokens: BTreeMap<String, Vec<String>>,
    /// Counter for private addresses.
    pub next_ip: u32,
}

/// Where the state lives and how it is saved.
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Store {
            path: dir.join("state.json"),
        }
    }

    /// Loads the state (empty if none yet).
    pub fn load(&self) -> std::io::Result<State> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename).
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(state)
                .expect("state serializes")
                .as_bytes(),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// A new id like EC2's: a prefix and 17 hex digits.
pub fn new_id(prefix: &str) -> String {
    let n: u128 = rand::random();
    format!("{prefix}-{:017x}", n & ((1u128 << 68) - 1))
}

impl State {
    /// A private address for a new instance (10.77.x.y).
    pub fn next_private_ip(&mut self) -> String {
        self.next_ip += 1;
        let n = self.next_ip;
        format!("10.77.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }

    /// Drops instances terminated more than an hour ago (EC2 keeps them visible about that long).
    /// Forgets instances terminated more than `retention_ms` ago (EC2 drops them from
    /// DescribeInstances about an hour after termination); returns how many.
    pub fn purge(&mut self, now_ms: u64, retention_ms: u64) -> usize {
        let before = self.instances.len();
        self.instances.retain(|_, i| {
            i.terminated_unix_ms
                .is_none_or(|t| now_ms.saturating_sub(t) < retention_ms)
        });
        before - self.instances.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), State::default());
        let mut s = State::default();
        s.tokens.insert("t".into(), vec!["i-1".into()]);
        let ip = s.next_private_ip();
        assert_eq!(ip, "10.77.0.1");
        store.save(&s).unwrap();
        assert_eq!(Store::new(dir.path()).load().unwrap(), s);
        let id = new_id("i");
        assert_eq!(id.len(), 19);
        assert!(id.starts_with("i-"));
    }
}
