//! The high-fidelity runtime (`lobster cloud local --runtime nspawn`): an instance boots its
//! image's root file system (`<image>/rootfs`, made by `lobster image build --local --rootfs`)
//! under a real systemd with `systemd-nspawn --boot`, so the image's units, their ordering
//! and restart policies, the journal and `systemctl poweroff` are systemd's own.
//!
//! - Disk: an overlay of the image's tree (read-only) and the instance's own `upper/`, mounted
//!   on the instance's `root/`; it persists across stop and start, and goes on terminate.
//!   Where overlayfs is unavailable the tree is copied once instead.
//! - Network: the host's (loopback included), so the instance reaches its IMDS endpoint, the
//!   local cloud and the master on 127.0.0.1 as a VM reaches 169.254.169.254 and its VPC.
//! - What a VM learns from its hypervisor rather than its disk is passed on systemd's command
//!   line (`systemd.setenv=`, as on a kernel command line; nothing is written into the image):
//!   the IMDS endpoint, the EC2 endpoint, and the instance type's vCPUs (`LOBSTER_CORES`; the
//!   container otherwise sees the host's cores).
//! - Stop: after the `stop_delay_ms` fault, SIGTERM to `systemd-nspawn`, which asks the
//!   container's systemd to power off (SIGRTMIN+3); SIGKILL after 30 s. A container that
//!   powers itself off ends `systemd-nspawn`: an instance-initiated shutdown.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::boot::Boot;
use super::*;

/// Longest wait for a container to power off before SIGKILL.
const POWEROFF_WAIT: Duration = Duration::from_secs(30);

/// Whether `systemd-nspawn` can be run here (root, and the program installed).
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the nspawn runtime needs root (systemd-nspawn boots containers)".into());
    }
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("systemd-nspawn").is_file())
    });
    if !found {
        return Err(
            "the nspawn runtime needs systemd-nspawn (Debian package systemd-container)".into(),
        );
    }
    Ok(())
}

/// Whether `dir` is a root file system that can boot.
pub fn bootable(dir: &Path) -> bool {
    [
        "sbin/init",
        "lib/systemd/systemd",
        "usr/lib/systemd/systemd",
    ]
    .iter()
    .any(|p| dir.join(p).exists())
}

fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
}

/// Unmounts the instance's root if it is an overlay mount (before a restart or removal).
pub fn unmount(root: &Path) {
    if is_mounted(root) {
        let _ = std::process::Command::new("umount")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Mounts (or copies, the first time, where overlayfs is unavailable) the image's tree on
/// the instance's root.
fn prepare_root(rootfs: &Path, dir: &Path, root: &Path) -> Result<&'static str, String> {
    unmount(root);
    let copied = dir.join("root.copied");
    if copied.exists() {
        return Ok("copy");
    }
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work, &root.to_path_buf()] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let plain = |p: &Path| !p.display().to_string().contains([',', ':']);
    if plain(rootfs) && plain(&upper) && plain(&work) {
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                rootfs.display(),
                upper.display(),
                work.display()
            ))
            .arg(root)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            return Ok("overlay");
        }
    }
    let status = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "-T"])
        .arg(rootfs)
        .arg(root)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err(format!("cannot copy {} ({status})", rootfs.display()));
    }
    let _ = std::fs::write(&copied, "");
    Ok("copy")
}

/// Boots the instance's container and supervises it until it powers off or `stop`.
pub(super) async fn run(b: &Boot, stop: &CancellationToken) {
    let rootfs = b.image_dir.join("rootfs");
    if !bootable(&rootfs) {
        console(
            &b.dir,
            "the image has no root file system to boot (build it with `lobster image build --local --rootfs DIR`)",
        );
        return;
    }
    match prepare_root(&rootfs, &b.dir, &b.root) {
        Ok(how) => console(
            &b.dir,
            &format!("disk ready ({how} of {})", rootfs.display()),
        ),
        Err(e) => {
            console(&b.dir, &format!("cannot prepare the disk: {e}"));
            return;
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(b.dir.join("console.log"));
    let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((a, e)) => (Stdio::from(a), Stdio::from(e)),
        Err(_) => (Stdio::null(), Stdio::null()),
    };
    let mut cmd = Command::new("systemd-nspawn");
    cmd.args(["--quiet", "--boot", "--register=no", "--keep-unit"])
        .args(["--console=pipe", "--link-journal=no"])
        .arg(format!("--directory={}", b.root.display()))
        .arg(format!("--machine={}", b.id))
        .arg(format!(
            "systemd.setenv=AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{}",
            b.imds_port
        ))
        .arg(format!(
            "systemd.setenv=AWS_ENDPOINT_URL_EC2={}",
            b.shared.endpoint()
        ))
        .arg(format!("systemd.setenv=LOBSTER_CORES={}", b.vcpus));
    if let Ok(filter) = std::env::var("LOBSTER_LOG") {
        cmd.arg(format!("systemd.setenv=LOBSTER_LOG={filter}"));
    }
    // The marker by which a restarted local cloud finds leftover containers.
    cmd.env("LOBSTER_ROOT", &b.root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            console(&b.dir, &format!("cannot run systemd-nspawn: {e}"));
            unmount(&b.root);
            return;
        }
    };
    let pid = child.id().unwrap_or(0) as i32;
    console(&b.dir, &format!("systemd-nspawn started (pid {pid})"));
    b.shared.update(&b.id, |i| {
        i.pgids.push(pid);
        i.units_started = true;
    });
    tokio::select! {
        status = child.wait() => {
            console(&b.dir, &format!("container powered off ({})", status.map_or("unknown".into(), |s| s.to_string())));
            instance_initiated_shutdown(&b.shared, &b.id);
        }
        _ = stop.cancelled() => {
            let delay = b.shared.faults().stop_delay_ms;
            if delay > 0 {
                console(&b.dir, &format!("stop requested; guest shutdown in {delay} ms"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    _ = child.wait() => {}
                }
            }
            console(&b.dir, "stopping: powering the container off");
            terminate_group(pid, POWEROFF_WAIT, &mut child).await;
        }
    }
    b.shared.update(&b.id, |i| i.pgids.retain(|p| *p != pid));
    unmount(&b.root);
}
