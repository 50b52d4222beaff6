//! One boot of an instance: its root file system mapped under the instance's directory, its
//! units started as process groups the way systemd would (ExecStart, Environment and
//! EnvironmentFile, `%i`, restart policy), and its emulated init's requests (start units,
//! power off).

use std::process::Stdio;
use std::time::Instant;

use tokio::process::Command;

use super::super::units::{Output, Restart, Service, Unit, read_env_file};
use super::*;

pub(super) struct Boot {
    pub(super) shared: Arc<Shared>,
    pub(super) id: String,
    pub(super) dir: PathBuf,
    pub(super) root: PathBuf,
    pub(super) image_dir: PathBuf,
    pub(super) vcpus: u32,
    pub(super) imds_port: u16,
}

impl Boot {
    fn map(&self, path: &str) -> PathBuf {
        match path.strip_prefix("/usr/local/bin/") {
            Some(rest) => self.image_dir.join("bin").join(rest),
            None => match path.strip_prefix('/') {
                Some(rel) => self.root.join(rel),
                None => self.root.join(path),
            },
        }
    }

    fn units(&self) -> Vec<Unit> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.image_dir.join("systemd")) else {
            console(
                &self.dir,
                "image has no systemd/ directory: nothing to boot",
            );
            return out;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if !name.ends_with(".service") {
                continue;
            }
            match std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| Unit::parse(&name, &t))
            {
                Ok(u) => out.push(u),
                Err(e) => console(&self.dir, &format!("ignoring unit {name}: {e}")),
            }
        }
        out
    }

    /// Starts the boot sequence; returns the supervising tasks of long-running units.
    ///
    /// As systemd with these units: the oneshot units wanted by `multi-user.target` run in
    /// turn, then every other wanted service starts at once (none waits for another), and the
    /// units the boot step asks for (the emulated `systemctl start`, lines of
    /// `/run/lobster/start-units`) start whenever it asks.
    pub(super) async fn start_units(
        &self,
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let units = Arc::new(self.units());
        let wanted: Vec<&Unit> = units
            .iter()
            .filter(|u| !u.is_template() && u.wanted_by().iter().any(|t| t == "multi-user.target"))
            .collect();
        let mut tasks = Vec::new();
        for u in wanted
            .iter()
            .filter(|u| u.service("").is_ok_and(|s| s.oneshot))
        {
            let Ok(svc) = u.service("") else { continue };
            console(&self.dir, &format!("starting {} (oneshot)", svc.name));
            let ok = self.supervise(svc, stop.clone()).await;
            if !ok {
                console(&self.dir, &format!("{} failed", u.name));
            }
            if stop.is_cancelled() {
                return tasks;
            }
        }
        for u in &wanted {
            match u.service("") {
                Ok(svc) if !svc.oneshot => tasks.push(self.spawn(svc, stop.clone())),
                Ok(_) => {}
                Err(e) => console(&self.dir, &format!("cannot start {}: {e}", u.name)),
            }
        }
        let me = self.clone_ctx();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            me.serve_start_requests(&units, stop).await
        }));
        tasks
    }

    /// Starts the units the boot step asks for, until `stop`; then waits for them to end.
    async fn serve_start_requests(&self, units: &[Unit], stop: CancellationToken) {
        let requests = self.root.join("run/lobster/start-units");
        let mut started: std::collections::BTreeSet<String> = Default::default();
        let mut tasks = Vec::new();
        loop {
            let text = std::fs::read_to_string(&requests).unwrap_or_default();
            for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !started.insert(name.to_string()) {
                    continue;
                }
                match self.requested(units, name) {
                    Ok(svc) => {
                        tasks.push(self.spawn(svc, stop.clone()));
                        self.shared.update(&self.id, |i| i.units_started = true);
                    }
                    Err(e) => console(&self.dir, &format!("cannot start {name}: {e}")),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => break,
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// The service an emulated `systemctl start name` names (a template's instance).
    fn requested(&self, units: &[Unit], name: &str) -> Result<Service, String> {
        let (base, rest) = name
            .split_once('@')
            .ok_or_else(|| "not a template instance".to_string())?;
        let (instance, ext) = rest
            .rsplit_once('.')
            .ok_or_else(|| "not a unit name".to_string())?;
        let template = format!("{base}@.{ext}");
        units
            .iter()
            .find(|u| u.name == template)
            .ok_or_else(|| format!("no unit {template}"))?
            .service(instance)
    }

    fn clone_ctx(&self) -> Boot {
        Boot {
            shared: self.shared.clone(),
            id: self.id.clone(),
            dir: self.dir.clone(),
            root: self.root.clone(),
            image_dir: self.image_dir.clone(),
            vcpus: self.vcpus,
            imds_port: self.imds_port,
        }
    }

    fn spawn(&self, svc: Service, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone_ctx();
        tokio::spawn(async move {
            me.supervise(svc, stop).await;
        })
    }

    fn command(&self, svc: &Service) -> Result<Command, String> {
        let program = self.map(&svc.exec[0]);
        let mut cmd = Command::new(&program);
        cmd.args(&svc.exec[1..]);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.root.join("home"))
            .env("LANG", "C.UTF-8")
            .env("LOBSTER_ROOT", &self.root)
            .env("LOBSTER_INIT", "emulated")
            .env("LOBSTER_CORES", self.vcpus.to_string())
            .env(
                "LOBSTER_BOOT_ID",
                format!("{}-{}", self.id, super::super::unix_ms()),
            )
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://127.0.0.1:{}", self.imds_port),
            )
            .env("AWS_ENDPOINT_URL_EC2", self.shared.endpoint());
        if let Ok(filter) = std::env::var("LOBSTER_LOG") {
            cmd.env("LOBSTER_LOG", filter);
        }
        for (file, optional) in &svc.environment_files {
            match std::fs::read_to_string(self.map(file)) {
                Ok(text) => {
                    cmd.envs(read_env_file(&text));
                }
                Err(_) if *optional => {}
                Err(e) => return Err(format!("EnvironmentFile {file}: {e}")),
            }
        }
        cmd.envs(svc.environment.iter().cloned());
        let output = |out: &Output| -> Result<Stdio, String> {
            match out {
                Output::Null => Ok(Stdio::null()),
                Output::File(p) => {
                    let mapped = self.map(p);
                    if let Some(parent) = mapped.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&mapped)
                        .map(Stdio::from)
                        .map_err(|e| format!("{p}: {e}"))
                }
            }
        };
        // As systemd: standard error goes where standard output goes unless set apart.
        let stderr = svc.stderr.as_ref().unwrap_or(&svc.stdout);
        cmd.stdin(Stdio::null())
            .stdout(output(&svc.stdout)?)
            .stderr(output(stderr)?)
            .current_dir(&self.root)
            .process_group(0)
            .kill_on_drop(false);
        Ok(cmd)
    }

    /// Runs a unit until it ends for good or `stop`; returns whether its last run succeeded.
    async fn supervise(&self, svc: Service, stop: CancellationToken) -> bool {
        let mut starts: Vec<Instant> = Vec::new();
        loop {
            let now = Instant::now();
            starts.retain(|t| now.duration_since(*t) < svc.start_limit_interval);
            if starts.len() as u32 >= svc.start_limit_burst {
                console(
                    &self.dir,
                    &format!(
                        "{}: start request repeated too quickly, refusing to start",
                        svc.name
                    ),
                );
                return false;
            }
            starts.push(now);
            let mut child = match self
                .command(&svc)
                .and_then(|mut c| c.spawn().map_err(|e| format!("{}: {e}", svc.exec[0])))
            {
                Ok(c) => c,
                Err(e) => {
                    console(&self.dir, &format!("{}: failed to start: {e}", svc.name));
                    return false;
                }
            };
            let pid = child.id().unwrap_or(0) as i32;
            console(&self.dir, &format!("started {} (pid {pid})", svc.name));
            self.shared.update(&self.id, |i| i.pgids.push(pid));
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = stop.cancelled() => {
                    terminate_group(pid, svc.timeout_stop.min(MAX_STOP_WAIT), &mut child).await;
                    console(&self.dir, &format!("stopped {}", svc.name));
                    self.shared.update(&self.id, |i| i.pgids.retain(|p| *p != pid));
                    return true;
                }
            };
            self.shared
                .update(&self.id, |i| i.pgids.retain(|p| *p != pid));
            let ok = status.is_some_and(|s| s.success());
            console(
                &self.dir,
                &format!(
                    "{} exited ({})",
                    svc.name,
                    status.map_or("unknown".into(), |s| s.to_string())
                ),
            );
            let again = match svc.restart {
                Restart::Always => !svc.oneshot,
                Restart::OnFailure => !ok && !svc.oneshot,
                Restart::No => false,
            };
            if !again {
                return ok;
            }
            tokio::select! {
                _ = tokio::time::sleep(svc.restart_sec) => {}
                _ = stop.cancelled() => return ok,
            }
        }
    }
}
