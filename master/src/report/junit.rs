//! `--junit FILE`: a run as JUnit XML for CI systems (the de facto schema Jenkins, GitLab and
//! GitHub actions read: `testsuites` > `testsuite` > `testcase` with an optional `failure`).
//!
//! One suite per run; its cases: the verdict (failing with every reason when the run did not
//! pass), each SLA rule (failing when violated or never judged), each check (failing when it
//! ever failed).

use std::fmt::Write as _;

use quick_xml::escape::escape;

use super::Report;
use crate::sla::Verdict;

/// One test case: class, name, and the failure message when it failed.
struct Case {
    class: &'static str,
    name: String,
    failure: Option<String>,
}

/// The report as a JUnit XML document.
pub fn junit(r: &Report) -> String {
    let mut cases = vec![Case {
        class: "lobster.verdict",
        name: format!("run {} passes", r.name),
        failure: (!r.reasons.is_empty() || r.status != super::Status::Passed)
            .then(|| format!("{}: {}", r.status.as_str(), r.reasons.join("; "))),
    }];
    for rule in &r.sla {
        let failure = match rule.verdict {
            Verdict::Passed => None,
            Verdict::Failed => Some(match (rule.violated_at_s, rule.violation_value) {
                (Some(at), Some(v)) => format!("violated in second {at} (was {v:.2})"),
                _ => "violated".to_string(),
            }),
            Verdict::NotJudged => Some("never judged: its window never filled".to_string()),
        };
        cases.push(Case {
            class: "lobster.sla",
            name: rule.rule.clone(),
            failure,
        });
    }
    for c in &r.totals.checks {
        cases.push(Case {
            class: "lobster.checks",
            name: c.check.clone(),
            failure: (c.fails > 0)
                .then(|| format!("failed {} of {} times", c.fails, c.passes + c.fails)),
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let time = format!("{:.3}", r.duration_s);
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"lobster\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">",
        cases.len()
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\" timestamp=\"{}\">",
        escape(format!("{} ({})", r.name, r.run_id).as_str()),
        cases.len(),
        escape(r.started_at.as_str())
    );
    let _ = writeln!(o, "    <properties>");
    for (k, v) in [
        ("run_id", r.run_id.as_str()),
        ("status", r.status.as_str()),
        ("target", r.target.as_str()),
        ("requests", &r.totals.requests.to_string()),
        ("failures", &r.totals.failures.to_string()),
    ] {
        let _ = writeln!(o, "      <property name=\"{k}\" value=\"{}\"/>", escape(v));
    }
    let _ = writeln!(o, "    </properties>");
    for c in &cases {
        let name = escape(c.name.as_str());
        match &c.failure {
            None => {
                let _ = writeln!(
                    o,
                    "    <testcase classname=\"{}\" name=\"{name}\" time=\"0\"/>",
                    c.class
                );
            }
            Some(f) => {
                let f = escape(f.as_str());
                let _ = writeln!(
                    o,
                    "    <testcase classname=\"{}\" name=\"{name}\" time=\"0\">\n      <failure message=\"{f}\" type=\"{}\">{f}</failure>\n    </testcase>",
                    c.class, c.class
                );
            }
        }
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}
