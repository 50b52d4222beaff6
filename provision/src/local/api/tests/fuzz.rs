//! Fuzzing on stable: random requests built from the Query protocol's own vocabulary never
//! panic the local cloud, and whatever they do leaves a consistent state.

use super::*;
use proptest::prelude::*;

const ACTIONS: &[&str] = &[
    "DescribeImages",
    "RegisterImage",
    "CreateImage",
    "DescribeInstances",
    "RunInstances",
    "StartInstances",
    "StopInstances",
    "TerminateInstances",
    "CreateTags",
    "DeleteTags",
    "DescribeTags",
    "ModifyInstanceAttribute",
    "Nope",
];
const KEYS: &[&str] = &[
    "ImageId",
    "InstanceId",
    "InstanceId.1",
    "InstanceId.2",
    "InstanceId.0",
    "MinCount",
    "MaxCount",
    "InstanceType",
    "UserData",
    "ClientToken",
    "DryRun",
    "Name",
    "ImageLocation",
    "Owner.1",
    "ImageId.1",
    "ResourceId.1",
    "Tag.1.Key",
    "Tag.1.Value",
    "Tag.2.Key",
    "Filter.1.Name",
    "Filter.1.Value.1",
    "Filter.2.Value.1",
    "TagSpecification.1.ResourceType",
    "TagSpecification.1.Tag.1.Key",
    "TagSpecification.1.Tag.1.Value",
    "MaxResults",
    "NextToken",
    "UserData.Value",
    "InstanceType.Value",
    "Filter.x.Name",
    "Tag..Key",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("0".to_string()),
        Just("-5".to_string()),
        Just("1000".to_string()),
        Just("99999999999999999999".to_string()),
        Just("true".to_string()),
        Just("instance".to_string()),
        Just("i-0123456789abcdef0".to_string()),
        Just("ami-0123456789abcdef0".to_string()),
        Just("local.small".to_string()),
        Just("tag:lobster:fleet".to_string()),
        Just("instance-state-name".to_string()),
        Just("aGk=".to_string()),
        Just("/x".to_string()),
        Just("*".to_string()),
        Just("{ami}".to_string()),
        "\\PC{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn random_requests_never_panic_and_keep_state_consistent(
        calls in proptest::collection::vec(
            (0..ACTIONS.len(), proptest::collection::vec((0..KEYS.len(), value()), 0..8)),
            1..12,
        )
    ) {
        let mut s = State::default();
        let ami = image(&mut s);
        call(&mut s, &format!("Action=RunInstances&ImageId={ami}&MinCount=2&MaxCount=2")).unwrap();
        for (a, params) in calls {
            let mut body = format!("Action={}", ACTIONS[a]);
            for (k, v) in params {
                let v = v.replace("{ami}", &ami);
                body.push('&');
                body.push_str(KEYS[k]);
                body.push('=');
                body.extend(form_urlencoded::byte_serialize(v.as_bytes()));
            }
            let _ = call(&mut s, &body);
        }
        for (id, i) in &s.instances {
            prop_assert_eq!(id, &i.id);
            prop_assert!(s.images.contains_key(&i.image_id) || i.image_id == ami);
            prop_assert!(types::vcpus(&i.instance_type).is_some(), "unknown type {}", i.instance_type);
        }
        for ids in s.tokens.values() {
            for id in ids {
                prop_assert!(s.instances.contains_key(id));
            }
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..512)) {
        let mut s = State::default();
        let faults = Faults::default();
        let ok = |_: &str| Ok(());
        if let Ok(q) = Query::parse(None, &body) {
            let _ = handle(&q, &mut s, &ctx(&faults, &ok));
        }
    }
}
