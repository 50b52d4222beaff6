//! Fault injection for reliability tests: a share of requests throttled, capacity errors,
//! a capacity ceiling, slow boots and stops, a slow API, an unavailable metadata service. Set with flags of `lobster cloud local` or at run time with
//! `POST /__lobster/faults` (JSON of [`Faults`]).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share (0–1) of API requests answered `RequestLimitExceeded` (HTTP 503).
    pub throttle: f64,
    /// Share (0–1) of RunInstances/StartInstances answered `InsufficientInstanceCapacity`.
    pub capacity_errors: f64,
    /// Most instances pending or running at once; launches beyond it are cut (MinCount
    /// permitting) or refused with `InsufficientInstanceCapacity`.
    pub capacity_limit: Option<u32>,
    /// Time from `pending` to `running`.
    pub boot_delay_ms: u64,
    /// Time every API request waits before it is answered (a slow or distant endpoint).
    pub api_delay_ms: u64,
    /// Refuse every call made with instance credentials (a VM whose role lost its rights).
    pub deny_instance_api: bool,
    /// Time from StopInstances to the guest's shutdown: the instance stays `stopping` and its
    /// units keep running (and restarting, per their policy) meanwhile, as on EC2.
    pub stop_delay_ms: u64,
    /// The instances' metadata services answer nothing but HTTP 503 (IMDS down or slow to
    /// come up).
    pub imds_unavailable: bool,
}

impl Faults {
    /// Checks ranges.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("throttle", self.throttle),
            ("capacity_errors", self.capacity_errors),
        ] {
            if !(0.0..=1.0).contains(&v) || v.is_nan() {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.boot_delay_ms > 600_000 {
            return Err("boot_delay_ms must be at most 600000".into());
        }
        if self.stop_delay_ms > 120_000 {
            return Err("stop_delay_ms must be at most 120000".into());
        }
        if self.api_delay_ms > 60_000 {
            return Err("api_delay_ms must be at most 60000".into());
        }
        Ok(())
    }

    /// A draw with probability `p`.
    pub fn hit(p: f64) -> bool {
        p > 0.0 && rand::random::<f64>() < p
    }
}
