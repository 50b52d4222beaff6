//! The EC2 actions the local cloud serves, as pure functions of the state: each returns the
//! XML answer and the [`Effect`]s the runtime must carry out (boot, stop, terminate).

use std::collections::BTreeMap;

use base64::Engine;

use crate::cloud::{InstanceState, Tags};

use super::faults::Faults;
use super::query::{ApiError, Filter, Query, glob};
use super::state::{ImageRec, InstanceRec, OWNER, State, new_id};
use super::types;
use super::xml::Xml;

/// What the runtime must do after a state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Boot(String),
    Stop(String),
    Terminate(String),
}

/// Everything an action needs besides the state.
pub struct Ctx<'a> {
    pub region: &'a str,
    pub now_ms: u64,
    pub request_id: &'a str,
    pub faults: &'a Faults,
    /// Checks an image location (the local cloud: a recipe directory).
    pub check_location: &'a dyn Fn(&str) -> Result<(), String>,
}

pub type Answer = (String, Vec<Effect>);

/// Most user-data accepted (EC2: 16 KiB before encoding).
const MAX_USER_DATA: usize = 16 * 1024;
/// Most tags per resource.
const MAX_TAGS: usize = 50;

pub fn handle(q: &Query, s: &mut State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
    let dry = q.flag("DryRun")?;
    let out = match q.action.as_str() {
        "DescribeImages" => describe_images(q, s, c)?,
        "RegisterImage" => register_image(q, s, c, dry)?,
        "CreateImage" => create_image(q, s, c, dry)?,
        "DescribeInstances" => describe_instances(q, s, c)?,
        "RunInstances" => run_instances(q, s, c, dry)?,
        "StartInstances" => change(q, s, c, dry, "StartInstancesResponse", start)?,
        "StopInstances" => change(q, s, c, dry, "StopInstancesResponse", stop)?,
        "TerminateInstances" => change(q, s, c, dry, "TerminateInstancesResponse", terminate)?,
        "CreateTags" => create_tags(q, s, c, dry)?,
        "DeleteTags" => delete_tags(q, s, c, dry)?,
        "DescribeTags" => describe_tags(q, s, c)?,
        "ModifyInstanceAttribute" => modify_instance_attribute(q, s, c, dry)?,
        other => {
            return Err(ApiError::new(
                "InvalidAction",
                format!(
                    "The action {other} is not valid for this web service (the local cloud serves DescribeImages, RegisterImage, CreateImage, DescribeInstances, RunInstances, StartInstances, StopInstances, TerminateInstances, CreateTags, DeleteTags, DescribeTags, ModifyInstanceAttribute)"
                ),
            ));
        }
    };
    Ok(out)
}

fn dry_run_ok() -> ApiError {
    ApiError::new(
        "DryRunOperation",
        "Request would have succeeded, but DryRun flag is set.",
    )
    .with_status(412)
}

