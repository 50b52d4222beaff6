//! The SLA guard: evaluates a scenario's rules on the merged, fleet-wide stream.
//!
//! Each rule keeps the last `window` seconds of closed intervals (of its request, or of all
//! requests) and computes its metric over their merge, every time an interval closes. A `max`
//! rule is checked from the first interval on (a fleet that is already too slow should stop at
//! once); a `min` rule only once its window is full (a ramp starts low by design).
//!
//! A rule ends in one of three verdicts ([`Verdict`]): `failed` when any check violated it;
//! `passed` only when it was judged — its metric had a value over a full window at least once
//! — and never violated; `not judged` otherwise (the window never filled because the run was
//! shorter, or there was no sample: a latency with no response, an error rate with no request).
//! A rule that was not judged does not pass, so a run cannot pass on a rule it never checked.

use std::collections::{BTreeMap, VecDeque};

use lobster_fleet::scenario::{Bound, Metric, SlaRule};
use lobster_fleet::stats::{EndpointStats, IntervalStats, LatencySummary};
use serde::{Deserialize, Serialize};

/// How a rule ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Judged over at least one full window and never violated.
    Passed,
    /// Violated at least once.
    Failed,
    /// Never had a value over a full window (run too short, or no sample).
    NotJudged,
}

/// The outcome of one rule, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The rule as text, e.g. `p99 <= 800ms over 10s`.
    pub rule: String,
    /// True only for [`Verdict::Passed`].
    pub passed: bool,
    pub verdict: Verdict,
    /// Whether a violation of this rule aborted the run.
    pub aborted_run: bool,
    /// Worst value seen over any window (in the metric's unit).
    pub worst: Option<f64>,
    /// Run second (interval index) whose close revealed the first violation.
    pub violated_at_s: Option<u64>,
    /// Value at the first violation.
    pub violation_value: Option<f64>,
}

/// One closed second as a rule keeps it.
#[derive(Default)]
struct Second {
    /// The rule's requests: its endpoint's, its target's, or all.
    requests: EndpointStats,
    /// Each injector's CPU this second, percent (`injector_cpu` rules only).
    cpu: BTreeMap<String, f64>,
}

struct RuleState {
    rule: SlaRule,
    window: VecDeque<Second>,
    worst: Option<f64>,
    violated_at: Option<(u64, f64)>,
    /// The metric had a value over a full window at least once.
    judged: bool,
}

impl RuleState {
    fn verdict(&self) -> Verdict {
        if self.violated_at.is_some() {
            Verdict::Failed
        } else if self.judged {
            Verdict::Passed
        } else {
            Verdict::NotJudged
        }
    }
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
                    judged: false,
                })
                .collect(),
            aborted_by: None,
        }
    }

    /// Feeds one closed fleet-wide interval; returns the first new violation of an aborting rule.
    pub fn on_interval(&mut self, index: u64, stats: &IntervalStats) -> Option<Abort> {
        let mut abort = None;
        for (i, r) in self.rules.iter_mut().enumerate() {
            let injectors = r.rule.metric == Metric::InjectorCpu;
            let second = if injectors {
                Second {
                    cpu: stats
                        .injectors
                        .iter()
                        .map(|(slave, res)| (slave.clone(), res.injector_cpu()))
                        .collect(),
                    ..Default::default()
                }
            } else {
                Second {
                    requests: match (&r.rule.request, &r.rule.target) {
                        (Some(name), _) => stats.endpoints.get(name).cloned().unwrap_or_default(),
                        (None, Some(url)) => stats.targets.get(url).cloned().unwrap_or_default(),
                        (None, None) => stats.total(),
                    },
                    ..Default::default()
                }
            };
            r.window.push_back(second);
            let len = r.rule.window.as_secs().max(1) as usize;
            while r.window.len() > len {
                r.window.pop_front();
            }
            // A ramp starts low by design, and an injector starts busy (connections, TLS):
            // both are judged over full windows only.
            if (matches!(r.rule.bound, Bound::Min(_)) || injectors) && r.window.len() < len {
                continue;
            }
            let value = if injectors {
                busiest_injector(&r.window)
            } else {
                let mut merged = EndpointStats::default();
                for s in &r.window {
                    merged.merge(&s.requests);
                }
                metric(r.rule.metric, &merged, r.window.len())
            };
            let Some(value) = value else {
                continue;
            };
            r.judged |= r.window.len() == len;
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
                passed: r.verdict() == Verdict::Passed,
                verdict: r.verdict(),
                aborted_run: self.aborted_by == Some(i),
                worst: r.worst,
                violated_at_s: r.violated_at.map(|v| v.0),
                violation_value: r.violated_at.map(|v| v.1),
            })
            .collect()
    }

    /// Whether every rule was judged and held.
    #[cfg(test)]
    pub fn passed(&self) -> bool {
        self.rules.iter().all(|r| r.verdict() == Verdict::Passed)
    }
}

