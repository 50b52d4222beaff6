//! The Lobster slave agent, baked into the template image.
//!
//! - [`agent`]: session with the master (join, heartbeats, reconnect, dead-man switch).
//! - [`engine`]: the load engine (closed and open models, HTTP/1.1 hot path, recorder).
//! - [`spool`]: statistics intervals kept until acknowledged.
//! - [`backoff`]: reconnect delays.
//! - [`config`]: flags resolved into a config before any I/O.
//! - [`bench`]: the engine alone, for benchmarks.
//! - [`simulate`]: many simulated slaves in one process, for control-plane benchmarks.
//! - [`boot`]: the VM's boot step (IMDS identity and user-data → slave units).
//! - [`idle`]: the per-VM idle watcher that stops its own instance.
//! - [`lifetime`]: the per-VM lifetime backstop that powers it off at its expiry.
//! - [`vm`]: what the VM knows about itself (boot env file, else IMDS, else defaults).
//! - [`power`]: powering off from inside (`systemctl poweroff`, or the emulated init's file).
//! - [`logging`]: standard error plus a size-rotated log file.
//! - `resources`: the injector's CPU, memory, network and sockets, from `/proc`.
//! - [`tls`]: the channel to the master, its certificate pinned by fingerprint.
//! - `trace`: per-request records of a run kept on this slave's disk, read back on request.
//!
//! Nothing here listens on a socket: a slave only dials out.

pub mod agent;
pub(crate) mod backoff;
pub mod bench;
pub mod boot;
pub mod config;
pub(crate) mod engine;
pub mod idle;
pub mod lifetime;
pub mod logging;
pub(crate) mod power;
pub(crate) mod resources;
pub mod simulate;
pub(crate) mod spool;
pub(crate) mod tls;
pub(crate) mod trace;
pub mod vm;
