//! The actions against plain state: lifecycle, idempotency, filters, and bad requests.

use super::*;

fn ctx<'a>(faults: &'a Faults, check: &'a dyn Fn(&str) -> Result<(), String>) -> Ctx<'a> {
    Ctx {
        region: "local",
        now_ms: 1_700_000_000_000,
        request_id: "req-1",
        faults,
        check_location: check,
    }
}

fn call(s: &mut State, body: &str) -> Result<Answer, ApiError> {
    let faults = Faults::default();
    let ok = |_: &str| Ok(());
    let q = Query::parse(None, format!("Version=2016-11-15&{body}").as_bytes())?;
    handle(&q, s, &ctx(&faults, &ok))
}

fn image(s: &mut State) -> String {
    let (xml, _) = call(s, "Action=RegisterImage&Name=tmpl&ImageLocation=/x&TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=lobster%3Arole&TagSpecification.1.Tag.1.Value=slave-template").unwrap();
    let start = xml.find("<imageId>").unwrap() + 9;
    xml[start..start + 21].to_string()
}

fn ids(xml: &str) -> Vec<String> {
    xml.match_indices("<instanceId>")
        .map(|(i, _)| xml[i + 12..i + 31].to_string())
        .collect()
}

#[test]
fn launch_is_idempotent_per_client_token() {
    let mut s = State::default();
    let ami = image(&mut s);
    let body = format!(
        "Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=3&ClientToken=tok&InstanceType=local.medium&UserData=aGVsbG8%3D&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=lobster%3Afleet&TagSpecification.1.Tag.1.Value=f"
    );
    let (xml, effects) = call(&mut s, &body).unwrap();
    assert_eq!(effects.len(), 3);
    let first = ids(&xml);
    let (again, effects) = call(&mut s, &body).unwrap();
    assert!(effects.is_empty(), "a repeated token launches nothing");
    assert_eq!(ids(&again), first);
    assert_eq!(s.instances.len(), 3);
    let i = &s.instances[&first[0]];
    assert_eq!(i.user_data, "hello");
    assert_eq!(i.tags["lobster:fleet"], "f");
    assert_eq!(i.state, InstanceState::Pending);
}

#[test]
fn start_stop_terminate_transitions_and_filters() {
    let mut s = State::default();
    let ami = image(&mut s);
    let (xml, _) = call(
        &mut s,
        &format!("Action=RunInstances&ImageId={ami}&MinCount=2&MaxCount=2"),
    )
    .unwrap();
    let ids = ids(&xml);
    for id in &ids {
        s.instances.get_mut(id).unwrap().state = InstanceState::Running;
    }
    let (xml, effects) = call(
        &mut s,
        &format!("Action=StopInstances&InstanceId.1={}", ids[0]),
    )
    .unwrap();
    assert!(xml.contains("<currentState><code>64</code><name>stopping</name></currentState><previousState><code>16</code><name>running</name>"), "{xml}");
    assert_eq!(effects, vec![Effect::Stop(ids[0].clone())]);
    s.instances.get_mut(&ids[0]).unwrap().state = InstanceState::Stopped;
    let (xml, _) = call(
        &mut s,
        "Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=stopped",
    )
    .unwrap();
    assert!(xml.contains(&ids[0]) && !xml.contains(&ids[1]));
    let (_, effects) = call(
        &mut s,
        &format!("Action=StartInstances&InstanceId.1={}", ids[0]),
    )
    .unwrap();
    assert_eq!(effects, vec![Effect::Boot(ids[0].clone())]);
    let (_, effects) = call(
        &mut s,
        &format!(
            "Action=TerminateInstances&InstanceId.1={}&InstanceId.2={}",
            ids[0], ids[1]
        ),
    )
    .unwrap();
    assert_eq!(effects.len(), 2);
    let e = call(
        &mut s,
        &format!("Action=StartInstances&InstanceId.1={}", ids[1]),
    )
    .unwrap_err();
    assert_eq!(e.code, "IncorrectInstanceState");
}

#[test]
fn tags_create_describe_delete() {
    let mut s = State::default();
    let ami = image(&mut s);
    call(
        &mut s,
        &format!("Action=CreateTags&ResourceId.1={ami}&Tag.1.Key=a&Tag.1.Value=1&Tag.2.Key=b"),
    )
    .unwrap();
    let (xml, _) = call(&mut s, &format!("Action=DescribeTags&Filter.1.Name=resource-id&Filter.1.Value.1={ami}&Filter.2.Name=key&Filter.2.Value.1=a")).unwrap();
    assert!(xml.contains("<key>a</key><value>1</value>") && !xml.contains("<key>b</key>"));
    call(
        &mut s,
        &format!("Action=DeleteTags&ResourceId.1={ami}&Tag.1.Key=a&Tag.1.Value=2"),
    )
    .unwrap();
    assert!(
        s.images[&ami].tags.contains_key("a"),
        "value mismatch keeps the tag"
    );
    call(
        &mut s,
        &format!("Action=DeleteTags&ResourceId.1={ami}&Tag.1.Key=a"),
    )
    .unwrap();
    assert!(!s.images[&ami].tags.contains_key("a"));
    let (xml, _) = call(&mut s, "Action=DescribeImages&Owner.1=self&Filter.1.Name=tag%3Alobster%3Arole&Filter.1.Value.1=slave-*").unwrap();
    assert!(xml.contains(&ami));
    let (xml, _) = call(&mut s, "Action=DescribeImages&Owner.1=amazon").unwrap();
    assert!(!xml.contains(&ami));
}

