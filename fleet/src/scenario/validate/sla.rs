//! The `sla` section: rules over a metric, an endpoint or the whole run, and a window.

use super::*;

/// `endpoints`: the names a rule may scope to (requests, flow steps, browse groups);
/// `targets`: the base URLs of `targets:` (empty with one `target`).
pub(super) fn resolve_sla(
    r: &Spanned<SlaFile>,
    endpoints: &BTreeSet<String>,
    targets: &[String],
) -> Res<SlaRule> {
    let s = &r.value;
    let metric = Metric::from_name(s.metric.value.trim()).ok_or_else(|| {
        let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        fault(
            s.metric.referenced,
            format!(
                "unknown metric `{}`: expected one of {}",
                s.metric.value,
                names.join(", ")
            ),
        )
    })?;
    let (threshold, is_max) = match (&s.max, &s.min) {
        (Some(t), None) => (t, true),
        (None, Some(t)) => (t, false),
        _ => {
            return Err(fault(
                r.referenced,
                "an SLA rule needs exactly one of `max` or `min`",
            ));
        }
    };
    let value = match (&threshold.value, metric) {
        (Threshold::Duration(d), m) if m.is_latency() => d.as_secs_f64() * 1000.0,
        (Threshold::Number(n), m) if m.is_latency() => *n,
        (Threshold::Percent(p), Metric::ErrorRate | Metric::InjectorCpu)
        | (Threshold::Number(p), Metric::ErrorRate | Metric::InjectorCpu) => *p,
        (Threshold::Number(n), Metric::Rps) => *n,
        (_, m) => {
            let want = match m {
                Metric::ErrorRate => "a percentage such as `1%`",
                Metric::InjectorCpu => "a percentage such as `90%`",
                Metric::Rps => "a number of requests per second",
                _ => "a duration such as `800ms`",
            };
            return Err(fault(
                threshold.referenced,
                format!("threshold of `{}` must be {want}", m.name()),
            ));
        }
    };
    if !value.is_finite() || value < 0.0 {
        return Err(fault(
            threshold.referenced,
            "threshold must be a finite number ≥ 0",
        ));
    }
    let window = match &s.window {
        None => DEFAULT_WINDOW,
        Some(w) => {
            if !(Duration::from_secs(1)..=MAX_PAUSE).contains(&w.value.0) {
                return Err(fault(w.referenced, "window must be between 1s and 1h"));
            }
            w.value.0
        }
    };
    if metric == Metric::InjectorCpu
        && let Some(req) = &s.request
    {
        return Err(fault(
            req.referenced,
            "`injector_cpu` is a property of the injectors, not of a request: remove `request`",
        ));
    }
    if metric == Metric::InjectorCpu && value > 100.0 {
        return Err(fault(
            threshold.referenced,
            "threshold of `injector_cpu` must be a percentage between 0% and 100%",
        ));
    }
    if let Some(req) = &s.request
        && !endpoints.contains(&req.value)
    {
        let names: Vec<_> = endpoints.iter().map(String::as_str).collect();
        return Err(fault(
            req.referenced,
            format!(
                "unknown request `{}`: expected a request, step or browse group: {}",
                req.value,
                names.join(", ")
            ),
        ));
    }
    let target = match &s.target {
        None => None,
        Some(t) => Some(resolve_target(t, metric, s.request.is_some(), targets)?),
    };
    Ok(SlaRule {
        target,
        metric,
        bound: if is_max {
            Bound::Max(value)
        } else {
            Bound::Min(value)
        },
        window,
        request: s.request.as_ref().map(|r| r.value.clone()),
        abort: s.abort.unwrap_or(true),
    })
}

/// A rule's `target`: one of the scenario's `targets:` (compared as parsed URLs, so
/// `http://a` and `http://a:80/` are the same), for a metric of requests, not with `request`.
fn resolve_target(
    t: &Spanned<String>,
    metric: Metric,
    with_request: bool,
    targets: &[String],
) -> Res<String> {
    if metric == Metric::InjectorCpu {
        return Err(fault(
            t.referenced,
            "`injector_cpu` is a property of the injectors, not of a target: remove `target`",
        ));
    }
    if with_request {
        return Err(fault(
            t.referenced,
            "a rule takes `request` or `target`, not both (figures are kept by request and by target, not by both)",
        ));
    }
    if targets.is_empty() {
        return Err(fault(
            t.referenced,
            "`target` scopes a rule to one of `targets`; this scenario has a single `target` (leave `target` out)",
        ));
    }
    let url = Target::parse(t.value.trim())
        .map_err(|m| fault(t.referenced, m))?
        .to_string();
    if !targets.contains(&url) {
        return Err(fault(
            t.referenced,
            format!(
                "unknown target `{}`: expected one of {}",
                t.value,
                targets.join(", ")
            ),
        ));
    }
    Ok(url)
}
