//! The reconciler's pure half: `plan(desired, observed, now) -> Plan`, no I/O.
//!
//! Rules, in order: instances up past their `lobster:expires-at` are stopped (whatever else
//! happens on their VM, the lifetime holds) and do not count as up; stopped fleet instances are started first (cheap, fast, same ids); only the
//! rest is launched, in batches, each with a deterministic client token; instances still
//! stopping are waited for rather than replaced; a fleet above its count stops its newest
//! instances. Running the plan of a converged fleet yields an empty plan (idempotent).

use sha2::{Digest, Sha256};

use lobster_provision::cloud::{Instance, InstanceState};

/// What the fleet should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub fleet: String,
    pub count: u32,
    /// Most instances per RunInstances call.
    pub batch_size: u32,
}

/// One RunInstances call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub count: u32,
    pub client_token: String,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stopped instances to start.
    pub start: Vec<String>,
    pub launch: Vec<Batch>,
    /// Surplus instances to stop.
    pub stop: Vec<String>,
    /// Instances up past their `lobster:expires-at`, to stop.
    pub expired: Vec<String>,
    /// Instances in transition (stopping) to wait for before deciding more.
    pub wait: Vec<String>,
    /// Instances up (pending or running) that stay.
    pub keep: Vec<String>,
}

impl Plan {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
            && self.launch.is_empty()
            && self.stop.is_empty()
            && self.expired.is_empty()
            && self.wait.is_empty()
    }

    /// Instances to launch in total.
    #[cfg(test)]
    pub fn launching(&self) -> u32 {
        self.launch.iter().map(|b| b.count).sum()
    }

    /// One line per action, for `--dry-run` and logs.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        if !self.expired.is_empty() {
            lines.push(format!(
                "stop {} instance(s) past lobster:expires-at: {}",
                self.expired.len(),
                self.expired.join(" ")
            ));
        }
        if !self.keep.is_empty() {
            lines.push(format!("keep {} instance(s) up", self.keep.len()));
        }
        if !self.start.is_empty() {
            lines.push(format!(
                "start {} stopped instance(s): {}",
                self.start.len(),
                self.start.join(" ")
            ));
        }
        for b in &self.launch {
            lines.push(format!(
                "launch {} instance(s) (client token {})",
                b.count, b.client_token
            ));
        }
        if !self.stop.is_empty() {
            lines.push(format!(
                "stop {} surplus instance(s): {}",
                self.stop.len(),
                self.stop.join(" ")
            ));
        }
        if !self.wait.is_empty() {
            lines.push(format!(
                "wait for {} stopping instance(s): {}",
                self.wait.len(),
                self.wait.join(" ")
            ));
        }
        if lines.is_empty() || self.is_empty() {
            lines.push("nothing to change".into());
        }
        lines.join("\n")
    }
}

/// A deterministic idempotency token for a batch: the same fleet, count, observed instances
/// and batch always give the same token, so a master that restarts mid-launch and plans again
/// re-sends the same token and launches nothing twice.
pub fn client_token(d: &Desired, observed: &[Instance], batch: usize) -> String {
    let mut ids: Vec<&str> = observed.iter().map(|i| i.id.as_str()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    h.update(d.fleet.as_bytes());
    h.update([0]);
    h.update(d.count.to_be_bytes());
    for id in ids {
        h.update(id.as_bytes());
        h.update([0]);
    }
    h.update((batch as u64).to_be_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("lobster-{hex}")
}

fn order_key(i: &Instance) -> (String, String) {
    (i.launch_time.clone().unwrap_or_default(), i.id.clone())
}

/// Whether `i` carries a `lobster:expires-at` at or before `now_unix_ms` (an unreadable tag
/// is not an expiry: the VM's own backstop reads the same tag and would not act on it either).
pub fn is_expired(i: &Instance, now_unix_ms: u64) -> bool {
    i.tags
        .get(lobster_fleet::tags::EXPIRES_AT)
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim().trim_end_matches('Z')).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|t| t.as_millis() as u64 <= now_unix_ms)
}

