//! `--html FILE`: the report as one self-contained page. Every byte it needs is inside it (the
//! styles, uPlot — MIT, vendored in `master/assets/uplot/` — the report's script and its data),
//! so opening it makes no request to any network; its tables are plain HTML, readable without
//! script and printable (charts first, then the tables, page breaks between sections).

use std::fmt::Write as _;

use lobster_fleet::scenario::Scenario;
use quick_xml::escape::escape;

use super::{LatencyOut, Report, Status};
use crate::sla::Verdict;

const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");
const REPORT_JS: &str = include_str!("../../assets/report/report.js");
const REPORT_CSS: &str = include_str!("../../assets/report/report.css");
/// Longest scenario text embedded (data items can be large).
const MAX_SCENARIO: usize = 256 * 1024;

/// The page for `report`; `scenario` (the run's, when known) adds the load over time and the
/// scenario as run.
pub fn html(report: &Report, scenario: Option<&Scenario>) -> String {
    let r = report;
    let t = &r.totals;
    let mut o = String::with_capacity(128 * 1024);
    let title = format!("{} — {} — Lobster", r.name, r.run_id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{UPLOT_CSS}\n{REPORT_CSS}</style></head><body>",
        escape(&title)
    );
    let class = match r.status {
        Status::Passed => "passed",
        Status::Failed => "failed",
        Status::Aborted => "aborted",
    };
    let _ = write!(
        o,
        "<header><h1>{}</h1><span class=\"verdict {class}\" id=\"verdict\">{}</span>\
         <p class=\"meta\">run <code>{}</code> · {} model against <code>{}</code> · {} → {} · \
         {:.1} s of load on {} slave(s) · {}</p></header>",
        escape(&r.name),
        r.status.as_str().to_uppercase(),
        escape(&r.run_id),
        escape(&r.model),
        escape(&r.target),
        escape(&r.started_at),
        escape(&r.ended_at),
        r.duration_s,
        r.slaves,
        escape(&r.stop.reason),
    );
    if !r.reasons.is_empty() {
        o.push_str("<section class=\"why\"><h2>Why</h2><ul>");
        for x in &r.reasons {
            let _ = write!(o, "<li>{}</li>", escape(x));
        }
        o.push_str("</ul></section>");
    }
    for w in &r.warnings {
        let _ = write!(o, "<p class=\"warning\">warning: {}</p>", escape(w));
    }
    let _ = write!(
        o,
        "<section class=\"cards\">{}{}{}{}{}{}{}</section>",
        card("requests", &t.requests.to_string()),
        card(
            "failures",
            &format!("{} ({:.2}%)", t.failures, t.error_rate_percent)
        ),
        card("req/s", &format!("{:.1}", t.rps)),
        card("p50", &format!("{:.2} ms", t.latency_ms.p50)),
        card("p95", &format!("{:.2} ms", t.latency_ms.p95)),
        card("p99", &format!("{:.2} ms", t.latency_ms.p99)),
        card("dropped", &t.dropped.to_string()),
    );
    o.push_str(
        "<section class=\"charts\"><h2>Over time</h2>\
         <figure><figcaption>Requests and failures per second</figcaption><div class=\"chart\" id=\"chart-rps\"></div></figure>\
         <figure><figcaption>Latency (ms)</figcaption><div class=\"chart\" id=\"chart-latency\"></div></figure>\
         <figure><figcaption>Errors per second by kind</figcaption><div class=\"chart\" id=\"chart-errors\"></div></figure>\
         <figure><figcaption>Load asked for and slaves reporting</figcaption><div class=\"chart\" id=\"chart-load\"></div></figure>\
         </section>",
    );
    endpoints(&mut o, r);
    failures(&mut o, r);
    sla(&mut o, r);
    extras(&mut o, r);
    injectors(&mut o, r);
    if let Some(s) = scenario {
        let mut text = serde_json::to_string_pretty(s).expect("a scenario serializes");
        if text.len() > MAX_SCENARIO {
            let mut cut = MAX_SCENARIO;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n… (cut: the scenario is larger than 256 KiB)");
        }
        let _ = write!(
            o,
            "<section class=\"scenario\"><h2>Scenario as run</h2><pre>{}</pre></section>",
            escape(&text)
        );
    }
    let _ = write!(
        o,
        "<footer>Lobster {} · figures merged exactly from every slave's histograms</footer>",
        lobster_fleet::VERSION
    );
    let data = serde_json::json!({
        "series": r.series,
        "model": r.model,
        "load": load_series(r, scenario),
    });
    // No `<` inside the script element at all (so nothing can close it or open a comment):
    // `<` only occurs in JSON strings, where `\u003c` means the same.
    let data = data.to_string().replace('<', "\\u003c");
    let _ = writeln!(
        o,
        "<script type=\"application/json\" id=\"lobster-data\">{data}</script>\
         <script>{UPLOT_JS}</script><script>{REPORT_JS}</script></body></html>"
    );
    o
}

