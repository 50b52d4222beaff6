//! Parsing requests: lists, filters, tag specifications, malformed input, globs.
use super::*;

fn q(body: &str) -> Result<Query, ApiError> {
    Query::parse(None, body.as_bytes())
}

#[test]
fn lists_filters_and_tag_specifications() {
    let body = "Action=RunInstances&Version=2016-11-15&InstanceId.2=i-b&InstanceId.1=i-a&InstanceId.10=i-j\
&Filter.1.Name=tag%3Alobster%3Afleet&Filter.1.Value.1=default&Filter.2.Name=instance-state-name&Filter.2.Value.2=stopped&Filter.2.Value.1=running\
&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=lobster%3Amanaged&TagSpecification.1.Tag.1.Value=true\
&TagSpecification.2.ResourceType=volume&TagSpecification.2.Tag.1.Key=v&TagSpecification.2.Tag.1.Value=1";
    let r = q(body).unwrap();
    assert_eq!(r.action, "RunInstances");
    assert_eq!(r.list("InstanceId").unwrap(), vec!["i-a", "i-b", "i-j"]);
    let f = r.filters().unwrap();
    assert_eq!(
        f[0],
        Filter {
            name: "tag:lobster:fleet".into(),
            values: vec!["default".into()]
        }
    );
    assert_eq!(f[1].values, vec!["running", "stopped"]);
    let t = r.tag_specifications("instance").unwrap();
    assert_eq!(t.get("lobster:managed").map(String::as_str), Some("true"));
    assert!(!t.contains_key("v"));
}

#[test]
fn malformed_requests_are_client_errors() {
    let cases = [
        ("", "MissingAction"),
        ("Version=2016-11-15", "MissingAction"),
        ("Action=DescribeInstances", "MissingParameter"),
        ("Action=X&Version=1&InstanceId.0=i", "InvalidParameter"),
        ("Action=X&Version=1&InstanceId.x=i", "InvalidParameter"),
        (
            "Action=X&Version=1&Filter.1.Value.1=v",
            "InvalidParameterValue",
        ),
        ("Action=X&Version=1&Tag.1.Value=v", "InvalidParameterValue"),
        (
            "Action=X&Version=1&Tag.1.Key=aws%3Ax",
            "InvalidParameterValue",
        ),
        ("Action=X&Version=1&Filter.1", "InvalidParameter"),
    ];
    for (body, code) in cases {
        let r = q(body).and_then(|r| {
            r.list("InstanceId")?;
            r.filters()?;
            r.tags("Tag")?;
            Ok(())
        });
        assert_eq!(r.unwrap_err().code, code, "{body}");
    }
    assert_eq!(
        Query::parse(None, &vec![b'a'; MAX_BODY + 1])
            .unwrap_err()
            .status,
        413
    );
}

#[test]
fn globs() {
    assert!(glob("lobster*", "lobster:fleet"));
    assert!(glob("i-?b", "i-ab"));
    assert!(glob("*", ""));
    assert!(!glob("a*c", "abd"));
    assert!(glob("exact", "exact"));
}
