//! Root torture tests: load and odd process shapes around the traced allocator (many threads
//! freeing each other's blocks, a thousand dlopen/dlclose cycles, fork without exec, two
//! tracers on one process), each against the exact truth printed by tests/fixtures/torture.c.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use leaktrace_integration_tests::*;
use serde_json::Value;

/// The fixture, built like the others: -O1, debug info, frame pointers, no sibling calls.
fn torture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build_fixture(
            "torture.c",
            "torture",
            &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-pthread"],
        )
    })
}

/// Runs `leaktrace OPTIONS --json FILE -- torture ARGS` to the fixture's exit; returns the
/// JSON report and leaktrace's stdout (the fixture's stdout is leaktrace's).
fn launch(options: &[&str], fixture_args: &[&str]) -> (Value, String) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut args = options.to_vec();
    args.extend(["--top", "1000", "--json", json.to_str().unwrap(), "--", torture().to_str().unwrap()]);
    args.extend_from_slice(fixture_args);
    let output = run_leaktrace(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "leaktrace failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    (read_report(&json), stdout)
}

/// Asserts that no `lost` counter is set and the report does not call itself incomplete.
fn assert_nothing_lost(report: &Value) {
    let lost = report["lost"].as_object().unwrap();
    assert!(lost.values().all(|v| v == 0), "losses: {lost:?}");
    assert_eq!(report["incomplete"], false);
}

/// The stacks whose frames name `function`.
fn stacks_with<'a>(report: &'a Value, function: &str) -> Vec<&'a Value> {
    report["stacks"].as_array().unwrap().iter().filter(|s| stack_symbols(s).contains(&function)).collect()
}

const THREADS: u64 = 64;
/// glibc's per-thread cache: 64 size classes of at most 7 blocks (its defaults), plus the
/// cache's own block, all freed through free() when the thread exits.
const TCACHE_BLOCKS_PER_THREAD: u64 = 64 * 7 + 1;