fn card(label: &str, value: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div></div>",
        escape(label),
        escape(value)
    )
}

/// The load the scenario asked for in each second of the series (users or arrivals per
/// second), `null` when the scenario is not known.
fn load_series(r: &Report, scenario: Option<&Scenario>) -> Vec<Option<f64>> {
    r.series
        .iter()
        .map(|p| {
            if p.load.is_some() {
                return p.load;
            }
            // A report stored before seconds carried their load: the scenario's profile.
            Some(scenario?.load.load_at(p.index * 1000 + 500))
        })
        .collect()
}

fn latency_cells(l: &LatencyOut) -> String {
    [l.min, l.p50, l.p90, l.p95, l.p99, l.max]
        .iter()
        .map(|v| format!("<td class=\"num\">{v:.2}</td>"))
        .collect()
}

fn endpoints(o: &mut String, r: &Report) {
    table(o, "Endpoints", "endpoints", &r.endpoints, r);
    if !r.targets.is_empty() {
        table(o, "By target", "targets", &r.targets, r);
    }
}

/// A table of `rows` (endpoints, or targets) with the run's totals as its footer.
fn table(o: &mut String, title: &str, id: &str, rows: &[super::EndpointReport], r: &Report) {
    let _ = write!(
        o,
        "<section><h2>{title}</h2><table id=\"{id}\"><thead><tr><th>name</th>\
         <th class=\"num\">requests</th><th class=\"num\">failures</th><th class=\"num\">req/s</th><th class=\"num\">min ms</th><th class=\"num\">p50</th><th class=\"num\">p90</th>\
         <th class=\"num\">p95</th><th class=\"num\">p99</th><th class=\"num\">max</th><th>errors</th></tr></thead><tbody>",
    );
    let t = &r.totals;
    let errors = |e: &std::collections::BTreeMap<String, u64>| {
        e.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for e in rows {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td>{}<td>{}</td></tr>",
            escape(&e.name),
            e.requests,
            e.failures,
            e.rps,
            latency_cells(&e.latency_ms),
            escape(errors(&e.errors))
        );
    }
    let _ = write!(
        o,
        "</tbody><tfoot><tr><th>all</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td>{}<td>{}</td></tr></tfoot></table></section>",
        t.requests,
        t.failures,
        t.rps,
        latency_cells(&t.latency_ms),
        escape(errors(&t.errors))
    );
}

fn failures(o: &mut String, r: &Report) {
    let rows: Vec<_> = r
        .endpoints
        .iter()
        .flat_map(|e| e.failure_kinds.iter().map(move |k| (&e.name, k)))
        .collect();
    if rows.is_empty() {
        return;
    }
    o.push_str("<section><h2>Failures</h2><table id=\"failures\"><thead><tr><th>endpoint</th><th>kind</th><th class=\"num\">count</th><th>sample</th></tr></thead><tbody>");
    for (name, k) in rows {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            escape(name),
            escape(&k.kind),
            k.count,
            escape(&k.sample)
        );
    }
    o.push_str("</tbody></table></section>");
}

fn sla(o: &mut String, r: &Report) {
    if r.sla.is_empty() {
        return;
    }
    o.push_str("<section><h2>SLA rules</h2><table id=\"sla\"><thead><tr><th>rule</th><th>verdict</th><th class=\"num\">worst</th><th>first violated</th></tr></thead><tbody>");
    for s in &r.sla {
        let (mark, class) = match s.verdict {
            Verdict::Passed => ("pass", "passed"),
            Verdict::Failed => ("FAIL", "failed"),
            Verdict::NotJudged => ("NOT JUDGED", "aborted"),
        };
        let when = match (s.violated_at_s, s.violation_value) {
            (Some(at), Some(v)) => format!("second {at} ({v:.2})"),
            (Some(at), None) => format!("second {at}"),
            _ => String::new(),
        };
        let abort = if s.aborted_run {
            ", aborted the run"
        } else {
            ""
        };
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td class=\"{class}\">{mark}</td><td class=\"num\">{}</td><td>{}{abort}</td></tr>",
            escape(&s.rule),
            s.worst.map_or(String::new(), |w| format!("{w:.2}")),
            escape(&when)
        );
    }
    o.push_str("</tbody></table></section>");
}

