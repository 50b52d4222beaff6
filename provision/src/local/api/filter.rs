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
pub(super) const INSTANCE_FILTERS: &[&str] = &[
    "instance-state-name",
    "instance-state-code",
    "instance-id",
    "image-id",
    "instance-type",
    "reservation-id",
    "client-token",
    "private-ip-address",
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

pub(super) fn instance_matches(i: &InstanceRec, filters: &[Filter]) -> Result<bool, ApiError> {
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
                "client-token" => any(f, &i.client_token),
                "private-ip-address" => any(f, &i.private_ip),
                other => return Err(invalid_filter(other)),
            },
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
