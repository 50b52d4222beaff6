//! Generated types and service stubs of `proto/lobster.proto` (package `lobster.v1`).
//!
//! Messages that carry a secret (a join token, a session secret) have a hand-written `Debug`
//! that prints `<redacted>` in its place, so no `{:?}` of a request can leak it into a log.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("lobster.v1");

use std::fmt;

/// What `Debug` prints instead of a secret.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("join_token", &REDACTED)
            .field("instance_id", &self.instance_id)
            .field("host", &self.host)
            .field("cores", &self.cores)
            .field("slave_index", &self.slave_index)
            .field("version", &self.version)
            .field("boot_id", &self.boot_id)
            .field("slave_uid", &self.slave_uid)
            .field("millicores", &self.millicores)
            .field("instance_type", &self.instance_type)
            .field("region", &self.region)
            .field("slaves_on_host", &self.slaves_on_host)
            .finish()
    }
}

impl fmt::Debug for JoinReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinReply")
            .field("session_secret", &REDACTED)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("lease_ms", &self.lease_ms)
            .field("master_version", &self.master_version)
            .field("slave_id", &self.slave_id)
            .finish()
    }
}

impl fmt::Debug for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attach")
            .field("slave_uid", &self.slave_uid)
            .field("session_secret", &REDACTED)
            .field("run_id", &self.run_id)
            .finish()
    }
}

impl fmt::Debug for DrainRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainRequest")
            .field("join_token", &REDACTED)
            .field("instance_id", &self.instance_id)
            .field("reason", &self.reason)
            .field("undo", &self.undo)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_secret() {
        let secret = "s3cr3t-0123456789abcdef";
        let texts = [
            format!(
                "{:?}",
                JoinRequest {
                    join_token: secret.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                JoinReply {
                    session_secret: secret.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                Attach {
                    session_secret: secret.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                DrainRequest {
                    join_token: secret.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                SlaveMessage {
                    kind: Some(slave_message::Kind::Attach(Attach {
                        session_secret: secret.into(),
                        ..Default::default()
                    })),
                }
            ),
        ];
        for t in &texts {
            assert!(!t.contains(secret), "{t}");
            assert!(t.contains(REDACTED), "{t}");
        }
    }
}
