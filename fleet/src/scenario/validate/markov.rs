//! The `markov` section: states (requests), the initial distribution and the transition
//! matrix, each row checked to sum to 1 (within [`SUM_TOLERANCE`]).

use std::collections::BTreeMap;

use super::*;
use crate::scenario::file::MarkovFile;
use crate::scenario::journey::SUM_TOLERANCE;
use crate::scenario::{Markov, Model};

/// Most states of a Markov mix.
const MAX_STATES: usize = 200;

pub(super) fn resolve_markov(
    m: &Spanned<MarkovFile>,
    model: Model,
    data: &DataShape,
    env: &dyn Fn(&str) -> Option<String>,
) -> Res<(Vec<Request>, Markov)> {
    if model != Model::Closed {
        return Err(fault(
            m.referenced,
            "a Markov mix walks users from state to state: it needs the closed model (`load.users`)",
        ));
    }
    let list = &m.value.states;
    if list.value.is_empty() || list.value.len() > MAX_STATES {
        return Err(fault(
            list.referenced,
            format!("markov.states must list 1 to {MAX_STATES} states"),
        ));
    }
    let mut names = BTreeSet::new();
    let mut states = Vec::new();
    for st in &list.value {
        if let Some(c) = st.value.capture.first() {
            return Err(fault(
                c.referenced,
                "a Markov state cannot capture (the next state is drawn, so no later state can rely on it): use `flows`",
            ));
        }
        states.push(resolve_step(
            &st.value,
            &mut names,
            data,
            &BTreeSet::new(),
            env,
        )?);
    }
    let index: BTreeMap<&str, usize> = states
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let n = states.len();
    let row_of = |map: &BTreeMap<String, f64>, at: Location, what: &str| -> Res<Vec<f64>> {
        let mut row = vec![0.0; n];
        for (name, &p) in map {
            let Some(&j) = index.get(name.trim()) else {
                let known: Vec<&str> = index.keys().copied().collect();
                return Err(fault(
                    at,
                    format!(
                        "{what}: unknown state `{name}` (the states are {})",
                        known.join(", ")
                    ),
                ));
            };
            if !(0.0..=1.0).contains(&p) || !p.is_finite() {
                return Err(fault(
                    at,
                    format!("{what}: probability {p} of `{name}` must be between 0 and 1"),
                ));
            }
            row[j] = p;
        }
        let sum: f64 = row.iter().sum();
        if (sum - 1.0).abs() > SUM_TOLERANCE {
            return Err(fault(
                at,
                format!("{what}: probabilities sum to {sum}, not 1"),
            ));
        }
        Ok(row)
    };
    let initial = match &m.value.initial {
        None => {
            let mut row = vec![0.0; n];
            row[0] = 1.0;
            row
        }
        Some(i) => row_of(&i.value, i.referenced, "markov.initial")?,
    };
    let rows = &m.value.transitions;
    let mut transitions = vec![Vec::new(); n];
    for (from, row) in &rows.value {
        let Some(&i) = index.get(from.trim()) else {
            return Err(fault(
                row.referenced,
                format!("markov.transitions: unknown state `{from}`"),
            ));
        };
        transitions[i] = row_of(
            &row.value,
            row.referenced,
            &format!("transitions from `{from}`"),
        )?;
    }
    if let Some(i) = transitions.iter().position(Vec::is_empty) {
        return Err(fault(
            rows.referenced,
            format!(
                "markov.transitions has no row for `{}`: give every state a row",
                states[i].name
            ),
        ));
    }
    Ok((
        states,
        Markov {
            initial,
            transitions,
        },
    ))
}
