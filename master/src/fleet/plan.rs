//! The reconciler's pure half: `plan(desired, observed) -> Plan`, no I/O.
//!
//! Rules, in order: stopped fleet instances are started first (cheap, fast, same ids); only the
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

/// The plan that moves `observed` (the fleet's instances, any state but terminated) to `desired`.
pub fn plan(desired: &Desired, observed: &[Instance]) -> Plan {
    let mut up: Vec<&Instance> = observed.iter().filter(|i| i.state.is_up()).collect();
    let mut stopped: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.state == InstanceState::Stopped)
        .collect();
    let stopping: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.state == InstanceState::Stopping)
        .collect();
    up.sort_by_key(|i| order_key(i));
    stopped.sort_by_key(|i| order_key(i));
    let want = desired.count as usize;
    let mut p = Plan::default();
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
            let p = plan(&desired(count), &observed);
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
        let a = plan(&desired(20), &observed);
        let b = plan(&desired(20), &observed);
        assert_eq!(a, b, "the same inputs give the same plan and tokens");
        let tokens: std::collections::BTreeSet<_> =
            a.launch.iter().map(|x| x.client_token.clone()).collect();
        assert_eq!(tokens.len(), a.launch.len());
        assert!(a.launch.iter().all(|x| x.client_token.len() <= 64));
        let other = plan(&desired(20), &[inst("i-z", Running, "1")]);
        assert_ne!(other.launch[0].client_token, a.launch[0].client_token);
    }
}
