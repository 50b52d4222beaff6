//! Load over time: a start value and linear stages, and the arrival schedule of the open model.
//!
//! Units: users for the closed model; thousandths of a request per second ("millirate") for the
//! open model, so that rates slice into exact integers.

use serde::{Deserialize, Serialize};

/// Which load model a profile drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A fixed number of users, each sending its next request after the previous one (and think).
    Closed,
    /// Requests arrive at a rate whatever the server's latency.
    Open,
}

impl Model {
    /// `closed` or `open`, as reports and the API name it.
    pub fn name(self) -> &'static str {
        match self {
            Model::Closed => "closed",
            Model::Open => "open",
        }
    }
}

/// An amount of load that says which model it drives: users (closed model) or an arrival
/// rate (open model), in the profile's exact units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Closed model: virtual users.
    Users(u64),
    /// Open model: arrivals per second, in thousandths (so rates slice into exact integers).
    MilliRate(u64),
}

impl Load {
    /// The model this load drives.
    pub fn model(self) -> Model {
        match self {
            Load::Users(_) => Model::Closed,
            Load::MilliRate(_) => Model::Open,
        }
    }

    /// The amount in a [`Profile`]'s units (users, or thousandths of an arrival per second).
    pub fn amount(self) -> u64 {
        match self {
            Load::Users(n) | Load::MilliRate(n) => n,
        }
    }

    /// `amount` of a profile of `model`.
    pub fn of(model: Model, amount: u64) -> Load {
        match model {
            Model::Closed => Load::Users(amount),
            Model::Open => Load::MilliRate(amount),
        }
    }
}

impl std::fmt::Display for Load {
    /// `20 users` or `12.5 req/s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Users(n) => write!(f, "{n} users"),
            Load::MilliRate(m) => write!(f, "{} req/s", *m as f64 / 1000.0),
        }
    }
}

/// One stage: the load moves linearly to `target` over `duration_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub duration_ms: u64,
    pub target: u64,
}

/// The load at every moment: `start` at time zero, then each stage in turn; after the last stage
/// the last target holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub model: Model,
    pub start: u64,
    pub stages: Vec<Stage>,
}

impl Profile {
    /// A profile that holds `load` from time zero.
    pub fn holding(load: Load) -> Self {
        Profile::constant(load.model(), load.amount())
    }

    /// The load at time zero, with its model.
    pub fn start_load(&self) -> Load {
        Load::of(self.model, self.start)
    }

    /// A profile that holds `value` from time zero.
    pub fn constant(model: Model, value: u64) -> Self {
        Profile {
            model,
            start: value,
            stages: Vec::new(),
        }
    }

    /// The start value and every stage target.
    pub fn amounts(&self) -> Vec<u64> {
        std::iter::once(self.start)
            .chain(self.stages.iter().map(|s| s.target))
            .collect()
    }

    /// Largest value the profile reaches.
    pub fn peak(&self) -> u64 {
        self.amounts().into_iter().max().unwrap_or(0)
    }

    /// The load at `t_ms` (linear within a stage).
    pub fn value_at(&self, t_ms: u64) -> f64 {
        let mut from = self.start as f64;
        let mut at = 0u64;
        for s in &self.stages {
            if t_ms < at + s.duration_ms {
                let f = (t_ms - at) as f64 / s.duration_ms as f64;
                return from + (s.target as f64 - from) * f;
            }
            at += s.duration_ms;
            from = s.target as f64;
        }
        from
    }

    /// The load at `t_ms` in people's units: users (closed model) or arrivals per second
    /// (open model; the profile itself counts thousandths).
    pub fn load_at(&self, t_ms: u64) -> f64 {
        let v = self.value_at(t_ms);
        match self.model {
            Model::Closed => v,
            Model::Open => v / 1000.0,
        }
    }

    /// A change of load mid-run: this profile until `at_ms`, then a linear move to `target`
    /// over `ramp_ms` (a step when 0), held after. Every moment before `at_ms` keeps its value,
    /// except that a stage cut at `at_ms` ends at its value there rounded to the unit (a user,
    /// a thousandth of a request per second).
    pub fn changed_at(&self, at_ms: u64, target: u64, ramp_ms: u64) -> Profile {
        let mut stages = Vec::new();
        let mut t = 0u64;
        for s in self.stages.iter().filter(|s| s.duration_ms > 0) {
            if t + s.duration_ms <= at_ms {
                stages.push(*s);
                t += s.duration_ms;
                continue;
            }
            break;
        }
        if t < at_ms {
            // The rest of a stage cut at `at_ms`, or the final hold, up to `at_ms`.
            let at_value = self.value_at(at_ms).round() as u64;
            stages.push(Stage {
                duration_ms: at_ms - t,
                target: at_value,
            });
        }
        stages.push(Stage {
            duration_ms: ramp_ms.max(1),
            target,
        });
        Profile {
            model: self.model,
            start: self.start,
            stages,
        }
    }

