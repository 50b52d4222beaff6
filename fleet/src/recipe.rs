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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit file of `image/systemd/` ships; every unit that can be enabled is enabled by
    /// the install script; and no unit points at documentation the image does not install.
    #[test]
    fn the_recipe_is_whole() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("image/systemd");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        on_disk.sort();
        let mut shipped: Vec<String> = UNITS.iter().map(|(f, _)| f.to_string()).collect();
        shipped.sort();
        assert_eq!(on_disk, shipped);
        let enable = INSTALL
            .lines()
            .find(|l| l.starts_with("systemctl enable "))
            .expect("an enable line");
        for (file, text) in UNITS {
            let installable = text.contains("WantedBy=multi-user.target");
            assert_eq!(
                installable,
                enable.split_whitespace().any(|w| w == *file),
                "{file}: wanted by multi-user.target iff enabled"
            );
            for line in text.lines().filter(|l| l.starts_with("Documentation=")) {
                assert!(
                    !line.contains("file://"),
                    "{file}: {line} names a file the image does not install"
                );
            }
        }
    }
}