#[test]
fn sixty_four_threads_freeing_each_others_blocks_are_exact() {
    let (report, stdout) = launch(&[], &["threads", &THREADS.to_string(), "2"]);
    let truth = parse_truth(&stdout);
    assert_eq!(truth.len(), 1, "{stdout}");
    assert_eq!(truth[0].count, THREADS * 10, "{stdout}");
    assert_nothing_lost(&report);
    // Every thread leaks through the same call path: one stack, exact.
    let leaks = stacks_with(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{leaks:#?}");
    assert_eq!(totals_for(&report, "thread_leak"), (truth[0].bytes, truth[0].count));
    // The pool's blocks, allocated and freed by different threads, were all freed again.
    for stack in stacks_with(&report, "churn_swap") {
        assert_eq!((&stack["bytes"], &stack["count"]), (&Value::from(0), &Value::from(0)), "{stack}");
    }
    // A free of a block leaktrace does not hold is counted, never matched to another block.
    // Here they are glibc's per-thread caches, freed again at each thread's exit (the
    // blocks in them were counted free when the program freed them), so at most one full
    // cache per thread, and at least the cache's own block for every thread.
    let activity = &report["activity"];
    let free_unknown = activity["free_unknown"].as_u64().unwrap();
    eprintln!("activity: {activity}");
    assert!(
        (THREADS..=THREADS * TCACHE_BLOCKS_PER_THREAD).contains(&free_unknown),
        "free_unknown {free_unknown}: {activity}"
    );
    // Every free the program made of a tracked block was matched: frees = allocations
    // not outstanding, plus the unknown ones.
    let allocs = activity["alloc_calls"].as_u64().unwrap();
    let frees = activity["free_calls"].as_u64().unwrap();
    let outstanding = report["totals"]["count"].as_u64().unwrap();
    let freed_by_realloc_or_nested = allocs - outstanding - (frees - free_unknown);
    assert_eq!(freed_by_realloc_or_nested, 0, "{activity} totals {}", report["totals"]);
    assert!(allocs > 100_000, "{activity}");
}

const LIBS: usize = 20;
const CYCLES: usize = 1000;

/// The C source of library `k`: tort_work_k churns, then leaks one block of 1000 + k bytes
/// at tort_leak_k. Each library has k extra functions, so that their sizes and row counts
/// differ. Built without frame pointers, as distribution libraries are.
fn library_source(k: usize) -> String {
    let mut c = String::from("#include <stdlib.h>\n#include <string.h>\n#define KEEP __attribute__((noipa))\n");
    c.push_str("static volatile unsigned char sink;\n");
    for j in 0..k {
        c.push_str(&format!("KEEP long tort_pad_{k}_{j}(long x) {{ return x * {} + (x >> {}); }}\n", j + 3, j % 7 + 1));
    }
    c.push_str(&format!(
        "KEEP void *tort_leak_{k}(void) {{ char *p = malloc({size}); memset(p, {k}, {size}); sink = p[{k}]; return p; }}\n\
         KEEP void tort_churn_{k}(int n) {{ for (int i = 0; i < 3; i++) {{ char *p = malloc(32 + n % 100 + i); \
         memset(p, i, 32); sink = p[1]; free(p); }} }}\n\
         KEEP void *tort_work_{k}(int n) {{ tort_churn_{k}(n); void *p = tort_leak_{k}(); sink = 0; return p; }}\n",
        size = 1000 + k
    ));
    c
}

/// The twenty libraries, compiled once into target/fixtures/torture-libs.
fn libraries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace_root().join("target/fixtures/torture-libs");
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..LIBS {
            let source = dir.join(format!("libtorture_{k}.c"));
            std::fs::write(&source, library_source(k)).unwrap();
            let status = Command::new("cc")
                .args(["-O2", "-g", "-fomit-frame-pointer", "-fno-optimize-sibling-calls", "-shared", "-fPIC", "-o"])
                .arg(dir.join(format!("libtorture_{k}.so")))
                .arg(&source)
                .status()
                .expect("cc runs");
            assert!(status.success(), "compiling {}", source.display());
        }
        dir
    })
}

fn run_dlopen_cycles(options: &[&str]) -> (Value, String, Vec<Truth>) {
    let dir = libraries().to_str().unwrap().to_string();
    let (report, stdout) = launch(options, &["dlopen", &dir, &LIBS.to_string(), &CYCLES.to_string()]);
    let truth = parse_truth(&stdout);
    assert_eq!(truth.len(), LIBS, "{stdout}");
    assert_eq!(truth.iter().map(|t| t.count).sum::<u64>(), CYCLES as u64);
    (report, stdout, truth)
}

/// The real call path of a leaked block of library `k`, innermost first: the library's leak
/// function, its tort_work, the fixture's cycle loop (dlopen_mode is inlined into main), and
/// the C library's start code.
fn call_path(k: usize) -> Vec<String> {
    let mut path = vec![format!("tort_leak_{k}"), format!("tort_work_{k}")];
    let outer = ["run_cycle", "dlopen_mode", "main", "__libc_start_call_main", "__libc_start_main_impl", "_start"];
    path.extend(outer.iter().map(|f| f.to_string()));
    path
}

/// True when `names` is `path` with some frames left out, in the same order.
fn is_subsequence(names: &[&str], path: &[String]) -> bool {
    let mut rest = path.iter();
    names.iter().all(|name| rest.any(|p| p == name))
}

