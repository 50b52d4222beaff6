//! Security by default: tokens never leak, pinned TLS, refused joins, the API's token, and a
//! table of bad API and gRPC requests that change nothing.

use std::time::Duration;

use crate::common::*;
use lobster_fleet::proto::{self, control_client::ControlClient, slave_message::Kind as Up};

/// Runs `lobster ARGS` with every process (daemons, instances, local slaves) logging at
/// debug level.
fn debug_cli(env: &Env, args: &[&str]) -> (i32, String) {
    let mut c = env.lobster();
    c.args(args)
        .env("LOBSTER_LOG", "debug")
        .env("LOBSTER_DAEMON_LOG", "debug");
    let (out, so, se) = run(c);
    (out.status.code().unwrap_or(-1), format!("{so}{se}"))
}

/// Files that hold a join token by design: the token files themselves, the local cloud's
/// store of instance user-data (EC2 keeps user-data too), and each VM's 0600 env file.
fn holds_a_token_by_design(p: &std::path::Path) -> bool {
    let s = p.to_string_lossy();
    s.contains("/master/tokens/")
        || s.ends_with("/cloud/state.json")
        || s.ends_with("/run/lobster/slave.env")
}

/// Every file a fleet, a run, a refused join, the idle watchers' drains and the commands
/// produced, at debug level: none holds a join token (nor a token with a character added,
/// as a refused join would echo it).
#[test]
fn join_tokens_never_appear_in_logs_outputs_or_reports() {
    let env = Env::new();
    let mut outputs = String::new();
    let (code, out) = debug_cli(
        &env,
        &[
            "fleet",
            "up",
            "--count",
            "2",
            "--fleet",
            "sec",
            "--idle-minutes",
            "0.1",
        ],
    );
    assert_eq!(code, 0, "{out}");
    outputs.push_str(&out);
    let (_target, addr) = env.target();
    let file = env.scenario("s.yaml", &scenario_text(addr, "2s", "users: 4", ""));
    let json = env.path("report.json");
    let (code, out) = debug_cli(
        &env,
        &[
            "run",
            file.to_str().unwrap(),
            "--local-slaves",
            "1",
            "--min-slaves",
            "3",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    outputs.push_str(&out);
    for args in [
        &["fleet", "status", "--fleet", "sec"][..],
        &["fleet", "status", "--fleet", "sec", "--json"],
    ] {
        outputs.push_str(&debug_cli(&env, args).1);
    }
    let tokens: Vec<String> = std::fs::read_dir(env.home().join("master/tokens"))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 2, "one token per fleet (default and sec)");
    // A refused join that presents a real token with one character more.
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.home().join("master/master.json")).unwrap(),
    )
    .unwrap();
    let refused_log = env.path("refused-slave.log");
    let _refused = Proc {
        child: std::process::Command::new(slave_bin())
            .env("LOBSTER_MASTER", info["grpc"].as_str().unwrap())
            .env("LOBSTER_JOIN_TOKEN", format!("{}x", tokens[0]))
            .env(
                "LOBSTER_MASTER_FINGERPRINT",
                info["fingerprint"].as_str().unwrap(),
            )
            .env("LOBSTER_INSTANCE_ID", "i-refused")
            .env("LOBSTER_LOG", "debug")
            .stderr(std::fs::File::create(&refused_log).unwrap())
            .spawn()
            .unwrap(),
        name: "refused slave".into(),
    };
    eventually("the refusal", Duration::from_secs(20), || {
        std::fs::read_to_string(&refused_log)
            .ok()?
            .contains("wrong join token")
            .then_some(())
    });
    // The drain path: the idle watchers ask the master to drain, then stop their VMs.
    eventually("the idle fleet stopped", Duration::from_secs(90), || {
        let st = fleet_status(&env, &["--fleet", "sec"]);
        st["instances"]
            .as_array()?
            .iter()
            .all(|i| i["state"] == "stopped")
            .then_some(())
    });
    let master_log =
        std::fs::read_to_string(env.home().join("logs/master.log")).unwrap_or_default();
    assert!(master_log.contains("drain"), "the drain path did not run");
    // Every file of the home, and the outputs.
    let mut files = Vec::new();
    let mut stack = vec![env.home().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && meta.len() < 50 * 1024 * 1024
                && !holds_a_token_by_design(&p)
            {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 10, "expected many files, found {files:?}");
    let logs = files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .count();
    assert!(logs >= 8, "expected many logs: {files:?}");
    for p in &files {
        let bytes = std::fs::read(p).unwrap_or_default();
        for t in &tokens {
            assert!(
                !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                "a join token leaked into {}",
                p.display()
            );
        }
    }
    for t in &tokens {
        assert!(
            !outputs.contains(t.as_str()),
            "a join token leaked into a command's output"
        );
    }
}

