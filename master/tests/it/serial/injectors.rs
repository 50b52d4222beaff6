//! Injector health (seed 003): a slave pinned to a core that a busy loop saturates is flagged
//! and fails an `injector_cpu` SLA rule; the same slave on the same core without the busy loop
//! passes it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// The injector entry of slave `index` (of instance `i-test`) in a report.
fn injector(r: &serde_json::Value, index: u64) -> &serde_json::Value {
    r["injectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["slave_index"] == index)
        .unwrap_or_else(|| panic!("no injector {index}: {r}"))
}

#[test]
fn a_slave_on_a_saturated_core_is_flagged_and_fails_the_injector_cpu_rule() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test pins a slave and a busy loop to a core of its own: needs 2 CPUs, has {cpus}"
    );
    let busy_core = (cpus - 1).to_string();
    let env = Env::new();
    let (_target, addr) = env.target();
    let (_master, api, grpc) = env.master(None, &[]);
    // Slave 1 may run on the last core only; slave 2 on core 0.
    let _pinned = env.slave_under(&["taskset", "-c", &busy_core], &grpc, 1, 2);
    let _other = env.slave_under(&["taskset", "-c", "0"], &grpc, 2, 2);
    wait_slaves(&api, 2, Duration::from_secs(60));
    let file = env.scenario(
        "cpu.yaml",
        &scenario_text(
            addr,
            "10s",
            "rate: 20",
            "sla:\n  - {metric: injector_cpu, max: 90%, window: 5s, abort: false}\n",
        ),
    );
    let args = ["--master", api.as_str(), "--min-slaves", "2"];

    // The core is the slave's own: light load, the rule is judged and passes, no flag.
    let (code, out, err, r) = lobster_run(&env, &file, 0, &args);
    let r = r.unwrap_or_else(|| panic!("no report\n{out}\n{err}"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(r["sla"][0]["verdict"], "passed", "{}", r["sla"]);
    let control_worst = r["sla"][0]["worst"].as_f64().unwrap();
    assert!(control_worst < 90.0, "{}", r["sla"]);
    assert!(r.get("saturated_injectors").is_none(), "{r}");
    assert_eq!(injector(&r, 1)["saturated_s"], 0);
    let peak = injector(&r, 1)["resources"]["cpu_percent"]
        .as_f64()
        .unwrap();
    assert!(peak < 90.0, "the pinned slave's core at rest: {peak}");

    // A busy loop takes the same core: the slave's CPUs are 100 % busy for the whole run.
    let busy = Command::new("taskset")
        .args(["-c", &busy_core, "sh", "-c", "while :; do :; done"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let busy = Proc {
        child: busy,
        name: "busy loop".into(),
    };
    let (code, out, err, r) = lobster_run(&env, &file, 0, &args);
    drop(busy);
    let r = r.unwrap_or_else(|| panic!("no report\n{out}\n{err}"));
    assert_eq!(code, 1, "a violated SLA rule fails the run\n{out}\n{err}");
    assert_eq!(r["status"], "failed");
    let rule = &r["sla"][0];
    assert_eq!(rule["rule"], "injector_cpu <= 90% over 5s");
    assert_eq!(rule["verdict"], "failed", "{rule}");
    assert!(rule["worst"].as_f64().unwrap() >= 95.0, "{rule}");

    // Flagged: the pinned slave only, for (nearly) every second of its load.
    let flagged = r["saturated_injectors"].as_array().unwrap();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let pinned = injector(&r, 1);
    assert_eq!(flagged[0]["slave_id"], pinned["slave_id"]);
    assert!(pinned["saturated_s"].as_u64().unwrap() >= 8, "{pinned}");
    assert!(
        pinned["resources"]["cpu_percent"].as_f64().unwrap() >= 95.0,
        "{pinned}"
    );
    assert_eq!(injector(&r, 2)["saturated_s"], 0, "{}", injector(&r, 2));
    let warning = format!(
        "injector {} was above 90 % CPU",
        pinned["slave_id"].as_str().unwrap()
    );
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(&warning)),
        "{}",
        r["warnings"]
    );
    // The live view said so while the run went on, and the summary names it.
    assert!(err.contains(&format!("warning: {warning}")), "{err}");
    // The series carries the busiest injector's CPU each second.
    let busiest: Vec<f64> = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .take(9)
        .map(|p| p["injector_cpu"].as_f64().unwrap())
        .collect();
    assert!(busiest[1..].iter().all(|c| *c >= 95.0), "{busiest:?}");
    println!(
        "INJECTORS control: worst {control_worst:.1} %, pinned peak {peak:.1} %; busy: worst {}, pinned saturated {} s, other peak {}",
        rule["worst"],
        pinned["saturated_s"],
        injector(&r, 2)["resources"]["cpu_percent"]
    );
}
