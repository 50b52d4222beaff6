//! DescribeInstanceStatus: the status checks of instances (EC2 API reference,
//! DescribeInstanceStatus). Without `IncludeAllInstances=true` only running instances are
//! listed. The instance check is `initializing` until the instance's boot started its slaves
//! (the units the boot step asked for), then `ok`; the system check is `ok` while it runs. So
//! `aws ec2 wait instance-status-ok` and boto3's `instance_status_ok` waiter work.

use super::*;

/// The filters served (EC2 documents these for DescribeInstanceStatus).
const STATUS_FILTERS: &[&str] = &[
    "availability-zone",
    "instance-state-name",
    "instance-state-code",
    "instance-status.status",
    "instance-status.reachability",
    "system-status.status",
    "system-status.reachability",
];

/// (instance check, system check) of an instance: `ok`, `initializing` or `not-applicable`.
fn checks(i: &InstanceRec) -> (&'static str, &'static str) {
    match i.state {
        InstanceState::Running if i.units_started => ("ok", "ok"),
        InstanceState::Running => ("initializing", "ok"),
        _ => ("not-applicable", "not-applicable"),
    }
}

/// A check's `reachability` detail.
fn reachability(status: &str) -> &'static str {
    match status {
        "ok" => "passed",
        "initializing" => "initializing",
        _ => "not-applicable",
    }
}

pub(super) fn describe_instance_status(
    q: &Query,
    s: &State,
    c: &Ctx<'_>,
) -> Result<Answer, ApiError> {
    let ids = q.list("InstanceId")?;
    check_ids(&ids, "i", "InstanceID")?;
    for id in &ids {
        live(s, id)?;
    }
    let filters = q.filters()?;
    for f in &filters {
        if !STATUS_FILTERS.contains(&f.name.as_str()) {
            return Err(invalid_filter(&f.name));
        }
    }
    let all = q.flag("IncludeAllInstances")?;
    let zone = zone(c.region);
    let mut x = Xml::response("DescribeInstanceStatusResponse", c.request_id);
    x.open("instanceStatusSet");
    for i in s.instances.values() {
        if !ids.is_empty() && !ids.contains(&i.id) {
            continue;
        }
        if !all && i.state != InstanceState::Running {
            continue;
        }
        let (instance, system) = checks(i);
        let matches = filters.iter().all(|f| match f.name.as_str() {
            "availability-zone" => any(f, &zone),
            "instance-state-name" => any(f, i.state.name()),
            "instance-state-code" => any(f, &i.state.code().to_string()),
            "instance-status.status" => any(f, instance),
            "instance-status.reachability" => any(f, reachability(instance)),
            "system-status.status" => any(f, system),
            _ => any(f, reachability(system)),
        });
        if !matches {
            continue;
        }
        x.open("item")
            .leaf("instanceId", &i.id)
            .leaf("availabilityZone", &zone)
            .state("instanceState", i.state);
        for (tag, status) in [("systemStatus", system), ("instanceStatus", instance)] {
            x.open(tag)
                .leaf("status", status)
                .open("details")
                .open("item")
                .leaf("name", "reachability")
                .leaf("status", reachability(status))
                .close("item")
                .close("details")
                .close(tag);
        }
        x.close("item");
    }
    x.close("instanceStatusSet");
    Ok((x.finish(), Vec::new()))
}
