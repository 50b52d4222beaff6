//! The slave image's recipe, shared openly by the master (which lays out local images, bakes
//! AMIs and renders user-data) and the VM (which runs these units): the files live in
//! `fleet/image/` and are compiled in here, so `lobster` alone can make an image.
//!
//! - `systemd/`: `lobster-boot.service` (IMDS identity and user-data → one slave unit per
//!   core), `lobster-slave@.service`, `lobster-slaves.target`, `lobster-idle.service` (stops
//!   the VM once idle), `lobster-lifetime.service` (powers it off at its expiry).
//! - `cloud-init/user-data.yaml`: the user-data template ([`crate::userdata::render`]).
//! - `build/install.sh`: the EC2 builder instance's script.

/// The systemd units, by file name.
pub const UNITS: &[(&str, &str)] = &[
    (
        "lobster-boot.service",
        include_str!("../image/systemd/lobster-boot.service"),
    ),
    (
        "lobster-slave@.service",
        include_str!("../image/systemd/lobster-slave@.service"),
    ),
    (
        "lobster-slaves.target",
        include_str!("../image/systemd/lobster-slaves.target"),
    ),
    (
        "lobster-idle.service",
        include_str!("../image/systemd/lobster-idle.service"),
    ),
    (
        "lobster-lifetime.service",
        include_str!("../image/systemd/lobster-lifetime.service"),
    ),
];

/// The cloud-init user-data template the master fills in.
pub const USER_DATA: &str = include_str!("../image/cloud-init/user-data.yaml");

/// The EC2 install script (user-data of the builder instance).
pub const INSTALL: &str = include_str!("../image/build/install.sh");