/// Checks every stack holding a library's block: its innermost frame names the library that
/// allocated it (each library leaks a size of its own), and its frames are the real call
/// path, whole when `whole(k)`, else with frames left out but none added or reordered: no frame
/// names a function off the path. Per library, bytes and counts are exact. Returns each
/// stack's `cut_short` reason, if any.
fn check_library_stacks(report: &Value, truth: &[Truth], whole: impl Fn(usize) -> bool) -> Vec<String> {
    let mut per_library = vec![(0u64, 0u64); LIBS];
    let mut cut_short = Vec::new();
    for stack in report["stacks"].as_array().unwrap() {
        let symbols = stack_symbols(stack);
        let Some(k) = (0..LIBS).find(|k| symbols.first() == Some(&format!("tort_leak_{k}").as_str())) else {
            assert!(
                !symbols.iter().any(|s| s.starts_with("tort_leak_")),
                "a library's leak function below the innermost frame: {stack}"
            );
            continue;
        };
        let (bytes, count) = (stack["bytes"].as_u64().unwrap(), stack["count"].as_u64().unwrap());
        assert_eq!(bytes, count * (1000 + k as u64), "blocks of another library under tort_leak_{k}: {stack}");
        let path = call_path(k);
        if whole(k) {
            assert_eq!(symbols, path, "{stack}");
        } else {
            assert!(is_subsequence(&symbols, &path), "a frame off the call path {path:?}: {stack}");
        }
        cut_short.extend(stack["cut_short"].as_str().map(str::to_string));
        per_library[k].0 += bytes;
        per_library[k].1 += count;
    }
    for (k, t) in truth.iter().enumerate() {
        assert_eq!(t.site, format!("tort_leak_{k}"));
        assert_eq!(per_library[k], (t.bytes, t.count), "library {k}");
    }
    cut_short
}

/// The run with the default row table, shared by the tests that need it.
fn default_dlopen_run() -> &'static (Value, String, Vec<Truth>) {
    static RUN: OnceLock<(Value, String, Vec<Truth>)> = OnceLock::new();
    RUN.get_or_init(|| run_dlopen_cycles(&[]))
}

/// Rows of each module in the report's unwind section, by path.
fn module_rows(report: &Value) -> Vec<(String, u64)> {
    let modules = report["unwind"]["modules"].as_array().unwrap();
    modules.iter().map(|m| (m["module"].as_str().unwrap().to_string(), m["rows"].as_u64().unwrap())).collect()
}