/// Phases, checks and flows, when the run had them.
fn extras(o: &mut String, r: &Report) {
    let t = &r.totals;
    if !t.phases_ms.is_empty() {
        o.push_str("<section><h2>Request phases (ms)</h2><table id=\"phases\"><thead><tr><th>phase</th><th class=\"num\">count</th><th class=\"num\">mean</th><th class=\"num\">p50</th><th class=\"num\">p95</th><th class=\"num\">p99</th><th class=\"num\">max</th></tr></thead><tbody>");
        for (name, p) in &t.phases_ms {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td></tr>",
                escape(name),
                p.count,
                p.mean,
                p.p50,
                p.p95,
                p.p99,
                p.max
            );
        }
        o.push_str("</tbody></table></section>");
    }
    if !t.checks.is_empty() {
        o.push_str("<section><h2>Checks</h2><table id=\"checks\"><thead><tr><th>check</th><th class=\"num\">passes</th><th class=\"num\">fails</th></tr></thead><tbody>");
        for c in &t.checks {
            let class = if c.fails > 0 { " class=\"failed\"" } else { "" };
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\"{class}>{}</td></tr>",
                escape(&c.check),
                c.passes,
                c.fails
            );
        }
        o.push_str("</tbody></table></section>");
    }
    if !t.flows.is_empty() {
        o.push_str("<section><h2>Flows</h2><table id=\"flows\"><thead><tr><th>flow</th><th class=\"num\">completed</th><th class=\"num\">failed</th><th class=\"num\">p50 ms</th><th class=\"num\">p95 ms</th><th class=\"num\">max ms</th></tr></thead><tbody>");
        for f in &t.flows {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td></tr>",
                escape(&f.flow),
                f.completed,
                f.failed,
                f.duration_ms.p50,
                f.duration_ms.p95,
                f.duration_ms.max
            );
        }
        o.push_str("</tbody></table></section>");
    }
}

fn injectors(o: &mut String, r: &Report) {
    if r.injectors.is_empty() && r.lost_slaves.is_empty() {
        return;
    }
    o.push_str("<section><h2>Fleet</h2><table id=\"injectors\"><thead><tr><th>slave</th><th>instance</th><th class=\"num\">index</th><th class=\"num\">cores</th><th class=\"num\">requests</th><th class=\"num\">from s</th><th class=\"num\">peak CPU %</th><th class=\"num\">peak memory MiB</th><th class=\"num\">peak net KiB/s</th><th class=\"num\">peak sockets</th><th class=\"num\">saturated s</th><th>state</th></tr></thead><tbody>");
    for i in &r.injectors {
        let lost = r.lost_slaves.iter().find(|l| l.slave_id == i.slave_id);
        let state = match lost {
            Some(l) => format!("lost at {:.1} s: {}", l.at_s, l.reason),
            None if i.lost => "lost".to_string(),
            None => "to the end".to_string(),
        };
        let res = i.resources.map_or_else(
            || "<td>-</td>".repeat(4),
            |r| {
                format!(
                    "<td class=\"num\">{:.0}</td><td class=\"num\">{:.0}</td><td class=\"num\">{:.0}</td><td class=\"num\">{}</td>",
                    r.injector_cpu(),
                    r.memory_used_bytes as f64 / 1048576.0,
                    (r.net_rx_bytes_per_s + r.net_tx_bytes_per_s) as f64 / 1024.0,
                    r.sockets
                )
            },
        );
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{res}<td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&i.slave_id),
            escape(&i.instance_id),
            i.slave_index,
            f64::from(i.millicores) / 1000.0,
            i.requests,
            i.first_s.map_or("-".to_string(), |s| s.to_string()),
            i.saturated_s,
            escape(&state)
        );
    }
    o.push_str("</tbody></table>");
    if !r.stop.missing_final.is_empty() {
        let _ = write!(
            o,
            "<p class=\"warning\">no final statistics from: {}</p>",
            escape(r.stop.missing_final.join(", "))
        );
    }
    o.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::report;

    /// Names and texts from the scenario or the server can hold markup: they stay text, and
    /// none can close the data's script element.
    #[test]
    fn markup_in_names_and_samples_stays_text() {
        let mut r = report(
            "r-1",
            Status::Failed,
            &[("<script>alert(1)</script>", 10, 1, 1.0, 5.0)],
        );
        r.reasons.push("rule `p95 <= 5ms` & \"more\"".into());
        r.series.push(crate::aggregate::Point {
            index: 0,
            requests: 10,
            failures: 1,
            slaves: 1,
            latency_ms: Default::default(),
            phases_p95_ms: Default::default(),
            errors: [("</script><script>alert(2)".to_string(), 1)].into(),
            load: None,
            injector_cpu: None,
        });
        let page = html(&r, None);
        assert!(!page.contains("<script>alert"), "markup got through");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("rule `p95 &lt;= 5ms` &amp; &quot;more&quot;"));
        // The data still parses to what was put in.
        let doc = scraper::Html::parse_document(&page);
        let sel = scraper::Selector::parse("#lobster-data").unwrap();
        let text: String = doc.select(&sel).next().unwrap().text().collect();
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(data["series"][0]["errors"]["</script><script>alert(2)"], 1);
        assert_eq!(
            doc.select(&scraper::Selector::parse("script").unwrap())
                .count(),
            3
        );
    }
}
