//! Where every request's outcome lands: one slot per endpoint and target (a latency
//! histogram and counters behind an uncontended mutex), taken out whole once per interval:
//! each endpoint's slots merged into its entry, and with several targets (`targets:`) each
//! target's slots merged into its own, so a request is recorded once whichever views it
//! counts in.
//!
//! Each request is recorded exactly once, so the sum of all intervals a slave sends is exactly
//! what it did; which interval a request falls into is the one open when it completed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use lobster_fleet::stats::{
    self, CheckCount, EndpointStats, ErrorClass, FlowCount, IntervalStats, MAX_LATENCY_US, Phases,
};

/// The outcome of one request.
#[derive(Clone, Copy)]
pub struct Sample<'a> {
    /// Latency in microseconds; `None` when the request never reached the server.
    pub latency_us: Option<u64>,
    /// The response's status, when there was a response.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<Failure<'a>>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Where its time went; a phase that did not happen is `None`.
    pub timing: Timing,
}

/// The phases of one request (see [`Phases`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// TCP connect, when the request opened a connection.
    pub connecting: Option<Duration>,
    /// TLS handshake, when the request opened an `https` connection.
    pub tls_handshaking: Option<Duration>,
    /// Request written → first response byte.
    pub waiting: Option<Duration>,
    /// First response byte → last.
    pub receiving: Option<Duration>,
}

/// Why one request failed: its class, the unexpected status if there was one, and what
/// happened (formatted only for the first failure of its kind in an interval).
#[derive(Clone, Copy)]
pub struct Failure<'a> {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub detail: &'a dyn std::fmt::Display,
}

/// Failures of one kind within an interval.
struct Kind {
    class: ErrorClass,
    status: Option<u16>,
    count: u64,
    sample: String,
}

struct Slot {
    requests: u64,
    failures: u64,
    bytes_received: u64,
    bytes_sent: u64,
    errors: [u64; ErrorClass::ALL.len()],
    /// Few kinds per interval; a short list beats a map on this path.
    kinds: Vec<Kind>,
    latency_us: Histogram<u64>,
    phases: Phases,
}

impl Slot {
    /// Its counts as an endpoint's statistics.
    fn into_stats(self) -> EndpointStats {
        let errors = ErrorClass::ALL
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| (c.as_str().to_string(), n))
            .collect();
        let mut e = EndpointStats {
            requests: self.requests,
            failures: self.failures,
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            errors,
            latency_us: self.latency_us,
            phases: self.phases,
            ..Default::default()
        };
        for k in self.kinds {
            e.add_failures(&stats::failure_kind(k.class, k.status), k.count, &k.sample);
        }
        e
    }

    fn new() -> Self {
        Slot {
            requests: 0,
            failures: 0,
            bytes_received: 0,
            bytes_sent: 0,
            errors: [0; ErrorClass::ALL.len()],
            kinds: Vec::new(),
            latency_us: stats::new_histogram(),
            phases: Phases::default(),
        }
    }
}

/// Per-endpoint accumulators shared by every worker of a run.
pub struct Recorder {
    names: Vec<String>,
    /// The targets' base URLs when there are several (`targets:`), else empty.
    sites: Vec<String>,
    /// Slot of endpoint `e` at target `t`: `t * names.len() + e`.
    slots: Vec<Mutex<Slot>>,
    dropped: AtomicU64,
    /// Check labels, and how often each held and failed since the last take.
    checks: Vec<(String, AtomicU64, AtomicU64)>,
    /// Flow names, and how their instances ended since the last take.
    flows: Vec<(String, Mutex<FlowCount>)>,
}

impl Recorder {
    /// Endpoints by name (in the scenario's order), checks by label, flows by name.
    #[cfg(test)]
    pub fn new(names: Vec<String>, checks: Vec<String>, flows: Vec<String>) -> Self {
        Self::with_sites(names, Vec::new(), checks, flows)
    }

