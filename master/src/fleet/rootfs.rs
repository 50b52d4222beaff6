//! Baking the recipe into a root file system, for the local cloud's nspawn runtime
//! (`lobster image build --local --rootfs DIR`): the base tree (e.g. made by `debootstrap`) is
//! copied to `<image>/rootfs`, and the EC2 builder's own script (`install.sh`, the download a
//! `file://` URL of the image's binary) runs inside it under `systemd-nspawn`, unbooted. The
//! result is what an AMI baked on EC2 holds: the binary, the units enabled, an empty
//! `/etc/machine-id`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::image::install_script;

/// Where the image's `bin/` is mounted while the script runs.
const BIN_MOUNT: &str = "/run/lobster-image";

/// The root file system could not be baked.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The base tree cannot boot or lacks what the script needs.
    #[error("{path} cannot be the base of an image: {why}")]
    Base { path: String, why: String },
    /// `systemd-nspawn` cannot run here.
    #[error("{0}")]
    Nspawn(String),
    /// Copying or writing failed.
    #[error("cannot prepare {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The install script failed inside the tree.
    #[error("the install script failed in the root file system ({status}); its output:\n{tail}")]
    Install { status: String, tail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Checks a base tree before anything is copied.
pub fn check_base(base: &Path) -> Result<(), RootfsError> {
    let fail = |why: &str| RootfsError::Base {
        path: base.display().to_string(),
        why: why.to_string(),
    };
    if !base.is_dir() {
        return Err(fail("not a directory"));
    }
    if !lobster_provision::local::bootable(base) {
        return Err(fail(
            "it has no systemd (debootstrap --include=systemd,systemd-sysv)",
        ));
    }
    let has = |bin: &str| {
        ["usr/bin", "bin"]
            .iter()
            .any(|d| base.join(d).join(bin).exists())
    };
    for (bin, why) in [
        (
            "bash",
            "it has no bash (the install script is a bash script)",
        ),
        (
            "curl",
            "it has no curl (the install script downloads the binary with it: debootstrap --include=curl)",
        ),
    ] {
        if !has(bin) {
            return Err(fail(why));
        }
    }
    Ok(())
}

/// Bakes `<image_dir>/rootfs` from `base`; returns its path.
pub fn bake(image_dir: &Path, base: &Path) -> Result<PathBuf, RootfsError> {
    check_base(base)?;
    lobster_provision::local::nspawn_available().map_err(RootfsError::Nspawn)?;
    let done = image_dir.join("rootfs");
    let tmp = image_dir.join("rootfs.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let copy = Command::new("cp")
        .args(["-a", "--reflink=auto", "-T"])
        .arg(base)
        .arg(&tmp)
        .status()
        .map_err(io(&tmp))?;
    if !copy.success() {
        return Err(RootfsError::Io {
            path: tmp.display().to_string(),
            source: std::io::Error::other(format!("cp {copy}")),
        });
    }
    let script = tmp.join("root/lobster-install.sh");
    std::fs::create_dir_all(tmp.join("root")).map_err(io(&script))?;
    std::fs::write(
        &script,
        install_script(&format!("file://{BIN_MOUNT}/lobster-slave")),
    )
    .map_err(io(&script))?;
    let log = image_dir.join("install.log");
    let out = std::fs::File::create(&log).map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    let status = Command::new("systemd-nspawn")
        .args(["--quiet", "--register=no", "--keep-unit", "--pipe"])
        .arg(format!("--directory={}", tmp.display()))
        .arg(format!(
            "--bind-ro={}:{BIN_MOUNT}",
            image_dir.join("bin").display()
        ))
        .args(["/bin/bash", "/root/lobster-install.sh"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| RootfsError::Nspawn(format!("cannot run systemd-nspawn: {e}")))?;
    let _ = std::fs::remove_file(&script);
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(RootfsError::Install {
            status: status.to_string(),
            tail,
        });
    }
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&tmp, &done).map_err(io(&done))?;
    Ok(done)
}
