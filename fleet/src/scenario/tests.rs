//! Scenario parsing: the minimal example, both models, stages, and a table of bad inputs.

use std::time::Duration;

use super::*;

const SMOKE: &str = "name: smoke
target: http://127.0.0.1:8080
duration: 20s
load:
  users: 30
requests:
  - name: home
    path: /
  - name: item
    method: GET
    path: /item/42
    weight: 2
";

const FLOW: &str = "name: j
target: http://127.0.0.1:8080
duration: 20s
load:
  users: 5
flows:
  - name: member
    steps:
      - name: page
        path: /login/
        capture:
          - {name: csrf, html: 'input[name=csrf_token]', attr: value}
      - name: login
        method: POST
        path: /login/
        body: 'csrf_token={{csrf}}'
";

/// The docs' first flow example, exactly as a user copies it.
const EXAMPLE: &str = "name: login-and-look
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

#[test]
fn the_docs_first_flow_example_is_accepted_exactly_as_written() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUJ2ZmY2Y1YjQ3ZGQ3YjJmMGQwCgYIKoZIzj0EAwIwHTEb\n-----END CERTIFICATE-----\n";
    let read = |f: &str| {
        assert_eq!(f, "ca.pem");
        Ok(pem.to_string())
    };
    let env = |k: &str| match k {
        "LOBSTER_USER" => Some("ann".to_string()),
        "LOBSTER_PASSWORD" => Some("s3cret&x".to_string()),
        _ => None,
    };
    let s = match validate::parse(EXAMPLE, "login.yaml", &read, &env) {
        Ok(s) => s,
        // The stand-in certificate is not DER; everything before it was accepted.
        Err(e) => panic!("{e}"),
    };
    assert_eq!(s.target.scheme, Scheme::Https);
    assert_eq!(s.tls.ca_pem.as_deref(), Some(pem));
    assert_eq!(s.flows.len(), 1);
    assert_eq!(s.flows[0].steps, vec![0, 1, 2]);
    let names: Vec<&str> = s.requests.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["login-page", "login", "account"]);
    assert_eq!(
        s.requests[0].capture[0],
        Capture {
            name: "csrf".into(),
            from: Source::Html {
                selector: "input[name=csrf_token]".into(),
                attr: Some("value".into())
            }
        }
    );
    assert_eq!(
        s.requests[1].body.as_deref(),
        Some("csrf_token={{csrf}}&username=ann&password=s3cret&x")
    );
    assert_eq!(s.requests[1].expect, vec![302, 303]);
    assert_eq!(
        s.requests[2].check[0].label,
        "account: body_contains \"Signed in\""
    );
    assert_eq!(
        s.requests[2].think,
        Some(Think {
            min: Duration::from_secs(1),
            max: Duration::from_secs(1)
        })
    );
    // Without the environment values: the missing one is named.
    let err = validate::parse(EXAMPLE, "login.yaml", &read, &|_| None).unwrap_err();
    assert!(err.to_string().contains("LOBSTER_USER is not set"), "{err}");
    // And the JSON the slaves get is the same scenario.
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
}

/// A scenario whose `data.file` is `file` with `bytes` (decoded as `load` decodes files).
fn with_data(file: &str, bytes: &[u8], extra: &str) -> Result<Scenario, ScenarioError> {
    let text = format!(
        "name: d\ntarget: http://127.0.0.1:9\nduration: 1s\nload: {{users: 1}}\ndata: {{file: {file}{extra}}}\nflows:\n  - name: f\n    steps: [{{name: s, path: '/u/{{{{row.email}}}}', body: 'n={{{{row.name}}}}'}}]\n"
    );
    let content = value::decode_text(bytes);
    validate::parse(&text, "d.yaml", &|_| content.clone(), &|_| None)
}

