//! `target` or `targets`: the base URL, or several with their weights.

use std::collections::BTreeSet;

use super::*;
use crate::scenario::file::TargetFile;
use crate::scenario::{MAX_TARGET_WEIGHT, MAX_TARGETS, WeightedTarget};

/// The first base URL and, with `targets:`, every one with its weight.
pub(super) fn resolve_targets(f: &ScenarioFile) -> Res<(Target, Vec<WeightedTarget>)> {
    match (&f.target, &f.targets) {
        (Some(t), None) => {
            let target = Target::parse(t.value.trim()).map_err(|m| fault(t.referenced, m))?;
            Ok((target, Vec::new()))
        }
        (None, Some(list)) => {
            let targets = list
                .value
                .iter()
                .map(|entry| {
                    let (url, weight) = match &entry.value {
                        TargetFile::Url(url) => (url, None),
                        TargetFile::Weighted(w) => (&w.url, w.weight.as_ref()),
                    };
                    let target =
                        Target::parse(url.trim()).map_err(|m| fault(entry.referenced, m))?;
                    let weight = match weight {
                        None => 1,
                        Some(w) => w
                            .in_range("a target's weight", 1, u64::from(MAX_TARGET_WEIGHT))
                            .map_err(|m| fault(entry.referenced, m))?
                            as u32,
                    };
                    Ok(WeightedTarget { target, weight })
                })
                .collect::<Res<Vec<_>>>()?;
            check_targets(&targets).map_err(|m| fault(list.referenced, m))?;
            Ok((targets[0].target.clone(), targets))
        }
        (Some(t), Some(_)) => Err(fault(
            t.referenced,
            "give either `target` (one base URL) or `targets` (several, each with an optional weight), not both",
        )),
        (None, None) => Err(fault(
            f.name.referenced,
            "missing `target` (e.g. `target: http://127.0.0.1:8080`) or `targets` (a list of base URLs)",
        )),
    }
}

/// The rules on a list of targets, from a file or from the API's JSON: 1 to [`MAX_TARGETS`],
/// each once, weights from 1 whose sum is at most [`MAX_TARGET_WEIGHT`].
pub(super) fn check_targets(targets: &[WeightedTarget]) -> Result<(), String> {
    if targets.is_empty() || targets.len() > MAX_TARGETS {
        return Err(format!(
            "`targets` lists {} base URLs: give 1 to {MAX_TARGETS}",
            targets.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for t in targets {
        let url = t.target.to_string();
        if !seen.insert(url.clone()) {
            return Err(format!("`targets` lists {url} twice"));
        }
        if t.weight == 0 || t.weight > MAX_TARGET_WEIGHT {
            return Err(format!(
                "the weight of {url} is {}: give 1 to {MAX_TARGET_WEIGHT}",
                t.weight
            ));
        }
    }
    let sum: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if sum > u64::from(MAX_TARGET_WEIGHT) {
        return Err(format!(
            "the weights of `targets` add up to {sum}, more than {MAX_TARGET_WEIGHT}: use smaller numbers in the same proportion"
        ));
    }
    Ok(())
}
