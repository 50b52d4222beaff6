//! Test harness: real processes (master, slaves, target, nginx) on loopback, port 0.
#![allow(dead_code)]

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

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
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
            .env("LOBSTER_LOG", "info");
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
        let grpc = line.split("grpc ").nth(1).unwrap().trim().to_string();
        (p, api, grpc)
    }

    /// The join token the master of this home created.
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.home().join("master/join-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Starts one `lobster-slave` process joining `grpc`.
    pub fn slave(&self, grpc: &str, index: u32, of: u32) -> Proc {
        let log = std::fs::File::create(self.path(&format!("slave-{index}.log"))).unwrap();
        let child = Command::new(slave_bin())
            .env("LOBSTER_MASTER", grpc)
            .env("LOBSTER_JOIN_TOKEN", self.join_token())
            .env("LOBSTER_INSTANCE_ID", "i-test")
            .env("LOBSTER_SLAVE_INDEX", index.to_string())
            .env("LOBSTER_SLAVES_ON_HOST", of.to_string())
            .env("LOBSTER_LOG", "info")
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
