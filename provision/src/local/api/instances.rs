//! DescribeInstances, RunInstances (capacity faults, client tokens, tag specifications) and
//! ModifyInstanceAttribute.

use super::*;

pub(super) fn live<'a>(s: &'a State, id: &str) -> Result<&'a InstanceRec, ApiError> {
    s.instances.get(id).ok_or_else(|| {
        ApiError::new(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{id}' does not exist"),
        )
    })
}

pub(super) fn reservations<'a>(
    x: &mut Xml,
    list: impl Iterator<Item = &'a InstanceRec>,
    region: &str,
) {
    let mut by_res: BTreeMap<&str, Vec<&InstanceRec>> = BTreeMap::new();
    for i in list {
        by_res.entry(i.reservation_id.as_str()).or_default().push(i);
    }
    x.open("reservationSet");
    for (rid, items) in by_res {
        x.open("item")
            .leaf("reservationId", rid)
            .leaf("ownerId", OWNER);
        x.open("groupSet").close("groupSet").open("instancesSet");
        for i in items {
            x.instance(i, region);
        }
        x.close("instancesSet").close("item");
    }
    x.close("reservationSet");
}

pub(super) fn describe_instances(q: &Query, s: &State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
    let ids = q.list("InstanceId")?;
    check_ids(&ids, "i", "InstanceID")?;
    for id in &ids {
        live(s, id)?;
    }
    let filters = q.filters()?;
    check_filters(&filters, INSTANCE_FILTERS)?;
    let max = q.int("MaxResults")?;
    if max.is_some_and(|m| !(5..=1000).contains(&m)) {
        return Err(ApiError::new(
            "InvalidParameterValue",
            "MaxResults must be between 5 and 1000",
        ));
    }
    if max.is_some() && !ids.is_empty() {
        return Err(ApiError::new(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        ));
    }
    let start: usize = match q.get("NextToken") {
        None | Some("") => 0,
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::new("InvalidParameterValue", "Invalid NextToken"))?,
    };
    let mut matched = Vec::new();
    for i in s.instances.values() {
        if (ids.is_empty() || ids.contains(&i.id)) && instance_matches(i, &filters, c.region)? {
            matched.push(i);
        }
    }
    let end = max.map_or(matched.len(), |m| (start + m as usize).min(matched.len()));
    let page = matched.get(start..end).unwrap_or_default();
    let mut x = Xml::response("DescribeInstancesResponse", c.request_id);
    reservations(&mut x, page.iter().copied(), c.region);
    if end < matched.len() {
        x.leaf("nextToken", &end.to_string());
    }
    Ok((x.finish(), Vec::new()))
}

pub(super) fn up_count(s: &State) -> usize {
    s.instances.values().filter(|i| i.state.is_up()).count()
}

pub(super) fn run_instances(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let image_id = q.required("ImageId")?.to_string();
    check_ids(std::slice::from_ref(&image_id), "ami", "AMIID")?;
    let min = q.required_int("MinCount")?;
    let max = q.required_int("MaxCount")?;
    if min < 1 || max < min || max > 1000 {
        return Err(ApiError::new(
            "InvalidParameterValue",
            format!(
                "MinCount ({min}) and MaxCount ({max}) must satisfy 1 <= MinCount <= MaxCount <= 1000"
            ),
        ));
    }
    let instance_type = q
        .get("InstanceType")
        .unwrap_or(types::DEFAULT_TYPE)
        .to_string();
    if types::vcpus(&instance_type).is_none() {
        let known: Vec<_> = types::names().collect();
        return Err(ApiError::new(
            "InvalidParameterValue",
            format!(
                "Invalid value '{instance_type}' for InstanceType (the local cloud knows {})",
                known.join(", ")
            ),
        ));
    }
    let image = s.images.get(&image_id).ok_or_else(|| {
        ApiError::new(
            "InvalidAMIID.NotFound",
            format!("The image id '[{image_id}]' does not exist"),
        )
    })?;
    if image.state != "available" {
        return Err(ApiError::new(
            "InvalidAMIID.Unavailable",
            format!("The image {image_id} is not available"),
        ));
    }
    let user_data = match q.get("UserData") {
        None => String::new(),
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    ApiError::new(
                        "InvalidParameterValue",
                        "Invalid BASE64 encoding of user data",
                    )
                })?;
            if raw.len() > MAX_USER_DATA {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    "User data is limited to 16384 bytes",
                ));
            }
            String::from_utf8(raw).map_err(|_| {
                ApiError::new("InvalidParameterValue", "User data must be UTF-8 text")
            })?
        }
    };
    let tags = q.tag_specifications("instance")?;
    if tags.len() > MAX_TAGS {
        return Err(ApiError::new(
            "TagLimitExceeded",
            "The maximum number of tags per resource is 50",
        ));
    }
    let token = q.get("ClientToken").unwrap_or("").to_string();
    if token.len() > 64 {
        return Err(ApiError::new(
            "InvalidParameterValue",
            "ClientToken must be at most 64 characters",
        ));
    }
    if dry {
        return Err(dry_run_ok());
    }
    // Idempotency: the same token answers with the same instances, launching nothing.
    if let Some(ids) = s.tokens.get(&token).filter(|_| !token.is_empty()) {
        let first = ids.first().and_then(|id| s.instances.get(id));
        if first.is_some_and(|i| i.image_id != image_id) {
            return Err(ApiError::new(
                "IdempotentParameterMismatch",
                "The client token was already used with other parameters",
            ));
        }
        let list: Vec<&InstanceRec> = ids.iter().filter_map(|id| s.instances.get(id)).collect();
        let rid = list
            .first()
            .map_or_else(|| new_id("r"), |i| i.reservation_id.clone());
        return Ok((run_answer(&rid, &list, c), Vec::new()));
    }
    if Faults::hit(c.faults.capacity_errors) {
        return Err(insufficient(&instance_type));
    }
    let mut count = max as usize;
    if let Some(limit) = c.faults.capacity_limit {
        let room = (limit as usize).saturating_sub(up_count(s));
        if room < min as usize {
            return Err(insufficient(&instance_type));
        }
        count = count.min(room);
    }
    let rid = new_id("r");
    let mut ids = Vec::new();
    for n in 0..count {
        let id = new_id("i");
        let ip = s.next_private_ip();
        s.instances.insert(
            id.clone(),
            InstanceRec {
                id: id.clone(),
                reservation_id: rid.clone(),
                image_id: image_id.clone(),
                instance_type: instance_type.clone(),
                state: InstanceState::Pending,
                reason: String::new(),
                launch_unix_ms: c.now_ms,
                client_token: token.clone(),
                launch_index: n as u32,
                user_data: user_data.clone(),
                tags: tags.clone(),
                imds_port: None,
                pgids: Vec::new(),
                private_ip: ip,
                terminated_unix_ms: None,
                units_started: false,
            },
        );
        ids.push(id);
    }
    if !token.is_empty() {
        s.tokens.insert(token, ids.clone());
    }
    let list: Vec<&InstanceRec> = ids.iter().filter_map(|id| s.instances.get(id)).collect();
    let answer = run_answer(&rid, &list, c);
    Ok((answer, ids.into_iter().map(Effect::Boot).collect()))
}

