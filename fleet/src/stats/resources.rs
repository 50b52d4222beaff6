//! An injector's resources over a period: what seed 003 asks to watch, because one client
//! emulator with a saturated resource reports its own queueing as the server's latency.
//!
//! Slaves measure them (`lobster-slave`'s `resources` module) once per statistics interval and
//! once per heartbeat; the master flags a slave whose [`Resources::injector_cpu`] stays above
//! [`SATURATED_PERCENT`] for [`SATURATED_SECONDS`], and the SLA metric `injector_cpu` judges it.

use serde::{Deserialize, Serialize};

use crate::proto;

/// CPU share (percent) above which an injector counts as saturated.
pub const SATURATED_PERCENT: f64 = 90.0;
/// Consecutive seconds above [`SATURATED_PERCENT`] after which an injector is flagged.
pub const SATURATED_SECONDS: u64 = 5;

/// One injector's resources over one period. Merging two (a slave's seconds over a run, say)
/// keeps each field's peak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Busy share of the CPUs the slave may run on (its CPU affinity), percent 0–100.
    pub cpu_percent: f64,
    /// The slave process' own CPU time as a share of its runtime's worker threads (one core
    /// each), percent 0–100: a one-thread slave at 100 % cannot send faster however idle the
    /// host's other cores are.
    pub process_cpu_percent: f64,
    /// The host's memory in use (`MemTotal − MemAvailable`), bytes.
    pub memory_used_bytes: u64,
    /// The host's memory, bytes.
    pub memory_total_bytes: u64,
    /// Received over the host's interfaces other than loopback, bytes per second.
    pub net_rx_bytes_per_s: u64,
    /// Sent over the host's interfaces other than loopback, bytes per second.
    pub net_tx_bytes_per_s: u64,
    /// Sockets in use on the host (`/proc/net/sockstat`).
    pub sockets: u32,
}

impl Resources {
    /// The injector's CPU load as the SLA metric `injector_cpu` and the saturation flag read
    /// it: the busier of its CPUs' share and its own process' share, percent.
    pub fn injector_cpu(&self) -> f64 {
        self.cpu_percent.max(self.process_cpu_percent)
    }

    /// Keeps each field's peak of `self` and `other`.
    pub fn peak(&mut self, other: &Resources) {
        self.cpu_percent = self.cpu_percent.max(other.cpu_percent);
        self.process_cpu_percent = self.process_cpu_percent.max(other.process_cpu_percent);
        self.memory_used_bytes = self.memory_used_bytes.max(other.memory_used_bytes);
        self.memory_total_bytes = self.memory_total_bytes.max(other.memory_total_bytes);
        self.net_rx_bytes_per_s = self.net_rx_bytes_per_s.max(other.net_rx_bytes_per_s);
        self.net_tx_bytes_per_s = self.net_tx_bytes_per_s.max(other.net_tx_bytes_per_s);
        self.sockets = self.sockets.max(other.sockets);
    }

    /// The wire form (shares in thousandths, clamped to 0–1000).
    pub fn to_proto(&self) -> proto::Resources {
        let permille = |p: f64| (p * 10.0).round().clamp(0.0, 1000.0) as u32;
        proto::Resources {
            cpu_permille: permille(self.cpu_percent),
            process_cpu_permille: permille(self.process_cpu_percent),
            memory_used_bytes: self.memory_used_bytes,
            memory_total_bytes: self.memory_total_bytes,
            net_rx_bytes_per_s: self.net_rx_bytes_per_s,
            net_tx_bytes_per_s: self.net_tx_bytes_per_s,
            sockets: self.sockets,
        }
    }

    /// Reads the wire form; shares above 1000 ‰ are taken as 100 %.
    pub fn from_proto(p: &proto::Resources) -> Resources {
        let percent = |m: u32| f64::from(m.min(1000)) / 10.0;
        Resources {
            cpu_percent: percent(p.cpu_permille),
            process_cpu_percent: percent(p.process_cpu_permille),
            memory_used_bytes: p.memory_used_bytes,
            memory_total_bytes: p.memory_total_bytes,
            net_rx_bytes_per_s: p.net_rx_bytes_per_s,
            net_tx_bytes_per_s: p.net_tx_bytes_per_s,
            sockets: p.sockets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_keeps_shares_to_a_tenth_of_a_percent_and_clamps() {
        let r = Resources {
            cpu_percent: 93.44,
            process_cpu_percent: 12.0,
            memory_used_bytes: 1 << 30,
            memory_total_bytes: 4 << 30,
            net_rx_bytes_per_s: 1000,
            net_tx_bytes_per_s: 2000,
            sockets: 37,
        };
        let back = Resources::from_proto(&r.to_proto());
        assert_eq!(back.cpu_percent, 93.4);
        assert_eq!(back.injector_cpu(), 93.4);
        assert_eq!(back.sockets, 37);
        let over = proto::Resources {
            process_cpu_permille: 5000,
            ..Default::default()
        };
        assert_eq!(Resources::from_proto(&over).injector_cpu(), 100.0);
    }

    #[test]
    fn a_peak_keeps_each_fields_maximum() {
        let mut a = Resources {
            cpu_percent: 50.0,
            sockets: 9,
            ..Default::default()
        };
        a.peak(&Resources {
            cpu_percent: 20.0,
            process_cpu_percent: 99.0,
            sockets: 3,
            ..Default::default()
        });
        assert_eq!(
            (a.cpu_percent, a.process_cpu_percent, a.sockets),
            (50.0, 99.0, 9)
        );
        assert_eq!(a.injector_cpu(), 99.0);
    }
}
