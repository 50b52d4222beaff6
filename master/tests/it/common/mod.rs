//! Test harness: real processes (master, slaves, target, nginx) on loopback, port 0.

#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `lobster` binary under test.
pub fn lobster() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lobster"))
}

/// The `lobster-slave` binary, built beside `lobster` by `cargo build --workspace`.
pub fn slave_bin() -> PathBuf {
    let p = lobster().with_file_name("lobster-slave");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        p.display()
    );
    p
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
    }

    /// Waits for the process to exit (bounded).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` and waits for a stdout line containing `marker`; returns the process and line.
pub fn spawn_until(mut cmd: Command, name: &str, marker: &str, log: &Path) -> (Proc, String) {
    let err = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(marker) => break l,
            Some(Ok(_)) => continue,
            _ => panic!(
                "{name} exited before printing `{marker}`; log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Proc {
            child,
            name: name.into(),
        },
        line,
    )
}

/// A temporary LOBSTER_HOME with helpers to start things in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Drop for Env {
    /// Background daemons (master, local cloud) started in this home must not outlive the test.
    /// With `LOBSTER_KEEP_FAILED` set, a failed test's home (logs, reports) is kept and its
    /// path printed.
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("LOBSTER_KEEP_FAILED").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept the failed test's home: {}", self.dir.path().display());
        }
        let _ = Command::new(lobster())
            .env("LOBSTER_HOME", self.home())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        kill_instance_processes(self.home());
    }
}

