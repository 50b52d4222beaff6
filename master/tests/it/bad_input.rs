//! Bad input to the CLI: a table of malformed scenarios and arguments. Each must exit with
//! code 2 and a message naming the problem, never panic, and never touch existing state.

use crate::common::*;

const GOOD: &str = "name: smoke\ntarget: http://127.0.0.1:9\nduration: 2s\nload:\n  users: 1\nrequests:\n  - name: home\n    path: /\n";

/// A journey: a step that captures `csrf` and one that sends it.
const FLOW: &str = "name: j\ntarget: http://127.0.0.1:9\nduration: 2s\nload:\n  users: 1\nflows:\n  - name: member\n    steps:\n      - name: page\n        path: /login/\n        capture: [{name: csrf, html: 'input[name=csrf_token]', attr: value}]\n      - name: login\n        method: POST\n        path: /login/\n        body: 'csrf_token={{csrf}}'\n";

/// Every file of a home with its contents: what "never touches existing state" compares.
fn snapshot(home: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// Each row: what is wrong, the input, and the words the message must hold — the problem
/// *and* what is allowed, never only the file name or the echoed input.
#[test]
fn bad_inputs_exit_2_with_a_clear_message() {
    let env = Env::new();
    // A home that already holds state (a run store with one run, tokens, a certificate):
    // bad input must leave every byte of it as it was.
    let (_target, addr) = env.target();
    let seed = env.scenario("seed.yaml", &scenario_text(addr, "1s", "users: 1", ""));
    let (code, out, err, _) = lobster_run(&env, &seed, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    std::fs::write(env.home().join("config.yaml"), "count: 2\n").unwrap();
    let before = snapshot(env.home());
    assert!(
        before.keys().any(|k| k.ends_with("master/lobster.db")),
        "{:?}",
        before.keys()
    );
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write("good.yaml", GOOD.as_bytes());
    let sub = |from: &str, to: &str| GOOD.replace(from, to);
    let files: Vec<(&str, String, &[&str])> = vec![
        (
            "missing file",
            dir.join("nope.yaml").to_str().unwrap().to_string(),
            &["cannot read", "No such file or directory"],
        ),
        (
            "empty file",
            write("empty.yaml", b""),
            &["the file is empty", "expected a scenario"],
        ),
        (
            "a directory",
            dir.to_str().unwrap().to_string(),
            &["cannot read", "Is a directory"],
        ),
        (
            "not utf-8",
            write("bin.yaml", &[0xff, 0xfe, 0x00, 0x41]),
            &["not UTF-8 text", "offset 0"],
        ),
        (
            "yaml syntax",
            write("syntax.yaml", b"name: [oops\n"),
            &["syntax.yaml:1:7:", "expected string"],
        ),
        (
            "unknown field",
            write("unknown.yaml", format!("{GOOD}colour: red\n").as_bytes()),
            &[
                "unknown field",
                "expected one of name, target, targets, tls, duration",
            ],
        ),
        (
            "targets listing one URL twice",
            write(
                "twice.yaml",
                sub(
                    "target: http://127.0.0.1:9",
                    "targets: [http://127.0.0.1:9, 'http://127.0.0.1:9/']",
                )
                .as_bytes(),
            ),
            &["twice.yaml:2:10", "lists http://127.0.0.1:9 twice"],
        ),
        (
            "zero users",
            write("zero.yaml", sub("users: 1", "users: 0").as_bytes()),
            &[
                "zero.yaml:5:10:",
                "users must be a whole number from 1 to 10000000, got 0",
            ],
        ),
        (
            "users and rate",
            write(
                "both.yaml",
                sub("users: 1", "users: 1\n  rate: 3").as_bytes(),
            ),
            &["either `users` (closed model) or `rate` (open model)"],
        ),
        (
            "tls on an http target",
            write(
                "tls-http.yaml",
                format!("{GOOD}tls: {{insecure_skip_verify: true}}\n").as_bytes(),
            ),
            &["tls-http.yaml:9:6:", "`tls` applies to https:// targets"],
        ),
        (
            "missing tls.ca_file",
            write(
                "tls-missing.yaml",
                format!("{}tls: {{ca_file: nope.pem}}\n", sub("http://", "https://")).as_bytes(),
            ),
            &[
                "tls-missing.yaml:9:16:",
                "tls.ca_file: cannot read",
                "No such file",
            ],
        ),
        (
            "tls.ca_file without a certificate",
            write(
                "tls-text.yaml",
                format!(
                    "{}tls: {{ca_file: good.yaml}}\n",
                    sub("http://", "https://")
                )
                .as_bytes(),
            ),
            &[
                "tls.ca_file `good.yaml`",
                "holds no certificate",
                "BEGIN CERTIFICATE",
            ],
        ),
        (
            "tls.ca_file and insecure_skip_verify",
            write(
                "tls-both.yaml",
                format!(
                    "{}tls: {{ca_file: good.yaml, insecure_skip_verify: true}}\n",
                    sub("http://", "https://")
                )
                .as_bytes(),
            ),
            &["either `ca_file`", "not both"],
        ),
        (
            "negative duration",
            write("neg.yaml", sub("2s", "-2").as_bytes()),
            &["neg.yaml:3:11:", "duration must not be negative"],
        ),
        (
            "duplicate request",
            write(
                "dup.yaml",
                format!("{GOOD}  - name: home\n    path: /x\n").as_bytes(),
            ),
            &["dup.yaml:9:11:", "duplicate request name"],
        ),
        (
            "bad sla metric",
            write(
                "sla.yaml",
                format!("{GOOD}sla:\n  - {{metric: p42, max: 1s}}\n").as_bytes(),
            ),
            &["unknown metric", "expected one of p50, p90"],
        ),
        (
            "item without data",
            write("item.yaml", sub("path: /", "path: /{{item}}").as_bytes()),
            &["uses {{item}} but the scenario has no `data`"],
        ),
        (
            "missing data file",
            write(
                "data.yaml",
                format!(
                    "{}data:\n  file: items.txt\n",
                    sub("path: /", "path: /{{item}}")
                )
                .as_bytes(),
            ),
            &["data file: cannot read", "No such file or directory"],
        ),
        (
            "flow: unknown variable",
            write("var.yaml", FLOW.replace("{{csrf}}", "{{crsf}}").as_bytes()),
            &[
                "var.yaml:12:15:",
                "unknown variable `{{crsf}}`",
                "captured by an earlier step",
            ],
        ),
        (
            "flow: missing environment value",
            write(
                "env.yaml",
                FLOW.replace("{{csrf}}", "{{env.LOBSTER_TEST_NOT_SET}}")
                    .as_bytes(),
            ),
            &["LOBSTER_TEST_NOT_SET is not set"],
        ),
        (
            "flow: malformed CSS selector",
            write(
                "css.yaml",
                FLOW.replace("input[name=csrf_token]", "input[").as_bytes(),
            ),
            &["css.yaml:11:38:", "invalid CSS selector `input[`"],
        ),
        (
            "flow: malformed regex",
            write(
                "re.yaml",
                FLOW.replace(
                    "html: 'input[name=csrf_token]', attr: value",
                    "regex: 'a(b'",
                )
                .as_bytes(),
            ),
            &[
                "re.yaml:11:39:",
                "invalid regular expression `a(b`: unclosed group",
            ],
        ),
        (
            "flow: JSON pointer without a slash",
            write(
                "ptr.yaml",
                FLOW.replace("html: 'input[name=csrf_token]', attr: value", "json: user")
                    .as_bytes(),
            ),
            &["not a JSON pointer (RFC 6901)"],
        ),
        (
            "max_error_rate over 100%",
            write(
                "rate.yaml",
                format!("{GOOD}max_error_rate: 150%\n").as_bytes(),
            ),
            &["max_error_rate must be a percentage from 0% to 100%"],
        ),
    ];
    let args: Vec<(&str, Vec<String>, &[&str])> = vec![
        (
            "zero --duration",
            vec![good.clone(), "--duration".into(), "0s".into()],
            &["--duration", "must be longer than zero"],
        ),
        (
            "--junit into a missing directory",
            vec![good.clone(), "--junit".into(), "/no/such/dir/r.xml".into()],
            &["--junit: directory /no/such/dir does not exist"],
        ),
        (
            "--csv into a missing directory",
            vec![good.clone(), "--csv".into(), "/no/such/dir/run".into()],
            &["--csv: directory /no/such/dir does not exist"],
        ),
        (
            "--html into a missing directory",
            vec![good.clone(), "--html".into(), "/no/such/dir/r.html".into()],
            &["--html: directory /no/such/dir does not exist"],
        ),
        (
            "--detach with local slaves",
            vec![
                good.clone(),
                "--detach".into(),
                "--local-slaves".into(),
                "2".into(),
            ],
            &[
                "--detach cannot take --local-slaves",
                "lobster fleet up --count N",
            ],
        ),
        (
            "--trace-out without trace:",
            vec![good.clone(), "--trace-out".into(), "t.jsonl".into()],
            &["--trace-out needs a scenario with `trace:`"],
        ),
        (
            "--trace-out with --detach",
            vec![
                write(
                    "traced.yaml",
                    format!("{GOOD}trace: {{sample: 1%}}\n").as_bytes(),
                ),
                "--detach".into(),
                "--trace-out".into(),
                "t.jsonl".into(),
            ],
            &["--trace-out cannot take --detach", "lobster runs traces"],
        ),
        (
            "empty --on-finish",
            vec![good.clone(), "--on-finish".into(), " ".into()],
            &["--on-finish needs a command"],
        ),
        (
            "text --duration",
            vec![good.clone(), "--duration".into(), "soon".into()],
            &["invalid value", "expected e.g. `500ms`, `20s`"],
        ),
        (
            "ftp --target",
            vec![good.clone(), "--target".into(), "ftp://x".into()],
            &[
                "--target",
                "is not a URL: expected e.g. `http://127.0.0.1:8080`",
            ],
        ),
        (
            "too many local slaves",
            vec![good.clone(), "--local-slaves".into(), "100000".into()],
            &["--local-slaves <N>': must be a whole number from 0 to 256"],
        ),
        (
            "negative local slaves",
            vec![good.clone(), "--local-slaves".into(), "-1".into()],
            &["--local-slaves <N>': must be a whole number from 0 to 256"],
        ),
        (
            "zero --min-slaves",
            vec![good.clone(), "--min-slaves".into(), "0".into()],
            &["--min-slaves <N>': must be a whole number from 1 to 100000"],
        ),
        (
            "zero --quorum-timeout",
            vec![good.clone(), "--quorum-timeout".into(), "0s".into()],
            &["--quorum-timeout must be longer than zero"],
        ),
        (
            "--json in a missing directory",
            vec![good.clone(), "--json".into(), "/no/such/dir/r.json".into()],
            &["--json", "does not exist"],
        ),
        (
            "unknown flag",
            vec![good.clone(), "--turbo".into()],
            &["unexpected argument", "--help"],
        ),
        (
            "no scenario",
            vec![],
            &["required arguments were not provided", "<SCENARIO>"],
        ),
    ];
    let mut tried = 0;
    for (what, file, words) in &files {
        check(&env, what, &["run", file], words);
        tried += 1;
    }
    for (what, a, words) in &args {
        let mut full = vec!["run"];
        full.extend(a.iter().map(String::as_str));
        check(&env, what, &full, words);
        tried += 1;
    }
    let others: Vec<(&str, Vec<&str>, &[&str])> = vec![
        (
            "lease below two heartbeats",
            vec!["master", "--heartbeat", "1s", "--lease", "1s"],
            &["--lease must be at least twice --heartbeat"],
        ),
        (
            "public API without a token",
            vec![
                "master",
                "--api-listen",
                "0.0.0.0:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ],
            &[
                "off loopback",
                "set an API token (--api-token or LOBSTER_API_TOKEN)",
            ],
        ),
        (
            "master advertise not a URL",
            vec!["master", "--advertise", "ftp://x"],
            &["--advertise must be an http(s) URL"],
        ),
        (
            "target listen not an address",
            vec!["target", "--listen", "here"],
            &["invalid value", "invalid socket address"],
        ),
        (
            "negative compare tolerance",
            vec!["runs", "compare", "a", "b", "--latency-tolerance", "-5%"],
            &[
                "'-5%' for '--latency-tolerance",
                "must be a percentage from 0% to 10000%",
            ],
        ),
        (
            "throughput tolerance over 100%",
            vec![
                "runs",
                "compare",
                "a",
                "b",
                "--throughput-tolerance",
                "200%",
            ],
            &["must be a percentage from 0% to 100%"],
        ),
        (
            "error rate tolerance not a number",
            vec![
                "runs",
                "compare",
                "a",
                "b",
                "--error-rate-tolerance",
                "lots",
            ],
            &["must be a number from 0 to 100, not `lots`"],
        ),
        (
            "compare with an unknown run",
            vec!["runs", "compare", "a", "b"],
            &["no run", "`lobster runs list` shows the runs"],
        ),
        (
            "runs wait for an unknown run with no master",
            vec!["runs", "wait", "r-nope"],
            &["no run `r-nope`", "lobster runs list"],
        ),
        (
            "runs wait with a bad timeout",
            vec!["runs", "wait", "r-x", "--timeout", "soon"],
            &["invalid value", "--timeout"],
        ),
        (
            "runs scale without users or rate",
            vec!["runs", "scale", "r-x"],
            &["required arguments were not provided", "--users"],
        ),
        (
            "runs scale with negative users",
            vec!["runs", "scale", "r-x", "--users", "-5"],
            &["must be a whole number from 0 to 10000000"],
        ),
        (
            "runs scale with users and rate",
            vec!["runs", "scale", "r-x", "--users", "5", "--rate", "5"],
            &["cannot be used with"],
        ),
        (
            "runs rm without ids",
            vec!["runs", "rm"],
            &["required arguments were not provided", "<RUNS>"],
        ),
        (
            "unknown command",
            vec!["launch"],
            &["unrecognized subcommand"],
        ),
    ];
    for (what, a, words) in &others {
        check(&env, what, a, words);
        tried += 1;
    }
    assert!(tried >= 30, "the table has {tried} rows");
    // Bad input is refused before any I/O: the existing state is byte for byte the same.
    let after = snapshot(env.home());
    let changed: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(
            after
                .keys()
                .filter(|k| !before.contains_key(*k) && !k.contains("/in/")),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "bad input changed the home: {changed:?}"
    );
}

fn check(env: &Env, what: &str, args: &[&str], words: &[&str]) {
    let mut cmd = env.lobster();
    cmd.args(args);
    let (out, stdout, stderr) = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit code\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked\n{stderr}");
    for w in words {
        assert!(
            stderr.contains(w),
            "{what}: the message lacks `{w}`:\n{stderr}"
        );
    }
}

/// `--help` gives examples where users start (run, fleet up, image build), `run --help` the
/// exit codes, and the completion scripts load in their shells.
#[test]
fn help_has_examples_and_completions_load() {
    let env = Env::new();
    for (args, words) in [
        (
            &["run", "--help"][..],
            &["Examples:", "Exit codes:", "130"][..],
        ),
        (
            &["fleet", "up", "--help"],
            &["Examples:", "lobster fleet up --count 20"],
        ),
        (&["image", "build", "--help"], &["Examples:", "--local"]),
    ] {
        let (code, out, err) = env.cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        for w in words {
            assert!(out.contains(w), "{args:?} lacks `{w}`:\n{out}");
        }
    }
    let (code, script, err) = env.cli(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let file = env.path("lobster.bash");
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("source {} && complete -p lobster", file.display()),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("_lobster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish"] {
        let (code, script, _) = env.cli(&["completions", shell]);
        assert_eq!(code, 0);
        assert!(
            script.contains("fleet") && script.contains("count"),
            "{shell}"
        );
    }
    let (code, _, err) = env.cli(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{err}"
    );
}

/// `--duration` on a staged scenario silently cut the profile. Right: a warning says what is
/// cut and the load at the cut, before the run.
#[test]
fn a_duration_that_cuts_the_stages_is_said() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let file = env.scenario(
        "staged.yaml",
        &format!(
            "name: staged\ntarget: http://{addr}\nload:\n  users: 2\n  stages:\n    - {{duration: 2s, users: 4}}\n    - {{duration: 2s, users: 8}}\nrequests: [{{name: r, path: /}}]\n"
        ),
    );
    let (code, _, err, _) = lobster_run(&env, &file, 1, &["--duration", "1s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: --duration 1s cuts the load profile: its stages last 4s, so the load stops at 3 users"),
        "{err}"
    );
    // A duration beyond the stages holds the last target: nothing to say.
    let (code, _, err, _) = lobster_run(&env, &file, 1, &["--duration", "5s"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("cuts the load profile"), "{err}");
}
