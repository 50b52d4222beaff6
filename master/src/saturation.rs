//! Injector saturation: flags a slave whose CPU stayed above [`SATURATED_PERCENT`] for
//! [`SATURATED_SECONDS`] closed seconds in a row (seed 003: one client emulator with a
//! saturated resource gives unstable results, and its own queueing reads as the server's
//! latency).
//!
//! Fed the same closed seconds as the SLA guard; pure. A flag is a warning in the report, the
//! live table and the dashboard; a scenario that wants it to fail the run says so with an SLA
//! rule on `injector_cpu`.

use std::collections::BTreeMap;

use lobster_fleet::stats::{IntervalStats, SATURATED_PERCENT, SATURATED_SECONDS};
use serde::{Deserialize, Serialize};

/// One stretch of seconds a slave spent saturated (at least [`SATURATED_SECONDS`] long).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saturated {
    pub slave_id: String,
    /// First second (run time) of the stretch.
    pub from_s: u64,
    /// Seconds in the stretch so far.
    pub seconds: u64,
    /// Highest CPU seen in it, percent.
    pub peak_cpu_percent: f64,
    /// Still going at the last closed second.
    pub ongoing: bool,
}

impl Saturated {
    /// The warning the report and the live table give.
    pub fn warning(&self) -> String {
        format!(
            "injector {} was above {SATURATED_PERCENT:.0} % CPU for {} s from second {} \
             (peak {:.0} %): its own queueing may read as the server's latency; add slaves or \
             lower the load",
            self.slave_id, self.seconds, self.from_s, self.peak_cpu_percent
        )
    }
}

/// A slave's current stretch above the threshold.
struct Streak {
    from: u64,
    last: u64,
    peak: f64,
    /// Index in `flagged` once the stretch is long enough.
    flagged: Option<usize>,
}

/// Watches every injector's CPU second by second.
#[derive(Default)]
pub struct SaturationWatch {
    streaks: BTreeMap<String, Streak>,
    flagged: Vec<Saturated>,
}

impl SaturationWatch {
    /// Feeds closed second `index`, whose `injectors` are keyed by session; `name` gives the
    /// slave id a flag shows. Returns the stretches that became long enough to flag.
    pub fn on_interval(
        &mut self,
        index: u64,
        stats: &IntervalStats,
        name: impl Fn(&str) -> String,
    ) -> Vec<Saturated> {
        let mut new = Vec::new();
        for (slave, r) in &stats.injectors {
            let cpu = r.injector_cpu();
            if cpu <= SATURATED_PERCENT {
                continue;
            }
            let streak = self.streaks.entry(slave.clone()).or_insert(Streak {
                from: index,
                last: index,
                peak: cpu,
                flagged: None,
            });
            streak.last = index;
            streak.peak = streak.peak.max(cpu);
            let seconds = index - streak.from + 1;
            match streak.flagged {
                Some(i) => {
                    let f = &mut self.flagged[i];
                    f.seconds = seconds;
                    f.peak_cpu_percent = streak.peak;
                }
                None if seconds >= SATURATED_SECONDS => {
                    let f = Saturated {
                        slave_id: name(slave),
                        from_s: streak.from,
                        seconds,
                        peak_cpu_percent: streak.peak,
                        ongoing: true,
                    };
                    streak.flagged = Some(self.flagged.len());
                    self.flagged.push(f.clone());
                    new.push(f);
                }
                None => {}
            }
        }
        // A slave below the threshold this second, or silent in it, ends its stretch.
        self.streaks.retain(|_, s| {
            let goes_on = s.last == index;
            if !goes_on && let Some(i) = s.flagged {
                self.flagged[i].ongoing = false;
            }
            goes_on
        });
        new
    }

    /// Every stretch flagged so far, in the order they were flagged.
    pub fn flagged(&self) -> &[Saturated] {
        &self.flagged
    }

    /// Seconds each slave spent in flagged stretches.
    pub fn seconds_of(&self, slave_id: &str) -> u64 {
        self.flagged
            .iter()
            .filter(|f| f.slave_id == slave_id)
            .map(|f| f.seconds)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobster_fleet::stats::Resources;

    fn second(cpu: &[(&str, f64)]) -> IntervalStats {
        let mut s = IntervalStats::default();
        for (slave, c) in cpu {
            let r = Resources {
                process_cpu_percent: *c,
                ..Default::default()
            };
            s.injectors.insert(slave.to_string(), r);
        }
        s
    }

    #[test]
    fn five_seconds_in_a_row_above_ninety_percent_flag_a_slave_once() {
        let mut w = SaturationWatch::default();
        // Four busy seconds, a dip, then six: only the second stretch is flagged, at its
        // fifth second, and it grows until it ends.
        let cpu = [
            95.0, 99.0, 91.0, 100.0, 90.0, 92.0, 93.0, 94.0, 95.0, 96.0, 97.0, 20.0,
        ];
        let mut flagged_at = Vec::new();
        for (k, c) in cpu.iter().enumerate() {
            let new = w.on_interval(k as u64, &second(&[("a", *c), ("b", 50.0)]), |s: &str| {
                s.to_owned()
            });
            if !new.is_empty() {
                flagged_at.push((k, new));
            }
            if k == 10 {
                assert!(w.flagged()[0].ongoing);
            }
        }
        assert_eq!(flagged_at.len(), 1);
        let (k, new) = &flagged_at[0];
        assert_eq!((*k, new[0].from_s, new[0].seconds), (9, 5, 5));
        assert_eq!(
            w.flagged(),
            &[Saturated {
                slave_id: "a".into(),
                from_s: 5,
                seconds: 6,
                peak_cpu_percent: 97.0,
                ongoing: false,
            }]
        );
        assert_eq!((w.seconds_of("a"), w.seconds_of("b")), (6, 0));
        assert!(
            w.flagged()[0]
                .warning()
                .contains("injector a was above 90 % CPU for 6 s")
        );
    }

    #[test]
    fn a_silent_second_ends_a_stretch() {
        let mut w = SaturationWatch::default();
        for k in 0..4 {
            w.on_interval(k, &second(&[("a", 99.0)]), |s: &str| s.to_owned());
        }
        w.on_interval(4, &second(&[]), |s: &str| s.to_owned());
        for k in 5..9 {
            w.on_interval(k, &second(&[("a", 99.0)]), |s: &str| s.to_owned());
        }
        assert!(w.flagged().is_empty());
    }
}
