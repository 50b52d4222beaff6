//! `lobster run` against nginx: the report's total equals nginx's access log, line for line.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn nginx_binary() -> String {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).is_file() {
            return p.to_string();
        }
    }
    panic!("nginx is not installed: scripts/test installs it (apt-get install nginx-light)");
}

fn start_nginx(env: &Env) -> (Proc, SocketAddr) {
    start_nginx_with(env, "")
}

/// nginx with extra `http` directives (e.g. `keepalive_timeout 1s;`).
fn start_nginx_with(env: &Env, http_extra: &str) -> (Proc, SocketAddr) {
    start_nginx_server(env, http_extra, "", "")
}

/// nginx serving HTTPS with this certificate chain and key (PEM files).
pub fn start_nginx_tls(
    env: &Env,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (Proc, SocketAddr) {
    let server = format!(
        "ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;",
        cert.display(),
        key.display()
    );
    start_nginx_server(env, "", " ssl", &server)
}

/// nginx with extra `http` directives, `listen` parameters and `server` directives.
pub fn start_nginx_server(
    env: &Env,
    http_extra: &str,
    listen_extra: &str,
    server_extra: &str,
) -> (Proc, SocketAddr) {
    let port = free_port();
    let prefix = env.path("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = format!(
        "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log {p}/logs/access.log;\n  client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n  fastcgi_temp_path {p}/tmp;\n  uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n  keepalive_requests 1000;\n  {http_extra}\n  server {{\n    listen 127.0.0.1:{port}{listen_extra};\n    {server_extra}\n    location / {{ return 200 \"hello from nginx\\n\"; }}\n  }}\n}}\n",
        p = prefix.display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_binary())
        .args([
            "-p",
            prefix.to_str().unwrap(),
            "-c",
            prefix.join("nginx.conf").to_str().unwrap(),
            "-g",
            "daemon off;",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("nginx.err")).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(env.path("nginx.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        Proc {
            child,
            name: "nginx".into(),
        },
        addr,
    )
}

#[test]
fn three_local_slaves_count_exactly_what_nginx_logged() {
    let env = Env::new();
    let (_nginx, addr) = start_nginx(&env);
    let file = env.scenario(
        "nginx.yaml",
        &scenario_text(addr, "3s", "users: 9", "think: 1ms\n"),
    );
    let (code, stdout, stderr, r) = lobster_run(&env, &file, 3, &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = r.unwrap();
    let total = r["totals"]["requests"].as_u64().unwrap();
    assert!(total > 100);
    // nginx writes the access log line when the response is done: by the time the report
    // exists, every line is there.
    let log = std::fs::read_to_string(env.path("nginx/logs/access.log")).unwrap();
    assert_eq!(
        total,
        log.lines().count() as u64,
        "report total vs nginx access log"
    );
    assert_eq!(r["totals"]["failures"], 0);
}

/// nginx closes idle keep-alive connections after `keepalive_timeout` (Apache and Node after
/// 5 s). Users thinking 2 s against a 1 s timeout: 10 requests with 4 `io` failures while nginx
/// logged 6. Right: no failure, and the report's total is nginx's own count.
#[test]
fn connections_nginx_closed_while_idle_are_not_failures() {
    let env = Env::new();
    let (_nginx, addr) = start_nginx_with(&env, "keepalive_timeout 1s;");
    let file = env.scenario(
        "idle.yaml",
        &format!(
            "name: idle\ntarget: http://{addr}\nduration: 10s\nload: {{users: 2}}\nthink: 2s\nrequests: [{{name: home, path: /}}]\n"
        ),
    );
    let (code, out, err, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let r = r.unwrap();
    assert_eq!(r["totals"]["failures"], 0, "{}", r["totals"]["errors"]);
    let total = r["totals"]["requests"].as_u64().unwrap();
    let log = std::fs::read_to_string(env.path("nginx/logs/access.log")).unwrap();
    assert_eq!(
        total,
        log.lines().count() as u64,
        "report vs nginx access log"
    );
    assert!(total >= 8, "2 users thinking 2 s for 10 s: {total}");
    eprintln!(
        "STALE keep-alive: {total} requests, nginx logged {}, 0 failures",
        log.lines().count()
    );
}

/// A CSV data file as a spreadsheet saves it (byte order mark, CRLF, a quoted field): its
/// rows reach the server through `{{row.NAME}}`, every row and nothing else, from 3 slaves
/// that each got their own slice.
#[test]
fn rows_of_a_csv_file_reach_nginx_from_three_slaves() {
    let env = Env::new();
    let (_nginx, addr) = start_nginx(&env);
    std::fs::write(
        env.path("users.csv"),
        b"\xEF\xBB\xBFid,name\r\nu1,\"Ann, A.\"\r\nu2,Bob\r\nu3,Cy\r\nu4,Di\r\nu5,Ed\r\nu6,Flo\r\n",
    )
    .unwrap();
    let text = format!(
        "name: rows\ntarget: http://{addr}\nduration: 2s\nload: {{users: 3}}\ndata: {{file: users.csv}}\nflows:\n  - name: f\n    steps:\n      - {{name: user, path: '/u/{{{{row.id}}}}/{{{{row.name}}}}', think: 20ms}}\n"
    );
    let file = env.scenario("rows.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 3, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let log = std::fs::read_to_string(env.path("nginx/logs/access.log")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for line in log.lines() {
        let path = line.split('"').nth(1).unwrap().split(' ').nth(1).unwrap();
        seen.insert(path.to_string());
    }
    let want: std::collections::BTreeSet<String> = [
        "/u/u1/Ann,%20A.",
        "/u/u2/Bob",
        "/u/u3/Cy",
        "/u/u4/Di",
        "/u/u5/Ed",
        "/u/u6/Flo",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(seen, want);
    assert_eq!(
        r["totals"]["requests"].as_u64(),
        Some(log.lines().count() as u64)
    );
}

/// A RUBiS-style Markov mix: nginx logs each request with its connection, and each user holds
/// one connection, so the access log gives every user's walk. Every observed transition
/// frequency is within 4 standard errors of the matrix; an impossible transition never
/// happens; the report's visits per state equal nginx's.
#[test]
fn a_markov_mix_walks_the_matrix_as_written() {
    let env = Env::new();
    let p = env.path("nginx");
    let (_nginx, addr) = start_nginx_with(
        &env,
        &format!(
            "log_format seq '$connection $uri';\n  access_log {}/logs/seq.log seq;",
            p.display()
        ),
    );
    let text = format!(
        "name: rubis\ntarget: http://{addr}\nduration: 4s\nload: {{users: 4}}\nmarkov:\n  states:\n    - {{name: home, path: /home}}\n    - {{name: browse, path: /browse}}\n    - {{name: bid, method: POST, path: /bid, body: 'x=1'}}\n  initial: {{home: 1}}\n  transitions:\n    home: {{home: 0.1, browse: 0.6, bid: 0.3}}\n    browse: {{home: 0.5, bid: 0.5}}\n    bid: {{home: 0.25, browse: 0.25, bid: 0.5}}\n"
    );
    let file = env.scenario("rubis.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let log = std::fs::read_to_string(p.join("logs/seq.log")).unwrap();
    let states = ["/home", "/browse", "/bid"];
    let matrix = [[0.1, 0.6, 0.3], [0.5, 0.0, 0.5], [0.25, 0.25, 0.5]];
    let mut walks: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    let mut visits = [0u64; 3];
    for line in log.lines() {
        let (conn, uri) = line.split_once(' ').unwrap();
        let s = states.iter().position(|x| *x == uri).unwrap();
        visits[s] += 1;
        walks.entry(conn).or_default().push(s);
    }
    let mut counts = [[0u64; 3]; 3];
    for walk in walks.values() {
        for w in walk.windows(2) {
            counts[w[0]][w[1]] += 1;
        }
    }
    for (from, row) in matrix.iter().enumerate() {
        let n: u64 = counts[from].iter().sum();
        assert!(n > 300, "only {n} transitions from {}", states[from]);
        for (to, &p) in row.iter().enumerate() {
            let observed = counts[from][to] as f64 / n as f64;
            if p == 0.0 {
                assert_eq!(counts[from][to], 0, "{} → {}", states[from], states[to]);
                continue;
            }
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (observed - p).abs() <= 4.0 * se,
                "{} → {}: observed {observed:.3} of {n}, matrix {p}",
                states[from],
                states[to]
            );
        }
    }
    for (i, name) in ["home", "browse", "bid"].iter().enumerate() {
        let e = endpoint(&r, name);
        assert_eq!(e["requests"].as_u64(), Some(visits[i]), "{name}");
    }
    eprintln!("MARKOV: visits {visits:?}, transitions {counts:?}");
}

/// `{{serial}}` is unique across all slaves of a run without them talking to each other, and
/// `{{uuid}}` is a fresh version-4 UUID each time.
#[test]
fn serials_are_unique_across_three_slaves() {
    let env = Env::new();
    let (_nginx, addr) = start_nginx(&env);
    let text = format!(
        "name: serial\ntarget: http://{addr}\nduration: 2s\nload: {{users: 6}}\nthink: 5ms\nrequests: [{{name: s, path: '/s/{{{{serial}}}}/{{{{uuid}}}}'}}]\n"
    );
    let file = env.scenario("serial.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 3, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let log = std::fs::read_to_string(env.path("nginx/logs/access.log")).unwrap();
    let mut serials = std::collections::BTreeSet::new();
    let mut uuids = std::collections::BTreeSet::new();
    let mut slaves = std::collections::BTreeSet::new();
    for line in log.lines() {
        let path = line.split('"').nth(1).unwrap().split(' ').nth(1).unwrap();
        let mut parts = path.trim_start_matches("/s/").split('/');
        let serial: u64 = parts.next().unwrap().parse().unwrap();
        let uuid = parts.next().unwrap();
        assert!(uuid.len() == 36 && uuid.as_bytes()[14] == b'4', "{uuid}");
        assert!(serials.insert(serial), "serial {serial} sent twice");
        assert!(uuids.insert(uuid.to_string()), "uuid {uuid} sent twice");
        slaves.insert(serial % (1 << 24));
    }
    let requests = r.unwrap()["totals"]["requests"].as_u64().unwrap();
    assert_eq!(serials.len() as u64, requests);
    assert_eq!(slaves.len(), 3, "three slaves' ordinals: {slaves:?}");
}

/// Browsing a static site by its links: every request stays within `include` and outside
/// `exclude` on the target's origin, each page counts under its group (a bounded set of report
/// rows), and each user follows exactly `depth` links after the first page.
#[test]
fn browsing_follows_links_within_its_patterns() {
    let env = Env::new();
    let site = env.path("site");
    std::fs::create_dir_all(site.join("pages")).unwrap();
    std::fs::create_dir_all(site.join("private")).unwrap();
    for n in 0..20 {
        let (a, b) = ((n * 7 + 1) % 20, (n * 3 + 2) % 20);
        let page = format!(
            "<html><a href=\"/pages/{a}.html\">a</a> <a href=\"{b}.html#top\">b</a> <a href=\"/private/{n}.html\">p</a> <a href=\"http://elsewhere.example/pages/1.html\">x</a> <a href=\"mailto:a@b\">m</a></html>"
        );
        std::fs::write(site.join(format!("pages/{n}.html")), page).unwrap();
        std::fs::write(site.join(format!("private/{n}.html")), "secret").unwrap();
    }
    let (_nginx, addr) = start_nginx_server(
        &env,
        "",
        "",
        &format!("location /pages/ {{ root {}; }}", site.display()),
    );
    let text = format!(
        "name: browse\ntarget: http://{addr}\nduration: 3s\nload: {{users: 2}}\nflows:\n  - name: reader\n    steps:\n      - name: start\n        path: /pages/0.html\n        browse:\n          depth: 5\n          include: ['^/pages/']\n          exclude: ['^/private/']\n          think: 1ms\n          groups:\n            - {{name: teens, path: '^/pages/1[0-9]\\.html$'}}\nsla:\n  - {{metric: p99, max: 10s, window: 1s, request: teens}}\n"
    );
    let file = env.scenario("browse.yaml", &text);
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let log = std::fs::read_to_string(env.path("nginx/logs/access.log")).unwrap();
    let paths: Vec<&str> = log
        .lines()
        .map(|l| l.split('"').nth(1).unwrap().split(' ').nth(1).unwrap())
        .collect();
    assert!(paths.len() > 30, "{}", paths.len());
    for p in &paths {
        assert!(
            p.starts_with("/pages/") && p.ends_with(".html"),
            "left the patterns: {p}"
        );
    }
    let teens = paths
        .iter()
        .filter(|p| p.starts_with("/pages/1") && p.len() == 14)
        .count() as u64;
    let starts = paths.iter().filter(|p| **p == "/pages/0.html").count() as u64;
    let names: Vec<&str> = r["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["start", "teens"]);
    assert_eq!(r["endpoints"][1]["requests"].as_u64(), Some(teens));
    assert_eq!(r["totals"]["requests"].as_u64(), Some(paths.len() as u64));
    assert_eq!(r["totals"]["failures"], 0);
    // Each flow instance: the first page and 5 followed links (the last ones may be cut).
    let completed = r["totals"]["flows"][0]["completed"].as_u64().unwrap();
    assert!(
        paths.len() as u64 >= completed * 6 && paths.len() as u64 <= completed * 6 + 2 * 6,
        "{} requests, {completed} flows",
        paths.len()
    );
    assert!(starts >= completed, "{starts} {completed}");
    // An SLA rule may name a browse group: it is judged on that group's requests.
    let rule = &r["sla"][0];
    assert!(rule["rule"].as_str().unwrap().contains("teens"), "{rule}");
    assert_eq!(rule["verdict"], "passed", "{rule}");
}
