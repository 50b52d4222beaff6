//! HTTPS targets: the built-in target's private CA and nginx with a certificate from a private
//! CA; verified with `tls.ca_file`, refused without it (the certificate problem named),
//! accepted with `insecure_skip_verify` (and warned about); connections kept alive over TLS.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::common::*;
use crate::nginx::start_nginx_tls;

/// `lobster target --tls`: (process, port, CA file).
fn tls_target(env: &Env) -> (Proc, u16, std::path::PathBuf) {
    let ca = env.path("target-ca.pem");
    let mut c = env.lobster();
    c.args([
        "target",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--tls",
        "--ca-file",
    ])
    .arg(&ca);
    let (p, line) = spawn_until(c, "target", "listening on", &env.path("target-tls.log"));
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (p, port, ca)
}

/// Stops the target and reads the count it prints on the way out.
fn served(mut target: Proc, env: &Env) -> u64 {
    target.signal(nix::sys::signal::Signal::SIGTERM);
    target
        .wait_exit(Duration::from_secs(10))
        .expect("the target stops on SIGTERM");
    let log = std::fs::read_to_string(env.path("target-tls.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("stopped after"))
        .unwrap_or_else(|| panic!("no count in the target's log:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap()
}

fn https_scenario(host_port: &str, users: u32, tls: &str) -> String {
    format!(
        "name: secure\ntarget: https://{host_port}\n{tls}duration: 3s\nload: {{users: {users}}}\nthink: 5ms\nrequests: [{{name: home, path: /}}]\n"
    )
}

#[test]
fn https_to_the_built_in_target_counts_what_it_served_on_kept_alive_connections() {
    let env = Env::new();
    let (target, port, ca) = tls_target(&env);
    let tls = format!("tls: {{ca_file: {}}}\n", ca.display());
    let file = env.scenario(
        "secure.yaml",
        &https_scenario(&format!("127.0.0.1:{port}"), 4, &tls),
    );
    let (code, out, err, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let requests = r["totals"]["requests"].as_u64().unwrap();
    assert_eq!(r["totals"]["failures"], 0, "{}", r["totals"]["errors"]);
    assert_eq!(
        requests,
        served(target, &env),
        "report vs the target's own count"
    );
    // Four users, one connection each, every request after the first on a kept-alive
    // connection: four TCP connects and four handshakes, whatever the request count.
    let phases = &r["totals"]["phases_ms"];
    assert_eq!(phases["connecting"]["count"], 4, "{phases}");
    assert_eq!(phases["tls_handshaking"]["count"], 4, "{phases}");
    assert_eq!(
        phases["waiting"]["count"].as_u64(),
        Some(requests),
        "{phases}"
    );
    assert!(requests > 40, "{requests}");
    assert!(
        out.contains("tls_handshaking"),
        "the summary shows the phases:\n{out}"
    );
    eprintln!("HTTPS built-in target: {requests} requests over 4 handshakes, phases {phases}");
}

/// A CA and a server certificate for 127.0.0.1 it signed, written as PEM files.
fn private_ca(env: &Env) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "test private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        env.path("ca.pem"),
        env.path("cert.pem"),
        env.path("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

fn nginx_lines(env: &Env) -> u64 {
    std::fs::read_to_string(env.path("nginx/logs/access.log"))
        .unwrap_or_default()
        .lines()
        .count() as u64
}

#[test]
fn nginx_with_a_private_ca_is_verified_refused_or_skipped_as_the_scenario_says() {
    let env = Env::new();
    let (ca, cert, key) = private_ca(&env);
    let (_nginx, addr) = start_nginx_tls(&env, &cert, &key);
    let host_port = addr.to_string();

    // Trusted through ca_file: every request succeeds and nginx logged each one.
    let tls = format!("tls: {{ca_file: {}}}\n", ca.display());
    let file = env.scenario("verified.yaml", &https_scenario(&host_port, 2, &tls));
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let requests = r["totals"]["requests"].as_u64().unwrap();
    assert_eq!(r["totals"]["failures"], 0);
    assert_eq!(requests, nginx_lines(&env), "report vs nginx's access log");
    assert!(r["warnings"].as_array().unwrap().is_empty());

    // Without it (the system's roots do not hold a private CA): refused, class `tls`, the
    // certificate problem named; nginx served nothing.
    let before = nginx_lines(&env);
    let file = env.scenario("unverified.yaml", &https_scenario(&host_port, 1, ""));
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["status"], "failed");
    let e = &r["endpoints"][0];
    assert_eq!(e["failures"], e["requests"]);
    assert_eq!(e["errors"]["tls"], e["requests"], "{}", e["errors"]);
    let sample = e["failure_kinds"][0]["sample"].as_str().unwrap();
    assert!(
        sample.contains("TLS handshake failed") && sample.contains("UnknownIssuer"),
        "{sample}"
    );
    assert_eq!(nginx_lines(&env), before);

    // insecure_skip_verify: accepted, warned about before the run and in the report.
    let tls = "tls: {insecure_skip_verify: true}\n";
    let file = env.scenario("insecure.yaml", &https_scenario(&host_port, 1, tls));
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["totals"]["failures"], 0);
    assert!(err.contains("NOT verified"), "{err}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("insecure_skip_verify"), "{warnings}");
    eprintln!("HTTPS nginx: verified {requests} requests = nginx's log; refused: {sample}");
}

/// The docs' first flow example, exactly as written, against the built-in target's TLS login
/// app (its port given with `--target`): every flow logs in through the CSRF form, keeps its
/// session cookie, and sees the page that needs it; the target's own count of logged-in page
/// views equals the report's.
#[test]
fn the_docs_first_flow_logs_in_over_tls_and_the_target_counts_the_same_views() {
    let env = Env::new();
    let (target, port, ca) = tls_target(&env);
    std::fs::copy(&ca, env.path("ca.pem")).unwrap();
    let example = "name: login-and-look
target: https://127.0.0.1:8443
tls:
  ca_file: ca.pem
duration: 20s
load:
  users: 5
flows:
  - name: member
    steps:
      - name: login-page
        path: /login/
        capture:
          - name: csrf
            html: 'input[name=csrf_token]'
            attr: value
      - name: login
        method: POST
        path: /login/
        headers:
          Content-Type: application/x-www-form-urlencoded
        body: 'csrf_token={{csrf}}&username={{env.LOBSTER_USER}}&password={{env.LOBSTER_PASSWORD}}'
        expect: [302, 303]
      - name: account
        path: /account/
        check:
          - body_contains: 'Signed in'
        think: 1s
";
    let file = env.scenario("login.yaml", example);
    let json = env.path("report.json");
    let mut cmd = env.lobster();
    cmd.args([
        "run",
        file.to_str().unwrap(),
        "--local-slaves",
        "2",
        "--json",
    ])
    .arg(&json)
    .args([
        "--target",
        &format!("https://127.0.0.1:{port}"),
        "--duration",
        "6s",
    ])
    .env("LOBSTER_USER", "ann")
    .env("LOBSTER_PASSWORD", "s3cret&more");
    let (out, so, se) = run(cmd);
    let r = report(&json);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert_eq!(r["status"], "passed");
    assert_eq!(r["totals"]["failures"], 0, "{}", r["totals"]["errors"]);
    let count = |name: &str| endpoint(&r, name)["requests"].as_u64().unwrap();
    let (page, login, account) = (count("login-page"), count("login"), count("account"));
    // Each user runs the flow again and again (1 s of think after the account page); a flow
    // cut by the end of the run is at most one per user behind.
    assert!(account >= 5 * 3, "{page} {login} {account}");
    assert!(
        page >= login && login >= account,
        "{page} {login} {account}"
    );
    assert!(page - account <= 5, "{page} {login} {account}");
    let checks = &r["totals"]["checks"];
    assert_eq!(
        checks[0]["check"], "account: body_contains \"Signed in\"",
        "{checks}"
    );
    assert_eq!(checks[0]["fails"], 0, "{checks}");
    assert_eq!(checks[0]["passes"].as_u64(), Some(account), "{checks}");
    // The target's own view count, read over TLS through the same CA.
    let views = logged_in_views(port, &env.path("ca.pem"));
    assert_eq!(
        views, account,
        "the target saw {views} logged-in views, the report {account}"
    );
    drop(target);
    eprintln!(
        "JOURNEY: {page} login pages, {login} logins, {account} account views = target's {views}"
    );
}

/// `GET /__lobster/count` over TLS (a test client on rustls, trusting `ca`).
fn logged_in_views(port: u16, ca: &std::path::Path) -> u64 {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /__lobster/count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = tls.read_to_string(&mut text);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["logged_in_views"].as_u64().unwrap()
}

/// A login step that follows its `303` to the account page: each hop is a request of the
/// step, the session cookie set by the `303` goes with the next hop, the checks judge the
/// final page, and a capture by regex feeds the form (over plain HTTP this time).
#[test]
fn a_step_follows_its_redirect_with_the_cookie_the_redirect_set() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        r#"name: redirects
target: http://{addr}
duration: 3s
load: {{users: 2}}
flows:
  - name: member
    steps:
      - name: page
        path: /login/
        capture: [{{name: csrf, regex: 'name="csrf_token" value="(\w+)"'}}]
      - name: login
        method: POST
        path: /login/
        headers: {{Content-Type: application/x-www-form-urlencoded}}
        body: 'csrf_token={{{{csrf}}}}&username=ann&password=x'
        follow_redirects: true
        check:
          - body_contains: 'Signed in as ann'
          - status: [200]
        think: 20ms
"#
    );
    let file = env.scenario("redirects.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["totals"]["failures"], 0, "{}", r["totals"]["errors"]);
    let v: serde_json::Value = serde_json::from_str(&http_get(addr, "/__lobster/count")).unwrap();
    let views = v["logged_in_views"].as_u64().unwrap();
    let login = r["endpoints"][1]["requests"].as_u64().unwrap();
    // Every login is a POST and its followed GET; a chain cut by the end is one POST.
    assert!(views >= 10, "{views}");
    assert!(
        2 * views <= login && login <= 2 * views + 2,
        "{login} requests, {views} views"
    );
    for check in r["totals"]["checks"].as_array().unwrap() {
        assert_eq!(check["fails"], 0, "{check}");
        assert_eq!(check["passes"].as_u64(), Some(views), "{check}");
    }
    assert_eq!(
        r["totals"]["requests"].as_u64(),
        Some(v["requests"].as_u64().unwrap())
    );
    eprintln!("REDIRECTS: {login} login requests for {views} logged-in views");
}

/// The open model with a flow: `rate` counts flow arrivals, each a new instance with a fresh
/// cookie jar; every due arrival is a completed, failed or dropped instance (or one cut by the
/// end), and each completed instance logged in once.
#[test]
fn open_model_arrivals_start_flow_instances() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        r#"name: open-flows
target: http://{addr}
duration: 3s
load: {{rate: 20, max_connections: 20}}
flows:
  - name: member
    steps:
      - name: page
        path: /login/
        capture: [{{name: csrf, regex: 'name="csrf_token" value="(\w+)"'}}]
      - name: login
        method: POST
        path: /login/
        headers: {{Content-Type: application/x-www-form-urlencoded}}
        body: 'csrf_token={{{{csrf}}}}&username=ann&password=x'
        expect: [303]
      - name: account
        path: /account/
        check: [{{body_contains: Signed in}}]
"#
    );
    let file = env.scenario("open-flows.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let flow = &r["totals"]["flows"][0];
    let completed = flow["completed"].as_u64().unwrap();
    let failed = flow["failed"].as_u64().unwrap();
    let dropped = r["totals"]["dropped"].as_u64().unwrap();
    // 60 arrivals due; an instance still running at the end is neither completed nor failed.
    let accounted = completed + failed + dropped;
    assert!(
        (58..=60).contains(&accounted),
        "{completed} + {failed} + {dropped} of 60"
    );
    assert_eq!(failed, 0);
    let v: serde_json::Value = serde_json::from_str(&http_get(addr, "/__lobster/count")).unwrap();
    assert_eq!(v["logged_in_views"].as_u64(), Some(completed));
}

/// `on_failure: continue`: a failed step lets its flow instance go on with the next step (every
/// instance that reached the failing step reaches the next), and the instance counts as
/// failed; by default a failed step ends its instance there.
#[test]
fn a_step_on_failure_continue_goes_on_and_the_instance_counts_failed() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let flow = |on_failure: &str| {
        format!(
            "name: cont\ntarget: http://{addr}\nduration: 2s\nload: {{users: 2}}\nthink: 10ms\nmax_error_rate: 100%\nflows:\n  - name: shop\n    steps:\n      - name: broken\n        path: /status/503\n{on_failure}      - name: home\n        path: /\n"
        )
    };
    let file = env.scenario("cont.yaml", &flow("        on_failure: continue\n"));
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let (broken, home) = (
        r["endpoints"][0]["requests"].as_u64().unwrap(),
        r["endpoints"][1]["requests"].as_u64().unwrap(),
    );
    assert!(broken > 20, "{broken}");
    assert_eq!(r["endpoints"][0]["failures"].as_u64(), Some(broken));
    // An instance cut by the end between its two steps is the only gap (2 users).
    assert!(
        home + 2 >= broken && home <= broken,
        "{broken} broken, {home} home"
    );
    let f = &r["totals"]["flows"][0];
    assert_eq!(f["completed"], 0, "{f}");
    assert!(f["failed"].as_u64().unwrap() >= home, "{f}");

    let file = env.scenario("stop.yaml", &flow(""));
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(
        r["endpoints"][1]["requests"], 0,
        "the default ends the instance"
    );
}
