//! `fleet status`: every instance of the fleet with the slaves the master sees from it.

use std::fmt::Write as _;

use lobster_fleet::tags;
use lobster_provision::cloud::{Instance, InstanceState};
use serde::Serialize;

use crate::control::SlaveView;

/// One instance as `fleet status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub state: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub vcpus: Option<u32>,
    /// Slaves registered with the master from this instance.
    pub slaves: u32,
    /// Slaves it should run (vCPUs × slaves per core), where the type is known.
    pub expected_slaves: Option<u32>,
    pub launch_time: Option<String>,
    pub age_s: Option<u64>,
    /// Seconds since any of its slaves last carried load.
    pub idle_s: Option<u64>,
    pub expires_at: Option<String>,
    pub stop_reason: Option<String>,
}

/// The whole fleet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetStatus {
    pub fleet: String,
    pub cloud: String,
    pub instances: Vec<InstanceStatus>,
    pub running: usize,
    pub slaves: usize,
}

fn age_s(launch: Option<&str>) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(launch?.trim_end_matches('Z')).ok()?;
    std::time::SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs())
}

/// vCPUs of each instance type of the fleet, as its cloud says (types it does not know are
/// left out).
pub type TypeVcpus = std::collections::BTreeMap<String, u32>;

/// Asks the cloud for the vCPUs of every instance type among `instances`.
pub async fn type_vcpus(
    cloud: &dyn lobster_provision::cloud::Cloud,
    instances: &[Instance],
) -> TypeVcpus {
    let mut out = TypeVcpus::new();
    for i in instances {
        if !out.contains_key(&i.instance_type)
            && let Ok(v) = cloud.vcpus(&i.instance_type).await
        {
            out.insert(i.instance_type.clone(), v);
        }
    }
    out
}

/// Joins instances with the master's slaves (pure; `vcpus` from [`type_vcpus`]).
pub fn join(
    fleet: &str,
    cloud: &str,
    instances: &[Instance],
    slaves: &[SlaveView],
    slaves_per_core: u32,
    vcpus: &TypeVcpus,
) -> FleetStatus {
    let mut out: Vec<InstanceStatus> = instances
        .iter()
        .map(|i| {
            let mine: Vec<&SlaveView> = slaves
                .iter()
                .filter(|s| s.connected && s.instance_id == i.id)
                .collect();
            let vcpus = vcpus.get(&i.instance_type).copied();
            InstanceStatus {
                id: i.id.clone(),
                state: i.state.name().to_string(),
                instance_type: i.instance_type.clone(),
                vcpus,
                slaves: mine.len() as u32,
                expected_slaves: vcpus.map(|v| v * slaves_per_core),
                launch_time: i.launch_time.clone(),
                age_s: age_s(i.launch_time.as_deref()),
                idle_s: mine.iter().map(|s| s.idle_ms / 1000).min(),
                expires_at: i.tags.get(tags::EXPIRES_AT).cloned(),
                stop_reason: i.tags.get(tags::STOP_REASON).cloned(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    FleetStatus {
        fleet: fleet.to_string(),
        cloud: cloud.to_string(),
        running: instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count(),
        slaves: out.iter().map(|i| i.slaves as usize).sum(),
        instances: out,
    }
}

fn secs(s: Option<u64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h", s / 3600),
    }
}

/// The table `fleet status` prints.
pub fn render(f: &FleetStatus) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "fleet {} on {}: {} instance(s), {} running, {} slave(s) registered",
        f.fleet,
        f.cloud,
        f.instances.len(),
        f.running,
        f.slaves
    );
    if f.instances.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "{:<21} {:<14} {:<13} {:>7} {:>6} {:>6} {:<25} STOP-REASON",
        "ID", "STATE", "TYPE", "SLAVES", "AGE", "IDLE", "EXPIRES-AT"
    );
    for i in &f.instances {
        let slaves = match i.expected_slaves {
            Some(e) if i.state == "running" => format!("{}/{e}", i.slaves),
            _ => i.slaves.to_string(),
        };
        let _ = writeln!(
            o,
            "{:<21} {:<14} {:<13} {:>7} {:>6} {:>6} {:<25} {}",
            i.id,
            i.state,
            i.instance_type,
            slaves,
            secs(i.age_s),
            secs(i.idle_s),
            i.expires_at.as_deref().unwrap_or("-"),
            i.stop_reason.as_deref().unwrap_or("")
        );
    }
    o
}
