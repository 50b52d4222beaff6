//! Lobster's integration scenarios: real processes (masters, slaves, the local cloud, nginx,
//! moto, the aws CLI) on loopback, port 0. One test binary for the crate, to link once.
//!
//! `serial` holds the scenarios whose figures are timings (arrival spacing, stop propagation,
//! loss detection, chaos, a scraped rate): `scripts/test` runs them one at a time after the rest, so a loaded
//! 2-core machine running two tests at once cannot bend them.

mod common;

mod bad_input;
mod dashboard;
mod detached;
mod exports;
mod fleet_bad_input;
mod fleet_local;
mod https;
mod local_cloud;
mod moto;
mod nginx;
mod security;
mod slave_image;
mod targets;
mod traces;
mod vm_lifetime;

mod serial {
    mod chaos;
    mod compare;
    mod elastic;
    mod injectors;
    mod nspawn;
    mod numbers;
    mod prometheus;
    mod resilience;
    mod run_e2e;
}