#[test]
fn data_tables_are_read_as_spreadsheets_and_editors_save_them() {
    let rows = |s: &Scenario| -> Vec<Vec<String>> {
        s.data
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    };
    // Excel's CSV: a byte order mark, CRLF, a quoted field with a comma and one with a line
    // break, a blank last line.
    let excel = b"\xEF\xBB\xBFemail,name\r\nann@x.io,\"Ann, A.\"\r\nbob@x.io,\"Bob\r\nB.\"\r\n\r\n";
    let s = with_data("users.csv", excel, "").unwrap();
    assert_eq!(s.data_columns, ["email", "name"]);
    assert_eq!(
        rows(&s),
        [vec!["ann@x.io", "Ann, A."], vec!["bob@x.io", "Bob\r\nB."]]
    );
    assert_eq!(s.data_strategy, DataStrategy::Slice);
    // Windows "Unicode text": UTF-16 LE with a byte order mark, tab-separated.
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in "email\tname\r\nzoë@x.io\tZoë\r\n".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let s = with_data("users.tsv", &utf16, ", strategy: random").unwrap();
    assert_eq!(rows(&s), [vec!["zoë@x.io", "Zoë"]]);
    assert_eq!(s.data_strategy, DataStrategy::Random);
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
    // What is wrong is said: a ragged row, an unknown column, a duplicate column, a strategy.
    let err = |r: Result<Scenario, ScenarioError>| r.unwrap_err().to_string();
    let ragged = err(with_data("u.csv", b"email,name\na@x,A\nb@x\n", ""));
    assert!(
        ragged.contains("line 3") && ragged.contains("u.csv"),
        "{ragged}"
    );
    let unknown = err(with_data("u.csv", b"mail,name\na@x,A\n", ""));
    assert!(
        unknown.contains("unknown column in `{{row.email}}`: its columns are mail, name"),
        "{unknown}"
    );
    let dup = err(with_data("u.csv", b"email,email\na,b\n", ""));
    assert!(dup.contains("column `email` appears twice"), "{dup}");
    let strategy = err(with_data(
        "u.csv",
        b"email,name\na,b\n",
        ", strategy: shuffle",
    ));
    assert!(
        strategy.contains("expected slice") && strategy.contains("cycle"),
        "{strategy}"
    );
    let not_text = err(with_data("u.csv", &[0x61, 0xFF, 0x62], ""));
    assert!(not_text.contains("not UTF-8 or UTF-16 text"), "{not_text}");
}

/// RUBiS-style browsing as a Markov mix.
const MARKOV: &str = "name: rubis
target: http://127.0.0.1:8080
duration: 20s
load:
  users: 5
markov:
  states:
    - {name: home, path: /, think: 500ms}
    - {name: browse, path: /browse}
    - {name: bid, method: POST, path: /bid, body: 'x=1'}
  initial: {home: 1}
  transitions:
    home: {home: 0.1, browse: 0.6, bid: 0.3}
    browse: {home: 0.5, bid: 0.5}
    bid: {home: 0.25, browse: 0.25, bid: 0.5}
";

