//! Bad input to the CLI: a table of malformed scenarios and arguments. Each must exit with
//! code 2 and a message naming the problem, never panic, and never touch existing state.

mod common;

use common::*;

const GOOD: &str = "name: smoke\ntarget: http://127.0.0.1:9\nduration: 2s\nload:\n  users: 1\nrequests:\n  - name: home\n    path: /\n";

#[test]
fn bad_inputs_exit_2_with_a_clear_message() {
    let env = Env::new();
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write("good.yaml", GOOD.as_bytes());
    let sub = |from: &str, to: &str| GOOD.replace(from, to);
    let files: Vec<(&str, String, &str)> = vec![
        (
            "missing file",
            dir.join("nope.yaml").to_str().unwrap().to_string(),
            "nope.yaml",
        ),
        ("empty file", write("empty.yaml", b""), "empty"),
        (
            "a directory",
            dir.to_str().unwrap().to_string(),
            "cannot read",
        ),
        (
            "not utf-8",
            write("bin.yaml", &[0xff, 0xfe, 0x00, 0x41]),
            "UTF-8",
        ),
        (
            "yaml syntax",
            write("syntax.yaml", b"name: [oops\n"),
            "syntax.yaml:1",
        ),
        (
            "unknown field",
            write("unknown.yaml", format!("{GOOD}colour: red\n").as_bytes()),
            "colour",
        ),
        (
            "zero users",
            write("zero.yaml", sub("users: 1", "users: 0").as_bytes()),
            "users",
        ),
        (
            "users and rate",
            write(
                "both.yaml",
                sub("users: 1", "users: 1\n  rate: 3").as_bytes(),
            ),
            "not both",
        ),
        (
            "https target",
            write("https.yaml", sub("http://", "https://").as_bytes()),
            "https",
        ),
        (
            "negative duration",
            write("neg.yaml", sub("2s", "-2").as_bytes()),
            "negative",
        ),
        (
            "duplicate request",
            write(
                "dup.yaml",
                format!("{GOOD}  - name: home\n    path: /x\n").as_bytes(),
            ),
            "duplicate",
        ),
        (
            "bad sla metric",
            write(
                "sla.yaml",
                format!("{GOOD}sla:\n  - {{metric: p42, max: 1s}}\n").as_bytes(),
            ),
            "p42",
        ),
        (
            "item without data",
            write("item.yaml", sub("path: /", "path: /{{item}}").as_bytes()),
            "data",
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
            "items.txt",
        ),
    ];
    let args: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "zero --duration",
            vec![good.clone(), "--duration".into(), "0s".into()],
            "duration",
        ),
        (
            "text --duration",
            vec![good.clone(), "--duration".into(), "soon".into()],
            "duration",
        ),
        (
            "ftp --target",
            vec![good.clone(), "--target".into(), "ftp://x".into()],
            "target",
        ),
        (
            "too many local slaves",
            vec![good.clone(), "--local-slaves".into(), "100000".into()],
            "local-slaves",
        ),
        (
            "negative local slaves",
            vec![good.clone(), "--local-slaves".into(), "-1".into()],
            "-1",
        ),
        (
            "zero --min-slaves",
            vec![good.clone(), "--min-slaves".into(), "0".into()],
            "min-slaves",
        ),
        (
            "zero --quorum-timeout",
            vec![good.clone(), "--quorum-timeout".into(), "0s".into()],
            "quorum-timeout",
        ),
        (
            "--json in a missing directory",
            vec![good.clone(), "--json".into(), "/no/such/dir/r.json".into()],
            "does not exist",
        ),
        (
            "unknown flag",
            vec![good.clone(), "--turbo".into()],
            "--turbo",
        ),
        ("no scenario", vec![], "SCENARIO"),
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
    let others: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "lease below two heartbeats",
            vec!["master", "--heartbeat", "1s", "--lease", "1s"],
            "lease",
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
            "token",
        ),
        (
            "master advertise not a URL",
            vec!["master", "--advertise", "ftp://x"],
            "advertise",
        ),
        (
            "target listen not an address",
            vec!["target", "--listen", "here"],
            "listen",
        ),
        ("unknown command", vec!["launch"], "launch"),
    ];
    for (what, a, words) in &others {
        check(&env, what, a, words);
        tried += 1;
    }
    assert!(tried >= 25, "the table has {tried} rows");
    // Bad input is refused before any I/O: no master state was created.
    assert!(
        !env.home().join("master").exists(),
        "bad input touched the state directory"
    );
}

fn check(env: &Env, what: &str, args: &[&str], words: &str) {
    let mut cmd = env.lobster();
    cmd.args(args);
    let (out, stdout, stderr) = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit code\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked\n{stderr}");
    assert!(
        stderr.contains(words),
        "{what}: message lacks `{words}`:\n{stderr}"
    );
}
