//! Root tests: several processes traced at once (`-p MASTER --follow`, `--comm`), and
//! commands that exec (`env`, `sh -c 'exec …'`) or preload a malloc replacement. Each
//! process of the workers fixture prints its own truth, which the report must match per
//! process and combined.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use leaktrace_integration_tests::*;
use serde_json::Value;

/// The workers fixture: a master and its forked workers, each leaking a known amount.
fn workers() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_fixture("workers.c", "procs_workers", &["-O1", "-g", "-fno-omit-frame-pointer"]))
}

/// One process's truth: `TRUTH site pid bytes count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessTruth {
    pid: u64,
    bytes: u64,
    count: u64,
}

/// Every process's truth by site, read from the fixture's lines.
fn truths(lines: &[String]) -> BTreeMap<String, Vec<ProcessTruth>> {
    let mut by_site: BTreeMap<String, Vec<ProcessTruth>> = BTreeMap::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("TRUTH ") else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let truth =
            ProcessTruth { pid: f[1].parse().unwrap(), bytes: f[2].parse().unwrap(), count: f[3].parse().unwrap() };
        by_site.entry(f[0].to_string()).or_default().push(truth);
    }
    by_site
}

/// Runs the workers fixture under `leaktrace ARGS…` (`{pid}` in ARGS is the master's pid):
/// starts tracing once the master is ready, lets it work, lets it exit, and returns the
/// fixture's lines, the final text and the JSON report. With `interrupt`, the trace is ended
/// by SIGINT once the fixture has exited (`--comm` waits for more processes).
fn trace_workers(fixture_args: &[&str], args: &[&str], interrupt: bool) -> (Vec<String>, String, Value) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut command = Command::new(workers());
    command.args(fixture_args);
    let (mut child, mut lines) = spawn_waiting(&mut command);
    let pid = child.id().to_string();
    let mut argv: Vec<String> = args.iter().map(|a| a.replace("{pid}", &pid)).collect();
    argv.extend(["--top".into(), "100".into(), "--json".into(), json.display().to_string()]);
    let (tracer, banner) = start_tracing(&argv);
    assert!(banner.starts_with("Tracing pid "), "{banner}");
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        seen.push(line);
    }
    drop(child.stdin.take());
    assert_eq!(child.wait().unwrap().code(), Some(0), "the fixture failed");
    if interrupt {
        // The last exits must be seen before the end: the report lists them as exited.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = Command::new("kill").args(["-INT", &tracer.id().to_string()]).status();
    }
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "leaktrace failed: {stdout}");
    (seen, final_text(&stdout).to_string(), read_report(&json))
}

/// The report's stacks that name `function`.
fn stacks_naming<'a>(report: &'a Value, function: &str) -> Vec<&'a Value> {
    report["stacks"].as_array().unwrap().iter().filter(|s| stack_symbols(s).contains(&function)).collect()
}

/// Every holder of `function`'s stacks, by pid: (bytes, count).
fn holders_of(report: &Value, function: &str) -> BTreeMap<u64, (u64, u64)> {
    let mut holders = BTreeMap::new();
    for stack in stacks_naming(report, function) {
        for h in stack["holders"].as_array().expect("several processes: every stack lists its holders") {
            let previous = holders
                .insert(h["pid"].as_u64().unwrap(), (h["bytes"].as_u64().unwrap(), h["count"].as_u64().unwrap()));
            assert!(previous.is_none(), "pid {} holds two stacks of {function}: {report:#}", h["pid"]);
        }
    }
    holders
}

/// Per process and combined, the report says exactly what each process printed.
fn assert_exact_per_process(report: &Value, truth: &BTreeMap<String, Vec<ProcessTruth>>) {
    for (site, processes) in truth {
        let expected: BTreeMap<u64, (u64, u64)> = processes.iter().map(|t| (t.pid, (t.bytes, t.count))).collect();
        assert_eq!(holders_of(report, site), expected, "holders of {site}");
        let combined = processes.iter().fold((0, 0), |(b, c), t| (b + t.bytes, c + t.count));
        assert_eq!(totals_for(report, site), combined, "{site} combined");
    }
    assert_eq!(report["incomplete"], false, "losses: {}", report["lost"]);
}

