//! CreateTags, DeleteTags and DescribeTags on instances and images.

use super::*;

/// The tags of a resource by id (instance or image).
pub(super) fn tags_of<'a>(s: &'a mut State, id: &str) -> Result<&'a mut Tags, ApiError> {
    if id.starts_with("ami-") {
        return s.images.get_mut(id).map(|i| &mut i.tags).ok_or_else(|| {
            ApiError::new(
                "InvalidAMIID.NotFound",
                format!("The image id '[{id}]' does not exist"),
            )
        });
    }
    if id.starts_with("i-") {
        return s.instances.get_mut(id).map(|i| &mut i.tags).ok_or_else(|| {
            ApiError::new(
                "InvalidInstanceID.NotFound",
                format!("The instance ID '{id}' does not exist"),
            )
        });
    }
    Err(ApiError::new(
        "InvalidID",
        format!("The ID '{id}' is not valid"),
    ))
}

pub(super) fn create_tags(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let ids = q.required_list("ResourceId")?;
    let tags = q.tags("Tag")?;
    if tags.is_empty() {
        return Err(missing("Tag"));
    }
    for id in &ids {
        let existing = tags_of(s, id)?;
        let added = tags
            .iter()
            .filter(|(k, _)| !existing.contains_key(k))
            .count();
        if existing.len() + added > MAX_TAGS {
            return Err(ApiError::new(
                "TagLimitExceeded",
                "The maximum number of tags per resource is 50",
            ));
        }
    }
    if dry {
        return Err(dry_run_ok());
    }
    for id in &ids {
        let t = tags_of(s, id)?;
        for (k, v) in &tags {
            t.insert(k.clone(), v.clone().unwrap_or_default());
        }
    }
    Ok(returned_true("CreateTagsResponse", c))
}

pub(super) fn delete_tags(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let ids = q.required_list("ResourceId")?;
    let tags = q.tags("Tag")?;
    for id in &ids {
        tags_of(s, id)?;
    }
    if dry {
        return Err(dry_run_ok());
    }
    for id in &ids {
        let t = tags_of(s, id)?;
        if tags.is_empty() {
            t.clear();
        }
        for (k, v) in &tags {
            if v.as_ref().is_none_or(|v| t.get(k) == Some(v)) {
                t.remove(k);
            }
        }
    }
    Ok(returned_true("DeleteTagsResponse", c))
}

pub(super) fn describe_tags(q: &Query, s: &State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
    let filters = q.filters()?;
    check_filters(&filters, TAG_FILTERS)?;
    let resources = s
        .instances
        .values()
        .map(|i| (i.id.as_str(), "instance", &i.tags))
        .chain(s.images.values().map(|i| (i.id.as_str(), "image", &i.tags)));
    let mut x = Xml::response("DescribeTagsResponse", c.request_id);
    x.open("tagSet");
    for (id, kind, tags) in resources {
        for (k, v) in tags {
            let mut ok = true;
            for f in &filters {
                ok &= match f.name.as_str() {
                    "resource-id" => any(f, id),
                    "resource-type" => any(f, kind),
                    "key" => any(f, k),
                    "value" => any(f, v),
                    n if n.starts_with("tag:") => n[4..] == **k && any(f, v),
                    other => return Err(invalid_filter(other)),
                };
            }
            if ok {
                x.open("item")
                    .leaf("resourceId", id)
                    .leaf("resourceType", kind)
                    .leaf("key", k)
                    .leaf("value", v)
                    .close("item");
            }
        }
    }
    x.close("tagSet");
    Ok((x.finish(), Vec::new()))
}
