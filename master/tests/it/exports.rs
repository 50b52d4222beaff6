//! Reports as CI systems and spreadsheets read them: `--junit` parsed by a real XML reader,
//! `--csv` by a real CSV reader, both equal to the JSON report.

use crate::common::*;

#[test]
fn junit_and_csv_exports_say_what_the_json_report_says() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: exports\ntarget: http://{addr}\nduration: 3s\nload: {{users: 2}}\nthink: 5ms\nrequests:\n  - {{name: ok, path: /}}\n  - {{name: broken, path: /status/503}}\nmax_error_rate: 100%\nsla:\n  - {{metric: p99, max: 10s, window: 1s}}\n  - {{metric: rps, min: 1000000, window: 1s, abort: false}}\n"
    );
    let file = env.scenario("exports.yaml", &text);
    let (xml, prefix) = (env.path("run.xml"), env.path("run"));
    let (code, out, err, r) = lobster_run(
        &env,
        &file,
        1,
        &[
            "--junit",
            xml.to_str().unwrap(),
            "--csv",
            prefix.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    let r = r.unwrap();
    assert_eq!(r["status"], "failed");

    // JUnit: valid against the schema CI systems read (Jenkins'); a document that is not is
    // refused by the same check.
    let xsd = std::env::var("LOBSTER_TEST_JUNIT_XSD")
        .expect("scripts/test fetches the JUnit schema (LOBSTER_TEST_JUNIT_XSD)");
    let xmllint = |file: &std::path::Path| {
        let mut cmd = std::process::Command::new(tool("LOBSTER_TEST_XMLLINT", "xmllint"));
        cmd.args(["--noout", "--schema", &xsd]).arg(file);
        let (out, _, err) = run(cmd);
        (out.status.success(), err)
    };
    let (valid, why) = xmllint(&xml);
    assert!(valid, "{why}");
    let broken = env.path("broken.xml");
    std::fs::write(
        &broken,
        "<testsuites><testsuite name=\"x\" tests=\"1\"><testcase/></testsuite></testsuites>",
    )
    .unwrap();
    assert!(!xmllint(&broken).0, "a testcase without a name is invalid");
    // The verdict and each SLA rule are test cases; the failing ones carry a failure.
    let text = std::fs::read_to_string(&xml).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut cases, mut failures, mut names, mut declared) = (0, 0, Vec::new(), None);
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let attr = |k: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == k)
                        .map(|a| a.unescape_value().unwrap().to_string())
                };
                match e.name().as_ref() {
                    b"testcase" => {
                        cases += 1;
                        names.push(attr(b"name").unwrap());
                    }
                    b"failure" => failures += 1,
                    b"testsuites" => declared = Some((attr(b"tests"), attr(b"failures"))),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!((cases, failures), (3, 2), "{text}");
    assert_eq!(declared, Some((Some("3".into()), Some("2".into()))));
    let rules: Vec<String> = r["sla"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        &names[1..],
        &rules[..],
        "rule texts (with `<=`) survive the XML"
    );

    // CSV: per endpoint then Aggregated, the history, the failures by kind.
    let read = |suffix: &str| {
        let mut rd = csv::Reader::from_path(env.path(&format!("run{suffix}"))).unwrap();
        let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<Vec<String>> = rd
            .records()
            .map(|x| x.unwrap().iter().map(String::from).collect())
            .collect();
        (header, rows)
    };
    let (header, stats) = read("_stats.csv");
    assert_eq!(header[2], "Request Count");
    let names: Vec<&str> = stats.iter().map(|x| x[1].as_str()).collect();
    assert_eq!(names, ["ok", "broken", "Aggregated"]);
    for (row, e) in stats.iter().zip(r["endpoints"].as_array().unwrap()) {
        assert_eq!(row[2], e["requests"].to_string());
        assert_eq!(row[3], e["failures"].to_string());
    }
    assert_eq!(stats[2][2], r["totals"]["requests"].to_string());
    let (_, history) = read("_stats_history.csv");
    let sum: u64 = history.iter().map(|x| x[1].parse::<u64>().unwrap()).sum();
    assert_eq!(history.len(), r["series"].as_array().unwrap().len());
    assert_eq!(sum, r["totals"]["requests"].as_u64().unwrap());
    let (_, failures) = read("_failures.csv");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        failures[0][..4],
        [
            "broken",
            "status_503",
            "503",
            &r["endpoints"][1]["failures"].to_string()
        ]
    );
}

