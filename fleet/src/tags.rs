//! Tag names carried by every cloud resource Lobster creates or looks for.
//!
//! Invariant: every instance Lobster launches carries [`MANAGED`], [`FLEET`], [`ROLE`] and
//! [`EXPIRES_AT`] from the moment it is created (tags are part of the launch request).

/// `true` on everything Lobster manages; IAM policies are conditioned on it.
pub const MANAGED: &str = "lobster:managed";
/// The fleet's name.
pub const FLEET: &str = "lobster:fleet";
/// `slave` on slave instances, `slave-template` on template images.
pub const ROLE: &str = "lobster:role";
/// RFC 3339 time after which the instance stops itself whatever it is doing.
pub const EXPIRES_AT: &str = "lobster:expires-at";
/// Why the instance stopped itself (`idle`, `expired`).
pub const STOP_REASON: &str = "lobster:stop-reason";
/// The gRPC URL of the fleet's master now. Slaves read it through IMDS (instance metadata
/// tags) to find a master that moved, without a reboot.
pub const MASTER: &str = "lobster:master";
/// The SHA-256 fingerprint of that master's certificate (`sha256:…`), for slaves to pin: set
/// through the same trusted channel as user-data (the cloud API, by the master's credentials).
pub const MASTER_FINGERPRINT: &str = "lobster:master-fingerprint";
/// Name tag shown by consoles.
pub const NAME: &str = "Name";

/// Role value of slave instances.
pub const ROLE_SLAVE: &str = "slave";
/// Role value of template images.
pub const ROLE_TEMPLATE: &str = "slave-template";
