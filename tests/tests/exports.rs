//! Exports: folded stacks, flame graph and pprof from a real trace of the fixture, read back
//! by their real consumers; `report` re-renders a saved report and `diff` compares two.

use std::{collections::HashMap, path::Path, process::Command};

use leaktrace_integration_tests::*;
use serde_json::Value;

struct Traced {
    dir: tempfile::TempDir,
    stdout: String,
    report: Value,
}

impl Traced {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

fn trace_with_exports(fixture_args: &[&str]) -> Traced {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let (json, folded, svg, pprof) = (p("r.json"), p("r.folded"), p("r.svg"), p("r.pb.gz"));
    let mut args = vec!["--json", &json, "--folded", &folded, "--svg", &svg, "--pprof", &pprof, "--"];
    let fixture = leaky().to_str().unwrap();
    args.push(fixture);
    args.extend_from_slice(fixture_args);
    let output = run_leaktrace(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = read_report(Path::new(&json));
    Traced { dir, stdout, report }
}

#[test]
fn folded_svg_and_pprof_agree_with_the_json_report() {
    let traced = trace_with_exports(&[]);
    let truth = parse_truth(&traced.stdout);
    assert_matches_truth(&traced.report, &truth, leaky());
    let stacks_bytes: u64 =
        traced.report["stacks"].as_array().unwrap().iter().map(|s| s["bytes"].as_u64().unwrap()).sum();

    // Folded: totals equal the JSON, and per site the truth.
    let folded = std::fs::read_to_string(traced.path("r.folded")).unwrap();
    let mut folded_total = 0;
    let mut per_site: HashMap<&str, u64> = HashMap::new();
    for line in folded.lines() {
        let (path, value) = line.rsplit_once(' ').unwrap();
        let value: u64 = value.parse().unwrap();
        folded_total += value;
        for t in &truth {
            if path.split(';').any(|f| f == t.site) {
                *per_site.entry(&t.site).or_default() += value;
            }
        }
    }
    assert_eq!(folded_total, stacks_bytes);
    for t in &truth {
        assert_eq!(per_site.get(t.site.as_str()).copied(), Some(t.bytes), "folded bytes of {}", t.site);
    }
    let mut sorted: Vec<&str> = folded.lines().collect();
    sorted.sort_unstable();
    assert_eq!(sorted, folded.lines().collect::<Vec<_>>(), "folded lines are sorted");

    // SVG: well-formed XML naming every leak site.
    let svg = std::fs::read_to_string(traced.path("r.svg")).unwrap();
    // inferno writes the standard SVG 1.1 DOCTYPE, which the parser must be allowed to read.
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&svg, options).expect("the flame graph is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    for t in &truth {
        assert!(svg.contains(&t.site), "{} missing from the flame graph", t.site);
    }

    // pprof: read by Go's own pprof; per site (the innermost frame), bytes and counts exact.
    let pprof = traced.path("r.pb.gz");
    let raw = go_pprof(&["-raw"], &pprof);
    let per_function = innermost_totals(&raw);
    for t in &truth {
        assert_eq!(per_function.get(&t.site).copied(), Some((t.bytes, t.count)), "pprof -raw for {}\n{raw}", t.site);
    }
    // The fixture's mapping carries its build-id, as readelf reads it.
    let notes = Command::new("readelf").arg("-n").arg(leaky()).output().unwrap();
    let build_id = String::from_utf8_lossy(&notes.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("the fixture has a build-id");
    assert_eq!(traced.report["build_ids"][leaky().to_str().unwrap()], build_id.as_str());
    assert!(raw.contains(&build_id), "build-id {build_id} missing from the pprof mappings:\n{raw}");
    let top = go_pprof(&["-top", "-nodefraction=0", "-nodecount=1000"], &pprof);
    for t in &truth {
        assert!(top.contains(&t.site), "{} missing from pprof -top:\n{top}", t.site);
    }
}

/// From `go tool pprof -raw`: (bytes, count) summed by the innermost function of each sample.
fn innermost_totals(raw: &str) -> HashMap<String, (u64, u64)> {
    let mut location_function: HashMap<u64, String> = HashMap::new();
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut section = "";
    for line in raw.lines() {
        match line.trim_end() {
            "Samples:" => section = "samples",
            "Locations" => section = "locations",
            "Mappings" => section = "mappings",
            text if section == "samples" => {
                // "        1280         10: 1 2 3 4 5 "
                if let Some((values, locations)) = text.split_once(':') {
                    let values: Vec<u64> = values.split_whitespace().filter_map(|v| v.parse().ok()).collect();
                    let first = locations.split_whitespace().next().and_then(|l| l.parse().ok());
                    if let (2, Some(first)) = (values.len(), first) {
                        samples.push((values[0], values[1], first));
                    }
                }
            }
            text if section == "locations" => {
                // "     1: 0x401136 M=1 leak_malloc /path/leaky.c:57 s=0"
                let fields: Vec<&str> = text.split_whitespace().collect();
                if let [id, _address, _mapping, function, ..] = fields.as_slice() {
                    if let Ok(id) = id.trim_end_matches(':').parse() {
                        location_function.entry(id).or_insert_with(|| function.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
    for (bytes, count, location) in samples {
        let entry = totals.entry(location_function[&location].clone()).or_default();
        entry.0 += bytes;
        entry.1 += count;
    }
    totals
}

#[test]
fn report_reproduces_the_text_report_from_json() {
    let traced = trace_with_exports(&[]);
    let printed = traced.stdout.split_once("\nFinal report: ").expect("final report printed").1;
    let printed = printed.split_once('\n').unwrap().1;
    let json = traced.path("r.json");
    let output = run_leaktrace(&["report", json.to_str().unwrap()]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), printed);
    // Every format renders from the saved JSON.
    for format in ["folded", "folded-count", "svg", "pprof", "json"] {
        let out = traced.path(&format!("again.{format}"));
        let status = Command::new(leaktrace_bin())
            .args(["report", json.to_str().unwrap(), "--format", format, "-o", out.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "report --format {format}");
        assert!(std::fs::metadata(&out).unwrap().len() > 0);
    }
    assert_eq!(std::fs::read(traced.path("again.folded")).unwrap(), std::fs::read(traced.path("r.folded")).unwrap());
    assert_eq!(read_report(&traced.path("again.json")), traced.report);
}

#[test]
fn diff_shows_exactly_the_added_leaks_and_fails_above_a_threshold() {
    let before = trace_with_exports(&["--rounds", "1"]);
    let after = trace_with_exports(&["--rounds", "3"]);
    let (b, a) = (before.path("r.json"), after.path("r.json"));
    let diff_json = after.path("diff.json");
    let output =
        run_leaktrace(&["diff", b.to_str().unwrap(), a.to_str().unwrap(), "--json", diff_json.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let diff = read_report(&diff_json);
    let truth_before = parse_truth(&before.stdout);
    let truth_after = parse_truth(&after.stdout);
    for (tb, ta) in truth_before.iter().zip(&truth_after) {
        let grown: i64 = diff["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| stack_symbols(s).contains(&tb.site.as_str()))
            .map(|s| s["bytes_delta"].as_i64().unwrap())
            .sum();
        assert_eq!(grown, (ta.bytes - tb.bytes) as i64, "growth of {}", tb.site);
    }
    // The largest growth of one stack, from the truth: leak_big_malloc's two extra rounds of
    // 256 KiB blocks. The diff lists it first, and the threshold is judged against it.
    let (largest_site, largest) = truth_before
        .iter()
        .zip(&truth_after)
        .map(|(tb, ta)| (ta.site.as_str(), (ta.bytes - tb.bytes) as i64))
        .max_by_key(|&(_, grown)| grown)
        .unwrap();
    assert_eq!(largest_site, "leak_big_malloc");
    assert_eq!(largest, 2 * 2 * 256 * 1024);
    assert!(stack_symbols(&diff["stacks"][0]).contains(&largest_site), "{:#}", diff["stacks"][0]);
    assert_eq!(diff["stacks"][0]["bytes_delta"], largest);
    let over = run_leaktrace(&[
        "diff",
        b.to_str().unwrap(),
        a.to_str().unwrap(),
        "--fail-if-growth",
        &(largest - 1).to_string(),
    ]);
    assert_eq!(over.status.code(), Some(3), "{}", String::from_utf8_lossy(&over.stderr));
    let under =
        run_leaktrace(&["diff", b.to_str().unwrap(), a.to_str().unwrap(), "--fail-if-growth", &largest.to_string()]);
    assert_eq!(under.status.code(), Some(0), "{}", String::from_utf8_lossy(&under.stderr));
}
