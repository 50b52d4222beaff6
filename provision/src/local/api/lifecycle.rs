//! Start, Stop and TerminateInstances: state transitions with the codes EC2 uses.

use super::*;

pub(super) type Transition = fn(&mut InstanceRec, &Ctx<'_>) -> Result<Option<Effect>, ApiError>;

pub(super) fn change(
    q: &Query,
    s: &mut State,
    c: &Ctx<'_>,
    dry: bool,
    root: &str,
    t: Transition,
) -> Result<Answer, ApiError> {
    let ids = q.required_list("InstanceId")?;
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

pub(super) fn start(i: &mut InstanceRec, c: &Ctx<'_>) -> Result<Option<Effect>, ApiError> {
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

pub(super) fn stop(i: &mut InstanceRec, c: &Ctx<'_>) -> Result<Option<Effect>, ApiError> {
    match i.state {
        InstanceState::Pending | InstanceState::Running => {
            i.state = InstanceState::Stopping;
            i.reason = format!("User initiated ({})", iso8601(c.now_ms));
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

pub(super) fn terminate(i: &mut InstanceRec, c: &Ctx<'_>) -> Result<Option<Effect>, ApiError> {
    match i.state {
        InstanceState::Terminated | InstanceState::ShuttingDown => Ok(None),
        _ => {
            i.state = InstanceState::ShuttingDown;
            i.reason = format!("User initiated ({})", iso8601(c.now_ms));
            Ok(Some(Effect::Terminate(i.id.clone())))
        }
    }
}