/// The process that exited first (worker 0, which leaked one block) is listed as exited,
/// as a child of the master.
fn assert_exited_worker_listed(report: &Value, worker: &ProcessTruth, master: u64) {
    let processes = report["processes"].as_array().expect("the processes are listed");
    let entry = processes.iter().find(|p| p["pid"] == worker.pid).expect("the exited worker is listed");
    assert_eq!(entry["exited"], true, "{entry}");
    assert_eq!(entry["parent"], master, "{entry}");
    assert_eq!(entry["totals"]["bytes"], worker.bytes, "{entry}");
}

#[test]
fn follow_from_the_master_is_exact_per_process_and_combined() {
    let (seen, text, report) = trace_workers(&[], &["-p", "{pid}", "--follow"], false);
    let truth = truths(&seen);
    let master = truth["master_leak"][0].pid;
    let workers = &truth["worker_leak"];
    assert_eq!(workers.len(), 5, "four workers and a late one: {seen:?}");
    assert_exact_per_process(&report, &truth);
    // The same leak in the four workers is one stack with four holders (the late worker
    // leaks from another call site, so it has its own stack).
    let shared =
        stacks_naming(&report, "worker_leak").into_iter().find(|s| s["holders"].as_array().unwrap().len() == 4);
    let shared = shared.unwrap_or_else(|| panic!("no stack held by the four workers: {report:#}"));
    assert_eq!((shared["bytes"].as_u64(), shared["count"].as_u64()), (Some(10_000), Some(10)));
    assert!(text.contains("held by 4 processes: "), "{text}");
    let first = workers.iter().find(|w| w.count == 1).unwrap();
    assert_exited_worker_listed(&report, first, master);
    assert_eq!(report["target"]["pid"], master);
}

/// Workers forked before the attach are children of the target too: found in /proc, traced
/// from the attach on (their leaks come after it), like the one forked later.
#[test]
fn follow_picks_up_children_already_running() {
    let (seen, _, report) = trace_workers(&["--prefork"], &["-p", "{pid}", "--follow"], false);
    let truth = truths(&seen);
    assert_eq!(truth["worker_leak"].len(), 5, "{seen:?}");
    assert_exact_per_process(&report, &truth);
    let master = truth["master_leak"][0].pid;
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 6, "{processes:#?}");
    assert!(processes.iter().filter(|p| p["pid"] != master).all(|p| p["parent"] == master), "{processes:#?}");
}

#[test]
fn by_process_keeps_each_process_stacks_apart_with_named_frames() {
    let (seen, text, report) = trace_workers(&[], &["-p", "{pid}", "--follow", "--by", "process"], false);
    let truth = truths(&seen);
    for worker in &truth["worker_leak"] {
        let stacks: Vec<&Value> = stacks_naming(&report, "worker_leak")
            .into_iter()
            .filter(|s| s["holders"][0]["pid"] == worker.pid)
            .collect();
        // Named through its own mappings, or those of the master it was forked from when it
        // exited before they were read: worker_leak and its callers, down to main.
        assert_eq!(stacks.len(), 1, "worker {}: {report:#}", worker.pid);
        let stack = stacks[0];
        assert_eq!(stack["holders"].as_array().unwrap().len(), 1);
        assert_eq!((stack["bytes"].as_u64(), stack["count"].as_u64()), (Some(worker.bytes), Some(worker.count)));
        assert_eq!(stack_symbols(stack)[..3], ["worker_leak", "work", "spawn"], "{stack}");
        assert!(stack_symbols(stack).contains(&"main"), "{stack}");
    }
    assert!(!text.contains("held by 4 processes"), "{text}");
}

#[test]
fn comm_traces_every_process_of_that_name_present_and_future() {
    let (seen, _, report) = trace_workers(&["--prefork"], &["--comm", "procs_workers", "-o", "0"], true);
    let truth = truths(&seen);
    assert_eq!(truth["worker_leak"].len(), 5, "{seen:?}");
    // Four workers found by name at the start, the late one as it was forked.
    assert_exact_per_process(&report, &truth);
    let master = truth["master_leak"][0].pid;
    let first = truth["worker_leak"].iter().find(|w| w.count == 1).unwrap();
    let processes = report["processes"].as_array().unwrap();
    let entry = processes.iter().find(|p| p["pid"] == first.pid).expect("the exited worker is listed");
    assert_eq!(entry["exited"], true, "{entry}");
    assert!(processes.iter().any(|p| p["pid"] == master));
}

