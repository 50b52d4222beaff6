//! A real Prometheus (Debian's package, installed by scripts/test) scrapes the master during a
//! run: its query of the run's request rate gives the scenario's rate, and once the run ends
//! its stored counters equal the report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;

/// Percent-encodes a PromQL query for a URL (RFC 3986 unreserved characters kept).
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query (`None` while it has no result).
fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    let body = http_get(prom, &format!("/api/v1/query?query={}", encode(q)));
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    assert_eq!(v["status"], "success", "{q}: {body}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_runs_rate_and_its_exact_totals() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (_master, api, grpc) = env.master(None, &[]);
    let _slaves: Vec<Proc> = (1..=2).map(|i| env.slave(&grpc, i, 2)).collect();
    wait_slaves(&api, 2, Duration::from_secs(60));

    let port = free_port();
    let config = env.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lobster\n    static_configs:\n      - targets: ['{}']\n",
            api.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(tool("LOBSTER_TEST_PROMETHEUS", "prometheus"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            env.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let log = std::fs::File::create(env.path("prometheus.log")).unwrap();
    let _prom = Proc {
        child: cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
        name: "prometheus".into(),
    };
    let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("Prometheus ready", Duration::from_secs(60), || {
        std::net::TcpStream::connect(prom).ok()?;
        http_get(prom, "/-/ready").contains("Ready").then_some(())
    });

    // 100 arrivals per second over two slaves for 30 s.
    let file = env.scenario(
        "rate.yaml",
        &format!(
            "name: scraped\ntarget: http://{addr}\nduration: 30s\nload: {{rate: 100}}\nrequests:\n  - {{name: home, path: /}}\n  - {{name: item, path: /item/1}}\n"
        ),
    );
    let json = env.path("scraped.json");
    let mut run = background_run(&env, &api, &file, &json, 2);

    // 24 s into the load, the rate over the last 20 s (about 20 scrapes; the counters move once
    // per merged second, so a window edge costs at most one second's worth: 1/19).
    let rate = eventually(
        "24 s of load in Prometheus",
        Duration::from_secs(90),
        || {
            query(
                prom,
                "sum(rate(lobster_run_requests_total[20s])) and on() (max(lobster_run_elapsed_seconds) > 24)",
            )
        },
    );
    eprintln!("rate via Prometheus: {rate}/s");
    assert!((93.0..=107.0).contains(&rate), "rate {rate} for 100/s");
    assert_eq!(
        query(prom, "max(lobster_run_slaves)"),
        Some(2.0),
        "both slaves in the run"
    );
    assert_eq!(query(prom, "max(lobster_run_target_rate)"), Some(100.0));

    let status = run
        .wait_exit(Duration::from_secs(90))
        .expect("the run ends");
    assert_eq!(status.code(), Some(0));
    let r = report(&json);
    let requests = r["totals"]["requests"].as_f64().unwrap();
    let p95_s = r["totals"]["latency_ms"]["p95"].as_f64().unwrap() / 1000.0;
    let id = r["run_id"].as_str().unwrap().to_string();
    // After its end the run's series stay: the last scrape holds the report's totals.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let total = query(
            prom,
            &format!("sum(lobster_run_requests_total{{run=\"{id}\"}})"),
        );
        if total == Some(requests) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has {total:?} requests, the report {requests}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The exact merged p95 per endpoint; the histogram's count is the requests with a latency.
    let home_p95 = query(
        prom,
        &format!("lobster_run_request_duration_quantile_seconds{{run=\"{id}\",endpoint=\"home\",quantile=\"0.95\"}}"),
    )
    .unwrap();
    let want = r["endpoints"][0]["latency_ms"]["p95"].as_f64().unwrap() / 1000.0;
    assert!((home_p95 - want).abs() < 1e-9, "{home_p95} vs {want}");
    assert!(p95_s > 0.0);
    assert_eq!(
        query(
            prom,
            &format!("sum(lobster_run_request_duration_seconds_count{{run=\"{id}\"}})")
        ),
        Some(requests)
    );
    assert!((2900.0..=3100.0).contains(&requests), "{requests}");
}
