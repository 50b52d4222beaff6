//! The EC2 backend against moto_server (a real, independent implementation of the EC2 API):
//! images by tag, batched launches with tags and user-data, reuse of stopped instances,
//! stop/terminate, error mapping, the fleet commands and the AMI bake.

use std::time::Duration;

use crate::common::*;
use base64::Engine;
use lobster_provision::cloud::{Cloud, CloudError, InstanceState, LaunchSpec, Tags};
use lobster_provision::ec2::{Ec2Cloud, Ec2Config};

/// A public Amazon AMI that this moto ships in us-east-1 (asked, not hard-coded: the list
/// changes between moto versions).
fn base_ami(endpoint: &str) -> String {
    let v = aws_moto(
        endpoint,
        &[
            "ec2",
            "describe-images",
            "--owners",
            "amazon",
            "--filters",
            "Name=architecture,Values=x86_64",
            "Name=state,Values=available",
        ],
    );
    v["Images"][0]["ImageId"]
        .as_str()
        .expect("moto ships public images")
        .to_string()
}

async fn client(endpoint: &str, key: &str) -> Ec2Cloud {
    Ec2Cloud::connect(&Ec2Config {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        profile: None,
        credentials: Some((key.into(), "testing".into())),
        max_attempts: Some(1),
    })
    .await
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(image: &str, count: u32, token: &str) -> LaunchSpec {
    LaunchSpec {
        image_id: image.into(),
        instance_type: "t3.micro".into(),
        count,
        client_token: token.into(),
        user_data: "#cloud-config\nLOBSTER_MASTER=http://10.0.0.5:7401\n".into(),
        tags: tags(&[
            ("lobster:managed", "true"),
            ("lobster:fleet", "moto"),
            ("lobster:role", "slave"),
        ]),
        subnet_id: None,
        security_group_ids: vec![],
        iam_instance_profile: None,
        key_name: None,
    }
}

/// A template image in moto, made the EC2 way: an instance, then CreateImage with tags.
async fn template(c: &Ec2Cloud, endpoint: &str) -> String {
    let mut b = spec(&base_ami(endpoint), 1, "builder");
    b.tags = tags(&[("lobster:role", "image-builder")]);
    let builder = c.launch(&b).await.unwrap();
    c.create_image(
        &builder[0].id,
        "lobster-template",
        &tags(&[("lobster:role", "slave-template")]),
    )
    .await
    .unwrap()
}

fn aws_moto(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--region", "us-east-1"];
    full.extend_from_slice(args);
    // `aws` passes --region local first; a later --region wins.
    aws(endpoint, &full).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ec2_backend_against_moto() {
    let env = Env::new();
    let (_moto, endpoint) = moto(&env);
    let c = client(&endpoint, "testing").await;
    let ami = template(&c, &endpoint).await;
    let found = c
        .find_images(&tags(&[("lobster:role", "slave-template")]))
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![ami.as_str()]
    );
    assert!(
        c.find_images(&tags(&[("lobster:role", "nothing")]))
            .await
            .unwrap()
            .is_empty()
    );

    // moto launches MinCount (1) of a MinCount=1, MaxCount=5 batch and has no client-token
    // idempotency (the local cloud's tests cover both); a second batch makes a fleet of two.
    let mut launched = c.launch(&spec(&ami, 5, "batch-1")).await.unwrap();
    assert!(!launched.is_empty());
    launched.extend(c.launch(&spec(&ami, 5, "batch-2")).await.unwrap());
    let fleet = c
        .instances(&tags(&[("lobster:fleet", "moto")]))
        .await
        .unwrap();
    assert_eq!(fleet.len(), launched.len());
    for i in &fleet {
        assert_eq!(
            i.tags.get("lobster:managed").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            i.tags.get("lobster:role").map(String::as_str),
            Some("slave")
        );
        assert_eq!(i.instance_type, "t3.micro");
    }
    // User-data arrives once base64-encoded, as EC2 requires.
    let attr = aws_moto(
        &endpoint,
        &[
            "ec2",
            "describe-instance-attribute",
            "--instance-id",
            &launched[0].id,
            "--attribute",
            "userData",
        ],
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(attr["UserData"]["Value"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(raw).unwrap(), spec(&ami, 1, "").user_data);
    let d = aws_moto(
        &endpoint,
        &[
            "ec2",
            "describe-instances",
            "--instance-ids",
            &launched[0].id,
        ],
    );
    assert_eq!(
        d["Reservations"][0]["Instances"][0]["MetadataOptions"]["HttpTokens"], "required",
        "IMDSv2 required"
    );

    let two: Vec<String> = launched[..2].iter().map(|i| i.id.clone()).collect();
    c.stop(&two, true)
        .await
        .expect("a dry run that would succeed is Ok");
    c.stop(&two, false).await.unwrap();
    let states = c.describe(&two).await.unwrap();
    assert!(
        states
            .iter()
            .all(|i| matches!(i.state, InstanceState::Stopped | InstanceState::Stopping))
    );
    c.set_user_data(&two[0], "LOBSTER_MASTER=http://10.0.0.6:7401\n")
        .await
        .unwrap();
    let attr = aws_moto(
        &endpoint,
        &[
            "ec2",
            "describe-instance-attribute",
            "--instance-id",
            &two[0],
            "--attribute",
            "userData",
        ],
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(attr["UserData"]["Value"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        "LOBSTER_MASTER=http://10.0.0.6:7401\n",
        "user-data replaced, not double-encoded"
    );
    c.start(&two).await.unwrap();
    c.tag(&two, &tags(&[("lobster:stop-reason", "idle")]))
        .await
        .unwrap();
    c.untag(&two, &["lobster:stop-reason".to_string()])
        .await
        .unwrap();
    assert!(
        !c.describe(&two).await.unwrap()[0]
            .tags
            .contains_key("lobster:stop-reason")
    );
    let all: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
    c.terminate(&all).await.unwrap();
    assert!(
        c.instances(&tags(&[("lobster:fleet", "moto")]))
            .await
            .unwrap()
            .is_empty()
    );

    let e = c
        .describe(&["i-0123456789abcdef0".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::NotFound { .. }), "{e:?}");
    let e = c
        .start(&["i-0123456789abcdef0".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::NotFound { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_credentials_are_unauthorized() {
    let env = Env::new();
    // moto checks credentials once IAM authentication is on.
    let port = free_port();
    let child = std::process::Command::new(tool("LOBSTER_TEST_MOTO", "moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _moto = Proc {
        child,
        name: "moto-auth".into(),
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    eventually("moto with auth", Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr_of(&endpoint)).ok()
    });
    let c = client(&endpoint, "AKIANOTAREALKEY00000").await;
    let e = c.instances(&Tags::new()).await.unwrap_err();
    assert!(matches!(e, CloudError::Unauthorized { .. }), "{e:?}");
    // The CLI says so and exits 3 (the environment, not the input).
    let (code, _, err) = env.cli(&[
        "fleet",
        "status",
        "--cloud",
        "aws",
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
    ]);
    let _ = (code, err);
    let mut cmd = env.lobster();
    cmd.args([
        "fleet",
        "up",
        "--count",
        "1",
        "--cloud",
        "aws",
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
        "--no-wait",
    ])
    .env("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    .env("AWS_SECRET_ACCESS_KEY", "nope")
    .env("AWS_CONFIG_FILE", "/dev/null")
    .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    let (out, _, stderr) = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not authorized"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

fn fleet_env(env: &Env) -> Vec<(&'static str, String)> {
    let _ = env;
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("LOBSTER_MASTER_GRPC_LISTEN", "127.0.0.1:0".into()),
    ]
}

fn fleet_cli(env: &Env, endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = env.lobster();
    cmd.args(args)
        .args([
            "--cloud",
            "aws",
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "--fleet",
            "perf",
        ])
        .envs(fleet_env(env));
    let (out, so, se) = run(cmd);
    (out.status.code().unwrap_or(-1), so, se)
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_commands_against_moto_reuse_stopped_instances() {
    let env = Env::new();
    let (_moto, endpoint) = moto(&env);
    let c = client(&endpoint, "testing").await;
    template(&c, &endpoint).await;

    let (code, out, err) = fleet_cli(
        &env,
        &endpoint,
        &[
            "fleet",
            "up",
            "--count",
            "4",
            "--no-wait",
            "--template-tag",
            "lobster:role=nothing",
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("no available image tagged lobster:role=nothing")
            && err.contains("lobster:role=slave-template"),
        "the error lists the tags that exist: {err}"
    );

    let (code, out, err) = fleet_cli(
        &env,
        &endpoint,
        &["fleet", "up", "--count", "4", "--no-wait", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("launch 4 instance(s)"), "{out}");

    let (code, out, err) = fleet_cli(
        &env,
        &endpoint,
        &["fleet", "up", "--count", "4", "--no-wait"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(0 started, 4 launched, 0 stopped)"), "{out}");
    let ids = |env: &Env| -> Vec<String> {
        let (_, out, _) = fleet_cli(env, &endpoint, &["fleet", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<String> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let first = ids(&env);
    assert_eq!(first.len(), 4);
    let (_, out, _) = fleet_cli(&env, &endpoint, &["fleet", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] == "c5.large" && i["state"] == "running"),
        "{v}"
    );
    let listed = c
        .instances(&tags(&[("lobster:fleet", "perf")]))
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .all(|i| i.tags.contains_key("lobster:expires-at")),
        "created with every tag"
    );

    let (code, out, _) = fleet_cli(
        &env,
        &endpoint,
        &["fleet", "up", "--count", "4", "--no-wait"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("(0 started, 0 launched, 0 stopped)"),
        "idempotent: {out}"
    );

    let (code, out, _) = fleet_cli(&env, &endpoint, &["fleet", "down"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 running now"), "{out}");
    let (code, out, err) = fleet_cli(
        &env,
        &endpoint,
        &["fleet", "up", "--count", "4", "--no-wait"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(4 started, 0 launched, 0 stopped)"),
        "stopped instances are reused: {out}"
    );
    assert_eq!(ids(&env), first, "the same instance ids");

    let (code, out, _) = fleet_cli(
        &env,
        &endpoint,
        &["fleet", "up", "--count", "2", "--no-wait"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("2 stopped"), "never more than asked: {out}");
    let (code, _, _) = fleet_cli(&env, &endpoint, &["fleet", "down", "--terminate"]);
    assert_eq!(code, 0);
    assert!(
        c.instances(&tags(&[("lobster:fleet", "perf")]))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ami_is_baked_as_far_as_moto_allows() {
    let env = Env::new();
    let (_moto, endpoint) = moto(&env);
    let c = client(&endpoint, "testing").await;
    let ami = base_ami(&endpoint);
    let mut cmd = env.lobster();
    cmd.args([
        "image",
        "build",
        "--cloud",
        "aws",
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
    ])
    .args([
        "--base-ami",
        &ami,
        "--binary-url",
        "https://downloads.invalid/lobster-slave",
        "--timeout",
        "60s",
    ])
    .envs(fleet_env(&env))
    .stdout(std::process::Stdio::piped())
    .stderr(std::fs::File::create(env.path("bake.err")).unwrap());
    let child = cmd.spawn().unwrap();
    let mut bake = Proc {
        child,
        name: "bake".into(),
    };
    // moto never runs user-data: play the install script's final poweroff by stopping the builder.
    let builder = eventually("the builder instance", Duration::from_secs(30), || {
        let b = aws_moto(
            &endpoint,
            &[
                "ec2",
                "describe-instances",
                "--filters",
                "Name=tag:lobster:role,Values=image-builder",
                "Name=instance-state-name,Values=running",
            ],
        );
        b["Reservations"][0]["Instances"][0]["InstanceId"]
            .as_str()
            .map(str::to_string)
    });
    let attr = aws_moto(
        &endpoint,
        &[
            "ec2",
            "describe-instance-attribute",
            "--instance-id",
            &builder,
            "--attribute",
            "userData",
        ],
    );
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(attr["UserData"]["Value"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        script.contains("https://downloads.invalid/lobster-slave")
            && script.contains("lobster-slave@.service")
            && script.contains("systemctl poweroff")
    );
    aws_moto(
        &endpoint,
        &["ec2", "stop-instances", "--instance-ids", &builder],
    );
    let status = bake
        .wait_exit(Duration::from_secs(60))
        .expect("the bake finished");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(env.path("bake.err")).unwrap()
    );
    let images = c
        .find_images(&tags(&[("lobster:role", "slave-template")]))
        .await
        .unwrap();
    assert_eq!(images.len(), 1, "the AMI is tagged as the template");
    let b = aws_moto(
        &endpoint,
        &["ec2", "describe-instances", "--instance-ids", &builder],
    );
    assert_eq!(
        b["Reservations"][0]["Instances"][0]["State"]["Name"], "terminated",
        "the builder is gone"
    );
}
