//! `targets:`: several base URLs, each given its weight's share of the fleet's load.

use crate::common::*;

/// Two built-in targets weighted 1 and 3, an open model of 200 arrivals over 3 slaves: arrival
/// k goes to the weighted round-robin's target for k whichever slave sends it, so the first
/// target serves exactly 50 and the second 150, each counts what the report gives it, and the
/// endpoint's figures are the sum of both.
#[test]
fn arrivals_are_dealt_to_the_targets_in_their_weights_exactly() {
    let env = Env::new();
    let (_a, a) = env.target();
    let (_b, b) = env.target();
    let file = env.scenario(
        "targets.yaml",
        &format!(
            "name: targets\ntargets:\n  - http://{a}\n  - {{url: 'http://{b}', weight: 3}}\nduration: 5s\nload:\n  rate: 40\nrequests:\n  - {{name: home, path: /}}\n"
        ),
    );
    let html = env.path("report.html");
    let (code, out, err, r) = lobster_run(&env, &file, 3, &["--html", html.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["totals"]["dropped"], 0, "{out}");
    assert_eq!(r["totals"]["requests"], 200, "{out}");
    let targets = r["targets"].as_array().expect("a report with targets");
    let rows: Vec<(String, u64)> = targets
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(format!("http://{a}"), 50), (format!("http://{b}"), 150)],
        "{out}"
    );
    assert_eq!(target_count(a), 50, "what the first target served");
    assert_eq!(target_count(b), 150, "what the second target served");
    assert_eq!(r["endpoints"][0]["requests"], 200);
    for t in targets {
        assert_eq!(t["failures"], 0);
        assert!(t["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{t}");
    }
    assert!(out.contains("by target"), "{out}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<table id=\"targets\">"), "no targets table");
    assert!(
        page.contains(&format!(
            "<td>http://{b}</td><td class=\"num\">150</td><td class=\"num\">0</td>"
        )),
        "the second target's row"
    );
    assert!(
        out.contains(&format!("against http://{a} ×1, http://{b} ×3")),
        "{out}"
    );
}

/// The closed model deals users, not requests: 4 users over weights 1 and 3 on 2 slaves put
/// user 1 on the first target and users 0, 2 and 3 on the second (the round-robin's order is
/// second, first, second, second). Each user keeps one connection, so the first target sees
/// exactly 1 connection and the second 3, and each counts what the report gives it.
#[test]
fn users_are_dealt_to_the_targets_in_their_weights() {
    let env = Env::new();
    let (_a, a) = env.target();
    let (_b, b) = env.target();
    let file = env.scenario(
        "users.yaml",
        &format!(
            "name: users\ntargets:\n  - http://{a}\n  - {{url: 'http://{b}', weight: 3}}\nduration: 3s\nthink: 20ms\nload:\n  users: 4\nrequests:\n  - {{name: home, path: /}}\n"
        ),
    );
    let (code, out, err, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(target_connections(a), 1, "users on the first target");
    assert_eq!(target_connections(b), 3, "users on the second target");
    let served = [target_count(a), target_count(b)];
    let reported: Vec<u64> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(reported, served, "{out}");
    assert_eq!(
        r["totals"]["requests"].as_u64(),
        Some(served[0] + served[1])
    );
    assert!(served[0] > 10, "the first target's user ran: {served:?}");
}

/// Flows run against each user's own target: two built-in targets' login apps, 4 users dealt
/// 2 and 2. Every user logs in through its target's CSRF form and keeps that target's session
/// cookie, so no check fails and the two targets' own counts of logged-in views add up to the
/// report's account views, each target having served some.
#[test]
fn flows_log_in_on_each_users_own_target() {
    let env = Env::new();
    let (_a, a) = env.target();
    let (_b, b) = env.target();
    let file = env.scenario(
        "flows.yaml",
        &format!(
            "name: flows
targets: [http://{a}, http://{b}]
duration: 4s
load:
  users: 4
flows:
  - name: member
    steps:
      - name: login-page
        path: /login/
        capture: [{{name: csrf, html: 'input[name=csrf_token]', attr: value}}]
      - name: login
        method: POST
        path: /login/
        headers: {{Content-Type: application/x-www-form-urlencoded}}
        body: 'csrf_token={{{{csrf}}}}&username=ann&password=pw'
        expect: [302, 303]
      - name: account
        path: /account/
        check: [{{body_contains: 'Signed in'}}]
        think: 200ms
"
        ),
    );
    let (code, out, err, r) = lobster_run(&env, &file, 2, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["totals"]["failures"], 0, "{}", r["totals"]["errors"]);
    let checks = &r["totals"]["checks"][0];
    assert_eq!(checks["fails"], 0, "{checks}");
    let account = endpoint(&r, "account")["requests"].as_u64().unwrap();
    let views = |addr| {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(addr, "/__lobster/count")).unwrap();
        v["logged_in_views"].as_u64().unwrap()
    };
    let (va, vb) = (views(a), views(b));
    assert!(
        va > 0 && vb > 0,
        "each target served logged-in views: {va} {vb}"
    );
    assert_eq!(va + vb, account, "the targets' views against the report's");
    assert_eq!(target_connections(a), 2);
    assert_eq!(target_connections(b), 2);
}

/// An SLA rule scoped to one target judges that target alone: the first target answers at
/// once (`/status/200`), the second after 200 ms (`/delay/200`, the same request under another
/// base path). Its p50 rule fails, the first target's passes, and the run fails on it.
#[test]
fn an_sla_rule_on_one_target_judges_that_target_alone() {
    let env = Env::new();
    let (_a, a) = env.target();
    let (_b, b) = env.target();
    let file = env.scenario(
        "sla.yaml",
        &format!(
            "name: sla
targets: [http://{a}/status, http://{b}/delay]
duration: 4s
load:
  rate: 20
requests:
  - {{name: r, path: /200}}
sla:
  - {{metric: p50, max: 100ms, window: 2s, target: 'http://{a}/status', abort: false}}
  - {{metric: p50, max: 100ms, window: 2s, target: 'http://{b}/delay', abort: false}}
"
        ),
    );
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(
        code, 1,
        "the run fails on the second target's rule\n{out}\n{err}"
    );
    let r = r.unwrap();
    let rules: Vec<(String, String)> = r["sla"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["rule"].as_str().unwrap().to_string(),
                x["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (
                format!("p50[http://{a}/status] <= 100ms over 2s"),
                "passed".to_string()
            ),
            (
                format!("p50[http://{b}/delay] <= 100ms over 2s"),
                "failed".to_string()
            ),
        ],
        "{out}"
    );
    let worst = r["sla"][1]["worst"].as_f64().unwrap();
    assert!(worst >= 200.0, "the second target's p50: {worst}");
    assert_eq!(r["totals"]["failures"], 0);
}