/// The run history is read from the home's run store with no master running: the run is
/// listed with its figures, shown as `lobster run` printed it, and its reports written again
/// equal to the original; an unknown id is bad input with the way out.
#[test]
fn runs_list_show_and_report_read_the_store_without_a_master() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let file = env.scenario(
        "h.yaml",
        &scenario_text(addr, "2s", "users: 1", "think: 10ms\n"),
    );
    let (code, out, err, r) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r = r.unwrap();
    let id = r["run_id"].as_str().unwrap();
    let requests = r["totals"]["requests"].to_string();

    let (code, list, err) = env.cli(&["runs", "list"]);
    assert_eq!(code, 0, "{err}");
    let line = list
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((cols[2], cols[4]), ("passed", requests.as_str()), "{line}");

    let (code, shown, _) = env.cli(&["runs", "show", id]);
    assert_eq!(code, 0);
    assert!(
        shown.contains(&format!("run {id} (test) PASSED")),
        "{shown}"
    );

    let (json, xml) = (env.path("again.json"), env.path("again.xml"));
    let (code, _, err) = env.cli(&[
        "runs",
        "report",
        id,
        "--json",
        json.to_str().unwrap(),
        "--junit",
        xml.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        report(&json),
        r,
        "the stored report is the one `lobster run` wrote"
    );
    assert!(
        std::fs::read_to_string(&xml)
            .unwrap()
            .contains("failures=\"0\"")
    );

    let (code, _, err) = env.cli(&["runs", "show", "r-nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no run `r-nope`") && err.contains("lobster runs list"),
        "{err}"
    );
    let (code, _, err) = env.cli(&["runs", "report", id]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--json FILE, --junit FILE, --csv PREFIX and/or --html FILE"),
        "{err}"
    );
}

