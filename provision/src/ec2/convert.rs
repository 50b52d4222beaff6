//! Between the SDK's types and ours: tags, filters, instances, images, state changes, and the
//! reading of SDK error chains.

use aws_sdk_ec2::types::{Filter, Tag};

use crate::cloud::{Image, Instance, InstanceState, StateChange, Tags};

/// The innermost cause of an error, on one line (the SDK's full chain runs to kilobytes).
pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().replace('\n', " ")
}

/// Whether an error's chain says that credentials could not be loaded.
pub(super) fn about_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains("loading credentials")
            || text.contains("provided credentials")
            || text.contains("no credentials")
            || text.contains("credentials provider was not enabled")
        {
            return true;
        }
        cause = c.source();
    }
    false
}

pub(super) fn tag_filters(tags: &Tags) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect()
}

pub(super) fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub(super) fn our_tags(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

pub(super) fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let state = i
        .state()
        .and_then(|s| s.name())
        .and_then(|n| InstanceState::from_name(n.as_str()))
        .unwrap_or(InstanceState::Pending);
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        state,
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        launch_time: i.launch_time().and_then(|t| {
            t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
                .ok()
        }),
        private_ip: i.private_ip_address().map(str::to_string),
        tags: our_tags(i.tags()),
    }
}

pub(super) fn change(c: &aws_sdk_ec2::types::InstanceStateChange) -> StateChange {
    let st = |s: Option<&aws_sdk_ec2::types::InstanceState>| {
        s.and_then(|s| s.name())
            .and_then(|n| InstanceState::from_name(n.as_str()))
            .unwrap_or(InstanceState::Pending)
    };
    StateChange {
        id: c.instance_id().unwrap_or_default().to_string(),
        previous: st(c.previous_state()),
        current: st(c.current_state()),
    }
}

pub(super) fn image(i: &aws_sdk_ec2::types::Image) -> Image {
    Image {
        id: i.image_id().unwrap_or_default().to_string(),
        name: i.name().unwrap_or_default().to_string(),
        state: i
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        created: i.creation_date().map(str::to_string),
        location: i.image_location().map(str::to_string),
        tags: our_tags(i.tags()),
    }
}
