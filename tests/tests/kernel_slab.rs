//! Root tests of `--kernel-slab` against a fixture that makes the kernel hold a known number
//! of objects.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
};

use leaktrace_integration_tests::*;
use serde_json::Value;

fn kernel_objects() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_fixture("kernel_objects.c", "kernel_objects", &["-O1", "-g"]))
}

/// Stacks whose allocator was called directly from `function` (frame 0 is the slab
/// allocator's entry, frame 1 its caller).
fn direct_from<'a>(report: &'a Value, function: &str) -> Vec<&'a Value> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["frames"].as_array().unwrap().get(1).and_then(|f| f["symbol"].as_str()) == Some(function))
        .collect()
}

fn sum(stacks: &[&Value], field: &str) -> u64 {
    stacks.iter().map(|s| s[field].as_u64().unwrap()).sum()
}

/// Traces the eventfd fixture with -p; `close` decides whether it closes them before the
/// report is taken.
fn trace_eventfds(count: u32, close: bool) -> Value {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("k.json");
    let mut fixture = Command::new(kernel_objects())
        .args(["eventfd", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(fixture.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("ready"));
    let mut tracer = Command::new(leaktrace_bin())
        .args(["--kernel-slab", "-p", &fixture.id().to_string(), "--older", "0", "--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(tracer.stderr.as_mut().unwrap()).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("Tracing kernel allocations"), "{banner}");
    let stdin = fixture.stdin.as_mut().unwrap();
    writeln!(stdin, "open").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "opened");
    if close {
        writeln!(stdin, "close").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "closed");
    }
    assert!(Command::new("kill").args(["-INT", &tracer.id().to_string()]).status().unwrap().success());
    let output = tracer.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    drop(fixture.stdin.take());
    fixture.wait().unwrap();
    read_report(&json)
}

#[test]
fn eventfds_held_by_a_process_are_attributed_exactly() {
    const N: u32 = 64;
    let report = trace_eventfds(N, false);
    assert_eq!(report["mode"], "kernel");
    assert_eq!(report["incomplete"], false, "{}", report["lost"]);
    // do_eventfd kmallocs one eventfd_ctx per eventfd.
    let ctx = direct_from(&report, "do_eventfd");
    assert_eq!(sum(&ctx, "count"), u64::from(N), "{ctx:#?}");
    for stack in &ctx {
        let kernel = &stack["kernel"];
        assert!(kernel["caches"].as_array().unwrap().iter().all(|c| c["name"].as_str().unwrap().starts_with("kmalloc-")));
        for comm in kernel["comms"].as_array().unwrap() {
            assert!(comm["name"].as_str().unwrap().starts_with("kernel_objects["), "{comm}");
        }
        let symbols = stack_symbols(stack);
        assert!(symbols.iter().any(|s| s.contains("sys_eventfd2")), "{symbols:?}");
    }
    // Each eventfd also holds one struct file from the filp cache.
    let files = direct_from(&report, "alloc_empty_file");
    assert_eq!(sum(&files, "count"), u64::from(N));
    assert_eq!(files[0]["kernel"]["caches"][0]["name"], "filp");
    // Every cache name leaktrace reports is one the kernel has.
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap();
    let known: Vec<&str> = slabinfo.lines().filter_map(|l| l.split_whitespace().next()).collect();
    for cache in report["kernel"]["caches"].as_array().unwrap() {
        let name = cache["name"].as_str().unwrap();
        assert!(known.contains(&name), "{name} is not in /proc/slabinfo");
    }
}

#[test]
fn closed_eventfds_are_no_longer_outstanding() {
    let report = trace_eventfds(64, true);
    let ctx = direct_from(&report, "do_eventfd");
    assert_eq!(sum(&ctx, "count"), 0, "{ctx:#?}");
    // The frees were seen, not merely missed: 64 contexts were allocated and freed.
    assert!(report["activity"]["free_calls"].as_u64().unwrap() >= 64);
}

#[test]
fn run_reports_the_growth_each_run_leaves_behind() {
    require_root();
    const RUNS: u64 = 4;
    const MESSAGE: u64 = 100;
    // msg_msg is a 48-byte header followed by the text.
    const MSG_MSG_HEADER: u64 = 48;
    let key = 0x4c54_0000 + std::process::id() % 0xffff;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let command = format!("{} msgsnd {key} {MESSAGE}", kernel_objects().display());
    let output = run_leaktrace(&[
        "--kernel-slab",
        "--run",
        &command,
        "--repeat",
        &RUNS.to_string(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let _ = Command::new("ipcrm").args(["-Q", &key.to_string()]).status();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("runs completed"), "{stdout}");
    let report = read_report(&json);
    assert_eq!(report["kernel"]["runs"]["completed"], RUNS);
    assert_eq!(report["kernel"]["runs"]["exit_codes"], serde_json::json!([0, 0, 0, 0]));
    let messages = direct_from(&report, "load_msg");
    assert_eq!(sum(&messages, "count"), RUNS, "{messages:#?}");
    let requested: u64 = messages.iter().map(|s| s["kernel"]["requested_bytes"].as_u64().unwrap()).sum();
    assert_eq!(requested, RUNS * (MSG_MSG_HEADER + MESSAGE));
    assert_eq!(messages.len(), 1, "one call path");
    assert_eq!(messages[0]["kernel"]["per_run"]["count"], 1.0);
    for comm in messages[0]["kernel"]["comms"].as_array().unwrap() {
        assert!(comm["name"].as_str().unwrap().starts_with("kernel_objects["), "{comm}");
    }
}

#[test]
fn tracefs_that_cannot_be_mounted_is_a_clear_error() {
    require_root();
    // In a private mount namespace, hide /sys/kernel behind an empty read-only tmpfs: tracefs
    // is then neither mounted nor mountable.
    let script = format!(
        "mount -t tmpfs -o ro none /sys/kernel && exec {} --kernel-slab --duration 1",
        leaktrace_bin().display()
    );
    let output = Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    assert_one_line_error(&output, "tracefs");
}
