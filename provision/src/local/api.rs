//! The EC2 actions the local cloud serves, as pure functions of the state: each returns the
//! XML answer and the [`Effect`]s the runtime must carry out (boot, stop, terminate).

use std::collections::BTreeMap;

use base64::Engine;

use crate::cloud::{InstanceState, Tags};

use super::faults::Faults;
use super::query::{ApiError, Filter, Query, glob, missing};
use super::state::{ImageRec, InstanceRec, OWNER, State, new_id};
use super::types;
use super::xml::{Xml, iso8601};

mod filter;
mod images;
mod instances;
mod lifecycle;
mod status;
mod tags;

use filter::{
    IMAGE_FILTERS, INSTANCE_FILTERS, TAG_FILTERS, any, check_filters, check_ids, image_matches,
    instance_matches, invalid_filter, zone,
};
use images::{create_image, deregister_image, describe_images, register_image};
use instances::{describe_instances, modify_instance_attribute, run_instances};
use instances::{insufficient, live, up_count};
use lifecycle::{change, start, stop, terminate};
use status::describe_instance_status;
use tags::{create_tags, delete_tags, describe_tags};

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
        "DeregisterImage" => deregister_image(q, s, c, dry)?,
        "DescribeInstances" => describe_instances(q, s, c)?,
        "RunInstances" => run_instances(q, s, c, dry)?,
        "StartInstances" => change(q, s, c, dry, "StartInstancesResponse", start)?,
        "StopInstances" => change(q, s, c, dry, "StopInstancesResponse", stop)?,
        "TerminateInstances" => change(q, s, c, dry, "TerminateInstancesResponse", terminate)?,
        "CreateTags" => create_tags(q, s, c, dry)?,
        "DeleteTags" => delete_tags(q, s, c, dry)?,
        "DescribeTags" => describe_tags(q, s, c)?,
        "ModifyInstanceAttribute" => modify_instance_attribute(q, s, c, dry)?,
        "DescribeInstanceTypes" => types::describe(q, c)?,
        "DescribeInstanceStatus" => describe_instance_status(q, s, c)?,
        other => {
            return Err(ApiError::new(
                "InvalidAction",
                format!(
                    "The action {other} is not valid for this web service (the local cloud serves DescribeImages, RegisterImage, CreateImage, DescribeInstances, RunInstances, StartInstances, StopInstances, TerminateInstances, CreateTags, DeleteTags, DescribeTags, ModifyInstanceAttribute, DescribeInstanceTypes, DescribeInstanceStatus, DeregisterImage)"
                ),
            ));
        }
    };
    Ok(out)
}

/// The answer of actions that only say they succeeded (`<return>true</return>`).
fn returned_true(root: &str, c: &Ctx<'_>) -> Answer {
    let mut x = Xml::response(root, c.request_id);
    x.leaf("return", "true");
    (x.finish(), Vec::new())
}

fn dry_run_ok() -> ApiError {
    ApiError::new(
        "DryRunOperation",
        "Request would have succeeded, but DryRun flag is set.",
    )
    .with_status(412)
}
#[cfg(test)]
mod tests;
