//! Clouds: where slave VMs come from.
//!
//! - [`cloud`]: the [`Cloud`](cloud::Cloud) trait, its types and typed errors.
//! - [`ec2`]: the EC2 backend (aws-sdk-ec2, aws-config's standard chain).
//! - [`imds`]: an IMDSv2 client (a VM learns who it is).
//! - [`local`]: the local cloud (EC2 Query API, per-instance IMDS, instance runtime).
//!
//! The only crate that imports `aws-sdk-*`.

pub mod cloud;
#[cfg(feature = "ec2")]
pub mod ec2;
pub mod imds;
pub mod local;