/// `injector_cpu` over a window: each injector's CPU averaged over the seconds it reported in
/// the window, the highest of them; `None` when no injector reported.
fn busiest_injector(window: &VecDeque<Second>) -> Option<f64> {
    let mut per_slave: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    for s in window {
        for (slave, cpu) in &s.cpu {
            let e = per_slave.entry(slave).or_default();
            e.0 += cpu;
            e.1 += 1;
        }
    }
    per_slave
        .values()
        .map(|(sum, n)| sum / f64::from(*n))
        .reduce(f64::max)
}

/// The metric over merged stats of `seconds` intervals; `None` when there is nothing to judge
/// (a latency with no samples).
fn metric(m: Metric, e: &EndpointStats, seconds: usize) -> Option<f64> {
    match m {
        Metric::ErrorRate if e.requests == 0 => None,
        Metric::ErrorRate => Some(e.error_rate()),
        Metric::Rps => Some(e.requests as f64 / seconds.max(1) as f64),
        Metric::InjectorCpu => None,
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

    /// A rule scoped to one of `targets:` judges that target's requests alone: the other
    /// target's slow second does not violate it, its own does.
    #[test]
    fn a_target_rule_judges_its_target_alone() {
        let text = "name: s\ntargets: ['http://a', 'http://b']\nduration: 1m\nload: {users: 2}\nrequests: [{name: item, path: /}]\nsla:\n  - {metric: p99, max: 800ms, window: 1s, target: 'http://b/'}\n";
        let mut g = SlaGuard::new(&parse(text, "s.yaml").unwrap().sla);
        let second = |a_ms, b_ms| {
            let mut s = IntervalStats::default();
            let (a, b) = (interval(a_ms, 10, 0), interval(b_ms, 10, 0));
            s.targets
                .insert("http://a:80".into(), a.endpoints["item"].clone());
            s.targets
                .insert("http://b:80".into(), b.endpoints["item"].clone());
            s.merge(&a);
            s.merge(&b);
            s
        };
        assert_eq!(
            g.on_interval(0, &second(2000, 10)),
            None,
            "the other target"
        );
        let abort = g.on_interval(1, &second(10, 2000)).expect("its own target");
        assert_eq!(abort.rule, "p99[http://b:80] <= 800ms over 1s");
        assert!(abort.value >= 2000.0, "{}", abort.value);
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
        let mut g = SlaGuard::new(&rules(
            "  - {metric: error_rate, max: 1%, abort: false, window: 1s}\n",
        ));
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

    fn injectors(cpu: &[(&str, f64)]) -> IntervalStats {
        let mut s = interval(1, 10, 0);
        for (slave, c) in cpu {
            let r = lobster_fleet::stats::Resources {
                cpu_percent: *c,
                ..Default::default()
            };
            s.injectors.insert(slave.to_string(), r);
        }
        s
    }

    #[test]
    fn injector_cpu_judges_each_injectors_mean_over_full_windows() {
        let mut g = SlaGuard::new(&rules("  - {metric: injector_cpu, max: 90%, window: 5s}\n"));
        // A one-second spike at the start is not judged alone, and averages out.
        assert_eq!(
            g.on_interval(0, &injectors(&[("a", 100.0), ("b", 10.0)])),
            None
        );
        for k in 1..5 {
            assert_eq!(
                g.on_interval(k, &injectors(&[("a", 60.0), ("b", 20.0)])),
                None
            );
        }
        let r = &g.results()[0];
        assert_eq!((r.verdict, r.worst), (Verdict::Passed, Some(68.0)));
        // b saturates for five seconds; a stays light: the busiest injector's mean is b's.
        let mut abort = None;
        for k in 5..10 {
            abort = abort.or(g.on_interval(k, &injectors(&[("a", 30.0), ("b", 97.0)])));
        }
        let abort = abort.expect("five saturated seconds of b violate the rule");
        assert_eq!(abort.rule, "injector_cpu <= 90% over 5s");
        // Mean of b over seconds 4..=8 is (20 + 4 × 97) / 5 = 81.6; over 5..=9 it is 97.
        assert_eq!((abort.index, abort.value), (9, 97.0));
        assert_eq!(g.results()[0].verdict, Verdict::Failed);
    }

    #[test]
    fn injector_cpu_is_not_judged_without_resources() {
        let mut g = SlaGuard::new(&rules("  - {metric: injector_cpu, max: 90%, window: 2s}\n"));
        for k in 0..4 {
            g.on_interval(k, &interval(1, 10, 0));
        }
        assert_eq!(g.results()[0].verdict, Verdict::NotJudged);
    }

    #[test]
    fn min_rules_wait_for_a_full_window() {
        let mut g = SlaGuard::new(&rules("  - {metric: rps, min: 100, window: 3s}\n"));
        assert_eq!(g.on_interval(0, &interval(1, 10, 0)), None);
        assert_eq!(g.on_interval(1, &interval(1, 10, 0)), None);
        assert_eq!(
            g.results()[0].verdict,
            Verdict::NotJudged,
            "window not full yet"
        );
        assert!(g.on_interval(2, &interval(1, 10, 0)).is_some());
    }

    /// The fault: `rps >= 1000` over the default 10 s window on a 5 s run making 5 req/s was
    /// reported as passed. It was never judged.
    #[test]
    fn a_window_that_never_fills_is_not_judged() {
        let mut g = SlaGuard::new(&rules("  - {metric: rps, min: 1000}\n"));
        for i in 0..5 {
            assert_eq!(g.on_interval(i, &interval(1, 5, 0)), None);
        }
        let r = &g.results()[0];
        assert_eq!(r.verdict, Verdict::NotJudged);
        assert!(!r.passed);
        assert!(!g.passed(), "a rule never judged must not pass the run");
        // A max rule over a window the run never filled: checked, but not judged either.
        let mut g = SlaGuard::new(&rules("  - {metric: p99, max: 1s, window: 10s}\n"));
        for i in 0..5 {
            g.on_interval(i, &interval(5, 100, 0));
        }
        assert_eq!(g.results()[0].verdict, Verdict::NotJudged);
    }

    #[test]
    fn rules_without_samples_are_not_judged() {
        // A run with 0 requests: no latency, no error rate; rps is judged (it was 0).
        let mut g = SlaGuard::new(&rules(
            "  - {metric: p99, max: 1s, window: 1s}\n  - {metric: error_rate, max: 1%, window: 1s}\n  - {metric: rps, min: 1, window: 1s, abort: false}\n",
        ));
        for i in 0..3 {
            g.on_interval(i, &IntervalStats::default());
        }
        let v: Vec<Verdict> = g.results().iter().map(|r| r.verdict).collect();
        assert_eq!(
            v,
            vec![Verdict::NotJudged, Verdict::NotJudged, Verdict::Failed]
        );
    }

    #[test]
    fn passing_rules_pass() {
        let mut g = SlaGuard::new(&rules(
            "  - {metric: p95, max: 1s}\n  - {metric: rps, min: 1, window: 2s}\n",
        ));
        for i in 0..10 {
            assert_eq!(g.on_interval(i, &interval(5, 100, 0)), None);
        }
        assert!(g.passed());
        assert!(g.results().iter().all(|r| r.passed));
    }
}
