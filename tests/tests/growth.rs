//! Root test: growth over time tells a steady leak from a bounded cache and from churn.

use leaktrace_integration_tests::*;
use serde_json::Value;

fn stack_with<'a>(report: &'a Value, function: &str) -> &'a Value {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| stack_symbols(s).contains(&function))
        .unwrap_or_else(|| panic!("no stack with {function}"))
}

#[test]
fn leak_cache_and_churn_are_told_apart() {
    require_root();
    let fixture = build_fixture("growth.c", "growth", &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("growth.json");
    // 8 s of the fixture, sampled every 0.5 s: 16 intervals.
    let output = run_leaktrace(&["--json", json.to_str().unwrap(), "0.5", "--", fixture.to_str().unwrap(), "8"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let nominal: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RATE leak_steadily "))
        .expect("the fixture prints its leak rate")
        .trim()
        .parse()
        .unwrap();
    // The truth is what the fixture actually leaked over its run (on a loaded machine it can
    // fall behind its schedule); it must still be close to the rate it aimed at.
    let leaked: Vec<f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LEAKED "))
        .expect("the fixture prints what it leaked")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let rate = leaked[0] / leaked[1] * 60.0;
    assert!((rate - nominal).abs() <= 0.05 * nominal, "the fixture fell behind: {rate} of {nominal} B/min");
    let report = read_report(&json);
    assert_eq!(report["filters"]["sort"], "growth", "auto sorts by growth after enough intervals");

    let leak = stack_with(&report, "leak_steadily");
    let cache = stack_with(&report, "cache_insert");
    let churn = stack_with(&report, "churn_request");
    assert_eq!(leak["trend"]["class"], "growing", "{}", leak["trend"]);
    assert_eq!(cache["trend"]["class"], "plateau", "{}", cache["trend"]);
    assert_eq!(churn["trend"]["class"], "churn", "{}", churn["trend"]);

    // The leak ranks first although the cache holds more bytes.
    assert!(stack_symbols(&report["stacks"][0]).contains(&"leak_steadily"));
    assert!(cache["bytes"].as_u64().unwrap() > leak["bytes"].as_u64().unwrap());
    let measured = leak["trend"]["bytes_per_min"].as_f64().unwrap();
    assert!((measured - rate).abs() <= 0.10 * rate, "leak rate {measured} B/min, truth {rate} B/min");
    assert!(leak["trend"]["intervals"].as_u64().unwrap() >= 12);
    assert!(leak["trend"]["series"].as_array().unwrap().len() >= 12);
    // Churn allocated far more than the other two hold.
    let churned = churn["trend"]["allocated_per_min"].as_f64().unwrap();
    assert!(churned > 10.0 * rate, "{churned}");
    assert_eq!(churn["bytes"], 0);
}
