//! Powering the VM off from inside, the way that needs no API permission: EC2 stops an
//! instance whose OS shuts down (Lobster launches with `InstanceInitiatedShutdownBehavior`
//! `stop`). Under the local cloud's emulated init (`LOBSTER_INIT=emulated`) the request is a
//! file, `$LOBSTER_ROOT/run/lobster/poweroff`, that the runtime acts on.

use std::path::Path;

use tracing::error;

/// Whether this process runs under the local cloud's emulated init.
pub fn emulated() -> bool {
    std::env::var("LOBSTER_INIT").as_deref() == Ok("emulated")
}

/// Asks the init system to power off; `who` says why (logged, and written to the request
/// file under the emulated init). Returns whether the request was made.
pub fn poweroff(root: &Path, who: &str) -> bool {
    if emulated() {
        let p = root.join("run/lobster/poweroff");
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(&p, format!("{who}\n")) {
            Ok(()) => {
                error!(file = %p.display(), who, "powering off (emulated init)");
                true
            }
            Err(e) => {
                error!(error = %e, who, "cannot request power off");
                false
            }
        }
    } else {
        error!(
            who,
            "powering off with `systemctl poweroff` (the instance's shutdown behaviour stops it)"
        );
        match std::process::Command::new("systemctl")
            .arg("poweroff")
            .status()
        {
            Ok(s) if s.success() => true,
            Ok(s) => {
                error!(status = %s, "systemctl poweroff failed");
                false
            }
            Err(e) => {
                error!(error = %e, "cannot run systemctl poweroff");
                false
            }
        }
    }
}