/// `leaktrace -- WRAPPER… leaky`: the wrapper execs the fixture; the report is the
/// fixture's alone, and names it.
fn exec_wrapper_reports_the_program_it_became(wrapper: &[&str]) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let fixture = leaky().to_str().unwrap();
    let mut args = vec!["--json", json.to_str().unwrap(), "--"];
    let exec_line = format!("exec {fixture}");
    args.extend(wrapper.iter().map(|&a| match a {
        "FIXTURE" => fixture,
        "EXEC" => exec_line.as_str(),
        other => other,
    }));
    let output = run_leaktrace(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    assert_matches_truth(&report, &parse_truth(&stdout), leaky());
    let truth_total: u64 = parse_truth(&stdout).iter().map(|t| t.bytes).sum();
    // Nothing but the fixture's own blocks: the wrapper's were dropped at the exec.
    let fixture_only: u64 = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["frames"].as_array().unwrap().iter().any(|f| f["module"] == fixture))
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert!(fixture_only >= truth_total, "{report:#}");
    assert_eq!(report["target"]["exe"], fixture, "{}", report["target"]);
    assert!(report["activity"]["exec_dropped_blocks"].as_u64().unwrap() > 0, "{}", report["activity"]);
    assert!(stdout.contains("were dropped with the old image"), "{stdout}");
    // No block of the wrapper's image is left: no stack passes through env's or the shell's code.
    let wrapper_module = |m: &str| ["/env", "/dash", "/bash", "/sh"].iter().any(|w| m.ends_with(w));
    for stack in report["stacks"].as_array().unwrap() {
        let frames = stack["frames"].as_array().unwrap();
        assert!(!frames.is_empty(), "a stack without frames: {stack}");
        assert!(!frames.iter().any(|f| f["module"].as_str().is_some_and(wrapper_module)), "{stack}");
    }
}

#[test]
fn env_wrapper_exec_is_followed() {
    exec_wrapper_reports_the_program_it_became(&["env", "X=1", "FIXTURE"]);
}

#[test]
fn shell_exec_is_followed() {
    exec_wrapper_reports_the_program_it_became(&["sh", "-c", "EXEC"]);
}

/// A launched command that preloads jemalloc gets jemalloc's functions probed, as attaching
/// to it would: the choice is made once its libraries are mapped, before main runs.
#[test]
fn launch_probes_a_preloaded_malloc_replacement() {
    require_root();
    ensure_debian_package("libjemalloc2");
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(leaktrace_bin())
        .args(["--json", json.to_str().unwrap(), "--", leaky().to_str().unwrap()])
        .env("LD_PRELOAD", jemalloc)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    assert!(report["allocator"].as_str().unwrap().contains("libjemalloc.so.2"), "{}", report["allocator"]);
    let truth = parse_truth(&stdout);
    let malloc_site = truth.iter().find(|t| t.site == "leak_malloc").unwrap();
    // Served by jemalloc's malloc, which only the jemalloc probes see.
    assert_eq!(totals_for(&report, "leak_malloc"), (malloc_site.bytes, malloc_site.count), "{report:#}");
}

/// `--comm` with no such process yet, reports every half second: empty reports that say whom
/// they wait for, and a clean end.
#[test]
fn comm_before_any_process_reports_whom_it_waits_for() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output =
        run_leaktrace(&["--comm", "no-such-worker", "--json", json.to_str().unwrap(), "0.5", "--duration", "1.6"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no process is named no-such-worker yet"), "{stderr}");
    assert!(stdout.contains("Final report: every process named no-such-worker, traced"), "{stdout}");
    let report = read_report(&json);
    assert_eq!(report["target"]["command"], "every process named no-such-worker");
    assert_eq!(report["totals"]["count"], 0);
}

/// Following a launched command puts the probes on every process that maps the C library:
/// leaktrace says so, and says nothing of it with `--no-follow`.
#[test]
fn a_followed_launch_says_what_it_costs_other_processes() {
    require_root();
    let followed = run_leaktrace(&["--", "/bin/true"]);
    let alone = run_leaktrace(&["--no-follow", "--", "/bin/true"]);
    let (followed, alone) = (String::from_utf8_lossy(&followed.stderr), String::from_utf8_lossy(&alone.stderr));
    assert!(followed.contains("untraced ones pay a trap"), "{followed}");
    assert!(followed.contains("--no-follow traces the command alone"), "{followed}");
    assert!(!alone.contains("untraced ones pay a trap"), "{alone}");
}
