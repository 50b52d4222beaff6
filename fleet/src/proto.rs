//! Generated types and service stubs of `proto/lobster.proto` (package `lobster.v1`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("lobster.v1");
