//! Bad input to the fleet commands and the local cloud's flags: each gets a clear error and
//! its exit code (2 for input, 3 for an environment that fails), never a panic.

use crate::common::*;

fn check(env: &Env, what: &str, args: &[&str], code: i32, words: &str) {
    let (got, out, err) = env.cli(args);
    assert_eq!(got, code, "{what}: exit code\nstdout: {out}\nstderr: {err}");
    assert!(!err.contains("panicked"), "{what}: panicked\n{err}");
    assert!(
        err.contains(words),
        "{what}: message lacks `{words}`:\n{err}"
    );
}

#[test]
fn bad_fleet_inputs() {
    let env = Env::new();
    let cfg = env.path("bad.yaml");
    std::fs::write(&cfg, "cloud: local\ninstance_typ: local.small\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "count zero",
            vec!["fleet", "up", "--count", "0"],
            "--count <COUNT>': must be a whole number from 1 to 10000 (to stop the fleet: lobster fleet down)",
        ),
        (
            "count negative",
            vec!["fleet", "up", "--count=-3"],
            "--count <COUNT>': must be a whole number from 1 to 10000",
        ),
        (
            "count negative, with a space (as people type it)",
            vec!["fleet", "up", "--count", "-3"],
            "--count <COUNT>': must be a whole number from 1 to 10000",
        ),
        (
            "slaves per core negative, with a space",
            vec!["fleet", "up", "--count", "1", "--slaves-per-core", "-2"],
            "--slaves-per-core <SLAVES_PER_CORE>': must be a whole number from 1 to 64",
        ),
        (
            "idle minutes negative, with a space",
            vec!["fleet", "up", "--count", "1", "--idle-minutes", "-1"],
            "--idle-minutes <IDLE_MINUTES>': must be a number above 0 and at most 10080",
        ),
        (
            "quickstart instances negative",
            vec!["quickstart", "--instances", "-1"],
            "--instances <INSTANCES>': must be a whole number from 1 to 50",
        ),
        (
            "throttle negative",
            vec!["cloud", "local", "--throttle", "-0.5"],
            "--throttle <THROTTLE>': must be a number from 0 to 1",
        ),
        (
            "count absurd",
            vec!["fleet", "up", "--count", "1000000"],
            "must be a whole number from 1 to 10000",
        ),
        (
            "count not a number",
            vec!["fleet", "up", "--count", "many"],
            "must be a whole number from 1 to 10000 (to stop the fleet: lobster fleet down), not `many`",
        ),
        ("no count", vec!["fleet", "up"], "--count"),
        (
            "unknown cloud",
            vec!["fleet", "up", "--count", "1", "--cloud", "gcp"],
            "[possible values: local, aws]",
        ),
        (
            "unknown local type",
            vec![
                "fleet",
                "up",
                "--count",
                "1",
                "--instance-type",
                "huge.9000",
            ],
            "(known: local.small, local.medium",
        ),
        (
            "zero slaves per core",
            vec!["fleet", "up", "--count", "1", "--slaves-per-core", "0"],
            "must be a whole number from 1 to 64",
        ),
        (
            "negative idle minutes",
            vec!["fleet", "up", "--count", "1", "--idle-minutes=-1"],
            "must be a number above 0 and at most 10080",
        ),
        (
            "tiny max lifetime",
            vec!["fleet", "up", "--count", "1", "--max-lifetime", "1s"],
            "max lifetime must be between 10s and 30 days",
        ),
        (
            "tag without value",
            vec![
                "fleet",
                "up",
                "--count",
                "1",
                "--template-tag",
                "lobster-role",
            ],
            "must be KEY=VALUE, e.g. lobster:role=slave-template",
        ),
        (
            "bad fleet name",
            vec!["fleet", "up", "--count", "1", "--fleet", "my fleet"],
            "must be 1-64 letters, digits, - or _",
        ),
        (
            "endpoint not a URL",
            vec!["fleet", "status", "--endpoint-url", "localhost:4566"],
            "must start with http:// or https://",
        ),
        (
            "config with an unknown key",
            vec!["fleet", "status", "--config", &cfg],
            "bad.yaml:2:1: unknown field `instance_typ`, expected one of cloud",
        ),
        (
            "missing config file",
            vec!["fleet", "status", "--config", "/no/such/config.yaml"],
            "No such file or directory",
        ),
        (
            "cloud flags out of range",
            vec!["cloud", "local", "--throttle", "2"],
            "--throttle <THROTTLE>': must be a number from 0 to 1",
        ),
        (
            "image for EC2 without a base AMI",
            vec![
                "image",
                "build",
                "--cloud",
                "aws",
                "--binary-url",
                "https://x/y",
            ],
            "EC2 images need --base-ami",
        ),
        (
            "image --local and --cloud aws",
            vec!["image", "build", "--local", "--cloud", "aws"],
            "contradict",
        ),
        (
            "an unknown instance runtime",
            vec!["cloud", "local", "--runtime", "docker"],
            "invalid value 'docker' for '--runtime <RUNTIME>'",
        ),
        (
            "a root file system that is not there",
            vec!["image", "build", "--local", "--rootfs", "/no/such/tree"],
            "/no/such/tree cannot be the base of an image: not a directory",
        ),
        (
            "a root file system without systemd",
            vec!["image", "build", "--local", "--rootfs", "/tmp"],
            "it has no systemd",
        ),
        (
            "a root file system for EC2",
            vec![
                "image",
                "build",
                "--cloud",
                "aws",
                "--rootfs",
                "/tmp",
                "--base-ami",
                "ami-0123456789abcdef0",
                "--binary-url",
                "https://x/y",
            ],
            "--rootfs is for local images",
        ),
    ];
    for (what, args, words) in &cases {
        check(&env, what, args, 2, words);
    }
    assert!(
        !env.home().join("cloud").exists(),
        "bad input started a local cloud"
    );
    assert!(
        !env.home().join("master").exists(),
        "bad input started a master"
    );
}