#[test]
fn a_markov_mix_is_read_with_its_matrix() {
    let s = parse(MARKOV, "rubis.yaml").unwrap();
    let m = s.markov.as_ref().unwrap();
    assert_eq!(m.initial, vec![1.0, 0.0, 0.0]);
    assert_eq!(m.transitions[1], vec![0.5, 0.0, 0.5]);
    assert_eq!(
        s.requests[0].think,
        Some(Think {
            min: Duration::from_millis(500),
            max: Duration::from_millis(500)
        })
    );
    assert!(s.flows.is_empty());
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
    let pi = m.stationary();
    assert!((pi.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{pi:?}");
}

#[test]
fn the_minimal_example_is_accepted_as_written() {
    let s = parse(SMOKE, "smoke.yaml").unwrap();
    assert_eq!(s.name, "smoke");
    assert_eq!(s.target.authority(), "127.0.0.1:8080");
    assert_eq!(s.duration, Duration::from_secs(20));
    assert_eq!(s.load, Profile::constant(Model::Closed, 30));
    assert_eq!(s.requests.len(), 2);
    assert_eq!(s.requests[0].method, "GET");
    assert_eq!(s.requests[0].weight, 1);
    assert_eq!(s.requests[1].weight, 2);
    assert!(
        s.requests[0].accepts(200) && s.requests[0].accepts(302) && !s.requests[0].accepts(500)
    );
}

/// `targets:` as plain URLs and as `{url, weight}`: the first is `target`, weights default
/// to 1, and the round-robin deals each its weight per round; the JSON the master sends
/// carries them and passes the same checks.
#[test]
fn targets_are_read_with_their_weights() {
    let text = SMOKE.replace(
        "target: http://127.0.0.1:8080",
        "targets:\n  - http://127.0.0.1:8080\n  - {url: 'https://10.0.0.2/app', weight: 3}\ntls: {insecure_skip_verify: true}",
    );
    let s = parse(&text, "t.yaml").unwrap();
    assert_eq!(s.target.to_string(), "http://127.0.0.1:8080");
    let sites: Vec<(String, u32)> = s
        .sites()
        .iter()
        .map(|w| (w.target.to_string(), w.weight))
        .collect();
    assert_eq!(
        sites,
        [
            ("http://127.0.0.1:8080".to_string(), 1),
            ("https://10.0.0.2:443/app".to_string(), 3)
        ]
    );
    assert_eq!(s.target_order(), [1, 0, 1, 1]);
    assert_eq!(
        s.target_label(),
        "http://127.0.0.1:8080 ×1, https://10.0.0.2:443/app ×3"
    );
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
    // One target: the order is that target alone; `--target` replaces the whole list.
    let one = parse(SMOKE, "smoke.yaml").unwrap();
    assert_eq!(one.target_order(), [0]);
    let mut over = s;
    over.set_target("http://127.0.0.1:9").unwrap();
    assert!(over.targets.is_empty());
    assert_eq!(over.sites().len(), 1);
}

#[test]
fn rate_selects_the_open_model() {
    let s = parse(&SMOKE.replace("users: 30", "rate: 200"), "open.yaml").unwrap();
    assert!(s.is_open());
    assert_eq!(s.load, Profile::constant(Model::Open, 200_000));
}

#[test]
fn ramp_and_stages_build_profiles() {
    let s = parse(
        &SMOKE.replace("users: 30", "users: 30\n  ramp: 10s"),
        "r.yaml",
    )
    .unwrap();
    assert_eq!(s.load.start, 0);
    assert_eq!(
        s.load.stages,
        vec![Stage {
            duration_ms: 10_000,
            target: 30
        }]
    );

    let staged = "name: peak
target: http://localhost:9000/api/
load:
  rate: 10
  stages:
    - {duration: 30s, rate: 100}
    - {duration: 1m, rate: 100}
    - {duration: 10s, rate: 0}
requests:
  - {name: a, path: /a, expect: [200, 204], headers: {X-Test: '1'}}
sla:
  - {metric: p99, max: 800ms, window: 10s}
  - {metric: error_rate, max: 1%, request: a, abort: false}
  - {metric: rps, min: 5}
";
    let s = parse(staged, "peak.yaml").unwrap();
    assert_eq!(s.duration, Duration::from_secs(100));
    assert_eq!(s.target.base_path, "/api");
    assert_eq!(s.load.model, Model::Open);
    assert_eq!(s.load.amounts(), vec![10_000, 100_000, 100_000, 0]);
    assert_eq!(s.sla.len(), 3);
    assert_eq!(s.sla[0].to_string(), "p99 <= 800ms over 10s");
    assert_eq!(s.sla[1].to_string(), "error_rate[a] <= 1% over 10s");
    assert!(!s.sla[1].abort);
    assert_eq!(s.sla[2].bound, Bound::Min(5.0));
}

#[test]
fn think_and_data() {
    let text = format!("{SMOKE}think: {{min: 100ms, max: 1s}}\ndata:\n  items: [a, b, c]\n")
        .replace("/item/42", "/item/{{item}}");
    let s = parse(&text, "d.yaml").unwrap();
    assert_eq!(
        s.think,
        Think {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1)
        }
    );
    assert_eq!(s.data, vec!["a", "b", "c"]);
    assert!(s.requests[1].uses_item());
}

#[test]
fn a_trace_is_read_and_samples_exactly_its_share() {
    let s = parse(
        &format!("{SMOKE}trace: {{sample: 1%, errors: sampled, max_mb: 5}}\n"),
        "t.yaml",
    )
    .unwrap();
    let t = s.trace.clone().unwrap();
    assert_eq!(
        t,
        Trace {
            sample_ppm: 10_000,
            all_errors: false,
            max_bytes: 5_000_000,
            output: vec![],
        }
    );
    // One request in a hundred, evenly: numbers 99, 199, …, 999 of the first thousand.
    let picked: Vec<u64> = (0..1000).filter(|&n| t.samples(n)).collect();
    assert_eq!(picked, (1..=10).map(|k| k * 100 - 1).collect::<Vec<_>>());
    // Any share: of the first N requests, exactly ⌊N·p⌋ are recorded, for every N.
    let third = Trace {
        sample_ppm: 333_333,
        ..t.clone()
    };
    let mut recorded = 0u64;
    for n in 0..100_000u64 {
        assert_eq!(recorded, n * 333_333 / 1_000_000, "after {n} requests");
        recorded += u64::from(third.samples(n));
    }
    let all = parse(&format!("{SMOKE}trace: {{}}\n"), "t.yaml")
        .unwrap()
        .trace
        .unwrap();
    assert_eq!(
        (all.sample_ppm, all.all_errors, all.max_bytes),
        (1_000_000, true, 64_000_000)
    );
    assert!((0..1000).all(|n| all.samples(n)));
    assert_eq!(parse(SMOKE, "s.yaml").unwrap().trace, None);
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
    // Values named for output: a capture of a flow, in the order given.
    let flow = parse(&format!("{FLOW}trace: {{output: [csrf]}}\n"), "f.yaml").unwrap();
    assert_eq!(flow.trace.unwrap().output, ["csrf"]);
}

/// The resolved scenario's JSON (master to slaves, and the store) keeps durations as whole
/// milliseconds under `_ms` names, so slaves and stored runs of the previous form read it.
#[test]
fn the_wire_json_keeps_durations_in_milliseconds() {
    let s = parse(
        &SMOKE.replace(
            "load:",
            "timeout: 1500ms\nthink: {min: 250ms, max: 2s}\nload:",
        ),
        "smoke.yaml",
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(json["duration_ms"], 20_000);
    assert_eq!(json["timeout_ms"], 1_500);
    assert_eq!(json["think"]["min_ms"], 250);
    assert_eq!(json["think"]["max_ms"], 2_000);
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
}

/// Bad scenarios: each must be refused with a located message containing the given words.
#[test]
fn bad_scenarios_are_refused_with_a_location() {
    let cases: &[(&str, &str, &str)] = &[
        ("empty file", "", "empty"),
        ("not a mapping", "- a\n- b\n", ""),
        ("syntax error", "name: [unclosed\n", ""),
        (
            "unknown top-level field",
            &format!("{SMOKE}colour: red\n"),
            "colour",
        ),
        ("missing name", &SMOKE.replace("name: smoke\n", ""), "name"),
        (
            "missing target",
            &SMOKE.replace("target: http://127.0.0.1:8080\n", ""),
            "target",
        ),
        (
            "target not a url",
            &SMOKE.replace("http://127.0.0.1:8080", "localhost"),
            "not a URL",
        ),
        (
            "tls on an http target",
            &format!("{SMOKE}tls: {{insecure_skip_verify: true}}\n"),
            "applies to https:// targets",
        ),
        (
            "tls ca_file with insecure_skip_verify",
            &format!(
                "{}tls: {{ca_file: ca.pem, insecure_skip_verify: true}}\n",
                SMOKE.replace("http://", "https://")
            ),
            "not both",
        ),
        (
            "tls unknown field",
            &format!(
                "{}tls: {{verify: false}}\n",
                SMOKE.replace("http://", "https://")
            ),
            "unknown field `verify`",
        ),
        (
            "tls ca_file from text",
            &format!(
                "{}tls: {{ca_file: ca.pem}}\n",
                SMOKE.replace("http://", "https://")
            ),
            "`ca.pem` was not given with the scenario",
        ),
        ("target bad port", &SMOKE.replace(":8080", ":99999"), "port"),
        (
            "trace sample over 100%",
            &format!("{SMOKE}trace: {{sample: 101%}}\n"),
            "trace.sample must be a percentage from 0% to 100%",
        ),
        (
            "trace sample without %",
            &format!("{SMOKE}trace: {{sample: 5}}\n"),
            "trace.sample must be a percentage",
        ),
        (
            "trace errors unknown",
            &format!("{SMOKE}trace: {{errors: some}}\n"),
            "trace.errors must be `all`",
        ),
        (
            "trace max_mb zero",
            &format!("{SMOKE}trace: {{max_mb: 0}}\n"),
            "trace.max_mb must be a whole number from 1 to 10000",
        ),
        (
            "trace that records nothing",
            &format!("{SMOKE}trace: {{sample: 0%, errors: sampled}}\n"),
            "records nothing",
        ),
        (
            "trace output unknown",
            &format!("{FLOW}trace: {{output: [csrf, token]}}\n"),
            "trace.output: `token` is not a value of this scenario",
        ),
        (
            "trace output item without data",
            &format!("{SMOKE}trace: {{output: [item]}}\n").replace("/item/42", "/item"),
            "trace.output: `item` is not a value",
        ),
        (
            "trace output twice",
            &format!("{FLOW}trace: {{output: [csrf, csrf]}}\n"),
            "trace.output names `csrf` twice",
        ),
        (
            "trace unknown field",
            &format!("{SMOKE}trace: {{rate: 1%}}\n"),
            "unknown field `rate`",
        ),
        (
            "a stage over 30 days",
            &SMOKE.replace(
                "  users: 30\n",
                "  stages:\n    - {duration: 721h, users: 1}\n",
            ),
            "a stage must last longer than zero and at most 30 days",
        ),
        (
            "a ramp over 30 days",
            &SMOKE.replace("  users: 30\n", "  users: 30\n  ramp: 721h\n"),
            "ramp must be at most 30 days",
        ),
        (
            "1001 stages",
            &SMOKE.replace(
                "  users: 30\n",
                &format!(
                    "  stages:\n{}",
                    "    - {duration: 1s, users: 1}\n".repeat(1001)
                ),
            ),
            "stages must be 1 to 1000",
        ),
        (
            "missing duration",
            &SMOKE.replace("duration: 20s\n", ""),
            "duration",
        ),
        ("bad duration", &SMOKE.replace("20s", "twenty"), "duration"),
        (
            "zero duration",
            &SMOKE.replace("20s", "0s"),
            "longer than zero",
        ),
        ("negative duration", &SMOKE.replace("20s", "-5"), "negative"),
        (
            "users and rate",
            &SMOKE.replace("users: 30", "users: 30\n  rate: 5"),
            "not both",
        ),
        (
            "zero users",
            &SMOKE.replace("users: 30", "users: 0"),
            "users must be a whole number from 1 to 10000000, got 0",
        ),
        (
            "negative users",
            &SMOKE.replace("users: 30", "users: -3"),
            "users must be a whole number from 1 to 10000000, got -3",
        ),
        (
            "users as text",
            &SMOKE.replace("users: 30", "users: many"),
            "users must be a whole number from 1 to 10000000, got `many`",
        ),
        (
            "too many users, written as a float",
            &SMOKE.replace("users: 30", "users: 1e12"),
            "users must be a whole number from 1 to 10000000, got 1000000000000",
        ),
        (
            "a fraction of a user",
            &SMOKE.replace("users: 30", "users: 1.5"),
            "users must be a whole number from 1 to 10000000, got 1.5",
        ),
        ("zero rate", &SMOKE.replace("users: 30", "rate: 0"), "rate"),
        (
            "absurd rate",
            &SMOKE.replace("users: 30", "rate: 1e12"),
            "rate must be a number of requests per second above 0 and at most 10000000",
        ),
        ("no load", &SMOKE.replace("users: 30", "ramp: 5s"), "users"),
        (
            "unknown load field",
            &SMOKE.replace("users: 30", "users: 30\n  vus: 3"),
            "vus",
        ),
        (
            "empty requests",
            "name: x\ntarget: http://a\nduration: 1s\nload: {users: 1}\nrequests: []\n",
            "at least one",
        ),
        (
            "duplicate request",
            &SMOKE.replace("name: item", "name: home"),
            "duplicate",
        ),
        (
            "path without slash",
            &SMOKE.replace("path: /item/42", "path: item/42"),
            "start with",
        ),
        (
            "bad method",
            &SMOKE.replace("method: GET", "method: \"G T\""),
            "method",
        ),
        (
            "zero weight",
            &SMOKE.replace("weight: 2", "weight: 0"),
            "weight must be a whole number from 1 to 1000000, got 0",
        ),
        (
            "negative weight",
            &SMOKE.replace("weight: 2", "weight: -2"),
            "weight must be a whole number from 1 to 1000000, got -2",
        ),
        (
            "bad expect",
            &SMOKE.replace("weight: 2", "expect: 999"),
            "status",
        ),
        (
            "unknown request field",
            &SMOKE.replace("weight: 2", "wieght: 2"),
            "wieght",
        ),
        (
            "item without data",
            &SMOKE.replace("/item/42", "/item/{{item}}"),
            "data",
        ),
        (
            "unknown variable",
            &SMOKE.replace("/item/42", "/item/{{user}}"),
            "user",
        ),
        (
            "bad sla metric",
            &format!("{SMOKE}sla:\n  - {{metric: p42, max: 1s}}\n"),
            "p42",
        ),
        (
            "sla without bound",
            &format!("{SMOKE}sla:\n  - {{metric: p99}}\n"),
            "max",
        ),
        (
            "sla wrong unit",
            &format!("{SMOKE}sla:\n  - {{metric: p99, max: 5%}}\n"),
            "duration",
        ),
        (
            "on_failure neither stop nor continue",
            &format!("{SMOKE}    on_failure: retry\n"),
            "on_failure must be `stop` (the default: a failed step ends its flow instance) or `continue`",
        ),
        (
            "sla unknown request",
            &format!("{SMOKE}sla:\n  - {{metric: p99, max: 1s, request: nope}}\n"),
            "unknown request `nope`: expected a request, step or browse group",
        ),
        (
            "sla tiny window",
            &format!("{SMOKE}sla:\n  - {{metric: p99, max: 1s, window: 10ms}}\n"),
            "window",
        ),
        (
            "ramp and stages",
            &SMOKE.replace(
                "users: 30",
                "ramp: 1s\n  stages: [{duration: 1s, users: 2}]",
            ),
            "not both",
        ),
        (
            "mixed stages",
            &SMOKE.replace(
                "users: 30",
                "stages: [{duration: 1s, users: 2}, {duration: 1s, rate: 2}]",
            ),
            "same model",
        ),
        (
            "think min above max",
            &format!("{SMOKE}think: {{min: 2s, max: 1s}}\n"),
            "min",
        ),
        (
            "bad header name",
            &format!("{SMOKE}headers: {{\"a b\": c}}\n"),
            "header",
        ),
        ("tab indentation", "name: x\n\ttarget: y\n", ""),
        (
            "markov row not summing to 1",
            &MARKOV.replace(
                "browse: {home: 0.5, bid: 0.5}",
                "browse: {home: 0.5, bid: 0.4}",
            ),
            "transitions from `browse`: probabilities sum to 0.9",
        ),
        (
            "markov unknown state",
            &MARKOV.replace("bid: 0.5}\n    bid:", "bdi: 0.5}\n    bid:"),
            "unknown state `bdi`",
        ),
        (
            "markov missing row",
            &MARKOV.replace("    bid: {home: 0.25, browse: 0.25, bid: 0.5}\n", ""),
            "no row for `bid`",
        ),
        (
            "markov negative probability",
            &MARKOV.replace(
                "{home: 0.1, browse: 0.6, bid: 0.3}",
                "{home: -0.1, browse: 0.8, bid: 0.3}",
            ),
            "must be between 0 and 1",
        ),
        (
            "markov initial not summing to 1",
            &MARKOV.replace("initial: {home: 1}", "initial: {home: 0.5}"),
            "markov.initial: probabilities sum to 0.5",
        ),
        (
            "markov with the open model",
            &MARKOV.replace("users: 5", "rate: 5"),
            "needs the closed model",
        ),
        (
            "markov state capturing",
            &MARKOV.replace(
                "{name: browse, path: /browse}",
                "{name: browse, path: /browse, capture: [{name: x, header: y}]}",
            ),
            "a Markov state cannot capture",
        ),
        (
            "requests and flows",
            &format!("{SMOKE}flows: []\n"),
            "exactly one of `requests`",
        ),
        (
            "capture in a plain request",
            &SMOKE.replace(
                "    path: /\n",
                "    path: /\n    capture: [{name: x, header: a}]\n",
            ),
            "write the steps in `flows`",
        ),
        (
            "bad css selector",
            &FLOW.replace("input[name=csrf_token]", "input[name=="),
            "invalid CSS selector",
        ),
        (
            "bad regex",
            &FLOW.replace(
                "html: 'input[name=csrf_token]', attr: value",
                "regex: '(unclosed'",
            ),
            "invalid regular expression",
        ),
        (
            "bad json pointer",
            &FLOW.replace(
                "html: 'input[name=csrf_token]', attr: value",
                "json: 'user/id'",
            ),
            "not a JSON pointer",
        ),
        (
            "two capture sources",
            &FLOW.replace("attr: value", "attr: value, header: x"),
            "exactly one of `header`, `regex`",
        ),
        (
            "attr without html",
            &FLOW.replace(
                "html: 'input[name=csrf_token]', attr: value",
                "header: x, attr: value",
            ),
            "`attr` goes with `html`",
        ),
        (
            "unknown variable",
            &FLOW.replace("csrf_token={{csrf}}", "csrf_token={{crsf}}"),
            "unknown variable `{{crsf}}`",
        ),
        (
            "variable captured later",
            &FLOW.replace("name: csrf,", "name: later,").replace(
                "body: 'csrf_token={{csrf}}'",
                "body: 'csrf_token={{csrf}}'\n        capture: [{name: csrf, header: x}]",
            ),
            "captured by an earlier step",
        ),
        (
            "missing env value",
            &FLOW.replace("csrf_token={{csrf}}", "user={{env.LOBSTER_NO_SUCH_VAR}}"),
            "LOBSTER_NO_SUCH_VAR is not set",
        ),
        (
            "check with two rules",
            &format!("{FLOW}        check: [{{status: [200], body_contains: x}}]\n"),
            "a check takes exactly one of",
        ),
        (
            "equals without json",
            &format!("{FLOW}        check: [{{body_contains: x, equals: y}}]\n"),
            "`equals` goes with `json`",
        ),
        (
            "flow without steps",
            &FLOW.replace(
                "    steps:\n      - name: page",
                "    steps: []\n  - name: other\n    steps:\n      - name: page",
            ),
            "at least one step",
        ),
        (
            "duplicate step across flows",
            &format!("{FLOW}  - name: again\n    steps: [{{name: page, path: /}}]\n"),
            "duplicate request name `page`",
        ),
        (
            "capture named item",
            &FLOW.replace("name: csrf,", "name: item,"),
            "not item, env, row, serial or uuid",
        ),
        (
            "target and targets",
            &format!("{SMOKE}targets: [http://127.0.0.1:8081]\n"),
            "either `target`",
        ),
        (
            "targets empty",
            &SMOKE.replace("target: http://127.0.0.1:8080", "targets: []"),
            "give 1 to 100",
        ),
        (
            "targets with a bad url",
            &SMOKE.replace(
                "target: http://127.0.0.1:8080",
                "targets: [http://127.0.0.1:8080, 'ftp://x']",
            ),
            "not a URL",
        ),
        (
            "targets twice the same",
            &SMOKE.replace(
                "target: http://127.0.0.1:8080",
                "targets: [http://127.0.0.1:8080, 'http://127.0.0.1:8080/']",
            ),
            "lists http://127.0.0.1:8080 twice",
        ),
        (
            "target weight zero",
            &SMOKE.replace(
                "target: http://127.0.0.1:8080",
                "targets: [{url: 'http://127.0.0.1:8080', weight: 0}]",
            ),
            "weight",
        ),
        (
            "target weights too heavy",
            &SMOKE.replace(
                "target: http://127.0.0.1:8080",
                "targets: [{url: 'http://a:1', weight: 6000}, {url: 'http://b:1', weight: 6000}]",
            ),
            "add up to 12000, more than 10000",
        ),
        (
            "target with an unknown field",
            &SMOKE.replace(
                "target: http://127.0.0.1:8080",
                "targets: [{url: 'http://a:1', wieght: 2}]",
            ),
            "",
        ),
        (
            "sla target on a single-target scenario",
            &format!("{SMOKE}sla: [{{metric: p95, max: 1s, target: 'http://127.0.0.1:8080'}}]\n"),
            "this scenario has a single `target`",
        ),
        (
            "sla target not among targets",
            &format!(
                "{}sla: [{{metric: p95, max: 1s, target: 'http://b:2'}}]\n",
                SMOKE.replace(
                    "target: http://127.0.0.1:8080",
                    "targets: [http://a:1, http://a:2]"
                )
            ),
            "unknown target `http://b:2`: expected one of http://a:1, http://a:2",
        ),
        (
            "sla target with request",
            &format!(
                "{}sla: [{{metric: p95, max: 1s, request: home, target: 'http://a:1'}}]\n",
                SMOKE.replace(
                    "target: http://127.0.0.1:8080",
                    "targets: [http://a:1, http://a:2]"
                )
            ),
            "not both",
        ),
        (
            "sla target with injector_cpu",
            &format!(
                "{}sla: [{{metric: injector_cpu, max: 90%, target: 'http://a:1'}}]\n",
                SMOKE.replace(
                    "target: http://127.0.0.1:8080",
                    "targets: [http://a:1, http://a:2]"
                )
            ),
            "not of a target",
        ),
        (
            "tls with only http targets",
            &SMOKE.replace(
                "target: http://127.0.0.1:8080",
                "targets: [http://a:1, http://b:1]\ntls: {insecure_skip_verify: true}",
            ),
            "applies to https:// targets; the target is http://a:1, http://b:1",
        ),
    ];
    assert!(cases.len() >= 40);
    for (what, text, words) in cases {
        match parse(text, "bad.yaml") {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("bad.yaml"), "{what}: no file in `{msg}`");
                assert!(msg.contains(words), "{what}: `{msg}` lacks `{words}`");
                if !matches!(*what, "empty file") {
                    assert!(
                        matches!(e, ScenarioError::Invalid { line, .. } if line > 0),
                        "{what}: no line in `{msg}`"
                    );
                }
            }
        }
    }
}

