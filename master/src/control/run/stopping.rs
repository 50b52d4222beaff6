//! The end of a run: stop requests (SLA, API, shutdown), slaves acknowledging them, and the
//! final merge into the report.

use super::*;
use crate::report::{Injector, Totals};
use crate::sla::{RuleResult, Verdict};

impl Run {
    /// A slave acknowledged the stop.
    pub fn on_stopped(&mut self, uid: &str, now: Instant) {
        if let (Some(stop), Some(p)) = (&self.stop, self.participants.get_mut(uid)) {
            p.stop_acked_ms
                .get_or_insert(now.duration_since(stop.sent_at).as_millis() as u64);
        }
    }

    /// Stops every participant. `forced` sets the final status (an abort); otherwise the SLA decides.
    pub fn request_stop(&mut self, now: Instant, reason: &str, forced: Option<Status>) -> Outbox {
        if self.is_done() || self.stop.is_some() {
            return Vec::new();
        }
        info!(run_id = %self.id, reason, "stopping run");
        if let Some(s) = self.suspended_since.take() {
            self.suspended_total += now.saturating_duration_since(s);
        }
        let wait = self.scenario.timeout.min(MAX_INFLIGHT_WAIT) + STOP_SLACK;
        self.stop = Some(Stopping {
            reason: reason.to_string(),
            forced,
            sent_at: now,
            at_s: self.elapsed(now).as_secs_f64(),
            at_load_ms: (self.load_elapsed(now).as_millis() as u64)
                .min(self.scenario.duration_ms()),
            deadline: now + wait,
        });
        self.dirty = true;
        if self.phase == Phase::Init {
            self.phase = Phase::Stopping;
            return Vec::new();
        }
        self.phase = Phase::Stopping;
        let at_load_ms = self.stop.as_ref().map(|s| s.at_load_ms);
        self.active()
            .map(|(uid, _)| (uid.clone(), stop_msg(&self.id, reason, at_load_ms)))
            .collect()
    }

    /// Ends a run whose master ended before it did (found unfinished by the next master):
    /// nobody can send it more, so it finishes at `now` with what the store holds, and its
    /// slaves that never sent their last interval are lost. Its seconds end at the last one
    /// with data. (Ticking a day ahead instead, as before, closed a day of empty seconds: a
    /// report of 86,400 of them, ending a day after it was closed.)
    pub fn close_stale(&mut self, now: Instant) -> Vec<Point> {
        let missing: Vec<String> = self
            .active()
            .filter(|(_, p)| !p.got_last)
            .map(|(uid, _)| uid.clone())
            .collect();
        let _ = self.lose_slaves(
            now,
            missing.iter().map(String::as_str),
            "did not come back within its lease",
        );
        self.finish(now)
    }

