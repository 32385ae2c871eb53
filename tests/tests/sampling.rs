//! Root tests of `--sample-bytes`: estimates from sampled allocations, checked against the
//! fixture's exact truth. The estimator's unbiasedness over many seeds is a unit test of
//! `leaktrace::sampling`; here the real programs sample, and each site's estimate must lie
//! within five of its own standard errors of the truth (a miss has odds below one in a
//! million per site), which a biased or mis-weighted estimate of this size cannot.

use leaktrace_integration_tests::*;
use serde_json::Value;

/// Summed estimate and standard error of the stacks whose frames name `site`.
fn estimate_for(report: &Value, site: &str) -> (f64, f64, u64) {
    let (mut bytes, mut variance, mut samples) = (0.0, 0.0, 0);
    for stack in report["stacks"].as_array().unwrap() {
        if !stack_symbols(stack).contains(&site) {
            continue;
        }
        let estimate = &stack["estimate"];
        assert!(estimate.is_object(), "a sampled report gives every stack an estimate: {stack:#}");
        bytes += stack["bytes"].as_f64().unwrap();
        let half = (estimate["bytes_high"].as_f64().unwrap() - estimate["bytes_low"].as_f64().unwrap()) / 2.0;
        variance += (half / 1.96).powi(2);
        samples += estimate["samples"].as_u64().unwrap();
    }
    (bytes, variance.sqrt(), samples)
}

#[test]
fn sampled_estimates_cover_the_fixtures_truth() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let fixture = leaky();
    // 2 KiB: the fixture's 128 B–5 KiB blocks are sampled with probability 6 %–91 %, its
    // 256 KiB blocks always; 30 rounds give each site tens of samples.
    let args =
        ["--sample-bytes", "2K", "--json", json.to_str().unwrap(), "--", fixture.to_str().unwrap(), "--rounds", "30"];
    let output = run_leaktrace(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "leaktrace failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    assert_eq!(report["sampling"]["period_bytes"], 2048);
    // Linux 6.18: unsampled calls skip their return probe through uprobe sessions.
    assert_eq!(report["sampling"]["return_probes_skipped"], true, "{:#}", report["sampling"]);
    assert!(report["sampling"]["unsampled_calls"].as_u64().unwrap() > 100_000);
    assert_eq!(report["lost"]["return_without_entry"], 0);
    assert_eq!(report["incomplete"], false, "{:#}", report["lost"]);
    assert!(
        stdout.contains("~") && stdout.contains("95 % interval"),
        "the text says the figures are estimates:\n{stdout}"
    );

    let truth = parse_truth(&stdout);
    assert_eq!(truth.len(), 10);
    for t in &truth {
        let (bytes, standard_error, samples) = estimate_for(&report, &t.site);
        assert!(samples > 0, "{}: nothing sampled", t.site);
        assert!(
            (bytes - t.bytes as f64).abs() <= 5.0 * standard_error + 1.0,
            "{}: estimated {bytes} ± {standard_error} from {samples} samples, truth {}",
            t.site,
            t.bytes
        );
    }
    // Blocks far above the period are always tracked: exact.
    assert_eq!(totals_for(&report, "leak_big_malloc"), (30 * 2 * 256 * 1024, 60));
    // Churn is freed: sampled or not, none of it is outstanding.
    for stack in report["stacks"].as_array().unwrap() {
        let symbols = stack_symbols(stack);
        assert!(
            !symbols.iter().any(|s| s.starts_with("churn_")) || stack["bytes"] == 0,
            "a churn stack holds memory: {stack:#}"
        );
    }
}