/// The plan that moves `observed` (the fleet's instances, any state but terminated) to
/// `desired` at `now_unix_ms`.
pub fn plan(desired: &Desired, observed: &[Instance], now_unix_ms: u64) -> Plan {
    let (expired, up): (Vec<&Instance>, Vec<&Instance>) = observed
        .iter()
        .filter(|i| i.state.is_up())
        .partition(|i| is_expired(i, now_unix_ms));
    let mut up = up;
    let mut stopped: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.state == InstanceState::Stopped)
        .collect();
    // Expired instances are about to be stopping: waited for like them, not replaced.
    let stopping: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.state == InstanceState::Stopping)
        .chain(expired.iter().copied())
        .collect();
    up.sort_by_key(|i| order_key(i));
    stopped.sort_by_key(|i| order_key(i));
    let want = desired.count as usize;
    let mut p = Plan {
        expired: expired.iter().map(|i| i.id.clone()).collect(),
        ..Plan::default()
    };
    if up.len() >= want {
        // Too many: stop the newest.
        p.keep = up[..want].iter().map(|i| i.id.clone()).collect();
        p.stop = up[want..].iter().rev().map(|i| i.id.clone()).collect();
        return p;
    }
    p.keep = up.iter().map(|i| i.id.clone()).collect();
    let mut need = want - up.len();
    let start: Vec<String> = stopped.iter().take(need).map(|i| i.id.clone()).collect();
    need -= start.len();
    p.start = start;
    if need > 0 && !stopping.is_empty() {
        // They become stoppable-and-startable soon: cheaper than new instances.
        p.wait = stopping.iter().take(need).map(|i| i.id.clone()).collect();
        need -= p.wait.len();
    }
    let batch = desired.batch_size.max(1) as usize;
    let mut n = 0;
    while need > 0 {
        let count = need.min(batch);
        p.launch.push(Batch {
            count: count as u32,
            client_token: client_token(desired, observed, n),
        });
        need -= count;
        n += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn expiring(mut i: Instance, at: &str) -> Instance {
        i.tags
            .insert(lobster_fleet::tags::EXPIRES_AT.into(), at.into());
        i
    }

    fn inst(id: &str, state: InstanceState, at: &str) -> Instance {
        Instance {
            id: id.into(),
            state,
            instance_type: "local.small".into(),
            image_id: "ami-1".into(),
            launch_time: Some(at.into()),
            private_ip: None,
            tags: Default::default(),
        }
    }

    fn desired(count: u32) -> Desired {
        Desired {
            fleet: "f".into(),
            count,
            batch_size: 8,
        }
    }

    use InstanceState::*;

    /// The reconciler as a table: (observed, count) → (start, launch, stop, wait).
    #[test]
    fn plan_table() {
        type Row = (
            &'static str,
            Vec<Instance>,
            u32,
            Vec<&'static str>,
            u32,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let rows: Vec<Row> = vec![
            (
                "empty fleet launches all",
                vec![],
                20,
                vec![],
                20,
                vec![],
                vec![],
            ),
            (
                "converged fleet does nothing",
                vec![inst("i-a", Running, "1"), inst("i-b", Pending, "2")],
                2,
                vec![],
                0,
                vec![],
                vec![],
            ),
            (
                "stopped instances restart before any launch",
                vec![
                    inst("i-a", Stopped, "1"),
                    inst("i-b", Stopped, "2"),
                    inst("i-c", Running, "3"),
                ],
                5,
                vec!["i-a", "i-b"],
                2,
                vec![],
                vec![],
            ),
            (
                "never more than asked: oldest stopped first",
                vec![inst("i-b", Stopped, "2"), inst("i-a", Stopped, "1")],
                1,
                vec!["i-a"],
                0,
                vec![],
                vec![],
            ),
            (
                "surplus stops the newest",
                vec![
                    inst("i-a", Running, "1"),
                    inst("i-b", Running, "2"),
                    inst("i-c", Running, "3"),
                ],
                1,
                vec![],
                0,
                vec!["i-c", "i-b"],
                vec![],
            ),
            (
                "stopping instances are waited for",
                vec![inst("i-a", Stopping, "1")],
                2,
                vec![],
                1,
                vec![],
                vec!["i-a"],
            ),
            (
                "shutting-down instances do not count",
                vec![inst("i-a", ShuttingDown, "1")],
                1,
                vec![],
                1,
                vec![],
                vec![],
            ),
            (
                "count zero stops everything",
                vec![inst("i-a", Running, "1")],
                0,
                vec![],
                0,
                vec!["i-a"],
                vec![],
            ),
        ];
        for (what, observed, count, start, launch, stop, wait) in rows {
            let p = plan(&desired(count), &observed, NOW);
            assert_eq!(p.start, start, "{what}: start");
            assert_eq!(p.launching(), launch, "{what}: launch");
            assert_eq!(p.stop, stop, "{what}: stop");
            assert_eq!(p.wait, wait, "{what}: wait");
            assert!(p.launch.iter().all(|b| b.count <= 8), "{what}: batch size");
        }
    }

    #[test]
    fn tokens_are_deterministic_and_distinct_per_batch() {
        let observed = vec![inst("i-a", Running, "1")];
        let a = plan(&desired(20), &observed, NOW);
        let b = plan(&desired(20), &observed, NOW);
        assert_eq!(a, b, "the same inputs give the same plan and tokens");
        let tokens: std::collections::BTreeSet<_> =
            a.launch.iter().map(|x| x.client_token.clone()).collect();
        assert_eq!(tokens.len(), a.launch.len());
        assert!(a.launch.iter().all(|x| x.client_token.len() <= 64));
        let other = plan(&desired(20), &[inst("i-z", Running, "1")], NOW);
        assert_ne!(other.launch[0].client_token, a.launch[0].client_token);
    }

    /// An instance up past its expiry is stopped on every pass and replaced (a stopped one
    /// first); one not yet expired, or stopped, or with an unreadable tag, is left alone.
    #[test]
    fn expired_instances_are_stopped_and_do_not_count() {
        // 1_800_000_000 s is 2027-01-15T08:00:00Z.
        let past = "2027-01-15T07:59:59Z";
        let future = "2027-01-15T08:00:01Z";
        let observed = vec![
            expiring(inst("i-a", Running, "1"), past),
            expiring(inst("i-b", Running, "2"), future),
            expiring(inst("i-c", Pending, "3"), "2027-01-15T08:00:00Z"),
            expiring(inst("i-d", Stopped, "4"), past),
            expiring(inst("i-e", Running, "5"), "soon"),
        ];
        let p = plan(&desired(3), &observed, NOW);
        assert_eq!(p.expired, vec!["i-a", "i-c"]);
        assert_eq!(p.keep, vec!["i-b", "i-e"]);
        assert_eq!(p.start, vec!["i-d"]);
        assert_eq!(p.launching(), 0);
        assert!(
            p.describe()
                .contains("stop 2 instance(s) past lobster:expires-at: i-a i-c")
        );
        // Expired instances are stopped even when the fleet is at its count or above.
        let p = plan(&desired(1), &observed, NOW);
        assert_eq!(
            (p.expired.len(), p.stop.clone()),
            (2, vec!["i-e".to_string()])
        );
        assert!(!p.is_empty());
        // A second later nothing more has expired: the same plan (idempotent).
        assert_eq!(plan(&desired(1), &observed, NOW), p);
        assert!(plan(&desired(2), &observed[1..2], NOW).expired.is_empty());
        // A fleet that has all expired waits for them to stop and starts them again (with a
        // fresh expiry) rather than launching new ones.
        let p = plan(&desired(2), &observed[..1], NOW);
        assert_eq!(
            (p.expired.clone(), p.wait.clone()),
            (vec!["i-a".to_string()], vec!["i-a".to_string()])
        );
        assert_eq!(p.launching(), 1);
    }
}
