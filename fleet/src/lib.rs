//! The fleet's common language, shared by the master and the slaves.
//!
//! - [`proto`]: the gRPC contract (the only place wire types live).
//! - [`flags`]: value parsers for numeric command-line flags (the rule in every error).
//! - [`liveness`]: how long master and slave may each stay silent (dead-man switch, replies).
//! - [`pin`]: the fingerprint slaves pin the master's certificate by.
//! - [`recipe`]: the slave image's recipe (systemd units, user-data template, install script).
//! - [`scenario`]: the YAML scenario format, its validation and the resolved model sent to slaves.
//! - [`stats`]: mergeable per-interval statistics built on HDR histograms.
//! - [`stripe`]: which units of the fleet's load (users, arrivals) each slave owns.
//! - [`tags`]: the cloud tag names every Lobster resource carries.
//! - [`userdata`]: the slave settings carried in user-data (rendered by the master, read by slaves).
//!
//! Nothing here opens a socket or calls a cloud.

pub mod flags;
pub mod liveness;
pub mod pin;
pub mod proto;
pub mod recipe;
pub mod scenario;
pub mod stats;
pub mod stripe;
pub mod tags;
pub mod userdata;

/// The version every Lobster binary reports (master and slaves must agree on the wire contract).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A slave sends an interval the master has not acknowledged again after this long. The
/// master acknowledges each within half of it (it holds an open second's intervals until the
/// second is stored merged, at most `HOLD` in `master/src/control/held.rs`).
pub const RESEND_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