/// Ends the processes of local-cloud instances that live under `home`: a local cloud killed
/// with SIGKILL (as the harness does to foreground processes) cannot end its instances, and a
/// slave whose master is gone retries forever, as it should on a VM.
fn kill_instance_processes(home: &Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let marker = format!("LOBSTER_ROOT={}/", home.display());
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let ours = environ
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(marker.as_bytes()));
        if ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `lobster <args>` in this home; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut c = self.lobster();
        c.args(args);
        let (out, so, se) = run(c);
        (out.status.code().unwrap_or(-1), so, se)
    }

    /// Starts `lobster cloud local` in the foreground (as a child) with extra flags.
    pub fn cloud(&self, extra: &[&str]) -> (Proc, String) {
        let mut c = self.lobster();
        c.args(["cloud", "local", "--listen", "127.0.0.1:0"])
            .args(extra);
        let (p, line) = spawn_until(c, "cloud", "endpoint http://", &self.path("cloud-fg.log"));
        let endpoint = line
            .split("endpoint ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        (p, endpoint)
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn lobster(&self) -> Command {
        let mut c = Command::new(lobster());
        c.env("LOBSTER_HOME", self.home())
            .env_remove("LOBSTER_MASTER_API")
            .env(
                "LOBSTER_LOG",
                std::env::var("LOBSTER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        c
    }

    /// Starts `lobster target` on a free port.
    pub fn target(&self) -> (Proc, SocketAddr) {
        let mut c = self.lobster();
        c.args(["target", "--listen", "127.0.0.1:0", "--threads", "1"]);
        let (p, line) = spawn_until(c, "target", "listening on", &self.path("target.log"));
        let addr = line
            .rsplit("http://")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (p, addr)
    }

    /// Starts `lobster master` on free ports (or the given ones); returns (proc, api, grpc).
    pub fn master(&self, ports: Option<(u16, u16)>, extra: &[&str]) -> (Proc, String, String) {
        let (g, a) = ports.unwrap_or((0, 0));
        let mut c = self.lobster();
        c.args([
            "master",
            "--grpc-listen",
            &format!("127.0.0.1:{g}"),
            "--api-listen",
            &format!("127.0.0.1:{a}"),
        ]);
        c.args(extra);
        let (p, line) = spawn_until(c, "master", "api http://", &self.path("master.log"));
        let api = line
            .split("api ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let grpc = line
            .split("grpc ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        // master.json (with the certificate fingerprint slaves pin) is written as it starts serving.
        let discovery = self.home().join("master/master.json");
        eventually("master.json", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&discovery).ok()?;
            text.contains(&api).then_some(())
        });
        (p, api, grpc)
    }

    /// The join token the master of this home created.
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.home().join("master/tokens/default"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The fingerprint of the running master's certificate (from master.json).
    pub fn fingerprint(&self) -> String {
        let text =
            std::fs::read_to_string(self.home().join("master/master.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["fingerprint"].as_str().unwrap_or("").to_string()
    }

    /// Starts one `lobster-slave` process joining `grpc`.
    pub fn slave(&self, grpc: &str, index: u32, of: u32) -> Proc {
        self.slave_under(&[], grpc, index, of)
    }

    /// Starts one `lobster-slave` process joining `grpc` under a wrapper command (e.g.
    /// `["taskset", "-c", "1"]`; none when empty).
    pub fn slave_under(&self, wrapper: &[&str], grpc: &str, index: u32, of: u32) -> Proc {
        let log = std::fs::File::create(self.path(&format!("slave-{index}.log"))).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(slave_bin());
                c
            }
            None => Command::new(slave_bin()),
        };
        let child = cmd
            .env("LOBSTER_MASTER", grpc)
            .env("LOBSTER_JOIN_TOKEN", self.join_token())
            .env("LOBSTER_MASTER_FINGERPRINT", self.fingerprint())
            .env("LOBSTER_INSTANCE_ID", "i-test")
            .env("LOBSTER_SLAVE_INDEX", index.to_string())
            .env("LOBSTER_SLAVES_ON_HOST", of.to_string())
            .env("LOBSTER_TRACE_DIR", self.path(&format!("traces-{index}")))
            .env(
                "LOBSTER_LOG",
                std::env::var("LOBSTER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc {
            child,
            name: format!("slave-{index}"),
        }
    }

    /// Writes a scenario file.
    pub fn scenario(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The request count a `lobster target` saw.
pub fn target_count(addr: SocketAddr) -> u64 {
    let body = http_get(addr, "/__lobster/count");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["requests"].as_u64().unwrap()
}

/// The connections that carried a counted request to the built-in target at `addr`.
pub fn target_connections(addr: SocketAddr) -> u64 {
    let body = http_get(addr, "/__lobster/count");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"].as_u64().unwrap()
}

/// A minimal blocking GET on loopback (test helper, not the engine).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

/// Waits until the master's API lists `n` connected slaves.
pub fn wait_slaves(api: &str, n: usize, within: Duration) {
    let addr: SocketAddr = api.trim_start_matches("http://").parse().unwrap();
    let deadline = Instant::now() + within;
    loop {
        let body = http_get(addr, "/api/slaves");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let connected = v
            .as_array()
            .map_or(0, |a| a.iter().filter(|s| s["connected"] == true).count());
        if connected >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {connected} of {n} slaves registered: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a JSON report.
pub fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The entry of endpoint `name` in a report's `endpoints`; panics naming it when missing.
pub fn endpoint<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("a report without endpoints: {r}"))
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {r}"))
}

/// Output of a finished command with its texts.
pub fn run(mut cmd: Command) -> (Output, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout).to_string();
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    (out, so, se)
}

/// A free loopback port (bound then released; for servers like nginx that cannot report port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scenario against `target` with the given load and extra lines.
pub fn scenario_text(target: SocketAddr, duration: &str, load: &str, extra: &str) -> String {
    format!(
        "name: test\ntarget: http://{target}\nduration: {duration}\nload:\n  {load}\nrequests:\n  - name: home\n    path: /\n  - name: item\n    path: /item/42\n    weight: 2\n{extra}"
    )
}

/// A Python tool installed by scripts/test (`LOBSTER_TEST_<NAME>`), else found on PATH.
pub fn tool(env_var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: scripts/test installs it (or set {env_var})");
}

/// Starts moto_server on a free loopback port; returns it and its endpoint.
pub fn moto(env: &Env) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(tool("LOBSTER_TEST_MOTO", "moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(env.path("moto.log")).unwrap())
        .stderr(std::fs::File::create(env.path("moto.err")).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start: {}",
            std::fs::read_to_string(env.path("moto.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (
        Proc {
            child,
            name: "moto".into(),
        },
        format!("http://{addr}"),
    )
}

/// Runs the aws CLI against `endpoint` with fake credentials; returns its parsed JSON output.
pub fn aws(endpoint: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(tool("LOBSTER_TEST_AWS", "aws"))
        .args([
            "--endpoint-url",
            endpoint,
            "--region",
            "local",
            "--output",
            "json",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_PAGER", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// Polls `f` until it returns Some, or panics after `within`.
pub fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lobster fleet status --json` of a home.
pub fn fleet_status(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["fleet", "status", "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = env.cli(&args);
    assert_eq!(code, 0, "fleet status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// A minimal blocking HTTP request on loopback; returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The socket address of an `http://host:port` URL.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A tiny keep-alive HTTP server on loopback that answers every request with `200 ok` and
/// stamps it: (connection number, arrival time). For tests of load shapes: when requests
/// arrive and how many connections (users) sent them.
pub struct StampServer {
    pub addr: SocketAddr,
    pub stamps: std::sync::Arc<std::sync::Mutex<Vec<(u64, Instant)>>>,
}

impl StampServer {
    pub fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stamps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let all = stamps.clone();
        std::thread::spawn(move || {
            for (conn, stream) in listener.incoming().enumerate() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_nodelay(true);
                let all = all.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            all.lock().unwrap().push((conn as u64, Instant::now()));
                            buf.drain(..end + 4);
                            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .is_err()
                            {
                                return;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        StampServer { addr, stamps }
    }

    /// Arrival times in order, and the connection of each.
    pub fn taken(&self) -> Vec<(u64, Instant)> {
        let mut v = self.stamps.lock().unwrap().clone();
        v.sort_by_key(|s| s.1);
        v
    }
}

/// Waits (up to 30 s) until the master at `api` has a running run.
pub fn wait_running(api: &str) {
    eventually("a running run", Duration::from_secs(30), || {
        http_get(addr_of(api), "/api/runs")
            .contains("\"status\":\"running\"")
            .then_some(())
    });
}

/// What a `background_run` printed, for a failed assertion's message.
pub fn run_output(env: &Env) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        std::fs::read_to_string(env.path("run.out")).unwrap_or_default(),
        std::fs::read_to_string(env.path("run.err")).unwrap_or_default()
    )
}

/// Runs `lobster run FILE --local-slaves N --json report.json [extra]` in `env`; returns the
/// exit code, stdout, stderr and the report (if written).
pub fn lobster_run(
    env: &Env,
    file: &Path,
    slaves: u32,
    extra: &[&str],
) -> (i32, String, String, Option<serde_json::Value>) {
    let json = env.path("report.json");
    let _ = std::fs::remove_file(&json);
    let mut cmd = env.lobster();
    cmd.args([
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    if slaves > 0 {
        cmd.args(["--local-slaves", &slaves.to_string()]);
    }
    cmd.args(extra);
    let (out, so, se) = run(cmd);
    let r = json.is_file().then(|| report(&json));
    (out.status.code().unwrap_or(-1), so, se, r)
}

/// Starts `lobster run SCENARIO --master API --min-slaves MIN --json JSON` in the background;
/// its output goes to `run.out` and `run.err` in the home.
pub fn background_run(env: &Env, api: &str, scenario: &Path, json: &Path, min: u32) -> Proc {
    let mut cmd = env.lobster();
    cmd.args([
        "run",
        scenario.to_str().unwrap(),
        "--master",
        api,
        "--min-slaves",
        &min.to_string(),
    ])
    .args(["--json", json.to_str().unwrap()])
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(env.path("run.out")).unwrap())
    .stderr(std::fs::File::create(env.path("run.err")).unwrap());
    Proc {
        child: cmd.spawn().unwrap(),
        name: "run".into(),
    }
}

/// `lobster run FILE --detach --master API`: the run's id.
pub fn detach(env: &Env, api: &str, file: &std::path::Path) -> String {
    let (code, out, err) = env.cli(&["run", file.to_str().unwrap(), "--detach", "--master", api]);
    assert_eq!(code, 0, "{out}\n{err}");
    out.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

/// `lobster runs wait RUN --master API -q --json FILE`: the exit code and the report.
pub fn wait_report(env: &Env, api: &str, id: &str, name: &str) -> (i32, serde_json::Value) {
    let json = env.path(name);
    let (code, out, err) = env.cli(&[
        "runs",
        "wait",
        id,
        "--master",
        api,
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(json.is_file(), "{out}\n{err}");
    (code, report(&json))
}