#[test]
fn describe_instances_paginates() {
    let mut s = State::default();
    let ami = image(&mut s);
    call(
        &mut s,
        &format!("Action=RunInstances&ImageId={ami}&MinCount=7&MaxCount=7"),
    )
    .unwrap();
    let (page1, _) = call(&mut s, "Action=DescribeInstances&MaxResults=5").unwrap();
    assert_eq!(ids(&page1).len(), 5);
    assert!(page1.contains("<nextToken>5</nextToken>"));
    let (page2, _) = call(&mut s, "Action=DescribeInstances&MaxResults=5&NextToken=5").unwrap();
    assert_eq!(ids(&page2).len(), 2);
    assert!(!page2.contains("nextToken"));
}

/// Malformed or impossible requests: each a client error with EC2's code; state unchanged.
#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut s = State::default();
    let ami = image(&mut s);
    call(
        &mut s,
        &format!("Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1"),
    )
    .unwrap();
    let before = s.clone();
    let cases: Vec<(String, &str)> = vec![
        ("Action=Reboot".into(), "InvalidAction"),
        (
            "Action=RunInstances&MinCount=1&MaxCount=1".into(),
            "MissingParameter",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=1"),
            "MissingParameter",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=3&MaxCount=2"),
            "InvalidParameterValue",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=0&MaxCount=2"),
            "InvalidParameterValue",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1001"),
            "InvalidParameterValue",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=x&MaxCount=1"),
            "InvalidParameterValue",
        ),
        (
            format!(
                "Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1&InstanceType=huge.9000"
            ),
            "InvalidParameterValue",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1&UserData=%21%21%21"),
            "InvalidParameterValue",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1&DryRun=true"),
            "DryRunOperation",
        ),
        (
            format!("Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1&DryRun=maybe"),
            "InvalidParameterValue",
        ),
        (
            "Action=RunInstances&ImageId=ami-00000000000000000&MinCount=1&MaxCount=1".into(),
            "InvalidAMIID.NotFound",
        ),
        (
            "Action=RunInstances&ImageId=nope&MinCount=1&MaxCount=1".into(),
            "InvalidAMIID.Malformed",
        ),
        (
            "Action=DescribeInstances&InstanceId.1=i-00000000000000000".into(),
            "InvalidInstanceID.NotFound",
        ),
        (
            "Action=DescribeInstances&InstanceId.1=x-1".into(),
            "InvalidInstanceID.Malformed",
        ),
        (
            "Action=DescribeInstances&Filter.1.Name=colour&Filter.1.Value.1=red".into(),
            "InvalidParameterValue",
        ),
        (
            "Action=DescribeInstances&MaxResults=2".into(),
            "InvalidParameterValue",
        ),
        (
            "Action=DescribeInstances&NextToken=abc".into(),
            "InvalidParameterValue",
        ),
        ("Action=StopInstances".into(), "MissingParameter"),
        (
            "Action=StopInstances&InstanceId.1=i-00000000000000000".into(),
            "InvalidInstanceID.NotFound",
        ),
        (
            "Action=StartInstances&InstanceId.1=i-zz".into(),
            "InvalidInstanceID.Malformed",
        ),
        (
            "Action=CreateTags&ResourceId.1=i-00000000000000000&Tag.1.Key=a".into(),
            "InvalidInstanceID.NotFound",
        ),
        (
            format!("Action=CreateTags&ResourceId.1={ami}"),
            "MissingParameter",
        ),
        (
            format!("Action=CreateTags&ResourceId.1={ami}&Tag.1.Key=aws%3Ax"),
            "InvalidParameterValue",
        ),
        (
            "Action=CreateTags&ResourceId.1=vol-1&Tag.1.Key=a".into(),
            "InvalidID",
        ),
        (
            "Action=DescribeTags&Filter.1.Name=owner&Filter.1.Value.1=x".into(),
            "InvalidParameterValue",
        ),
        (
            "Action=RegisterImage&Name=tmpl&ImageLocation=/x".into(),
            "InvalidAMIName.Duplicate",
        ),
        ("Action=RegisterImage&Name=other".into(), "MissingParameter"),
        (
            "Action=CreateImage&InstanceId=i-00000000000000000&Name=n".into(),
            "InvalidInstanceID.NotFound",
        ),
    ];
    for (body, code) in &cases {
        let e = call(&mut s, body).unwrap_err();
        assert_eq!(&e.code, code, "{body}: {e:?}");
        assert!(e.status >= 400, "{body}");
    }
    assert_eq!(s, before, "a refused request changed the state");
}

#[test]
fn capacity_faults() {
    let mut s = State::default();
    let ami = image(&mut s);
    let faults = Faults {
        capacity_limit: Some(3),
        ..Default::default()
    };
    let ok = |_: &str| Ok(());
    let run = |s: &mut State, min: u32, max: u32| {
        let q = Query::parse(
            None,
            format!("Version=1&Action=RunInstances&ImageId={ami}&MinCount={min}&MaxCount={max}")
                .as_bytes(),
        )
        .unwrap();
        handle(&q, s, &ctx(&faults, &ok))
    };
    let (_, effects) = run(&mut s, 1, 5).unwrap();
    assert_eq!(effects.len(), 3, "a partial launch up to the capacity");
    let e = run(&mut s, 1, 1).unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.status),
        ("InsufficientInstanceCapacity", 500)
    );
}

mod fuzz;