#[test]
fn thousand_dlopen_cycles_over_twenty_libraries_are_exact() {
    let (report, _, truth) = default_dlopen_run();
    assert_nothing_lost(report);
    let cut_short = check_library_stacks(report, truth, |_| true);
    assert!(cut_short.is_empty(), "{cut_short:?}");
    let unwind = &report["unwind"];
    assert_eq!(unwind["library_events_lost"], 0, "{unwind}");
    // Every library's rows were loaded once, however often it was opened.
    let library_modules: Vec<&Value> = unwind["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["module"].as_str().unwrap().contains("libtorture_"))
        .collect();
    assert_eq!(library_modules.len(), LIBS, "{unwind:#}");
    assert!(library_modules.iter().all(|m| m["unwinder"] == "dwarf"), "{unwind:#}");
    let rows: u64 = unwind["modules"].as_array().unwrap().iter().map(|m| m["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, unwind["rows_used"].as_u64().unwrap(), "{unwind:#}");
}

#[test]
fn dlopen_cycles_past_a_full_row_table_degrade_to_frame_pointers_without_a_wrong_frame() {
    // Room for every module but the last ten libraries opened (libraries 10 to 19).
    let (full_report, _, _) = default_dlopen_run();
    let late = |m: &str| (10..LIBS).any(|k| m.ends_with(&format!("/libtorture_{k}.so")));
    let capacity: u64 = module_rows(full_report).iter().filter(|(m, _)| !late(m)).map(|(_, rows)| rows).sum();
    let (report, stdout, truth) = run_dlopen_cycles(&["--unwind-rows", &capacity.to_string()]);
    assert_nothing_lost(&report);
    let unwind = &report["unwind"];
    assert_eq!(unwind["rows_capacity"].as_u64(), Some(capacity));
    assert_eq!(unwind["rows_used"].as_u64(), Some(capacity), "{unwind:#}");
    for module in unwind["modules"].as_array().unwrap() {
        let name = module["module"].as_str().unwrap();
        if late(name) {
            assert_eq!(module["unwinder"], "frame-pointer", "{module}");
            assert_eq!(module["reason"], "unwind table full (raise --unwind-rows)", "{module}");
        } else if name.contains("/libtorture_") {
            assert_eq!(module["unwinder"], "dwarf", "{module}");
        }
    }
    // The text report says why those libraries were walked by frame pointers.
    let text = final_text(&stdout);
    let line = text.lines().find(|l| l.starts_with("Unwinding (auto): ")).expect("an unwinding line");
    assert!(line.contains("(unwind table full (raise --unwind-rows))"), "{line}");
    // Every block is still attributed to the library that allocated it, exactly, and no
    // stack names a function off its real call path; what a frame-pointer walk through a
    // library without frame pointers loses is frames, shown as cut short or skipped.
    let cut_short = check_library_stacks(&report, &truth, |k| k < 10);
    eprintln!("stacks cut short: {cut_short:?}");
}

/// With `--no-follow`, leaktrace traces the launched process only: a child forked without
/// exec runs untraced (its allocations and its frees of its copies of the parent's blocks do
/// not reach the report), and the parent's figures stay exact across the fork.
#[test]
fn fork_without_exec_traces_the_parent_exactly_and_not_the_child() {
    let (report, stdout) = launch(&["--no-follow"], &["fork"]);
    let truth = parse_truth(&stdout);
    assert_eq!(truth.len(), 2, "{stdout}");
    let parent = truth.iter().find(|t| t.site == "parent_leak").unwrap();
    let child = truth.iter().find(|t| t.site == "child_leak").unwrap();
    assert_eq!((child.bytes, child.count), (35_000, 7));
    assert_nothing_lost(&report);
    // The child freed its copies of two parent blocks: the parent's own are still held.
    assert_eq!(totals_for(&report, "parent_leak"), (parent.bytes, parent.count), "{:#}", report["stacks"]);
    assert_eq!(totals_for(&report, "child_leak"), (0, 0), "{:#}", report["stacks"]);
    // The child's frees were not seen either: no free of an unknown block.
    assert_eq!(report["activity"]["free_unknown"], 0, "{}", report["activity"]);
    let child_pid: u32 =
        stdout.lines().find_map(|l| l.strip_prefix("CHILD ")).expect("the fixture names its child").parse().unwrap();
    assert_ne!(report["target"]["pid"], child_pid);
}

/// Followed (a launched command's default), a child forked without exec is traced from its
/// first instruction: its own leak is exact and held by it, the parent's stays exact, and the
/// child's frees of its copies of the parent's blocks, which it never allocated, are the only
/// frees of unknown blocks.
#[test]
fn fork_without_exec_followed_traces_both_exactly() {
    let (report, stdout) = launch(&[], &["fork"]);
    let truth = parse_truth(&stdout);
    let parent = truth.iter().find(|t| t.site == "parent_leak").unwrap();
    let child = truth.iter().find(|t| t.site == "child_leak").unwrap();
    assert_nothing_lost(&report);
    assert_eq!(totals_for(&report, "parent_leak"), (parent.bytes, parent.count), "{:#}", report["stacks"]);
    assert_eq!(totals_for(&report, "child_leak"), (child.bytes, child.count), "{:#}", report["stacks"]);
    let child_pid: u64 =
        stdout.lines().find_map(|l| l.strip_prefix("CHILD ")).expect("the fixture names its child").parse().unwrap();
    let pids: Vec<u64> = report["processes"].as_array().unwrap().iter().filter_map(|p| p["pid"].as_u64()).collect();
    assert!(pids.contains(&child_pid), "{pids:?}");
    // Its two frees of the parent's blocks, copied at the fork.
    assert_eq!(report["activity"]["free_unknown"], 2, "{}", report["activity"]);
}

const PAIR_COUNT: u64 = 500;
const PAIR_SIZE: u64 = 4321;

/// A `torture pair` fixture waiting on stdin.
fn start_pair() -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    require_root();
    spawn_waiting(Command::new(torture()).args(["pair", &PAIR_COUNT.to_string()]))
}

/// Lets the fixture work; returns its truth once it says "done", then lets it exit.
fn run_pair(
    mut child: std::process::Child,
    lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> Vec<Truth> {
    let seen = work_until_done(&mut child, lines);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let truth = parse_truth(&seen);
    assert_eq!(truth, vec![Truth { site: "pair_leak".into(), bytes: PAIR_COUNT * PAIR_SIZE, count: PAIR_COUNT }]);
    truth
}

/// Attaches leaktrace to `pid`, writing its JSON report to `json`.
fn attach(pid: u32, json: &Path) -> std::process::Child {
    start_tracing(&["-p".into(), pid.to_string(), "--json".into(), json.display().to_string()]).0
}

/// Waits for an attached leaktrace, which ends with its target, and checks its report.
fn check_attached(tracer: std::process::Child, json: &Path, truth: &[Truth]) {
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("target exited"), "{stdout}");
    let report = read_report(json);
    assert_nothing_lost(&report);
    assert_eq!(totals_for(&report, "pair_leak"), (truth[0].bytes, truth[0].count), "{:#}", report["stacks"]);
    for stack in stacks_with(&report, "pair_churn") {
        assert_eq!((&stack["bytes"], &stack["count"]), (&Value::from(0), &Value::from(0)), "{stack}");
    }
}

#[test]
fn two_leaktraces_attached_to_one_process_are_both_exact() {
    let (child, mut lines) = start_pair();
    let dir = tempfile::tempdir().unwrap();
    let (first_json, second_json) = (dir.path().join("first.json"), dir.path().join("second.json"));
    let first = attach(child.id(), &first_json);
    let second = attach(child.id(), &second_json);
    let truth = run_pair(child, &mut lines);
    check_attached(first, &first_json, &truth);
    check_attached(second, &second_json, &truth);
}

/// The C library the process maps, as its maps name it.
fn mapped_c_library(pid: u32) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.contains("/libc.so.6"));
    path.expect("the fixture maps libc.so.6").to_string()
}

#[test]
fn leaktrace_beside_a_bpftrace_uprobe_on_malloc_both_exact() {
    let (child, mut lines) = start_pair();
    let pid = child.id();
    let program =
        format!("uprobe:{}:malloc /pid == {pid} && arg0 == {PAIR_SIZE}/ {{ @pair = count(); }}", mapped_c_library(pid));
    let mut bpftrace = Command::new("bpftrace")
        // Line-buffered: the "Attaching" line must reach the pipe before anything waits on it.
        .args(["-B", "line", "-e", &program])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bpftrace runs (Debian package bpftrace, installed by cargo xtask setup)");
    let mut bpftrace_out = std::io::BufReader::new(bpftrace.stdout.take().unwrap());
    let mut attached = String::new();
    std::io::BufRead::read_line(&mut bpftrace_out, &mut attached).unwrap();
    assert!(attached.starts_with("Attaching 1 probe"), "bpftrace: {attached}");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let tracer = attach(pid, &json);
    let truth = run_pair(child, &mut lines);
    check_attached(tracer, &json, &truth);
    // bpftrace prints its map when it ends (SIGTERM: SIGINT may be ignored, as in a background job).
    let status = Command::new("kill").args(["-TERM", &bpftrace.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut bpftrace_out, &mut rest).unwrap();
    bpftrace.wait().unwrap();
    assert!(rest.contains(&format!("@pair: {PAIR_COUNT}")), "bpftrace: {rest}");
}