    /// Linear pieces `(start_ms, duration_ms or None for the final hold, from, to)`.
    fn pieces(&self) -> impl Iterator<Item = (u64, Option<u64>, f64, f64)> + '_ {
        let mut at = 0u64;
        let mut from = self.start as f64;
        self.stages
            .iter()
            .filter(|s| s.duration_ms > 0)
            .map(move |s| {
                let piece = (at, Some(s.duration_ms), from, s.target as f64);
                at += s.duration_ms;
                from = s.target as f64;
                piece
            })
            .chain(std::iter::once((
                self.stages.iter().map(|s| s.duration_ms).sum(),
                None,
                self.stages.last().map_or(self.start, |s| s.target) as f64,
                self.stages.last().map_or(self.start, |s| s.target) as f64,
            )))
    }
}

/// The open model's schedule: when the k-th request (0-based) of a rate profile is due.
///
/// With rate r(t) (requests per ms), arrival k is due at the time t where the cumulative count
/// ∫₀ᵗ r reaches k. Latency is measured from this intended time, so a slow server does not hide
/// its queueing delay (no coordinated omission).
#[derive(Clone, Debug)]
pub struct Arrivals {
    /// (start_ms, duration_ms or None, rate at start per ms, rate at end per ms, arrivals before)
    pieces: Vec<(f64, Option<f64>, f64, f64, f64)>,
}

impl Arrivals {
    /// The schedule of a profile whose values are thousandths of a request per second.
    pub fn new(profile: &Profile) -> Self {
        let mut before = 0.0;
        let pieces = profile
            .pieces()
            .map(|(start, dur, from, to)| {
                // millirate -> requests per ms
                let (a, b) = (from / 1_000_000.0, to / 1_000_000.0);
                let piece = (start as f64, dur.map(|d| d as f64), a, b, before);
                if let Some(d) = dur {
                    before += (a + b) / 2.0 * d as f64;
                }
                piece
            })
            .collect();
        Arrivals { pieces }
    }

    /// Milliseconds after time zero at which arrival `k` is due, or `None` if it never is.
    pub fn due_ms(&self, k: u64) -> Option<f64> {
        let n = k as f64;
        for &(start, dur, a, b, before) in &self.pieces {
            let n_in = n - before;
            match dur {
                Some(d) => {
                    let total = (a + b) / 2.0 * d;
                    if n_in < total {
                        return Some(start + solve(a, b, d, n_in));
                    }
                }
                None => {
                    return if a > 0.0 {
                        Some(start + n_in / a)
                    } else {
                        None
                    };
                }
            }
        }
        None
    }

    /// How many arrivals are due strictly before `t_ms`.
    pub fn count_before(&self, t_ms: f64) -> u64 {
        let mut count = 0.0;
        for &(start, dur, a, b, before) in &self.pieces {
            if t_ms <= start {
                break;
            }
            let tau = match dur {
                Some(d) => (t_ms - start).min(d),
                None => t_ms - start,
            };
            let slope = dur.map_or(0.0, |d| (b - a) / d);
            count = before + a * tau + slope * tau * tau / 2.0;
        }
        count.ceil().max(0.0) as u64
    }
}

