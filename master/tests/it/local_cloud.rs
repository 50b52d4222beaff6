//! The local cloud, driven by aws-sdk-ec2 (through Lobster's EC2 backend), by the aws CLI and
//! by malformed requests; and its state across a crash.

use std::time::Duration;

use crate::common::*;
use lobster_provision::cloud::{Cloud, CloudError, InstanceState, LaunchSpec, Tags};
use lobster_provision::ec2::{Ec2Cloud, Ec2Config};

async fn client(endpoint: &str) -> Ec2Cloud {
    Ec2Cloud::connect(&Ec2Config {
        region: Some("local".into()),
        endpoint_url: Some(endpoint.into()),
        profile: None,
        credentials: Some(("test".into(), "test".into())),
        max_attempts: Some(2),
    })
    .await
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A template image in the local cloud of `env` (running in the foreground), made by the CLI
/// as a user would.
fn template(env: &Env) -> String {
    let (code, out, err) = env.cli(&["image", "build", "--local"]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

/// The directory (image location) of a local image.
fn location(endpoint: &str, ami: &str) -> String {
    let v = aws(endpoint, &["ec2", "describe-images", "--image-ids", ami]).unwrap();
    v["Images"][0]["ImageLocation"]
        .as_str()
        .unwrap()
        .to_string()
}

fn spec(image: &str, count: u32, token: &str) -> LaunchSpec {
    LaunchSpec {
        image_id: image.into(),
        instance_type: "local.small".into(),
        count,
        client_token: token.into(),
        // Settings that point at no master: the slaves retry quietly, which is fine here.
        user_data: "LOBSTER_MASTER=http://127.0.0.1:9\nLOBSTER_JOIN_TOKEN=t\n".into(),
        tags: tags(&[("lobster:managed", "true"), ("lobster:fleet", "t1")]),
        subnet_id: None,
        security_group_ids: vec![],
        iam_instance_profile: None,
        key_name: None,
    }
}

async fn wait_state(cloud: &Ec2Cloud, id: &str, want: InstanceState) {
    for _ in 0..300 {
        if cloud.describe(&[id.to_string()]).await.unwrap()[0].state == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} never reached {want}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_drives_every_action() {
    let env = Env::new();
    let (_cloud, endpoint) = env.cloud(&[]);
    let c = client(&endpoint).await;
    let ami = template(&env);
    let found = c
        .find_images(&tags(&[("lobster:role", "slave-template")]))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ami);
    assert!(
        c.find_images(&tags(&[("lobster:role", "other")]))
            .await
            .unwrap()
            .is_empty()
    );

    let launched = c.launch(&spec(&ami, 3, "tok-1")).await.unwrap();
    assert_eq!(launched.len(), 3);
    assert!(launched.iter().all(|i| i.state == InstanceState::Pending));
    let again = c.launch(&spec(&ami, 3, "tok-1")).await.unwrap();
    let ids = |v: &[lobster_provision::cloud::Instance]| {
        let mut x: Vec<String> = v.iter().map(|i| i.id.clone()).collect();
        x.sort();
        x
    };
    assert_eq!(
        ids(&again),
        ids(&launched),
        "the same client token launches nothing new"
    );
    let fleet = c
        .instances(&tags(&[("lobster:fleet", "t1")]))
        .await
        .unwrap();
    assert_eq!(fleet.len(), 3);
    assert_eq!(
        fleet[0].tags.get("lobster:managed").map(String::as_str),
        Some("true")
    );

    let id = launched[0].id.clone();
    wait_state(&c, &id, InstanceState::Running).await;
    let err = c.set_user_data(&id, "x").await.unwrap_err();
    assert!(
        matches!(err, CloudError::Invalid { .. }),
        "user-data of a running instance: {err:?}"
    );
    c.stop(std::slice::from_ref(&id), true)
        .await
        .expect("dry run is allowed");
    let changes = c.stop(std::slice::from_ref(&id), false).await.unwrap();
    assert_eq!(
        (changes[0].previous, changes[0].current),
        (InstanceState::Running, InstanceState::Stopping)
    );
    wait_state(&c, &id, InstanceState::Stopped).await;
    c.set_user_data(
        &id,
        "LOBSTER_MASTER=http://127.0.0.1:9\nLOBSTER_JOIN_TOKEN=u\n",
    )
    .await
    .unwrap();
    c.set_instance_type(&id, "local.medium").await.unwrap();
    c.start(std::slice::from_ref(&id)).await.unwrap();
    wait_state(&c, &id, InstanceState::Running).await;
    assert_eq!(
        c.describe(std::slice::from_ref(&id)).await.unwrap()[0].instance_type,
        "local.medium"
    );

    c.tag(std::slice::from_ref(&id), &tags(&[("k", "v")]))
        .await
        .unwrap();
    assert_eq!(
        c.describe(std::slice::from_ref(&id)).await.unwrap()[0]
            .tags
            .get("k")
            .map(String::as_str),
        Some("v")
    );
    c.untag(std::slice::from_ref(&id), &["k".to_string()])
        .await
        .unwrap();
    assert!(
        !c.describe(std::slice::from_ref(&id)).await.unwrap()[0]
            .tags
            .contains_key("k")
    );

    c.terminate(std::slice::from_ref(&id)).await.unwrap();
    wait_state(&c, &id, InstanceState::Terminated).await;
    assert_eq!(
        c.instances(&tags(&[("lobster:fleet", "t1")]))
            .await
            .unwrap()
            .len(),
        2,
        "terminated instances leave the fleet"
    );

    // Errors arrive typed.
    let e = c
        .describe(&["i-00000000000000000".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::NotFound { .. }), "{e:?}");
    let e = c
        .launch(&spec("ami-00000000000000000", 1, "tok-2"))
        .await
        .unwrap_err();
    assert!(matches!(e, CloudError::NotFound { .. }), "{e:?}");
    let mut bad = spec(&ami, 1, "tok-3");
    bad.instance_type = "huge.9000".into();
    assert!(matches!(
        c.launch(&bad).await.unwrap_err(),
        CloudError::Invalid { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_a_crash_and_running_instances_reboot() {
    let env = Env::new();
    let (mut cloud, endpoint) = env.cloud(&[]);
    let c = client(&endpoint).await;
    let ami = template(&env);
    let launched = c.launch(&spec(&ami, 2, "tok-crash")).await.unwrap();
    for i in &launched {
        wait_state(&c, &i.id, InstanceState::Running).await;
    }
    c.stop(&[launched[1].id.clone()], false).await.unwrap();
    wait_state(&c, &launched[1].id, InstanceState::Stopped).await;
    // The running instance's process groups, once its units have started.
    let state_file = env.home().join("cloud/state.json");
    let pgids: Vec<i64> = eventually(
        "the instance's units to start",
        Duration::from_secs(30),
        || {
            let state: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&state_file).ok()?).ok()?;
            let p: Vec<i64> = state["instances"][&launched[0].id]["pgids"]
                .as_array()?
                .iter()
                .filter_map(|p| p.as_i64())
                .collect();
            (p.len() >= 2).then_some(p)
        },
    );
    cloud.signal(nix::sys::signal::Signal::SIGKILL);
    cloud.wait_exit(Duration::from_secs(10)).unwrap();
    let (_cloud2, endpoint2) = env.cloud(&[]);
    let c2 = client(&endpoint2).await;
    let images = c2
        .find_images(&tags(&[("lobster:role", "slave-template")]))
        .await
        .unwrap();
    assert_eq!(images[0].id, ami, "images survive");
    wait_state(&c2, &launched[0].id, InstanceState::Running).await;
    assert_eq!(
        c2.describe(&[launched[1].id.clone()]).await.unwrap()[0].state,
        InstanceState::Stopped
    );
    for pgid in pgids {
        let stat = std::fs::read_to_string(format!("/proc/{pgid}/environ")).unwrap_or_default();
        assert!(
            !stat.contains(&launched[0].id),
            "a process of the crashed cloud's instance still runs ({pgid})"
        );
    }
}

#[test]
fn the_aws_cli_is_a_second_client() {
    let env = Env::new();
    let (_cloud, endpoint) = env.cloud(&[]);
    let built = template(&env);
    let dir = location(&endpoint, &built);
    let reg = aws(
        &endpoint,
        &[
            "ec2",
            "register-image",
            "--name",
            "cli-tmpl",
            "--image-location",
            &dir,
            "--tag-specifications",
            "ResourceType=image,Tags=[{Key=lobster:role,Value=cli-template}]",
        ],
    )
    .unwrap();
    let ami = reg["ImageId"].as_str().unwrap().to_string();
    let imgs = aws(
        &endpoint,
        &[
            "ec2",
            "describe-images",
            "--owners",
            "self",
            "--filters",
            "Name=tag:lobster:role,Values=cli-template",
        ],
    )
    .unwrap();
    assert_eq!(imgs["Images"].as_array().unwrap().len(), 1, "{imgs}");
    assert_eq!(imgs["Images"][0]["ImageId"], ami.as_str());
    assert_eq!(imgs["Images"][0]["State"], "available");
    let none = aws(
        &endpoint,
        &[
            "ec2",
            "describe-images",
            "--owners",
            "self",
            "--filters",
            "Name=tag:lobster:role,Values=nope",
        ],
    )
    .unwrap();
    assert_eq!(none["Images"].as_array().unwrap().len(), 0);

    let run = aws(&endpoint, &["ec2", "run-instances", "--image-id", &ami, "--count", "2", "--instance-type", "local.small",
        "--tag-specifications", "ResourceType=instance,Tags=[{Key=lobster:fleet,Value=cli},{Key=lobster:managed,Value=true}]",
        "--user-data", "LOBSTER_MASTER=http://127.0.0.1:9"]).unwrap();
    let ids: Vec<String> = run["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(run["Instances"][0]["State"]["Name"], "pending");
    assert_eq!(run["Instances"][0]["State"]["Code"], 0);

    let running = eventually("two running instances", Duration::from_secs(30), || {
        let d = aws(
            &endpoint,
            &[
                "ec2",
                "describe-instances",
                "--filters",
                "Name=tag:lobster:fleet,Values=cli",
                "Name=instance-state-name,Values=running",
            ],
        )
        .ok()?;
        let n: usize = d["Reservations"]
            .as_array()?
            .iter()
            .map(|r| r["Instances"].as_array().map_or(0, Vec::len))
            .sum();
        (n == 2).then_some(d)
    });
    let inst = &running["Reservations"][0]["Instances"][0];
    assert_eq!(inst["InstanceType"], "local.small");
    assert!(
        inst["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["Key"] == "lobster:fleet" && t["Value"] == "cli")
    );

    let stop = aws(
        &endpoint,
        &["ec2", "stop-instances", "--instance-ids", &ids[0]],
    )
    .unwrap();
    assert_eq!(
        stop["StoppingInstances"][0]["CurrentState"]["Name"],
        "stopping"
    );
    assert_eq!(
        stop["StoppingInstances"][0]["PreviousState"]["Name"],
        "running"
    );
    eventually("a stopped instance", Duration::from_secs(30), || {
        let d = aws(
            &endpoint,
            &["ec2", "describe-instances", "--instance-ids", &ids[0]],
        )
        .ok()?;
        (d["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped").then_some(())
    });
    let start = aws(
        &endpoint,
        &["ec2", "start-instances", "--instance-ids", &ids[0]],
    )
    .unwrap();
    assert_eq!(
        start["StartingInstances"][0]["CurrentState"]["Name"],
        "pending"
    );

    aws(
        &endpoint,
        &[
            "ec2",
            "create-tags",
            "--resources",
            &ids[1],
            "--tags",
            "Key=owner,Value=perf-team",
        ],
    )
    .unwrap();
    let t = aws(
        &endpoint,
        &[
            "ec2",
            "describe-tags",
            "--filters",
            &format!("Name=resource-id,Values={}", ids[1]),
            "Name=key,Values=owner",
        ],
    )
    .unwrap();
    assert_eq!(t["Tags"][0]["Value"], "perf-team");
    assert_eq!(t["Tags"][0]["ResourceType"], "instance");
    aws(
        &endpoint,
        &[
            "ec2",
            "delete-tags",
            "--resources",
            &ids[1],
            "--tags",
            "Key=owner",
        ],
    )
    .unwrap();
    let t = aws(
        &endpoint,
        &[
            "ec2",
            "describe-tags",
            "--filters",
            &format!("Name=resource-id,Values={}", ids[1]),
            "Name=key,Values=owner",
        ],
    )
    .unwrap();
    assert_eq!(t["Tags"].as_array().unwrap().len(), 0);

    let term = aws(
        &endpoint,
        &["ec2", "terminate-instances", "--instance-ids", &ids[1]],
    )
    .unwrap();
    assert_eq!(
        term["TerminatingInstances"][0]["CurrentState"]["Name"],
        "shutting-down"
    );
    let err = aws(
        &endpoint,
        &[
            "ec2",
            "describe-instances",
            "--instance-ids",
            "i-00000000000000000",
        ],
    )
    .unwrap_err();
    assert!(err.contains("InvalidInstanceID.NotFound"), "{err}");
}

/// Malformed Query requests: each answered with AWS error XML and the right status; none
/// crashes the local cloud or changes its state.
#[test]
fn malformed_query_requests_get_aws_errors() {
    let env = Env::new();
    let (_cloud, endpoint) = env.cloud(&[]);
    let addr = addr_of(&endpoint);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let before = http_request(
        addr,
        "POST",
        "/",
        &form,
        b"Action=DescribeInstances&Version=2016-11-15",
    )
    .1;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("empty body", b"".to_vec(), 400, "MissingAction"),
        ("no version", b"Action=DescribeInstances".to_vec(), 400, "MissingParameter"),
        ("unknown action", b"Action=RebootEverything&Version=2016-11-15".to_vec(), 400, "InvalidAction"),
        ("binary garbage", vec![0xff, 0xfe, 0x00, 0x80, 0x25, 0x25], 400, "MalformedQueryString"),
        ("a value that is not UTF-8", b"Action=DescribeInstances&Version=1&Filter.1.Name=%FF%FE".to_vec(), 400, "MalformedQueryString"),
        ("bad percent escape", b"Action=Describe%ZZInstances&Version=1".to_vec(), 400, "InvalidAction"),
        ("index zero", b"Action=DescribeInstances&Version=1&InstanceId.0=i-1".to_vec(), 400, "InvalidParameter"),
        ("index not a number", b"Action=DescribeInstances&Version=1&InstanceId.x=i-1".to_vec(), 400, "InvalidParameter"),
        ("filter without name", b"Action=DescribeInstances&Version=1&Filter.1.Value.1=x".to_vec(), 400, "InvalidParameterValue"),
        ("unknown filter", b"Action=DescribeInstances&Version=1&Filter.1.Name=colour&Filter.1.Value.1=red".to_vec(), 400, "InvalidParameterValue"),
        ("malformed instance id", b"Action=StopInstances&Version=1&InstanceId.1=instance-1".to_vec(), 400, "InvalidInstanceID.Malformed"),
        ("unknown instance", b"Action=StopInstances&Version=1&InstanceId.1=i-0123456789abcdef0".to_vec(), 400, "InvalidInstanceID.NotFound"),
        ("run without counts", b"Action=RunInstances&Version=1&ImageId=ami-0123456789abcdef0".to_vec(), 400, "MissingParameter"),
        ("negative count", b"Action=RunInstances&Version=1&ImageId=ami-0123456789abcdef0&MinCount=-1&MaxCount=1".to_vec(), 400, "InvalidParameterValue"),
        ("huge count", b"Action=RunInstances&Version=1&ImageId=ami-0123456789abcdef0&MinCount=1&MaxCount=99999999999999999999".to_vec(), 400, "InvalidParameterValue"),
        ("unknown image", b"Action=RunInstances&Version=1&ImageId=ami-0123456789abcdef0&MinCount=1&MaxCount=1".to_vec(), 400, "InvalidAMIID.NotFound"),
        ("tag key aws:", b"Action=CreateTags&Version=1&ResourceId.1=i-0123456789abcdef0&Tag.1.Key=aws:x".to_vec(), 400, "InvalidParameterValue"),
        ("tag without key", b"Action=CreateTags&Version=1&ResourceId.1=i-0123456789abcdef0&Tag.1.Value=x".to_vec(), 400, "InvalidParameterValue"),
        ("register outside a recipe", b"Action=RegisterImage&Version=1&Name=img&ImageLocation=/etc".to_vec(), 400, "InvalidParameterValue"),
        ("register relative path", b"Action=RegisterImage&Version=1&Name=img&ImageLocation=images/x".to_vec(), 400, "InvalidParameterValue"),
        ("dry run flag not a bool", b"Action=DescribeInstances&Version=1&DryRun=perhaps".to_vec(), 400, "InvalidParameterValue"),
        ("max results too small", b"Action=DescribeInstances&Version=1&MaxResults=1".to_vec(), 400, "InvalidParameterValue"),
        ("modify a missing instance", b"Action=ModifyInstanceAttribute&Version=1&InstanceId=i-0123456789abcdef0&UserData.Value=eA==".to_vec(), 400, "InvalidInstanceID.NotFound"),
        ("body too large", vec![b'a'; 2 * 1024 * 1024], 413, "RequestEntityTooLarge"),
    ];
    for (what, body, status, code) in &cases {
        let (got, xml) = http_request(addr, "POST", "/", &form, body);
        assert_eq!(got, *status, "{what}: {xml}");
        if !code.is_empty() {
            assert!(
                xml.contains(&format!("<Code>{code}</Code>")),
                "{what}: {xml}"
            );
            assert!(xml.contains("<RequestID>"), "{what}: {xml}");
        }
    }
    assert!(cases.len() >= 20);
    // Rejections before the parameters: still EC2's error document with an EC2 code.
    let json = [("Content-Type", "application/json")];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let early: Vec<(&str, &str, &str, Headers, u16, &str)> = vec![
        (
            "an unknown path",
            "GET",
            "/latest/everything",
            &[],
            404,
            "InvalidAction",
        ),
        (
            "an unknown path, POST",
            "POST",
            "/v2/",
            &form,
            404,
            "InvalidAction",
        ),
        ("PUT", "PUT", "/", &form, 405, "UnsupportedOperation"),
        ("DELETE", "DELETE", "/", &[], 405, "UnsupportedOperation"),
        (
            "a JSON body",
            "POST",
            "/",
            &json,
            400,
            "InvalidParameterValue",
        ),
    ];
    for (what, method, path, headers, status, code) in &early {
        let (got, xml) = http_request(
            addr,
            method,
            path,
            headers,
            b"{\"Action\": \"DescribeInstances\"}",
        );
        assert_eq!(got, *status, "{what}: {xml}");
        assert!(
            xml.contains(&format!("<Code>{code}</Code>")),
            "{what}: {xml}"
        );
        assert!(xml.contains("<RequestID>"), "{what}: {xml}");
    }
    // A second client reads the body-limit answer as the error it is (not a parser failure).
    let big = env.path("big-user-data");
    std::fs::write(&big, vec![b'x'; 1536 * 1024]).unwrap();
    let e = aws(
        &endpoint,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-0123456789abcdef0",
            "--count",
            "1",
            "--user-data",
            &format!("file://{}", big.display()),
        ],
    )
    .unwrap_err();
    assert!(
        e.contains("RequestEntityTooLarge") && !e.contains("ResponseParserError"),
        "{e}"
    );
    let (status, _) = http_request(addr, "GET", "/__lobster/health", &[], b"");
    assert_eq!(status, 200, "the local cloud survived");
    let after = http_request(
        addr,
        "POST",
        "/",
        &form,
        b"Action=DescribeInstances&Version=2016-11-15",
    )
    .1;
    let strip = |s: &str| {
        s.split("<requestId>").next().unwrap().to_string()
            + s.split("</requestId>").nth(1).unwrap_or("")
    };
    assert_eq!(
        strip(&before),
        strip(&after),
        "bad requests changed the state"
    );
}

/// Counts the instances of a DescribeInstances answer.
fn count_instances(d: &serde_json::Value) -> usize {
    d["Reservations"].as_array().map_or(0, |rs| {
        rs.iter()
            .map(|r| r["Instances"].as_array().map_or(0, Vec::len))
            .sum()
    })
}

/// What the aws CLI expects of EC2 and once failed here: the documented filters for what the
/// local cloud returns (an availability zone the instances report was refused), the status
/// checks behind `aws ec2 wait instance-status-ok`, instance types, and terminated instances
/// leaving DescribeInstances after their retention.
#[test]
fn the_aws_cli_filters_waits_and_forgets_as_on_ec2() {
    let env = Env::new();
    let (_cloud, endpoint) = env.cloud(&["--terminated-retention", "3s"]);
    let ami = template(&env);
    let run = aws(
        &endpoint,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            &ami,
            "--count",
            "2",
            "--instance-type",
            "local.small",
            "--user-data",
            "LOBSTER_MASTER=http://127.0.0.1:9\nLOBSTER_JOIN_TOKEN=t\n",
        ],
    )
    .unwrap();
    let ids: Vec<String> = run["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect();
    // The status checks: ok once the instances' slaves run (polled here every 200 ms; the
    // aws CLI's waiter polls every 15 s, so it is called once they are ok, and must agree).
    eventually("status ok", Duration::from_secs(60), || {
        let st = aws(&endpoint, &["ec2", "describe-instance-status"]).ok()?;
        let all = st["InstanceStatuses"].as_array()?;
        (all.len() == 2 && all.iter().all(|s| s["InstanceStatus"]["Status"] == "ok")).then_some(())
    });
    let mut wait = vec!["ec2", "wait", "instance-status-ok", "--instance-ids"];
    wait.extend(ids.iter().map(String::as_str));
    aws(&endpoint, &wait).expect("instance-status-ok");
    let st = aws(
        &endpoint,
        &["ec2", "describe-instance-status", "--instance-ids", &ids[0]],
    )
    .unwrap();
    let s = &st["InstanceStatuses"][0];
    assert_eq!(s["InstanceStatus"]["Status"], "ok", "{st}");
    assert_eq!(s["SystemStatus"]["Details"][0]["Status"], "passed");
    assert_eq!(s["AvailabilityZone"], "locala");
    // Every documented filter for what the instances report.
    let inst = &aws(
        &endpoint,
        &["ec2", "describe-instances", "--instance-ids", &ids[0]],
    )
    .unwrap()["Reservations"][0]["Instances"][0];
    let filters = [
        format!(
            "Name=availability-zone,Values={}",
            inst["Placement"]["AvailabilityZone"].as_str().unwrap()
        ),
        format!(
            "Name=private-dns-name,Values={}",
            inst["PrivateDnsName"].as_str().unwrap()
        ),
        format!("Name=launch-index,Values={}", inst["AmiLaunchIndex"]),
        "Name=architecture,Values=x86_64".into(),
        "Name=tenancy,Values=default".into(),
        "Name=root-device-type,Values=ebs".into(),
        "Name=virtualization-type,Values=hvm".into(),
        "Name=metadata-options.http-tokens,Values=required".into(),
        "Name=owner-id,Values=000000000000".into(),
        "Name=instance-type,Values=local.*".into(),
    ];
    for f in &filters {
        let d = aws(&endpoint, &["ec2", "describe-instances", "--filters", f]).unwrap();
        assert!(count_instances(&d) >= 1, "{f}: {d}");
    }
    let d = aws(
        &endpoint,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=availability-zone,Values=elsewhere",
        ],
    )
    .unwrap();
    assert_eq!(count_instances(&d), 0);
    let e = aws(
        &endpoint,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=vpc-id,Values=vpc-1",
        ],
    )
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterValue") && e.contains("The filter 'vpc-id' is invalid"),
        "{e}"
    );
    // Instance types as EC2 describes them.
    let t = aws(
        &endpoint,
        &[
            "ec2",
            "describe-instance-types",
            "--instance-types",
            "local.medium",
        ],
    )
    .unwrap();
    assert_eq!(t["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"], 2);
    let e = aws(
        &endpoint,
        &[
            "ec2",
            "describe-instance-types",
            "--instance-types",
            "huge.9000",
        ],
    )
    .unwrap_err();
    assert!(e.contains("InvalidInstanceType"), "{e}");
    // Stopped instances are listed only with --include-all-instances.
    aws(
        &endpoint,
        &["ec2", "stop-instances", "--instance-ids", &ids[1]],
    )
    .unwrap();
    aws(
        &endpoint,
        &["ec2", "wait", "instance-stopped", "--instance-ids", &ids[1]],
    )
    .unwrap();
    let st = aws(&endpoint, &["ec2", "describe-instance-status"]).unwrap();
    assert_eq!(st["InstanceStatuses"].as_array().unwrap().len(), 1, "{st}");
    let st = aws(
        &endpoint,
        &["ec2", "describe-instance-status", "--include-all-instances"],
    )
    .unwrap();
    assert_eq!(st["InstanceStatuses"].as_array().unwrap().len(), 2, "{st}");
    // Terminated instances leave DescribeInstances after the retention (3 s here, 1 h default).
    let mut term = vec!["ec2", "terminate-instances", "--instance-ids"];
    term.extend(ids.iter().map(String::as_str));
    aws(&endpoint, &term).unwrap();
    eventually(
        "terminated instances purged",
        Duration::from_secs(30),
        || {
            let d = aws(&endpoint, &["ec2", "describe-instances"]).ok()?;
            (count_instances(&d) == 0).then_some(())
        },
    );
}