    /// Closes the run and builds its report.
    pub(super) fn finish(&mut self, now: Instant) -> Vec<Point> {
        let closed: Vec<Point> = self.agg.close_all().into_iter().map(|c| c.point).collect();
        self.stamp_load(now);
        let stop = self.stop.take().unwrap_or(Stopping {
            reason: "stopped".into(),
            forced: None,
            sent_at: now,
            at_s: 0.0,
            at_load_ms: 0,
            deadline: now,
        });
        let missing: Vec<String> = self
            .active()
            .filter(|(_, p)| !p.got_last)
            .map(|(_, p)| p.slave_id.clone())
            .collect();
        let seconds = self
            .load_elapsed(now)
            .as_secs_f64()
            .min(self.scenario.duration_ms() as f64 / 1000.0);
        let names = crate::report::Names::of(&self.scenario);
        let (totals, endpoints) = figures(&self.agg.total, &names, seconds);
        let targets = crate::report::target_figures(&self.agg.total, &names, seconds);
        let sla = self.sla.results();
        let (status, reasons) = verdict(&stop, &sla, &totals, self.scenario.accepted_error_rate());
        let started_unix = self.started_unix_ms.unwrap_or(self.created_unix_ms);
        let report = Report {
            run_id: self.id.clone(),
            name: self.scenario.name.clone(),
            status,
            reasons,
            target: self.scenario.target_label(),
            warnings: {
                let mut w = self.scenario.warnings();
                w.extend(self.saturation.flagged().iter().map(|f| f.warning()));
                w.extend(self.slave_warnings.iter().cloned());
                w
            },
            model: self.scenario.load.model.name().to_string(),
            started_at: crate::clock::rfc3339(started_unix),
            ended_at: crate::clock::rfc3339(self.unix_ms_at(now)),
            duration_s: seconds,
            slaves: self.participants.len() as u32,
            lost_slaves: self.lost.clone(),
            injectors: {
                let mut v: Vec<Injector> = self
                    .participants
                    .iter()
                    .map(|(uid, p)| Injector {
                        slave_id: p.slave_id.clone(),
                        instance_id: p.instance_id.clone(),
                        slave_index: p.slave_index,
                        millicores: p.millicores,
                        lost: !p.active,
                        resources: self.agg.total.injectors.get(uid).copied(),
                        saturated_s: self.saturation.seconds_of(&p.slave_id),
                        requests: self.agg.per_slave.get(uid).map_or(0, |t| t.requests),
                        first_s: self.agg.per_slave.get(uid).map(|t| t.first_index),
                    })
                    .collect();
                v.sort_by(|a, b| {
                    (&a.instance_id, a.slave_index).cmp(&(&b.instance_id, b.slave_index))
                });
                v
            },
            totals,
            endpoints,
            targets,
            sla,
            stop: StopInfo {
                reason: stop.reason,
                at_s: stop.at_s,
                propagation_ms: self
                    .participants
                    .values()
                    .filter_map(|p| p.stop_acked_ms)
                    .max(),
                missing_final: missing,
            },
            saturated_injectors: self.saturation.flagged().to_vec(),
            late_requests: self.agg.late_requests,
            series: self.agg.series.clone(),
        };
        info!(run_id = %self.id, status = status.as_str(), requests = report.totals.requests, "run finished");
        self.phase = Phase::Done(status);
        self.report = Some(report);
        self.dirty = true;
        closed
    }
}

/// The verdict of a finished run and why (see `docs/scenario.md`, "Verdict"): `aborted` when
/// it was stopped before its end, else `failed` when an SLA rule was violated or never judged
/// or more requests failed than the scenario accepts, else `passed`. The reasons list every
/// one of these that applies, an abort's reason first.
pub(super) fn verdict(
    stop: &Stopping,
    sla: &[RuleResult],
    totals: &Totals,
    accepted_error_rate: Option<f64>,
) -> (Status, Vec<String>) {
    let mut reasons = Vec::new();
    if stop.forced.is_some() {
        reasons.push(format!("stopped before its end: {}", stop.reason));
    }
    for r in sla {
        match r.verdict {
            Verdict::Passed => {}
            Verdict::Failed => reasons.push(match (r.violated_at_s, r.violation_value) {
                (Some(at), Some(v)) => {
                    format!("SLA rule `{}` violated in second {at} (was {v:.2})", r.rule)
                }
                _ => format!("SLA rule `{}` violated", r.rule),
            }),
            Verdict::NotJudged => reasons.push(format!(
                "SLA rule `{}` was never judged (its window never filled, or it had no sample)",
                r.rule
            )),
        }
    }
    if let Some(reason) = crate::report::failed_checks_reason(&totals.checks) {
        reasons.push(reason);
    }
    if let Some(accepted) = accepted_error_rate
        && totals.failures > 0
        && totals.error_rate_percent > accepted
    {
        reasons.push(format!(
            "{} of {} requests failed ({:.2}%), more than the {accepted}% the scenario accepts (`max_error_rate`)",
            totals.failures, totals.requests, totals.error_rate_percent
        ));
    }
    let status = match stop.forced {
        Some(s) => s,
        None if reasons.is_empty() => Status::Passed,
        None => Status::Failed,
    };
    (status, reasons)
}

/// A `Stop` for a run, at load time `at_load_ms` when the run knows it (see the proto).
pub fn stop_msg(run_id: &str, reason: &str, at_load_ms: Option<u64>) -> MasterMessage {
    MasterMessage {
        kind: Some(Down::Stop(proto::Stop {
            run_id: run_id.to_string(),
            reason: reason.to_string(),
            at_load_ms,
        })),
    }
}
