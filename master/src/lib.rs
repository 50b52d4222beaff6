//! Everything on the control host: the `lobster` CLI, the gRPC control plane, run
//! orchestration (slicing, aggregation, SLA guard), the run store, the HTTP API, reports and
//! the built-in target. See ARCHITECTURE.md for the codemap and invariants.

pub(crate) mod aggregate;
pub(crate) mod api;
pub mod cli;
pub(crate) mod client;
pub(crate) mod clock;
pub(crate) mod control;
pub(crate) mod daemon;
pub(crate) mod dashboard;
pub(crate) mod fleet;
pub(crate) mod grpc;
pub(crate) mod home;
pub(crate) mod local_slaves;
pub(crate) mod metrics;
pub(crate) mod report;
pub(crate) mod saturation;
pub(crate) mod server;
pub(crate) mod sla;
pub(crate) mod slicer;
pub(crate) mod store;
pub(crate) mod target;
pub(crate) mod tls;
pub(crate) mod tokens;
