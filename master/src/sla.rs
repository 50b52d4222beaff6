//! The SLA guard: evaluates a scenario's rules on the merged, fleet-wide stream.
//!
//! Each rule keeps the last `window` seconds of closed intervals (of its request, or of all
//! requests) and computes its metric over their merge, every time an interval closes. A `max`
//! rule is judged from the first interval on (a fleet that is already too slow should stop at
//! once); a `min` rule only once its window is full (a ramp starts low by design).

use std::collections::VecDeque;

use lobster_fleet::scenario::{Bound, Metric, SlaRule};
use lobster_fleet::stats::{EndpointStats, IntervalStats, LatencySummary};
use serde::{Deserialize, Serialize};

/// The outcome of one rule, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The rule as text, e.g. `p99 <= 800ms over 10s`.
    pub rule: String,
    pub passed: bool,
    /// Whether a violation of this rule aborted the run.
    pub aborted_run: bool,
    /// Worst value seen over any window (in the metric's unit).
    pub worst: Option<f64>,
    /// Run second (interval index) whose close revealed the first violation.
    pub violated_at_s: Option<u64>,
    /// Value at the first violation.
    pub violation_value: Option<f64>,
}

struct RuleState {
    rule: SlaRule,
    window: VecDeque<EndpointStats>,
    worst: Option<f64>,
    violated_at: Option<(u64, f64)>,
}

/// A violation that requires aborting the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Abort {
    pub rule: String,
    pub value: f64,
    pub index: u64,
}

pub struct SlaGuard {
    rules: Vec<RuleState>,
    aborted_by: Option<usize>,
}

impl SlaGuard {
    pub fn new(rules: &[SlaRule]) -> Self {
        SlaGuard {
            rules: rules
                .iter()
                .map(|r| RuleState {
                    rule: r.clone(),
                    window: VecDeque::new(),
                    worst: None,
                    violated_at: None,
                })
                .collect(),
            aborted_by: None,
        }
    }

    /// Feeds one closed fleet-wide interval; returns the first new violation of an aborting rule.
    pub fn on_interval(&mut self, index: u64, stats: &IntervalStats) -> Option<Abort> {
        let mut abort = None;
        for (i, r) in self.rules.iter_mut().enumerate() {
            let slice = match &r.rule.request {
                Some(name) => stats.endpoints.get(name).cloned().unwrap_or_default(),
                None => stats.total(),
            };
            r.window.push_back(slice);
            let len = (r.rule.window_ms / 1000).max(1) as usize;
            while r.window.len() > len {
                r.window.pop_front();
            }
            if matches!(r.rule.bound, Bound::Min(_)) && r.window.len() < len {
                continue;
            }
            let mut merged = EndpointStats::default();
            for e in &r.window {
                merged.merge(e);
            }
            let Some(value) = metric(r.rule.metric, &merged, r.window.len()) else {
                continue;
            };
            let worse = match (r.worst, r.rule.bound) {
                (None, _) => true,
                (Some(w), Bound::Max(_)) => value > w,
                (Some(w), Bound::Min(_)) => value < w,
            };
            if worse {
                r.worst = Some(value);
            }
            if r.rule.bound.violated_by(value) && r.violated_at.is_none() {
                r.violated_at = Some((index, value));
                if r.rule.abort && abort.is_none() && self.aborted_by.is_none() {
                    self.aborted_by = Some(i);
                    abort = Some(Abort {
                        rule: r.rule.to_string(),
                        value,
                        index,
                    });
                }
            }
        }
        abort
    }

    /// The outcome of every rule.
    pub fn results(&self) -> Vec<RuleResult> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| RuleResult {
                rule: r.rule.to_string(),
                passed: r.violated_at.is_none(),
                aborted_run: self.aborted_by == Some(i),
                worst: r.worst,
                violated_at_s: r.violated_at.map(|v| v.0),
                violation_value: r.violated_at.map(|v| v.1),
            })
            .collect()
    }

    /// Whether every rule held.
    pub fn passed(&self) -> bool {
        self.rules.iter().all(|r| r.violated_at.is_none())
    }
}

/// The metric over merged stats of `seconds` intervals; `None` when there is nothing to judge
/// (a latency with no samples).
fn metric(m: Metric, e: &EndpointStats, seconds: usize) -> Option<f64> {
    match m {
        Metric::ErrorRate => Some(e.error_rate()),
        Metric::Rps => Some(e.requests as f64 / seconds.max(1) as f64),
        latency => {
            if e.latency_us.is_empty() {
                None
            } else {
                LatencySummary::of(&e.latency_us).metric(latency)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::scenario::parse;

    fn interval(latency_ms: u64, requests: u64, failures: u64) -> IntervalStats {
        let mut s = IntervalStats::default();
        let mut e = EndpointStats {
            requests,
            failures,
            ..Default::default()
        };
        for _ in 0..requests {
            e.latency_us.record(latency_ms * 1000).unwrap();
        }
        s.endpoints.insert("item".into(), e);
        s
    }

    fn rules(sla: &str) -> Vec<SlaRule> {
        let text = format!(
            "name: s\ntarget: http://a\nduration: 1m\nload: {{users: 1}}\nrequests: [{{name: item, path: /}}]\nsla:\n{sla}"
        );
        parse(&text, "s.yaml").unwrap().sla
    }

    #[test]
    fn a_slow_fleet_aborts_at_the_first_interval() {
        let mut g = SlaGuard::new(&rules("  - {metric: p99, max: 800ms, window: 10s}\n"));
        assert_eq!(g.on_interval(0, &interval(100, 50, 0)), None);
        let abort = g
            .on_interval(1, &interval(2000, 500, 0))
            .expect("violation");
        assert_eq!(abort.index, 1);
        assert!(abort.value >= 2000.0 && abort.rule == "p99 <= 800ms over 10s");
        assert_eq!(
            g.on_interval(2, &interval(2000, 500, 0)),
            None,
            "one abort only"
        );
        let r = &g.results()[0];
        assert!(!r.passed && r.aborted_run && r.violated_at_s == Some(1));
    }

    #[test]
    fn error_rate_and_non_aborting_rules() {
        let mut g = SlaGuard::new(&rules("  - {metric: error_rate, max: 1%, abort: false}\n"));
        assert_eq!(g.on_interval(0, &interval(1, 1000, 5)), None);
        assert!(g.passed());
        assert_eq!(
            g.on_interval(1, &interval(1, 1000, 100)),
            None,
            "does not abort"
        );
        assert!(!g.passed());
        assert!(!g.results()[0].aborted_run);
    }

    #[test]
    fn min_rules_wait_for_a_full_window() {
        let mut g = SlaGuard::new(&rules("  - {metric: rps, min: 100, window: 3s}\n"));
        assert_eq!(g.on_interval(0, &interval(1, 10, 0)), None);
        assert_eq!(g.on_interval(1, &interval(1, 10, 0)), None);
        assert!(g.passed(), "window not full yet");
        assert!(g.on_interval(2, &interval(1, 10, 0)).is_some());
    }

    #[test]
    fn passing_rules_pass() {
        let mut g = SlaGuard::new(&rules(
            "  - {metric: p95, max: 1s}\n  - {metric: rps, min: 1, window: 2s}\n",
        ));
        for i in 0..5 {
            assert_eq!(g.on_interval(i, &interval(5, 100, 0)), None);
        }
        assert!(g.passed());
        assert!(g.results().iter().all(|r| r.passed));
    }
}
