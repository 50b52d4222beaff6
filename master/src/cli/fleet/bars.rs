//! The progress bars `fleet up` draws (launched or started, running, slaves registered).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lobster_provision::cloud::{Instance, InstanceState};

use crate::fleet::up::Progress;

/// Progress bars of `fleet up`.
pub(crate) struct Bars {
    up: ProgressBar,
    running: ProgressBar,
    slaves: ProgressBar,
    multi: MultiProgress,
}

impl Bars {
    pub(crate) fn new(count: u64, expected_slaves: Option<u64>) -> Self {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> ");
        let bar = |name: &str, len: u64| {
            let b = multi.add(ProgressBar::new(len));
            b.set_style(style.clone());
            b.set_prefix(name.to_string());
            b
        };
        Bars {
            up: bar("launched/started", count),
            running: bar("running", count),
            slaves: bar("slaves registered", expected_slaves.unwrap_or(count)),
            multi,
        }
    }

    fn show(&self, instances: &[Instance], slaves: Option<u64>) {
        let up = instances.iter().filter(|i| i.state.is_up()).count() as u64;
        let running = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count() as u64;
        self.up.set_position(up);
        self.running.set_position(running);
        if let Some(s) = slaves {
            self.slaves.set_position(s);
        }
    }

    pub(crate) fn finish(&self) {
        self.up.finish();
        self.running.finish();
        self.slaves.finish();
    }
}

impl Progress for Bars {
    fn observed(&self, instances: &[Instance], registered: Option<u64>) {
        self.show(instances, registered);
    }

    fn note(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}
