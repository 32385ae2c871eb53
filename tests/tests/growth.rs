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
    let fixture =
        build_fixture("growth.c", "growth", &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("growth.json");
    // 8 s of the fixture, sampled every 0.5 s: 16 intervals.
    let output = run_leaktrace(&["--json", json.to_str().unwrap(), "0.5", "--", fixture.to_str().unwrap(), "8"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The truth is what the fixture did, counted as it ran: on a loaded machine it can fall
    // behind its schedule, and then its real rate is the one to measure against.
    let figures = |key: &str| -> Vec<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the fixture prints {key}: {stdout}"))
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (leaked, second_half, cached) = (figures("LEAKED "), figures("SECOND_HALF "), figures("CACHED "));
    // leaktrace's rate is the slope over the last half of its samples: the fixture's own
    // rate over the second half of its run.
    let rate = second_half[0] / second_half[1] * 60.0;
    let report = read_report(&json);
    assert_eq!(report["filters"]["sort"], "growth", "auto sorts by growth after enough intervals");

    let leak = stack_with(&report, "leak_steadily");
    let cache = stack_with(&report, "cache_insert");
    let churn = stack_with(&report, "churn_request");
    assert_eq!(leak["trend"]["class"], "growing", "{}", leak["trend"]);
    assert_eq!(cache["trend"]["class"], "plateau", "{}", cache["trend"]);
    assert_eq!(churn["trend"]["class"], "churn", "{}", churn["trend"]);

    // Once the target has exited, everything it still holds is reported, exactly.
    assert_eq!(
        (leak["bytes"].as_f64().unwrap(), leak["count"].as_f64().unwrap()),
        (leaked[0], leaked[1]),
        "leak_steadily"
    );
    assert_eq!(
        (cache["bytes"].as_f64().unwrap(), cache["count"].as_f64().unwrap()),
        (cached[0], cached[1]),
        "cache_insert"
    );
    assert_eq!(cached, [300.0 * 4096.0, 300.0], "the cache ends full: 300 entries of 4096 bytes");
    // The leak ranks first although the cache holds more bytes.
    assert!(stack_symbols(&report["stacks"][0]).contains(&"leak_steadily"));
    assert!(cache["bytes"].as_u64().unwrap() > leak["bytes"].as_u64().unwrap());
    let measured = leak["trend"]["bytes_per_min"].as_f64().unwrap();
    assert!(
        (measured - rate).abs() <= 0.10 * rate,
        "leak rate {measured} B/min, truth {rate} B/min over the second half"
    );
    assert!(leak["trend"]["intervals"].as_u64().unwrap() >= 12);
    assert!(leak["trend"]["series"].as_array().unwrap().len() >= 12);
    // Churn allocated far more than the other two hold.
    let churned = churn["trend"]["allocated_per_min"].as_f64().unwrap();
    assert!(churned > 10.0 * rate, "{churned}");
    assert_eq!(churn["bytes"], 0);
    assert_eq!(churn["count"], 0);
}
