//! Filters (`Filter.N`) and id checks shared by the describe actions.

use super::*;

pub(super) fn tag_match(tags: &Tags, f: &Filter) -> Option<bool> {
    if let Some(key) = f.name.strip_prefix("tag:") {
        return Some(
            tags.get(key)
                .is_some_and(|v| f.values.iter().any(|p| glob(p, v))),
        );
    }
    match f.name.as_str() {
        "tag-key" => Some(tags.keys().any(|k| f.values.iter().any(|p| glob(p, k)))),
        "tag-value" => Some(tags.values().any(|v| f.values.iter().any(|p| glob(p, v)))),
        _ => None,
    }
}

pub(super) fn any(f: &Filter, value: &str) -> bool {
    f.values.iter().any(|p| glob(p, value))
}

/// EC2's answer to a filter name it does not know.
pub(super) fn invalid_filter(name: &str) -> ApiError {
    ApiError::new(
        "InvalidParameterValue",
        format!("The filter '{name}' is invalid"),
    )
}

pub(super) const IMAGE_FILTERS: &[&str] = &[
    "image-id",
    "name",
    "state",
    "owner-id",
    "is-public",
    "image-type",
    "architecture",
];
/// The DescribeInstances filters EC2 documents for the attributes the local cloud returns
/// (EC2 API reference, DescribeInstances, "Filters"), besides `tag:*`, `tag-key`, `tag-value`.
pub(super) const INSTANCE_FILTERS: &[&str] = &[
    "instance-state-name",
    "instance-state-code",
    "instance-id",
    "image-id",
    "instance-type",
    "reservation-id",
    "owner-id",
    "client-token",
    "private-ip-address",
    "private-dns-name",
    "dns-name",
    "availability-zone",
    "tenancy",
    "launch-index",
    "launch-time",
    "reason",
    "monitoring-state",
    "architecture",
    "root-device-type",
    "root-device-name",
    "virtualization-type",
    "hypervisor",
    "metadata-options.http-tokens",
    "metadata-options.http-endpoint",
    "metadata-options.http-put-response-hop-limit",
];
pub(super) const TAG_FILTERS: &[&str] = &["resource-id", "resource-type", "key", "value"];

/// Refuses unknown filter names even when nothing would be compared.
pub(super) fn check_filters(filters: &[Filter], known: &[&str]) -> Result<(), ApiError> {
    for f in filters {
        let tagged = f.name.starts_with("tag:") || f.name == "tag-key" || f.name == "tag-value";
        if !tagged && !known.contains(&f.name.as_str()) {
            return Err(invalid_filter(&f.name));
        }
    }
    Ok(())
}

pub(super) fn image_matches(i: &ImageRec, filters: &[Filter]) -> Result<bool, ApiError> {
    for f in filters {
        let ok = match tag_match(&i.tags, f) {
            Some(ok) => ok,
            None => match f.name.as_str() {
                "image-id" => any(f, &i.id),
                "name" => any(f, &i.name),
                "state" => any(f, &i.state),
                "owner-id" => any(f, OWNER),
                "is-public" => any(f, "false"),
                "image-type" => any(f, "machine"),
                "architecture" => any(f, "x86_64"),
                other => return Err(invalid_filter(other)),
            },
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn check_ids(ids: &[String], prefix: &str, what: &str) -> Result<(), ApiError> {
    for id in ids {
        let hex = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'));
        if !hex.is_some_and(|h| {
            !h.is_empty() && h.len() <= 17 && h.chars().all(|c| c.is_ascii_hexdigit())
        }) {
            return Err(ApiError::new(
                &format!("Invalid{what}.Malformed"),
                format!("Invalid id: \"{id}\""),
            ));
        }
    }
    Ok(())
}

/// The availability zone the local cloud puts every instance in.
pub(super) fn zone(region: &str) -> String {
    format!("{region}a")
}

/// The private DNS name of an instance, as EC2 forms it.
pub(super) fn private_dns(i: &InstanceRec, region: &str) -> String {
    format!(
        "ip-{}.{region}.compute.internal",
        i.private_ip.replace('.', "-")
    )
}

pub(super) fn instance_matches(
    i: &InstanceRec,
    filters: &[Filter],
    region: &str,
) -> Result<bool, ApiError> {
    for f in filters {
        let ok = match tag_match(&i.tags, f) {
            Some(ok) => ok,
            None => match f.name.as_str() {
                "instance-state-name" => any(f, i.state.name()),
                "instance-state-code" => any(f, &i.state.code().to_string()),
                "instance-id" => any(f, &i.id),
                "image-id" => any(f, &i.image_id),
                "instance-type" => any(f, &i.instance_type),
                "reservation-id" => any(f, &i.reservation_id),
                "owner-id" => any(f, OWNER),
                "client-token" => any(f, &i.client_token),
                "private-ip-address" => any(f, &i.private_ip),
                "private-dns-name" => any(f, &private_dns(i, region)),
                "dns-name" => any(f, ""),
                "availability-zone" => any(f, &zone(region)),
                "tenancy" => any(f, "default"),
                "launch-index" => any(f, &i.launch_index.to_string()),
                "launch-time" => any(f, &iso8601(i.launch_unix_ms)),
                "reason" => any(f, &i.reason),
                "monitoring-state" => any(f, "disabled"),
                "architecture" => any(f, "x86_64"),
                "root-device-type" => any(f, "ebs"),
                "root-device-name" => any(f, "/dev/xvda"),
                "virtualization-type" => any(f, "hvm"),
                "hypervisor" => any(f, "xen"),
                "metadata-options.http-tokens" => any(f, "required"),
                "metadata-options.http-endpoint" => any(f, "enabled"),
                "metadata-options.http-put-response-hop-limit" => any(f, "1"),
                other => return Err(invalid_filter(other)),
            },
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
