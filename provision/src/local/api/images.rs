//! DescribeImages, RegisterImage and CreateImage.

use super::*;

pub(super) fn describe_images(q: &Query, s: &State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
    let owners = q.list("Owner")?;
    let ids = q.list("ImageId")?;
    check_ids(&ids, "ami", "AMIID")?;
    let filters = q.filters()?;
    check_filters(&filters, IMAGE_FILTERS)?;
    for id in &ids {
        if !s.images.contains_key(id) {
            return Err(ApiError::new(
                "InvalidAMIID.NotFound",
                format!("The image id '[{id}]' does not exist"),
            ));
        }
    }
    let own = owners.is_empty() || owners.iter().any(|o| o == "self" || o == OWNER);
    let mut x = Xml::response("DescribeImagesResponse", c.request_id);
    x.open("imagesSet");
    if own {
        for i in s.images.values() {
            if (ids.is_empty() || ids.contains(&i.id)) && image_matches(i, &filters)? {
                x.image(i);
            }
        }
    }
    x.close("imagesSet");
    Ok((x.finish(), Vec::new()))
}

/// DeregisterImage: the image is forgotten (instances launched from it run on; the local
/// cloud leaves its recipe directory to whoever made it, as EC2 leaves the snapshots).
pub(super) fn deregister_image(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let id = q.required("ImageId")?.to_string();
    check_ids(std::slice::from_ref(&id), "ami", "AMIID")?;
    if !s.images.contains_key(&id) {
        return Err(ApiError::new(
            "InvalidAMIID.NotFound",
            format!("The image id '[{id}]' does not exist"),
        ));
    }
    if dry {
        return Err(dry_run_ok());
    }
    s.images.remove(&id);
    Ok(returned_true("DeregisterImageResponse", c))
}

pub(super) fn register_image(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let name = q.required("Name")?.to_string();
    if name.len() < 3 || name.len() > 128 {
        return Err(ApiError::new(
            "InvalidAMIName.Malformed",
            "AMI names must be 3 to 128 characters",
        ));
    }
    check_unique_name(s, &name)?;
    let location = q.required("ImageLocation")?.to_string();
    (c.check_location)(&location).map_err(|m| ApiError::new("InvalidParameterValue", m))?;
    let tags = q.tag_specifications("image")?;
    if dry {
        return Err(dry_run_ok());
    }
    Ok(add_image(
        s,
        c,
        "RegisterImageResponse",
        name,
        location,
        tags,
    ))
}

pub(super) fn create_image(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let instance_id = q.required("InstanceId")?.to_string();
    check_ids(std::slice::from_ref(&instance_id), "i", "InstanceID")?;
    let name = q.required("Name")?.to_string();
    let inst = live(s, &instance_id)?.clone();
    let source = s
        .images
        .get(&inst.image_id)
        .ok_or_else(|| {
            ApiError::new(
                "InvalidAMIID.NotFound",
                format!("The instance's image {} no longer exists", inst.image_id),
            )
        })?
        .clone();
    check_unique_name(s, &name)?;
    let tags = q.tag_specifications("image")?;
    if dry {
        return Err(dry_run_ok());
    }
    Ok(add_image(
        s,
        c,
        "CreateImageResponse",
        name,
        source.location,
        tags,
    ))
}

fn check_unique_name(s: &State, name: &str) -> Result<(), ApiError> {
    if s.images.values().any(|i| i.name == name) {
        return Err(ApiError::new(
            "InvalidAMIName.Duplicate",
            format!("AMI name {name} is already in use by another AMI"),
        ));
    }
    Ok(())
}

/// Adds an available image and answers with its id.
fn add_image(
    s: &mut State,
    c: &Ctx<'_>,
    root: &str,
    name: String,
    location: String,
    tags: Tags,
) -> Answer {
    let id = new_id("ami");
    s.images.insert(
        id.clone(),
        ImageRec {
            id: id.clone(),
            name,
            location,
            state: "available".into(),
            created_unix_ms: c.now_ms,
            tags,
        },
    );
    let mut x = Xml::response(root, c.request_id);
    x.leaf("imageId", &id);
    (x.finish(), Vec::new())
}
