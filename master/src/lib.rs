//! Everything on the control host: the `lobster` CLI, the gRPC control plane, run
//! orchestration (slicing, aggregation, SLA guard), the run store, the HTTP API, reports and
//! the built-in target. See ARCHITECTURE.md for the codemap and invariants.

pub mod aggregate;
pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod control;
pub mod daemon;
pub mod fleet;
pub mod grpc;
pub mod home;
pub mod local_slaves;
pub mod metrics;
pub mod report;
pub mod server;
pub mod sla;
pub mod slicer;
pub mod store;
pub mod target;
pub mod tls;
pub mod tokens;
