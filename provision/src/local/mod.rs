//! The local cloud: an EC2 Query API on loopback whose instances are real local process trees
//! booting the image recipe. The embedded default cloud of Lobster and its test bed.
//!
//! - [`query`] / [`xml`]: the wire protocol; [`api`]: the actions as pure functions of the state.
//! - [`state`]: images, instances, tags, client tokens; persisted in `state.json`.
//! - [`runtime`]: boots and stops instances ([`units`] parses their systemd units); [`imds`]:
//!   one IMDSv2 endpoint per running instance.
//! - [`faults`]: throttling, capacity errors, slow boots; [`types`]: emulated instance types.
//!
//! Restart: instances that were running when the local cloud went away are *rebooted* when it
//! comes back (their leftover processes are killed first); `stopping` ones become `stopped`,
//! `shutting-down` ones `terminated`.

// The actions, the wire format and the state are public only to the fuzzers (`fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod api;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod api;
pub mod faults;
pub(crate) mod imds;
#[cfg(feature = "fuzzing")]
pub mod query;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod query;
pub(crate) mod runtime;
#[cfg(feature = "fuzzing")]
pub mod state;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod state;
pub mod types;
pub(crate) mod units;
pub(crate) mod xml;

mod http;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cloud::InstanceState;
use api::Effect;
use faults::Faults;
use state::{State, Store};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How instances run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Runtime {
    /// The image's units as local process groups under an emulated init (the default: no
    /// root, no root file system needed).
    #[default]
    Emulated,
    /// The image's root file system booted under a real systemd with `systemd-nspawn`
    /// (root; images made with `lobster image build --local --rootfs`).
    Nspawn,
}

/// How to run a local cloud.
#[derive(Clone, Debug)]
pub struct LocalCloudConfig {
    /// Holds `state.json`, `instances/` and `images/`.
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub region: String,
    /// When set, only this access key id (and instances' own) may call the API.
    pub access_key: Option<String>,
    pub faults: Faults,
    /// How long a terminated instance stays visible (EC2: about an hour).
    pub terminated_retention: std::time::Duration,
    /// How instances run.
    pub runtime: Runtime,
}

/// The local cloud could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalCloudError {
    #[error("cannot use the local cloud directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the local cloud state in {path} is unreadable")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid fault settings: {0}")]
    Faults(String),
    #[error("another local cloud is running on {0}")]
    Locked(String),
    /// The runtime asked for cannot run here.
    #[error("{0}")]
    Runtime(String),
}

/// State shared by the API, the runtime and the IMDS endpoints.
pub struct Shared {
    pub state: Mutex<State>,
    store: Store,
    pub region: String,
    pub dir: PathBuf,
    endpoint: Mutex<String>,
    faults: Mutex<Faults>,
    pub(crate) running: Mutex<HashMap<String, runtime::Handle>>,
    access_key: Option<String>,
    /// How long a terminated instance stays visible.
    terminated_retention: std::time::Duration,
    /// How instances run.
    pub(crate) runtime: Runtime,
}

impl Shared {
    pub fn endpoint(&self) -> String {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn save(&self, s: &State) {
        if let Err(e) = self.store.save(s) {
            warn!(error = %e, "cannot save the local cloud state");
        }
    }

    /// Changes one instance under the lock and saves; returns its image directory and vCPUs.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut state::InstanceRec),
    ) -> Option<(PathBuf, u32)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let inst = s.instances.get_mut(id)?;
        f(inst);
        let image = inst.image_id.clone();
        let vcpus = types::vcpus(&inst.instance_type).unwrap_or(1);
        let dir = s
            .images
            .get(&image)
            .map(|i| PathBuf::from(&i.location))
            .unwrap_or_default();
        self.save(&s);
        Some((dir, vcpus))
    }

    pub fn state_of(&self, id: &str) -> Option<InstanceState> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .instances
            .get(id)
            .map(|i| i.state)
    }
}

/// Whether `dir` is a root file system with systemd to boot (the nspawn runtime's images).
pub fn bootable(dir: &Path) -> bool {
    runtime::nspawn::bootable(dir)
}

/// Whether the nspawn runtime can run here (root, `systemd-nspawn` installed); why not.
pub fn nspawn_available() -> Result<(), String> {
    runtime::nspawn::available()
}

/// Checks that an image location is a recipe directory (`bin/`, `systemd/`).
pub fn check_recipe(location: &str) -> Result<(), String> {
    let p = Path::new(location);
    if !p.is_absolute() {
        return Err(format!(
            "ImageLocation must be an absolute directory path, got `{location}`"
        ));
    }
    for sub in ["bin", "systemd"] {
        if !p.join(sub).is_dir() {
            return Err(format!(
                "ImageLocation {location} is not a Lobster image recipe (no {sub}/ directory)"
            ));
        }
    }
    Ok(())
}