#[test]
fn an_unknown_template_tag_lists_the_tags_that_exist() {
    let env = Env::new();
    let (code, _, err) = env.cli(&["image", "build", "--local"]);
    assert_eq!(code, 0, "{err}");
    check(
        &env,
        "unknown tag",
        &["fleet", "up", "--count", "1", "--template-tag", "team=perf"],
        2,
        "lobster:role=slave-template",
    );
    let (_, _, err) = env.cli(&["fleet", "up", "--count", "1", "--template-tag", "team=perf"]);
    assert!(err.contains("no available image tagged team=perf"), "{err}");
}

#[test]
fn unreachable_endpoints_and_bad_credentials_are_environment_errors() {
    let env = Env::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = env.lobster();
    cmd.args([
        "fleet",
        "up",
        "--count",
        "1",
        "--cloud",
        "aws",
        "--endpoint-url",
        &url,
        "--region",
        "us-east-1",
        "--no-wait",
    ])
    .env("AWS_ACCESS_KEY_ID", "x")
    .env("AWS_SECRET_ACCESS_KEY", "y")
    .env("AWS_CONFIG_FILE", "/dev/null")
    .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    let (out, _, err) = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot reach the cloud API"), "{err}");

    // A local cloud that accepts one access key only: Lobster's own key is refused.
    let (_cloud, endpoint) = env.cloud(&["--access-key-id", "AKIAONLYTHISONE"]);
    check(
        &env,
        "wrong credentials",
        &["fleet", "status", "--endpoint-url", &endpoint],
        3,
        "not authorized",
    );
    let (status, xml) = http_request(
        addr_of(&endpoint),
        "POST",
        "/",
        &[],
        b"Action=DescribeInstances&Version=2016-11-15",
    );
    assert_eq!(status, 401);
    assert!(
        xml.contains("<Code>MissingAuthenticationToken</Code>"),
        "{xml}"
    );
}

/// Missing AWS credentials printed kilobytes of raw SDK output. Right: one line that says
/// what is missing and how to provide it, with the code, exit 3. (An endpoint on loopback
/// and IMDS disabled: nothing leaves this machine.)
#[test]
fn missing_aws_credentials_are_one_line_with_the_way_out() {
    let env = Env::new();
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = env.lobster();
    cmd.env_remove("LOBSTER_LOG")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .args([
            "fleet",
            "status",
            "--cloud",
            "aws",
            "--endpoint-url",
            &url,
            "--region",
            "us-east-1",
        ]);
    let (out, _, err) = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line:\n{err}");
    assert!(err.contains("NoCredentials"), "{err}");
    assert!(
        err.contains("AWS_PROFILE") && err.contains("AWS_ACCESS_KEY_ID"),
        "no way out: {err}"
    );
    assert!(err.len() < 400, "{} bytes: {err}", err.len());
}