/// Time τ within a piece whose rate goes linearly from `a` to `b` over `d` at which the
/// cumulative count `a τ + (b - a) τ² / (2d)` reaches `n`.
fn solve(a: f64, b: f64, d: f64, n: f64) -> f64 {
    if n <= 0.0 {
        return 0.0;
    }
    let c = (b - a) / (2.0 * d);
    if c.abs() < 1e-18 {
        return n / a;
    }
    // Root of c τ² + a τ - n = 0, in the form that stays accurate when c is small.
    let disc = (a * a + 4.0 * c * n).max(0.0);
    2.0 * n / (a + disc.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_says_its_model_and_keeps_the_profiles_units() {
        let rate = Load::MilliRate(12_500);
        assert_eq!((rate.model(), rate.amount()), (Model::Open, 12_500));
        assert_eq!(rate.to_string(), "12.5 req/s");
        assert_eq!(Load::of(Model::Closed, 20), Load::Users(20));
        assert_eq!(Load::Users(20).to_string(), "20 users");
        let p = Profile::holding(rate);
        assert_eq!(p, Profile::constant(Model::Open, 12_500));
        assert_eq!(p.start_load(), rate);
        assert_eq!(p.load_at(99_000), 12.5);
    }

    #[test]
    fn a_change_mid_run_keeps_the_past_and_reaches_its_target() {
        // 20/s held, changed at 3.5 s to 50/s: the arrivals before 3.5 s are the same ones.
        let held = Profile::constant(Model::Open, 20_000);
        let changed = held.changed_at(3_500, 50_000, 0);
        let (a, b) = (Arrivals::new(&held), Arrivals::new(&changed));
        for t in [0.0, 1_000.0, 2_750.0, 3_500.0] {
            assert_eq!(a.count_before(t), b.count_before(t), "at {t} ms");
        }
        assert_eq!(
            b.count_before(10_000.0),
            70 + 325,
            "20/s for 3.5 s, 50/s for 6.5 s"
        );
        // A ramp cut in its middle, then a 2 s ramp down: same values before, target after.
        let ramp = Profile {
            model: Model::Closed,
            start: 0,
            stages: vec![Stage {
                duration_ms: 10_000,
                target: 100,
            }],
        };
        let c = ramp.changed_at(4_000, 10, 2_000);
        for t in [0, 1_000, 2_500, 4_000] {
            assert_eq!(c.value_at(t), ramp.value_at(t), "at {t} ms");
        }
        assert_eq!(c.value_at(5_000), 25.0);
        assert_eq!(c.value_at(6_000), 10.0);
        assert_eq!(c.value_at(60_000), 10.0);
        // After every stage: the hold continues to `at_ms`.
        let c = ramp.changed_at(15_000, 0, 0);
        assert_eq!(c.value_at(12_000), 100.0);
        assert_eq!(c.value_at(15_001), 0.0);
    }

    fn open(start: u64, stages: &[(u64, u64)]) -> Profile {
        Profile {
            model: Model::Open,
            start,
            stages: stages
                .iter()
                .map(|&(duration_ms, target)| Stage {
                    duration_ms,
                    target,
                })
                .collect(),
        }
    }

    #[test]
    fn value_moves_linearly_then_holds() {
        let p = Profile {
            model: Model::Closed,
            start: 0,
            stages: vec![
                Stage {
                    duration_ms: 10_000,
                    target: 30,
                },
                Stage {
                    duration_ms: 10_000,
                    target: 10,
                },
            ],
        };
        assert_eq!(p.value_at(0), 0.0);
        assert_eq!(p.value_at(5_000), 15.0);
        assert_eq!(p.value_at(10_000), 30.0);
        assert_eq!(p.value_at(15_000), 20.0);
        assert_eq!(p.value_at(99_000), 10.0);
    }

    #[test]
    fn constant_rate_arrivals_are_evenly_spaced() {
        let a = Arrivals::new(&Profile::constant(Model::Open, 200_000)); // 200 rps
        assert_eq!(a.due_ms(0), Some(0.0));
        assert!((a.due_ms(1).unwrap() - 5.0).abs() < 1e-9);
        assert!((a.due_ms(200).unwrap() - 1000.0).abs() < 1e-6);
        assert_eq!(a.count_before(1000.0), 200);
        assert_eq!(a.count_before(20_000.0), 4000);
    }

    #[test]
    fn ramp_arrivals_match_the_integral() {
        // 0 -> 100 rps over 10 s: 500 arrivals during the ramp, then 100 per second.
        let a = Arrivals::new(&open(0, &[(10_000, 100_000)]));
        assert_eq!(a.count_before(10_000.0), 500);
        assert_eq!(a.count_before(11_000.0), 600);
        let t = a.due_ms(499).unwrap();
        assert!(t < 10_000.0 && t > 9_900.0, "{t}");
        // Monotonic schedule.
        let mut last = -1.0;
        for k in 0..1000 {
            let t = a.due_ms(k).unwrap();
            assert!(t >= last, "arrival {k} at {t} before {last}");
            last = t;
        }
    }

    #[test]
    fn zero_rate_never_arrives() {
        let a = Arrivals::new(&Profile::constant(Model::Open, 0));
        assert_eq!(a.due_ms(0), None);
        let down = Arrivals::new(&open(10_000, &[(1_000, 0)])); // 10 rps down to 0 over 1 s
        assert_eq!(down.count_before(5_000.0), 5);
        assert_eq!(down.due_ms(5), None);
    }
}
