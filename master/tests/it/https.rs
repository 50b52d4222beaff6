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
