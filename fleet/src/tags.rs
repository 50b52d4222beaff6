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
/// Name tag shown by consoles.
pub const NAME: &str = "Name";

/// Role value of slave instances.
pub const ROLE_SLAVE: &str = "slave";
/// Role value of template images.
pub const ROLE_TEMPLATE: &str = "slave-template";
