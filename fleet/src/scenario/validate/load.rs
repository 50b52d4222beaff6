//! The `load` section: closed or open model, ramps and stages, resolved into a [`Profile`].

use super::*;

pub(super) fn users(v: &Spanned<Whole>) -> Res<u64> {
    v.value
        .in_range("users", 1, MAX_USERS)
        .map_err(|m| fault(v.referenced, m))
}

pub(super) fn rate(v: &Spanned<crate::scenario::value::Number>) -> Res<u64> {
    let r = v.value.0;
    if !r.is_finite() || r <= 0.0 || r > MAX_RATE {
        return Err(fault(
            v.referenced,
            format!("rate must be a number of requests per second above 0 and at most {MAX_RATE}"),
        ));
    }
    Ok((r * 1000.0).round().max(1.0) as u64)
}

pub(super) fn resolve_load(l: &Spanned<LoadFile>) -> Res<(Profile, u32)> {
    let at = l.referenced;
    let lf = &l.value;
    let both = "load takes either `users` (closed model) or `rate` (open model), not both";
    let load: Option<Load> = match (&lf.users, &lf.rate) {
        (Some(_), Some(r)) => return Err(fault(r.referenced, both)),
        (Some(u), None) => Some(Load::Users(users(u)?)),
        (None, Some(r)) => Some(Load::MilliRate(rate(r)?)),
        (None, None) => None,
    };
    let (model, start) = (load.map(Load::model), load.map(Load::amount));
    let max_connections = match &lf.max_connections {
        Some(m) => m
            .value
            .in_range("max_connections", 1, 10_000_000)
            .map_err(|e| fault(m.referenced, e))? as u32,
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let profile = match (&lf.stages, &lf.ramp) {
        (Some(stages), Some(ramp)) => {
            let _ = stages;
            return Err(fault(
                ramp.referenced,
                "use either `ramp` or `stages`, not both",
            ));
        }
        (None, ramp) => {
            let (Some(model), Some(value)) = (model, start) else {
                return Err(fault(
                    at,
                    "load needs `users: N` (closed model), `rate: R` (open model) or `stages`",
                ));
            };
            if let Some(r) = ramp
                && r.value.0 > MAX_DURATION
            {
                return Err(fault(r.referenced, "ramp must be at most 30 days"));
            }
            match ramp {
                Some(r) if !r.value.0.is_zero() => Profile {
                    model,
                    start: 0,
                    stages: vec![Stage {
                        duration_ms: r.value.0.as_millis() as u64,
                        target: value,
                    }],
                },
                _ => Profile::constant(model, value),
            }
        }
        (Some(stages), None) => {
            if stages.value.is_empty() || stages.value.len() > MAX_STAGES {
                return Err(fault(
                    stages.referenced,
                    format!("stages must be 1 to {MAX_STAGES}"),
                ));
            }
            let mut model = model;
            let mut out = Vec::new();
            for s in &stages.value {
                let (m, target) = match (&s.value.users, &s.value.rate) {
                    (Some(u), None) => (Model::Closed, users_or_zero(u)?),
                    (None, Some(r)) => (Model::Open, rate_or_zero(r)?),
                    _ => {
                        return Err(fault(
                            s.referenced,
                            "each stage needs exactly one of `users` or `rate`",
                        ));
                    }
                };
                if model.is_some_and(|known| known != m) {
                    return Err(fault(
                        s.referenced,
                        "all stages must use the same model as `load` (`users` or `rate`)",
                    ));
                }
                model = Some(m);
                let d = s.value.duration.value.0.as_millis() as u64;
                if d == 0 || s.value.duration.value.0 > MAX_DURATION {
                    return Err(fault(
                        s.value.duration.referenced,
                        "a stage must last longer than zero and at most 30 days",
                    ));
                }
                out.push(Stage {
                    duration_ms: d,
                    target,
                });
            }
            Profile {
                model: model.unwrap_or(Model::Closed),
                start: start.unwrap_or(0),
                stages: out,
            }
        }
    };
    if profile.peak() == 0 {
        return Err(fault(at, "the load never rises above zero"));
    }
    Ok((profile, max_connections))
}

pub(super) fn users_or_zero(v: &Spanned<Whole>) -> Res<u64> {
    if v.value.value == Some(0) {
        Ok(0)
    } else {
        users(v)
    }
}

pub(super) fn rate_or_zero(v: &Spanned<crate::scenario::value::Number>) -> Res<u64> {
    if v.value.0 == 0.0 { Ok(0) } else { rate(v) }
}