#[test]
fn a_slave_with_a_wrong_fingerprint_or_token_is_refused() {
    let env = Env::new();
    let (_master, api, grpc) = env.master(None, &[]);
    assert!(grpc.starts_with("https://"), "TLS by default: {grpc}");
    let spawn = |token: &str, fingerprint: &str, index: u32| {
        let log = env.path(&format!("bad-slave-{index}.log"));
        let child = std::process::Command::new(slave_bin())
            .env("LOBSTER_MASTER", &grpc)
            .env("LOBSTER_JOIN_TOKEN", token)
            .env("LOBSTER_MASTER_FINGERPRINT", fingerprint)
            .env("LOBSTER_INSTANCE_ID", "i-bad")
            .env("LOBSTER_SLAVE_INDEX", index.to_string())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (
            Proc {
                child,
                name: "bad".into(),
            },
            log,
        )
    };
    let wrong_fp = format!("sha256:{}", "0".repeat(64));
    let (_a, log_a) = spawn(&env.join_token(), &wrong_fp, 1);
    let (_b, log_b) = spawn("0123456789abcdef0123456789abcdef", &env.fingerprint(), 2);
    let (_c, _) = spawn(&env.join_token(), &env.fingerprint(), 3);
    wait_slaves(&api, 1, Duration::from_secs(20));
    eventually("both refusals logged", Duration::from_secs(20), || {
        let a = std::fs::read_to_string(&log_a).ok()?;
        let b = std::fs::read_to_string(&log_b).ok()?;
        (a.contains("not the pinned one") && b.contains("wrong join token")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let slaves: serde_json::Value =
        serde_json::from_str(&http_get(addr_of(&api), "/api/slaves")).unwrap();
    assert_eq!(
        slaves.as_array().unwrap().len(),
        1,
        "only the good slave joined: {slaves}"
    );
    let metrics = http_get(addr_of(&api), "/metrics");
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("lobster_joins_refused_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "refused joins are counted:\n{metrics}");
}

#[test]
fn plaintext_is_loud_and_the_api_off_loopback_needs_its_token() {
    let env = Env::new();
    let (_m, _, grpc) = env.master(None, &["--insecure-plaintext"]);
    assert!(grpc.starts_with("http://"));
    let log = std::fs::read_to_string(env.path("master.log")).unwrap();
    assert!(log.contains("INSECURE"), "{log}");
    drop(_m);
    let env2 = Env::new();
    let mut c = env2.lobster();
    c.args([
        "master",
        "--grpc-listen",
        "127.0.0.1:0",
        "--api-listen",
        "0.0.0.0:0",
    ])
    .env("LOBSTER_API_TOKEN", "s3cret-api-token");
    let (_p, line) = spawn_until(c, "master", "api http://", &env2.path("master.log"));
    let port = line
        .split("api http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _) = http_request(addr, "GET", "/api/slaves", &[], b"");
    assert_eq!(status, 401);
    let (status, _) = http_request(
        addr,
        "GET",
        "/api/slaves",
        &[("Authorization", "Bearer wrong")],
        b"",
    );
    assert_eq!(status, 401);
    let (status, _) = http_request(
        addr,
        "GET",
        "/api/slaves",
        &[("Authorization", "Bearer s3cret-api-token")],
        b"",
    );
    assert_eq!(status, 200);
    // The dashboard: its page and assets hold no data and are served to anyone (so it can ask
    // for the token); its data needs the token, as a header or its cookie.
    let (status, page) = http_request(addr, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"login\""), "{page}");
    assert_eq!(http_request(addr, "GET", "/ui/app.js", &[], b"").0, 200);
    assert_eq!(http_request(addr, "GET", "/ui/nope.js", &[], b"").0, 404);
    for (cookie, want) in [
        ("lobster_token=s3cret-api-token", 200),
        ("theme=dark; lobster_token=s3cret-api-token", 200),
        ("lobster_token=wrong", 401),
        ("other=s3cret-api-token", 401),
    ] {
        let (status, _) = http_request(addr, "GET", "/api/slaves", &[("Cookie", cookie)], b"");
        assert_eq!(status, want, "{cookie}");
    }
    let (status, _) = http_request(addr, "GET", "/api/runs/r-x/events", &[], b"");
    assert_eq!(status, 401, "the event stream is data");
}

/// Bad requests to the master's HTTP API: each a clear JSON error with its status; no run is
/// created and the master keeps serving.
#[test]
fn bad_api_requests() {
    let env = Env::new();
    let (_m, api, _) = env.master(None, &[]);
    let addr = addr_of(&api);
    let json = [("Content-Type", "application/json")];
    // A scenario goes to the API as its text (YAML or JSON) with the files and environment
    // values it uses, and is validated there by the same code as `lobster run FILE`.
    let good = "name: x\ntarget: http://127.0.0.1:9\nduration: 1s\nload: {users: 1}\nrequests:\n  - {name: a, path: /}\n";
    let with_text = |text: &str, quorum: &str| {
        let doc = serde_json::json!({"source": "api.yaml", "text": text});
        format!(r#"{{"scenario":{doc},"quorum":{quorum},"quorum_timeout_ms":1000}}"#)
    };
    let cases: Vec<(&str, &str, &str, String, u16)> = vec![
        ("not JSON", "POST", "/api/runs", "{oops".into(), 400),
        ("empty body", "POST", "/api/runs", String::new(), 400),
        (
            "missing scenario",
            "POST",
            "/api/runs",
            r#"{"quorum":1,"quorum_timeout_ms":1}"#.into(),
            400,
        ),
        (
            "quorum zero",
            "POST",
            "/api/runs",
            with_text(good, "0"),
            400,
        ),
        (
            "quorum negative",
            "POST",
            "/api/runs",
            with_text(good, "-1"),
            400,
        ),
        (
            "zero users",
            "POST",
            "/api/runs",
            with_text(&good.replace("users: 1", "users: 0"), "1"),
            400,
        ),
        (
            "zero duration",
            "POST",
            "/api/runs",
            with_text(&good.replace("1s", "0s"), "1"),
            400,
        ),
        (
            "no requests",
            "POST",
            "/api/runs",
            with_text(
                &good.replace("requests:\n  - {name: a, path: /}\n", ""),
                "1",
            ),
            400,
        ),
        (
            "path without slash",
            "POST",
            "/api/runs",
            with_text(&good.replace("path: /", "path: x"), "1"),
            400,
        ),
        (
            "header with a newline",
            "POST",
            "/api/runs",
            with_text(
                &good.replace("requests:", "headers: {X: \"a\\nb\"}\nrequests:"),
                "1",
            ),
            400,
        ),
        (
            "YAML with a syntax error",
            "POST",
            "/api/runs",
            with_text("name: [", "1"),
            400,
        ),
        (
            "a data file not sent (the master never reads its own files)",
            "POST",
            "/api/runs",
            with_text(&format!("{good}data: {{file: /etc/passwd}}\n"), "1"),
            400,
        ),
        (
            "an environment value not sent (nor read from the master's)",
            "POST",
            "/api/runs",
            with_text(&good.replace("path: /}", "path: '/{{env.HOME}}'}"), "1"),
            400,
        ),
        (
            "an unknown field beside the text",
            "POST",
            "/api/runs",
            r#"{"scenario":{"text":"name: x","yaml":"x"},"quorum":1}"#.into(),
            400,
        ),
        (
            "a resolved scenario instead of a document",
            "POST",
            "/api/runs",
            r#"{"scenario":{"name":"x","duration_ms":1000},"quorum":1}"#.into(),
            400,
        ),
        (
            "a target override that is not a URL",
            "POST",
            "/api/runs",
            format!(
                r#"{{"scenario":{{"text":{},"target":"ftp://x"}},"quorum":1}}"#,
                serde_json::to_string(good).unwrap()
            ),
            400,
        ),
        ("unknown run", "GET", "/api/runs/r-nope", String::new(), 404),
        (
            "after not a number",
            "GET",
            "/api/runs/r-nope?after=x",
            String::new(),
            400,
        ),
        (
            "unknown action",
            "POST",
            "/api/runs/r-nope/explode",
            String::new(),
            404,
        ),
        (
            "stop an unknown run",
            "POST",
            "/api/runs/r-nope/stop",
            String::new(),
            404,
        ),
        ("wrong method", "DELETE", "/api/runs", String::new(), 405),
        (
            "unknown route",
            "GET",
            "/api/everything",
            String::new(),
            404,
        ),
        (
            "dashboard: events of an unknown run",
            "GET",
            "/api/runs/r-nope/events",
            String::new(),
            404,
        ),
        (
            "dashboard: compare unknown runs",
            "GET",
            "/api/compare?base=r-a&run=r-b",
            String::new(),
            404,
        ),
        (
            "load: users and rate",
            "POST",
            "/api/runs/r-nope/load",
            r#"{"users":1,"rate":1}"#.into(),
            400,
        ),
        (
            "load: negative rate",
            "POST",
            "/api/runs/r-nope/load",
            r#"{"rate":-1}"#.into(),
            400,
        ),
        (
            "load: too many users",
            "POST",
            "/api/runs/r-nope/load",
            r#"{"users":10000001}"#.into(),
            400,
        ),
        (
            "load: unknown field",
            "POST",
            "/api/runs/r-nope/load",
            r#"{"vus":3}"#.into(),
            400,
        ),
        (
            "load: a ramp over a day",
            "POST",
            "/api/runs/r-nope/load",
            r#"{"users":3,"ramp_ms":86400001}"#.into(),
            400,
        ),
        (
            "load: unknown run",
            "POST",
            "/api/runs/r-nope/load",
            r#"{"users":3}"#.into(),
            404,
        ),
        (
            "dashboard: compare without runs",
            "GET",
            "/api/compare",
            String::new(),
            400,
        ),
    ];
    for (what, method, path, body, status) in &cases {
        let (got, text) = http_request(addr, method, path, &json, body.as_bytes());
        assert_eq!(got, *status, "{what}: {text}");
        if got == 400 && path.starts_with("/api/runs") && *method == "POST" {
            assert!(text.contains("\"error\""), "{what}: {text}");
        }
    }
    // The error names the scenario's own line and column, as `lobster run FILE` does.
    let (got, text) = http_request(
        addr,
        "POST",
        "/api/runs",
        &json,
        with_text(&good.replace("users: 1", "users: 0"), "1").as_bytes(),
    );
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("api.yaml:4:15: users must be"), "{text}");
    let (_, text) = http_request(
        addr,
        "POST",
        "/api/runs",
        &json,
        with_text(&good.replace("path: /}", "path: '/{{env.HOME}}'}"), "1").as_bytes(),
    );
    assert!(
        text.contains("api.yaml:6:") && text.contains("HOME is not set"),
        "{text}"
    );
    // A page of another site cannot act (CSRF); the dashboard's own origin can.
    let (got, text) = http_request(
        addr,
        "POST",
        "/api/runs/r-nope/stop",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(got, 403, "{text}");
    assert!(text.contains("cross-site request refused"), "{text}");
    let (got, _) = http_request(
        addr,
        "POST",
        "/api/runs/r-nope/stop",
        &[("Origin", "null")],
        b"",
    );
    assert_eq!(got, 403, "an opaque origin");
    let (got, _) = http_request(
        addr,
        "POST",
        "/api/runs/r-nope/stop",
        &[("Origin", "http://x")], // the harness sends `Host: x`
        b"",
    );
    assert_eq!(got, 404, "same origin: on to the handler (no such run)");
    let big = vec![b'x'; 65 * 1024 * 1024];
    let (got, _) = http_request(addr, "POST", "/api/runs", &json, &big);
    assert_eq!(got, 413, "oversized body");
    let runs = http_get(addr, "/api/runs");
    assert_eq!(runs.trim(), "[]", "no run was created");
    let (got, _) = http_request(addr, "GET", "/api/health", &[], b"");
    assert_eq!(got, 200);
}

fn join(uid: &str, token: &str) -> proto::JoinRequest {
    proto::JoinRequest {
        join_token: token.into(),
        instance_id: "i-grpc".into(),
        host: "h".into(),
        cores: 1,
        slave_index: 1,
        version: lobster_fleet::VERSION.into(),
        boot_id: "b".into(),
        slave_uid: uid.into(),
        millicores: 1000,
        instance_type: "t".into(),
        region: "r".into(),
        slaves_on_host: 1,
        expires_at: String::new(),
    }
}

fn up(kind: Up) -> proto::SlaveMessage {
    proto::SlaveMessage { kind: Some(kind) }
}

/// Bad gRPC traffic (on a plaintext master, to reach the messages themselves): each refused
/// with its status; a slave claiming a live slave's id is refused; a malformed interval cuts
/// the sender off; the honest slave is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn bad_grpc_requests() {
    let env = Env::new();
    let (_m, api, grpc) = env.master(
        None,
        &[
            "--insecure-plaintext",
            "--heartbeat",
            "200ms",
            "--lease",
            "2s",
        ],
    );
    let token = env.join_token();
    let _honest = env.slave(&grpc, 1, 1);
    wait_slaves(&api, 1, Duration::from_secs(20));
    let mut c = ControlClient::connect(grpc.clone()).await.unwrap();
    use tonic::Code;
    let mut cases: Vec<(&str, proto::JoinRequest, Code)> = vec![
        (
            "wrong token",
            join("u-1", "0123456789abcdef0123456789abcdef"),
            Code::Unauthenticated,
        ),
        ("no token", join("u-2", ""), Code::Unauthenticated),
        ("no uid", join("", &token), Code::InvalidArgument),
        (
            "slave index 0",
            proto::JoinRequest {
                slave_index: 0,
                ..join("u-3", &token)
            },
            Code::InvalidArgument,
        ),
        (
            "zero cores",
            proto::JoinRequest {
                cores: 0,
                ..join("u-4", &token)
            },
            Code::InvalidArgument,
        ),
        (
            "another version",
            proto::JoinRequest {
                version: "0.0.0-other".into(),
                ..join("u-5", &token)
            },
            Code::InvalidArgument,
        ),
        (
            "overlong host",
            proto::JoinRequest {
                host: "h".repeat(10_000),
                ..join("u-6", &token)
            },
            Code::InvalidArgument,
        ),
        (
            "oversized message",
            proto::JoinRequest {
                host: "h".repeat(20 * 1024 * 1024),
                ..join("u-7", &token)
            },
            Code::OutOfRange,
        ),
    ];
    // A slave claiming the identity of a slave whose session lives (joined here, so its uid
    // is known to the test; uids are not shown by the API).
    let honest_uid = "u-live".to_string();
    let first = c
        .join(join(&honest_uid, &token))
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(up(Up::Attach(proto::Attach {
        slave_uid: honest_uid.clone(),
        session_secret: first.session_secret.clone(),
        run_id: String::new(),
    })))
    .await
    .unwrap();
    let _live = c
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    tx.send(up(Up::Heartbeat(proto::Heartbeat::default())))
        .await
        .unwrap();
    cases.push((
        "a slave claiming a live slave's uid",
        join(&honest_uid, &token),
        Code::AlreadyExists,
    ));
    for (what, req, code) in cases {
        let e = c.join(req).await.expect_err(what);
        assert!(
            e.code() == code || (code == Code::OutOfRange && e.code() == Code::ResourceExhausted),
            "{what}: {:?} {}",
            e.code(),
            e.message()
        );
    }
    // Sessions that do not start with a valid Attach.
    let sess = |first: proto::SlaveMessage| {
        let mut c = c.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            tx.send(first).await.unwrap();
            c.session(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }
    };
    assert_eq!(
        sess(up(Up::Heartbeat(proto::Heartbeat::default()))).await,
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        sess(up(Up::Attach(proto::Attach {
            slave_uid: "u-nobody".into(),
            session_secret: "x".into(),
            run_id: String::new()
        })))
        .await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        sess(up(Up::Attach(proto::Attach {
            slave_uid: honest_uid.clone(),
            session_secret: "wrong".into(),
            run_id: String::new()
        })))
        .await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        sess(proto::SlaveMessage { kind: None }).await,
        Err(Code::InvalidArgument)
    );
    // A drain with a wrong token.
    let e = c
        .drain(proto::DrainRequest {
            join_token: "nope".into(),
            instance_id: "i-grpc".into(),
            reason: "x".into(),
            undo: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A malformed statistics interval cuts its sender off.
    let mut inbound = _live.into_inner();
    tx.send(up(Up::Stats(proto::StatsInterval {
        run_id: "r".into(),
        index: 0,
        last: false,
        endpoints: vec![proto::EndpointStats {
            name: "a".into(),
            latency_us: vec![1, 2, 3].into(),
            requests: 1,
            ..Default::default()
        }],
        dropped: 0,
        checks: Default::default(),
        flows: Default::default(),
        resources: None,
        targets: Vec::new(),
        heartbeat: None,
    })))
    .await
    .unwrap();
    // Cut off at once, with the reason: well within the 2 s lease, so not a lease expiry.
    let sent = std::time::Instant::now();
    let ended = ends_within(&mut inbound, Duration::from_secs(1))
        .await
        .expect("the session was not cut off within 1 s (lease 2 s)");
    assert!(
        ended.starts_with("InvalidArgument") && ended.contains("malformed interval"),
        "{ended} after {:?}",
        sent.elapsed()
    );
    // The honest slave is still there and the master still serves.
    let slaves: serde_json::Value =
        serde_json::from_str(&http_get(addr_of(&api), "/api/slaves")).unwrap();
    let connected = slaves
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["connected"] == true && s["instance_id"] == "i-test")
        .count();
    assert_eq!(connected, 1, "{slaves}");
}

/// Attaches a session for a fresh join; returns its sender and the master's stream.
async fn session(
    c: &mut ControlClient<tonic::transport::Channel>,
    uid: &str,
    token: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<proto::SlaveMessage>,
        tonic::Streaming<proto::MasterMessage>,
    ),
    tonic::Status,
> {
    let j = c.join(join(uid, token)).await?.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(up(Up::Attach(proto::Attach {
        slave_uid: uid.into(),
        session_secret: j.session_secret,
        run_id: String::new(),
    })))
    .await
    .unwrap();
    let inbound = c
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// Sends heartbeats at `per_second` for `seconds`; returns how many went out before the
/// stream was closed.
async fn heartbeats(
    tx: &tokio::sync::mpsc::Sender<proto::SlaveMessage>,
    per_second: u32,
    seconds: u32,
) -> u32 {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut sent = 0;
    for _ in 0..per_second * seconds {
        tick.tick().await;
        if tx
            .send(up(Up::Heartbeat(proto::Heartbeat::default())))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    sent
}

/// Whether the master's stream to a session ended (closed or an error) within `within`.
async fn ends_within(
    inbound: &mut tonic::Streaming<proto::MasterMessage>,
    within: Duration,
) -> Option<String> {
    tokio::time::timeout(within, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "closed".to_string(),
                Err(e) => return format!("{:?}: {}", e.code(), e.message()),
            }
        }
    })
    .await
    .ok()
}

/// The limits `docs/reliability.md` cites, each with its number: the join rate (a burst of
/// 200, then 50 a second), the slave cap (`--max-slaves`) and the flood cut-off (over 1000
/// messages a second).
#[tokio::test(flavor = "multi_thread")]
async fn the_control_planes_limits_hold() {
    use tonic::Code;
    let env = Env::new();
    let (_m, api, grpc) = env.master(
        None,
        &[
            "--insecure-plaintext",
            "--max-slaves",
            "3",
            "--lease",
            "30s",
        ],
    );
    let token = env.join_token();
    let mut c = ControlClient::connect(grpc.clone()).await.unwrap();

    // Join rate: 260 joins at once; the first 200 pass, then the bucket refills at 50/s.
    let started = std::time::Instant::now();
    let mut accepted = 0u32;
    let mut limited = 0u32;
    for i in 0..260 {
        match c.join(join(&format!("u-rate-{i}"), &token)).await {
            Ok(_) => accepted += 1,
            Err(e) if e.code() == Code::ResourceExhausted => limited += 1,
            Err(e) => panic!("join {i}: {e}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 50.0).ceil() as u32;
    assert!(limited > 0, "260 joins at once were all admitted");
    assert!(
        accepted >= 200 && accepted <= 200 + refill,
        "{accepted} joins admitted in {:?} (burst 200 + 50/s)",
        started.elapsed()
    );
    eprintln!(
        "LIMITS join rate: {accepted} of 260 admitted in {} ms, {limited} refused",
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // refill a few tokens

    // The slave cap: with 3 sessions open, a new slave is refused.
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(
            session(&mut c, &format!("u-cap-{i}"), &token)
                .await
                .unwrap(),
        );
    }
    let e = c.join(join("u-cap-3", &token)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("at most 3 slaves"), "{}", e.message());
    drop(open);
    eventually(
        "the capped sessions closed",
        Duration::from_secs(10),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&http_get(addr_of(&api), "/api/slaves")).ok()?;
            (v.as_array()?.iter().all(|s| s["connected"] == false)).then_some(())
        },
    );

    // Below the flood limit (500/s for 2 s, acks read): the session lives.
    let (tx, mut inbound) = session(&mut c, "u-steady", &token).await.unwrap();
    let reader =
        tokio::spawn(async move { ends_within(&mut inbound, Duration::from_secs(4)).await });
    assert_eq!(heartbeats(&tx, 500, 2).await, 1000);
    assert_eq!(
        reader.await.unwrap(),
        None,
        "a steady 500 messages/s was cut off"
    );
    drop(tx);

    // A flood (2000 messages as fast as they go): cut off at once.
    let (tx, mut inbound) = session(&mut c, "u-flood", &token).await.unwrap();
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            if tx
                .send(up(Up::Heartbeat(proto::Heartbeat::default())))
                .await
                .is_err()
            {
                break;
            }
        }
        tx
    });
    let ended = ends_within(&mut inbound, Duration::from_secs(10)).await;
    assert!(ended.is_some(), "a flood of 2000 messages was not cut off");
    drop(flood.await.unwrap());

    // (A slave that never reads its stream is cut off at its queue's bound: the transport
    // buffers hundreds of kilobytes before that queue fills, so that limit is proven where it
    // lives, in `control/registry.rs`'s tests.)
    let (got, _) = http_request(addr_of(&api), "GET", "/api/health", &[], b"");
    assert_eq!(got, 200);
}
