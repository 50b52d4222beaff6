//! `lobster stop`: ends the background master and local cloud of this home.

use super::ExitStatus;
use std::time::Duration;

use crate::daemon;
use crate::home::Home;

use super::Failure;

pub async fn stop(home: &Home) -> Result<ExitStatus, Failure> {
    let mut stopped = 0;
    if let Some(info) = crate::server::discover(&home.master())
        && daemon::stop_pid(info.pid, Duration::from_secs(20)).await
    {
        println!("stopped the master (pid {})", info.pid);
        stopped += 1;
    }
    if let Some(info) = daemon::discover_cloud(home)
        && daemon::stop_pid(info.pid, Duration::from_secs(30)).await
    {
        println!(
            "stopped the local cloud (pid {}) and its instances' processes",
            info.pid
        );
        stopped += 1;
    }
    if stopped == 0 {
        println!("nothing was running for {}", home.root.display());
    }
    Ok(ExitStatus::Success)
}