mod fuzz {
    //! Fuzzing on stable: the parser never panics, whatever the input (PROPTEST_CASES sets the
    //! effort; `scripts/fuzz` runs it long, the test suite briefly).

    use super::*;
    use proptest::prelude::*;

    /// Edits applied to a valid scenario: (position, delete count, inserted text).
    fn mutate(base: &str, edits: &[(usize, usize, String)]) -> String {
        let mut s: Vec<char> = base.chars().collect();
        for (pos, del, ins) in edits {
            let at = pos % (s.len() + 1);
            let end = (at + del).min(s.len());
            s.splice(at..end, ins.chars());
        }
        s.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)
        ))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse(&text, "fuzz.yaml");
        }

        #[test]
        fn mutated_scenarios_never_panic(
            edits in proptest::collection::vec(
                (any::<usize>(), 0usize..8, prop_oneof![
                    Just(String::new()), Just(":".to_string()), Just("\n".to_string()), Just("  ".to_string()),
                    Just("- ".to_string()), Just("{".to_string()), Just("[".to_string()), Just("&a".to_string()),
                    Just("*a".to_string()), Just("!!binary ".to_string()), Just("1e999".to_string()),
                    Just("-1".to_string()), Just("\"".to_string()), Just("{{item}}".to_string()),
                    "\\PC{0,6}",
                ]),
                1..6,
            )
        ) {
            let text = mutate(SMOKE, &edits);
            if let Ok(s) = parse(&text, "fuzz.yaml") {
                // Whatever is accepted reaches the slaves unchanged.
                let back = Scenario::from_json(&s.to_json()).ok();
                prop_assert!(back.as_ref() == Some(&s), "changed on the wire: {text}");
            }
        }
    }
}