fn tag_match(tags: &Tags, f: &Filter) -> Option<bool> {
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

fn any(f: &Filter, value: &str) -> bool {
    f.values.iter().any(|p| glob(p, value))
}

fn invalid_filter(name: &str) -> ApiError {
    ApiError::new(
        "InvalidParameterValue",
        format!("The filter '{name}' is invalid"),
    )
}

const IMAGE_FILTERS: &[&str] = &[
    "image-id",
    "name",
    "state",
    "owner-id",
    "is-public",
    "image-type",
    "architecture",
];
const INSTANCE_FILTERS: &[&str] = &[
    "instance-state-name",
    "instance-state-code",
    "instance-id",
    "image-id",
    "instance-type",
    "reservation-id",
    "client-token",
    "private-ip-address",
];
const TAG_FILTERS: &[&str] = &["resource-id", "resource-type", "key", "value"];

/// Refuses unknown filter names even when nothing would be compared.
fn check_filters(filters: &[Filter], known: &[&str]) -> Result<(), ApiError> {
    for f in filters {
        let tagged = f.name.starts_with("tag:") || f.name == "tag-key" || f.name == "tag-value";
        if !tagged && !known.contains(&f.name.as_str()) {
            return Err(invalid_filter(&f.name));
        }
    }
    Ok(())
}

fn image_matches(i: &ImageRec, filters: &[Filter]) -> Result<bool, ApiError> {
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

fn check_ids(ids: &[String], prefix: &str, what: &str) -> Result<(), ApiError> {
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

fn describe_images(q: &Query, s: &State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
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

fn register_image(q: &Query, s: &mut State, c: &Ctx<'_>, dry: bool) -> Result<Answer, ApiError> {
    let name = q.required("Name")?.to_string();
    if name.len() < 3 || name.len() > 128 {
        return Err(ApiError::new(
            "InvalidAMIName.Malformed",
            "AMI names must be 3 to 128 characters",
        ));
    }
    if s.images.values().any(|i| i.name == name) {
        return Err(ApiError::new(
            "InvalidAMIName.Duplicate",
            format!("AMI name {name} is already in use by another AMI"),
        ));
    }
    let location = q.required("ImageLocation")?.to_string();
    (c.check_location)(&location).map_err(|m| ApiError::new("InvalidParameterValue", m))?;
    let tags = q.tag_specifications("image")?;
    if dry {
        return Err(dry_run_ok());
    }
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
    let mut x = Xml::response("RegisterImageResponse", c.request_id);
    x.leaf("imageId", &id);
    Ok((x.finish(), Vec::new()))
}

fn create_image(q: &Query, s: &mut State, c: &Ctx<'_>, dry: bool) -> Result<Answer, ApiError> {
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
    if s.images.values().any(|i| i.name == name) {
        return Err(ApiError::new(
            "InvalidAMIName.Duplicate",
            format!("AMI name {name} is already in use by another AMI"),
        ));
    }
    let tags = q.tag_specifications("image")?;
    if dry {
        return Err(dry_run_ok());
    }
    let id = new_id("ami");
    s.images.insert(
        id.clone(),
        ImageRec {
            id: id.clone(),
            name,
            location: source.location,
            state: "available".into(),
            created_unix_ms: c.now_ms,
            tags,
        },
    );
    let mut x = Xml::response("CreateImageResponse", c.request_id);
    x.leaf("imageId", &id);
    Ok((x.finish(), Vec::new()))
}

fn live<'a>(s: &'a State, id: &str) -> Result<&'a InstanceRec, ApiError> {
    s.instances.get(id).ok_or_else(|| {
        ApiError::new(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{id}' does not exist"),
        )
    })
}

fn instance_matches(i: &InstanceRec, filters: &[Filter]) -> Result<bool, ApiError> {
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

fn reservations<'a>(x: &mut Xml, list: impl Iterator<Item = &'a InstanceRec>, region: &str) {
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

fn describe_instances(q: &Query, s: &State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
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
        if (ids.is_empty() || ids.contains(&i.id)) && instance_matches(i, &filters)? {
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

fn up_count(s: &State) -> usize {
    s.instances.values().filter(|i| i.state.is_up()).count()
}

fn run_instances(q: &Query, s: &mut State, c: &Ctx<'_>, dry: bool) -> Result<Answer, ApiError> {
    let image_id = q.required("ImageId")?.to_string();
    check_ids(std::slice::from_ref(&image_id), "ami", "AMIID")?;
    let min = q.int("MinCount")?.ok_or_else(|| {
        ApiError::new(
            "MissingParameter",
            "The request must contain the parameter MinCount",
        )
    })?;
    let max = q.int("MaxCount")?.ok_or_else(|| {
        ApiError::new(
            "MissingParameter",
            "The request must contain the parameter MaxCount",
        )
    })?;
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

fn insufficient(t: &str) -> ApiError {
    ApiError::new(
        "InsufficientInstanceCapacity",
        format!("We currently do not have sufficient {t} capacity in the Availability Zone you requested."),
    )
    .with_status(500)
}

fn run_answer(rid: &str, list: &[&InstanceRec], c: &Ctx<'_>) -> String {
    let mut x = Xml::response("RunInstancesResponse", c.request_id);
    x.leaf("reservationId", rid).leaf("ownerId", OWNER);
    x.open("groupSet").close("groupSet").open("instancesSet");
    for i in list {
        x.instance(i, c.region);
    }
    x.close("instancesSet");
    x.finish()
}

type Transition = fn(&mut InstanceRec, &Ctx<'_>) -> Result<Option<Effect>, ApiError>;

fn change(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
    root: &str,
    t: Transition,
) -> Result<Answer, ApiError> {
    let ids = q.list("InstanceId")?;
    if ids.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter InstanceId",
        ));
    }
    check_ids(&ids, "i", "InstanceID")?;
    for id in &ids {
        live(s, id)?;
    }
    if dry {
        return Err(dry_run_ok());
    }
    if root == "StartInstancesResponse" {
        if Faults::hit(c.faults.capacity_errors) {
            return Err(insufficient("requested"));
        }
        if let Some(limit) = c.faults.capacity_limit {
            let starting = ids
                .iter()
                .filter(|id| s.instances[*id].state == InstanceState::Stopped)
                .count();
            if up_count(s) + starting > limit as usize {
                return Err(insufficient("requested"));
            }
        }
    }
    // Check every transition first: one refused instance refuses the whole call.
    let mut staged = Vec::new();
    for id in &ids {
        let mut copy = s.instances[id].clone();
        let before = copy.state;
        let effect = t(&mut copy, c)?;
        staged.push((id.clone(), before, copy, effect));
    }
    let mut x = Xml::response(root, c.request_id);
    x.open("instancesSet");
    let mut effects = Vec::new();
    for (id, before, rec, effect) in staged {
        x.open("item")
            .leaf("instanceId", &id)
            .state("currentState", rec.state)
            .state("previousState", before)
            .close("item");
        s.instances.insert(id, rec);
        effects.extend(effect);
    }
    x.close("instancesSet");
    Ok((x.finish(), effects))
}

fn start(i: &mut InstanceRec, c: &Ctx<'_>) -> Result<Option<Effect>, ApiError> {
    match i.state {
        InstanceState::Stopped => {
            i.state = InstanceState::Pending;
            i.reason.clear();
            // As EC2: the launch time is the time of the last start.
            i.launch_unix_ms = c.now_ms;
            Ok(Some(Effect::Boot(i.id.clone())))
        }
        InstanceState::Pending | InstanceState::Running => Ok(None),
        other => Err(ApiError::new(
            "IncorrectInstanceState",
            format!(
                "The instance '{}' is not in a state from which it can be started ({other}).",
                i.id
            ),
        )),
    }
}

fn stop(i: &mut InstanceRec, c: &Ctx<'_>) -> Result<Option<Effect>, ApiError> {
    match i.state {
        InstanceState::Pending | InstanceState::Running => {
            i.state = InstanceState::Stopping;
            i.reason = format!("User initiated ({})", super::xml::iso8601(c.now_ms));
            Ok(Some(Effect::Stop(i.id.clone())))
        }
        InstanceState::Stopping | InstanceState::Stopped => Ok(None),
        other => Err(ApiError::new(
            "IncorrectInstanceState",
            format!(
                "The instance '{}' is not in a state from which it can be stopped ({other}).",
                i.id
            ),
        )),
    }
}

fn terminate(i: &mut InstanceRec, c: &Ctx<'_>) -> Result<Option<Effect>, ApiError> {
    match i.state {
        InstanceState::Terminated | InstanceState::ShuttingDown => Ok(None),
        _ => {
            i.state = InstanceState::ShuttingDown;
            i.reason = format!("User initiated ({})", super::xml::iso8601(c.now_ms));
            Ok(Some(Effect::Terminate(i.id.clone())))
        }
    }
}

/// The tags of a resource by id (instance or image).
fn tags_of<'a>(s: &'a mut State, id: &str) -> Result<&'a mut Tags, ApiError> {
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

fn create_tags(q: &Query, s: &mut State, c: &Ctx<'_>, dry: bool) -> Result<Answer, ApiError> {
    let ids = q.list("ResourceId")?;
    if ids.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter ResourceId",
        ));
    }
    let tags = q.tags("Tag")?;
    if tags.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter Tag",
        ));
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
    let mut x = Xml::response("CreateTagsResponse", c.request_id);
    x.leaf("return", "true");
    Ok((x.finish(), Vec::new()))
}

fn delete_tags(q: &Query, s: &mut State, c: &Ctx<'_>, dry: bool) -> Result<Answer, ApiError> {
    let ids = q.list("ResourceId")?;
    if ids.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter ResourceId",
        ));
    }
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
    let mut x = Xml::response("DeleteTagsResponse", c.request_id);
    x.leaf("return", "true");
    Ok((x.finish(), Vec::new()))
}

fn describe_tags(q: &Query, s: &State, c: &Ctx<'_>) -> Result<Answer, ApiError> {
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

/// `UserData.Value` (base64) or `InstanceType.Value` of a stopped instance.
fn modify_instance_attribute(
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
    let mut x = Xml::response("ModifyInstanceAttributeResponse", c.request_id);
    x.leaf("return", "true");
    Ok((x.finish(), Vec::new()))
}

#[cfg(test)]
mod tests;