pub(super) fn insufficient(t: &str) -> ApiError {
    ApiError::new(
        "InsufficientInstanceCapacity",
        format!("We currently do not have sufficient {t} capacity in the Availability Zone you requested."),
    )
    .with_status(500)
}

pub(super) fn run_answer(rid: &str, list: &[&InstanceRec], c: &Ctx<'_>) -> String {
    let mut x = Xml::response("RunInstancesResponse", c.request_id);
    x.leaf("reservationId", rid).leaf("ownerId", OWNER);
    x.open("groupSet").close("groupSet").open("instancesSet");
    for i in list {
        x.instance(i, c.region);
    }
    x.close("instancesSet");
    x.finish()
}

/// `UserData.Value` (base64) or `InstanceType.Value` of a stopped instance.
pub(super) fn modify_instance_attribute(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
) -> Result<Answer, ApiError> {
    let id = q.required("InstanceId")?.to_string();
    check_ids(std::slice::from_ref(&id), "i", "InstanceID")?;
    let inst = live(s, &id)?;
    let user_data = match q.get("UserData.Value") {
        None => None,
        Some(b64) => {
            let b64d = |t: &[u8]| base64::engine::general_purpose::STANDARD.decode(t);
            let once = b64d(b64.trim().as_bytes()).map_err(|_| {
                ApiError::new(
                    "InvalidParameterValue",
                    "Invalid BASE64 encoding of user data",
                )
            })?;
            // The attribute value is itself base64 (as EC2 and moto expect from SDKs, which
            // encode the blob once more); a client that encoded only once is accepted too.
            let raw = b64d(&once).unwrap_or(once);
            if raw.len() > MAX_USER_DATA {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    "User data is limited to 16384 bytes",
                ));
            }
            Some(String::from_utf8(raw).map_err(|_| {
                ApiError::new("InvalidParameterValue", "User data must be UTF-8 text")
            })?)
        }
    };
    let instance_type = q.get("InstanceType.Value").map(str::to_string);
    if let Some(t) = &instance_type
        && types::vcpus(t).is_none()
    {
        return Err(ApiError::new(
            "InvalidParameterValue",
            format!("Invalid value '{t}' for InstanceType"),
        ));
    }
    if user_data.is_none() && instance_type.is_none() {
        return Err(ApiError::new(
            "MissingParameter",
            "The local cloud modifies UserData or InstanceType",
        ));
    }
    if inst.state != InstanceState::Stopped {
        return Err(ApiError::new(
            "IncorrectInstanceState",
            format!("The instance '{id}' is not in the 'stopped' state."),
        ));
    }
    if dry {
        return Err(dry_run_ok());
    }
    let inst = s.instances.get_mut(&id).expect("checked above");
    if let Some(u) = user_data {
        inst.user_data = u;
    }
    if let Some(t) = instance_type {
        inst.instance_type = t;
    }
    Ok(returned_true("ModifyInstanceAttributeResponse", c))
}