pub struct LocalCloud {
    listener: TcpListener,
    shared: Arc<Shared>,
    _lock: std::fs::File,
}

impl LocalCloud {
    /// Takes the directory, loads the state, binds the listener, and reboots instances that
    /// were running (nothing is served until [`LocalCloud::run`]).
    pub async fn bind(cfg: LocalCloudConfig) -> Result<Self, LocalCloudError> {
        cfg.faults.check().map_err(LocalCloudError::Faults)?;
        if cfg.runtime == Runtime::Nspawn {
            runtime::nspawn::available().map_err(LocalCloudError::Runtime)?;
        }
        let dir_err = |source| LocalCloudError::Dir {
            path: cfg.dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(cfg.dir.join("instances")).map_err(dir_err)?;
        let lock = std::fs::File::create(cfg.dir.join("cloud.lock")).map_err(dir_err)?;
        if lock.try_lock().is_err() {
            return Err(LocalCloudError::Locked(cfg.dir.display().to_string()));
        }
        let store = Store::new(&cfg.dir);
        let mut st = store.load().map_err(|source| LocalCloudError::State {
            path: cfg.dir.display().to_string(),
            source,
        })?;
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| LocalCloudError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(dir_err)?;
        st.purge(unix_ms(), cfg.terminated_retention.as_millis() as u64);
        let mut reboot = Vec::new();
        for i in st.instances.values_mut() {
            let root = cfg.dir.join("instances").join(&i.id).join("root");
            runtime::kill_leftovers(&root, &i.pgids);
            if !i.pgids.is_empty() {
                // A container killed with its cloud leaves its overlay mounted.
                std::thread::sleep(std::time::Duration::from_millis(200));
                runtime::nspawn::unmount(&root);
            }
            i.pgids.clear();
            i.imds_port = None;
            match i.state {
                InstanceState::Pending | InstanceState::Running => {
                    i.state = InstanceState::Pending;
                    reboot.push(Effect::Boot(i.id.clone()));
                }
                InstanceState::Stopping => i.state = InstanceState::Stopped,
                InstanceState::ShuttingDown => {
                    i.state = InstanceState::Terminated;
                    i.terminated_unix_ms = Some(unix_ms());
                }
                _ => {}
            }
        }
        store.save(&st).map_err(dir_err)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            store,
            region: cfg.region.clone(),
            dir: cfg.dir.clone(),
            endpoint: Mutex::new(format!("http://{addr}")),
            faults: Mutex::new(cfg.faults.clone()),
            running: Mutex::new(HashMap::new()),
            access_key: cfg.access_key.clone(),
            terminated_retention: cfg.terminated_retention,
            runtime: cfg.runtime,
        });
        if !reboot.is_empty() {
            info!(
                instances = reboot.len(),
                "rebooting instances that were running"
            );
            runtime::apply(&shared, reboot);
        }
        Ok(LocalCloud {
            listener,
            shared,
            _lock: lock,
        })
    }

    /// The API's URL.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint()
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown`, then ends every instance's processes (their recorded state
    /// stays, so they boot again when the local cloud comes back).
    pub async fn run(self, shutdown: CancellationToken) {
        let app = http::router(self.shared.clone());
        tokio::spawn(purge_terminated(self.shared.clone(), shutdown.clone()));
        info!(endpoint = %self.shared.endpoint(), "local cloud ready");
        let _ = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        let handles: Vec<CancellationToken> = self
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.stop.clone())
            .collect();
        info!(
            instances = handles.len(),
            "local cloud stopping: ending instance processes"
        );
        // Remember what ran, stop the processes, then put the states back for the next start.
        let before: Vec<(String, InstanceState)> = {
            let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.instances
                .values()
                .map(|i| (i.id.clone(), i.state))
                .collect()
        };
        for h in &handles {
            h.cancel();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while !self
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            if tokio::time::Instant::now() > deadline {
                warn!("instances did not stop within 15 s");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        for (id, st) in before {
            if let Some(i) = s.instances.get_mut(&id)
                && st.is_up()
            {
                i.state = InstanceState::Running;
            }
        }
        self.shared.save(&s);
    }
}

/// Forgets terminated instances once their retention passed, checking a few times per
/// retention period (at least every 30 s).
async fn purge_terminated(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = (shared.terminated_retention / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(30),
    );
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let gone = s.purge(unix_ms(), shared.terminated_retention.as_millis() as u64);
        if gone > 0 {
            info!(instances = gone, "terminated instances purged");
            shared.save(&s);
        }
    }
}
