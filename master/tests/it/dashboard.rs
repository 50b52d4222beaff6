//! The web dashboard in a real browser (headless Chromium over the DevTools protocol, no name
//! resolution): the page loads with no console message, shows the fleet, starts a run from a
//! pasted scenario, its charts receive the merged seconds live, and its Stop button ends the
//! run with the dashboard named as who stopped it. `LOBSTER_SCREENSHOTS=DIR` keeps screenshots.

use std::time::Duration;

use crate::common::browser::Browser;
use crate::common::*;

#[test]
fn the_dashboard_starts_follows_and_stops_a_run_in_a_browser() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let (_second, addr2) = env.target();
    let (_master, api, grpc) = env.master(None, &[]);
    let _slaves: Vec<Proc> = (1..=2).map(|i| env.slave(&grpc, i, 2)).collect();
    wait_slaves(&api, 2, Duration::from_secs(60));

    let mut b = Browser::start(&env, 1280, 2000);
    b.navigate(&format!("{api}/"));
    b.wait_for(
        "the page is ready",
        "document.body && document.body.dataset.ready === '1'",
        Duration::from_secs(30),
    );
    b.wait_for(
        "the fleet lists both slaves",
        "document.querySelectorAll('#slaves tbody tr').length === 2",
        Duration::from_secs(30),
    );
    assert_eq!(b.eval("document.getElementById('quorum').value"), "2");
    // Each slave's resources from its heartbeats: a CPU share and the host's memory in use.
    b.wait_for(
        "the fleet shows each slave's CPU and memory",
        "[...document.querySelectorAll('#slaves tbody tr')].every(r => { \
           const c = r.cells; return c[8].textContent !== '' && +c[8].textContent >= 0 \
             && +c[8].textContent <= 100 && +c[9].textContent > 0; })",
        Duration::from_secs(30),
    );
    // The console watch sees what the page logs.
    b.eval("console.error('probe'); true");
    b.eval("1");
    assert_eq!(b.problems.len(), 1, "{:?}", b.problems);
    b.problems.clear();

    let yaml = format!(
        "name: from-the-page\ntargets: [http://{addr}, http://{addr2}]\nduration: 60s\nload: {{rate: 40}}\nrequests:\n  - {{name: home, path: /}}\n  - {{name: broken, path: /status/503, weight: 1}}\nmax_error_rate: 100%\nsla:\n  - {{metric: p99, max: 10s, window: 2s}}\n"
    );
    b.eval(&format!(
        "document.getElementById('new-run').open = true; document.getElementById('scenario').value = {}; document.getElementById('start').click(); true",
        serde_json::to_string(&yaml).unwrap()
    ));
    b.wait_for(
        "the charts received 4 seconds",
        "Number(document.body.dataset.points || 0) >= 4",
        Duration::from_secs(60),
    );
    b.wait_for(
        "the live endpoint table",
        "document.querySelectorAll('#endpoints tbody tr').length === 2",
        Duration::from_secs(10),
    );
    // With `targets:`, the live figures by target too, one row each.
    b.wait_for(
        "the live target table",
        "!document.getElementById('targets').hidden && document.querySelectorAll('#targets tbody tr').length === 2",
        Duration::from_secs(10),
    );
    let names = b.eval(
        "Array.from(document.querySelectorAll('#targets tbody tr')).map(tr => tr.children[0].textContent).join(' ')",
    );
    assert_eq!(names, format!("http://{addr} http://{addr2}").as_str());
    let id = b
        .eval("document.querySelector('#run-status code').textContent")
        .as_str()
        .unwrap()
        .to_string();
    // The SLA rule's state while the run goes on, and the load asked for in each second.
    b.wait_for(
        "the live SLA rule",
        "Array.from(document.querySelectorAll('#sla tbody tr')).some(tr => tr.textContent.includes('p99 <= 10000ms over 2s') && tr.textContent.includes('passed'))",
        Duration::from_secs(10),
    );
    let view: serde_json::Value =
        serde_json::from_str(&http_get(addr_of(&api), &format!("/api/runs/{id}"))).unwrap();
    let loads: Vec<f64> = view["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["load"].as_f64().unwrap())
        .collect();
    assert!(
        loads.len() >= 4 && loads.iter().all(|l| *l == 40.0),
        "{loads:?}"
    );
    // Each chart drew its canvas.
    assert_eq!(
        b.eval("document.querySelectorAll('.uplot canvas').length"),
        4
    );
    if let Some(dir) = std::env::var_os("LOBSTER_SCREENSHOTS") {
        std::fs::write(
            std::path::Path::new(&dir).join("dashboard.png"),
            b.screenshot(),
        )
        .unwrap();
    }

    b.eval("document.getElementById('stop').click(); true");
    b.wait_for(
        "the verdict shown",
        "!!document.querySelector('#verdict .badge') && document.querySelector('#verdict .badge').textContent === 'aborted'",
        Duration::from_secs(60),
    );
    let api_addr = addr_of(&api);
    let view: serde_json::Value =
        serde_json::from_str(&http_get(api_addr, &format!("/api/runs/{id}"))).unwrap();
    let r = &view["report"];
    assert_eq!(r["status"], "aborted");
    assert_eq!(
        r["stop"]["reason"],
        "stopped by the operator: stopped from the dashboard"
    );
    let shown: u64 = b
        .eval("Array.from(document.querySelectorAll('#endpoints tbody tr')).map(tr => Number(tr.children[1].textContent)).reduce((a, x) => a + x, 0)")
        .as_u64()
        .unwrap();
    assert_eq!(
        shown,
        r["totals"]["requests"].as_u64().unwrap(),
        "the final table is the report's"
    );
    // The final target table is the report's too: each target's requests, adding up.
    let by_target = b.eval(
        "Array.from(document.querySelectorAll('#targets tbody tr')).map(tr => Number(tr.children[1].textContent)).join(' ')",
    );
    let reported: Vec<String> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["requests"].to_string())
        .collect();
    assert_eq!(by_target, reported.join(" ").as_str());
    let sum: u64 = reported.iter().map(|n| n.parse::<u64>().unwrap()).sum();
    assert_eq!(sum, shown);
    b.wait_for(
        "the history lists the run",
        &format!("document.querySelector('#runs a[data-run=\"{id}\"]') !== null"),
        Duration::from_secs(10),
    );
    // Comparing a run with itself through the API the page uses: no regression.
    let c: serde_json::Value = serde_json::from_str(&http_get(
        api_addr,
        &format!("/api/compare?base={id}&run={id}"),
    ))
    .unwrap();
    assert_eq!(c["regressions"], serde_json::json!([]), "{c}");

    b.eval("1"); // reads any event still queued
    assert!(b.problems.is_empty(), "console: {:?}", b.problems);
}