/// The HTML report is one self-contained page: no element loads anything (no `src`, no
/// stylesheet link, no CSS `url(`/`@import`), its tables say what the JSON report says, and a
/// real browser (headless Chromium, every host name unresolvable) draws its four charts with no
/// console message at all. `runs report --html` writes the same page for a stored run.
#[test]
fn html_report_is_self_contained_and_a_browser_draws_its_charts() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let text = format!(
        "name: page\ntarget: http://{addr}\nduration: 3s\nload: {{rate: 40}}\nrequests:\n  - {{name: ok, path: /, weight: 3}}\n  - {{name: broken, path: /status/503}}\nmax_error_rate: 100%\nsla:\n  - {{metric: error_rate, max: 1%, window: 1s, abort: false}}\n"
    );
    let file = env.scenario("page.yaml", &text);
    let html = env.path("run.html");
    let (code, out, err, r) = lobster_run(&env, &file, 1, &["--html", html.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}\n{err}");
    let r = r.unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    let doc = scraper::Html::parse_document(&page);
    let sel = |s: &str| scraper::Selector::parse(s).unwrap();

    // Nothing is loaded from anywhere.
    let loading: Vec<String> = doc
        .select(&sel(
            "[src], link, [href]:not(a), a[href]:not([href^='#']), iframe, object, embed",
        ))
        .map(|e| e.html().chars().take(120).collect())
        .collect();
    assert!(loading.is_empty(), "elements that load: {loading:?}");
    for style in doc.select(&sel("style")) {
        let css = style.text().collect::<String>();
        assert!(
            !css.contains("@import") && !css.contains("url("),
            "CSS that loads"
        );
    }
    assert_eq!(
        doc.select(&sel("script")).count(),
        3,
        "data, uPlot, the report's"
    );

    // The verdict, the endpoints and the failing rule, as the JSON report has them.
    let verdict = doc.select(&sel("#verdict")).next().unwrap();
    assert_eq!(verdict.text().collect::<String>(), "FAILED");
    let rows: Vec<Vec<String>> = doc
        .select(&sel("#endpoints tbody tr"))
        .map(|tr| {
            tr.select(&sel("td"))
                .map(|td| td.text().collect())
                .collect()
        })
        .collect();
    let want: Vec<(String, String)> = r["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["requests"].to_string(),
            )
        })
        .collect();
    let got: Vec<(String, String)> = rows.iter().map(|x| (x[0].clone(), x[1].clone())).collect();
    assert_eq!(got, want);
    let sla: Vec<String> = doc
        .select(&sel("#sla tbody tr"))
        .map(|tr| tr.text().collect::<String>())
        .collect();
    assert_eq!(sla.len(), 1);
    assert!(
        sla[0].contains("error_rate <= 1% over 1s") && sla[0].contains("FAIL"),
        "{sla:?}"
    );
    // The embedded data is the report's series.
    let data: serde_json::Value = serde_json::from_str(
        &doc.select(&sel("#lobster-data"))
            .next()
            .unwrap()
            .text()
            .collect::<String>(),
    )
    .unwrap();
    assert_eq!(data["series"], r["series"]);
    assert_eq!(data["load"][0], 40.0, "the rate asked for in second 1");

    // A real browser with no name resolution: four charts, not one console message.
    let chromium = tool("LOBSTER_TEST_CHROMIUM", "chromium");
    let browse = |file: &std::path::Path| {
        let mut cmd = std::process::Command::new(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            &format!("--user-data-dir={}", env.path("chromium").display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", file.display()));
        let (out, dom, log) = run(cmd);
        assert!(out.status.success(), "{log}");
        (dom, log)
    };
    let (dom, log) = browse(&html);
    assert!(
        dom.contains("data-charts=\"4\""),
        "charts drawn: {}",
        dom.len()
    );
    assert_eq!(dom.matches("class=\"uplot").count(), 4);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console: {console:?}");
    // The browser check itself sees a page's errors.
    let bad = env.path("bad.html");
    std::fs::write(&bad, "<script>undefinedFn()</script>").unwrap();
    assert!(browse(&bad).1.contains("Uncaught ReferenceError"));

    // The stored run gives the same page (its scenario read back from the store).
    let again = env.path("again.html");
    let id = r["run_id"].as_str().unwrap();
    let (code, _, err) = env.cli(&["runs", "report", id, "--html", again.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&again).unwrap(), page);
}

/// The live table shows the load asked for in each second (here a ramp of the arrival rate)
/// and the seconds left, every 10 seconds the endpoints so far, and no row for the tail after
/// the load's end.
#[test]
fn the_live_table_shows_load_time_left_and_endpoints() {
    let env = Env::new();
    let (_target, addr) = env.target();
    let file = env.scenario(
        "ramp.yaml",
        &format!(
            "name: ramp\ntarget: http://{addr}\nduration: 11s\nload:\n  rate: 10\n  stages:\n    - {{duration: 10s, rate: 30}}\nrequests:\n  - {{name: home, path: /}}\n  - {{name: item, path: /item/1}}\n"
        ),
    );
    let (code, out, err, _) = lobster_run(&env, &file, 1, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let header = out.lines().find(|l| l.contains("req/s")).unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        &cols[cols.len() - 4..],
        ["rate/s", "left", "s", "cpu%"],
        "{header}"
    );
    // A cell is a number, or `-` where nothing was measured.
    let cell = |x: &str| (x != "-").then(|| x.parse::<f64>().expect(x));
    let rows: Vec<Vec<Option<f64>>> = out
        .lines()
        .skip_while(|l| !l.contains("req/s"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("run "))
        .filter(|l| !l.trim_start().starts_with(|c: char| c.is_alphabetic()))
        .map(|l| l.split_whitespace().map(cell).collect())
        .collect();
    assert!(rows.len() >= 10, "{out}");
    for r in &rows {
        let [second, slaves, rate, left] = [r[0], r[7], r[8], r[9]].map(|c| c.expect("a number"));
        assert!(second <= 11.0, "a row past the load's end: {r:?}");
        // Every second a slave reported has its CPU, the last one too (it ends the share).
        if slaves > 0.0 {
            let cpu = r[10].unwrap_or_else(|| panic!("second {second}: no CPU\n{out}"));
            assert!(
                (0.0..=100.0).contains(&cpu),
                "the busiest injector's CPU: {r:?}"
            );
        }
        let want = if second <= 10.0 {
            10.0 + 2.0 * (second - 0.5)
        } else {
            30.0
        };
        assert!(
            (rate - want).abs() <= 0.5,
            "second {second}: rate {rate}, want {want}"
        );
        assert_eq!(left, 11.0 - second);
    }
    let block: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("endpoints so far:"))
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(block.len(), 2, "{out}");
    assert!(
        block[0].trim_start().starts_with("home") && block[1].trim_start().starts_with("item"),
        "{block:?}"
    );
}