    /// As [`Recorder::new`], for the scenario's targets' base URLs (`sites`, in the
    /// scenario's order): each take also gives each target's requests when there are several.
    pub fn with_sites(
        names: Vec<String>,
        sites: Vec<String>,
        checks: Vec<String>,
        flows: Vec<String>,
    ) -> Self {
        let sites = if sites.len() > 1 { sites } else { Vec::new() };
        let slots = (0..names.len() * sites.len().max(1))
            .map(|_| Mutex::new(Slot::new()))
            .collect();
        Recorder {
            names,
            sites,
            slots,
            dropped: AtomicU64::new(0),
            checks: checks
                .into_iter()
                .map(|l| (l, AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            flows: flows
                .into_iter()
                .map(|f| (f, Mutex::new(FlowCount::default())))
                .collect(),
        }
    }

    /// Counts one instance of flow `index`: completed in `duration`, or failed (`None`).
    pub fn record_flow(&self, index: usize, duration: Option<Duration>) {
        let Some((_, slot)) = self.flows.get(index) else {
            return;
        };
        let mut f = slot.lock().unwrap_or_else(|p| p.into_inner());
        match duration {
            Some(d) => {
                f.completed += 1;
                let us = (d.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                let _ = f.duration_us.record(us);
            }
            None => f.failed += 1,
        }
    }

    /// Counts one outcome of check `index`.
    pub fn record_check(&self, index: usize, passed: bool) {
        if let Some((_, passes, fails)) = self.checks.get(index) {
            let counter = if passed { passes } else { fails };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one request of endpoint `endpoint` to the first target.
    #[cfg(test)]
    pub fn record(&self, endpoint: usize, s: Sample) {
        self.record_at(endpoint, 0, s);
    }

    /// Records one request of endpoint `endpoint` to target `site` (its index in the
    /// scenario's targets).
    pub fn record_at(&self, endpoint: usize, site: usize, s: Sample) {
        if endpoint >= self.names.len() {
            return;
        }
        let Some(slot) = self.slots.get(site * self.names.len() + endpoint) else {
            return;
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.requests += 1;
        slot.bytes_sent += s.bytes_sent;
        slot.bytes_received += s.bytes_received;
        if let Some(f) = s.error {
            slot.failures += 1;
            slot.errors[f.class as usize] += 1;
            let same = |k: &&mut Kind| k.class == f.class && k.status == f.status;
            if let Some(k) = slot.kinds.iter_mut().find(same) {
                k.count += 1;
            } else {
                slot.kinds.push(Kind {
                    class: f.class,
                    status: f.status,
                    count: 1,
                    sample: stats::clip_sample(f.detail.to_string()),
                });
            }
        }
        if let Some(us) = s.latency_us {
            // `record` resizes the histogram; `saturating_record` would clamp to its current
            // (initially tiny) range instead.
            let _ = slot.latency_us.record(us.clamp(1, MAX_LATENCY_US));
        }
        let t = s.timing;
        let p = &mut slot.phases;
        for (d, h) in [
            (t.connecting, &mut p.connecting_us),
            (t.tls_handshaking, &mut p.tls_handshaking_us),
            (t.waiting, &mut p.waiting_us),
            (t.receiving, &mut p.receiving_us),
        ] {
            if let Some(d) = d {
                Phases::record(h, d.as_micros() as u64);
            }
        }
    }

    /// Counts open-model arrivals that were due but never sent.
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes everything recorded since the last take.
    pub fn take(&self) -> IntervalStats {
        let mut out = IntervalStats {
            dropped: self.dropped.swap(0, Ordering::Relaxed),
            ..Default::default()
        };
        for (name, slot) in &self.flows {
            let f = std::mem::take(&mut *slot.lock().unwrap_or_else(|p| p.into_inner()));
            if f.completed + f.failed > 0 {
                out.flows.insert(name.clone(), f);
            }
        }
        for (label, passes, fails) in &self.checks {
            let c = CheckCount {
                passes: passes.swap(0, Ordering::Relaxed),
                fails: fails.swap(0, Ordering::Relaxed),
            };
            if c.passes + c.fails > 0 {
                let mine = out.checks.entry(label.clone()).or_default();
                mine.passes += c.passes;
                mine.fails += c.fails;
            }
        }
        let n = self.names.len();
        let taken: Vec<EndpointStats> = self
            .slots
            .iter()
            .map(|slot| {
                let s = std::mem::replace(
                    &mut *slot.lock().unwrap_or_else(|p| p.into_inner()),
                    Slot::new(),
                );
                s.into_stats()
            })
            .collect();
        if self.sites.is_empty() {
            for (name, e) in self.names.iter().zip(taken) {
                out.endpoints.insert(name.clone(), e);
            }
            return out;
        }
        for (i, e) in taken.iter().enumerate() {
            out.endpoints
                .entry(self.names[i % n].clone())
                .or_default()
                .merge(e);
            out.targets
                .entry(self.sites[i / n].clone())
                .or_default()
                .merge(e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With several targets, a request is recorded once and counted in its endpoint and in
    /// its target: each view sums to the same requests, failures and latency samples.
    #[test]
    fn each_request_counts_once_by_endpoint_and_by_target() {
        let r = Recorder::with_sites(
            vec!["a".into(), "b".into()],
            vec!["http://x".into(), "http://y".into()],
            Vec::new(),
            Vec::new(),
        );
        let ok = Sample {
            latency_us: Some(2_000),
            status: None,
            error: None,
            bytes_sent: 10,
            bytes_received: 100,
            timing: Timing::default(),
        };
        let failed = Sample {
            error: Some(Failure {
                class: ErrorClass::Status5xx,
                status: Some(503),
                detail: &"HTTP 503",
            }),
            ..ok
        };
        r.record_at(0, 0, ok);
        r.record_at(1, 1, ok);
        r.record_at(0, 1, failed);
        r.record_at(0, 2, ok); // no such target: ignored, never a panic
        let t = r.take();
        let count = |m: &std::collections::BTreeMap<String, EndpointStats>, k: &str| {
            (m[k].requests, m[k].failures, m[k].latency_us.len())
        };
        assert_eq!(count(&t.endpoints, "a"), (2, 1, 2));
        assert_eq!(count(&t.endpoints, "b"), (1, 0, 1));
        assert_eq!(count(&t.targets, "http://x"), (1, 0, 1));
        assert_eq!(count(&t.targets, "http://y"), (2, 1, 2));
        assert_eq!(t.targets["http://y"].failure_kinds["status_503"].count, 1);
        // One target: no per-target view.
        let one = Recorder::with_sites(
            vec!["a".into()],
            vec!["http://x".into()],
            Vec::new(),
            Vec::new(),
        );
        one.record_at(0, 0, ok);
        let t = one.take();
        assert!(t.targets.is_empty());
        assert_eq!(t.endpoints["a"].requests, 1);
    }

    #[test]
    fn every_sample_lands_in_exactly_one_take() {
        let r = Recorder::new(vec!["a".into(), "b".into()], Vec::new(), Vec::new());
        let ok = Sample {
            latency_us: Some(1500),
            status: None,
            error: None,
            bytes_sent: 10,
            bytes_received: 100,
            timing: Timing::default(),
        };
        r.record(0, ok);
        let status = Failure {
            class: ErrorClass::Status5xx,
            status: Some(503),
            detail: &"HTTP 503 Service Unavailable",
        };
        r.record(
            1,
            Sample {
                error: Some(status),
                ..ok
            },
        );
        r.record(
            1,
            Sample {
                error: Some(Failure {
                    detail: &"HTTP 503 (second)",
                    ..status
                }),
                ..ok
            },
        );
        r.record(
            1,
            Sample {
                latency_us: None,
                status: None,
                error: Some(Failure {
                    class: ErrorClass::Connect,
                    status: None,
                    detail: &"connection refused",
                }),
                ..ok
            },
        );
        r.record(7, ok); // unknown endpoint: ignored, never a panic
        let first = r.take();
        r.record(0, ok);
        let second = r.take();
        assert_eq!(first.requests() + second.requests(), 5);
        let b = &first.endpoints["b"];
        assert_eq!((b.requests, b.failures, b.latency_us.len()), (3, 3, 2));
        assert_eq!(b.errors["status_5xx"], 2);
        assert_eq!(b.errors["connect"], 1);
        // Per kind: the exact status with the first message, and the connect failure.
        assert_eq!(b.failure_kinds["status_503"].count, 2);
        assert_eq!(
            b.failure_kinds["status_503"].sample,
            "HTTP 503 Service Unavailable"
        );
        assert_eq!(b.failure_kinds["connect"].sample, "connection refused");
        assert!(second.endpoints["b"].failure_kinds.is_empty());
        assert_eq!(second.endpoints["a"].requests, 1);
    }

    #[test]
    fn fresh_histograms_keep_exact_extremes() {
        // Regression: saturating_record on a fresh auto-resizing histogram clamped to 2 µs.
        let r = Recorder::new(vec!["a".into()], Vec::new(), Vec::new());
        for us in [1500, 150, 90_000] {
            r.record(
                0,
                Sample {
                    latency_us: Some(us),
                    status: None,
                    error: None,
                    bytes_sent: 0,
                    bytes_received: 0,
                    timing: Timing::default(),
                },
            );
        }
        let h = &r.take().endpoints["a"].latency_us;
        assert_eq!(h.min(), 150);
        assert!(h.max() >= 90_000 && h.max() < 90_100);
    }

    /// A reused connection has no connect or handshake: those phases count connections opened.
    #[test]
    fn phases_land_only_where_they_happened() {
        let ms = Duration::from_millis;
        let r = Recorder::new(vec!["a".into()], Vec::new(), Vec::new());
        let opened = Sample {
            latency_us: Some(6000),
            status: None,
            error: None,
            bytes_sent: 1,
            bytes_received: 1,
            timing: Timing {
                connecting: Some(ms(1)),
                tls_handshaking: Some(ms(2)),
                waiting: Some(ms(3)),
                receiving: Some(Duration::from_micros(0)),
            },
        };
        let reused = Sample {
            timing: Timing {
                connecting: None,
                tls_handshaking: None,
                ..opened.timing
            },
            ..opened
        };
        r.record(0, opened);
        r.record(0, reused);
        let t = r.take();
        let p = &t.endpoints["a"].phases;
        let counts = [
            p.connecting_us.len(),
            p.tls_handshaking_us.len(),
            p.waiting_us.len(),
            p.receiving_us.len(),
        ];
        assert_eq!(counts, [1, 1, 2, 2]);
        assert!((1995..=2005).contains(&p.tls_handshaking_us.max()));
        assert!((2995..=3005).contains(&p.waiting_us.value_at_quantile(0.5)));
        assert_eq!(p.receiving_us.max(), 1, "a zero phase is recorded as 1 µs");
    }
}
