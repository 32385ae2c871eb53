//! Root tests: leaktrace traces the ground-truth fixture through real uprobes and its JSON
//! report must match the fixture's own accounting exactly.

use std::{
    io::{BufReader, Write},
    process::Command,
    time::{Duration, Instant},
};

use leaktrace_integration_tests::*;

fn launch_and_check(fixture_args: &[&str]) {
    launch_and_check_with(&[], fixture_args);
}

fn launch_and_check_with(options: &[&str], fixture_args: &[&str]) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let fixture = leaky();
    // Every stack in the text report, so that each site's text figures can be checked.
    let mut args = options.to_vec();
    args.extend(["--top", "1000", "--json", json.to_str().unwrap(), "--"]);
    args.push(fixture.to_str().unwrap());
    args.extend_from_slice(fixture_args);
    let output = run_leaktrace(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "leaktrace failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Final report"), "{stdout}");
    assert!(stdout.contains("bytes in"), "{stdout}");
    let report = read_report(&json);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["mode"], "user");
    assert_eq!(report["target_exited"], true);
    let truth = parse_truth(&stdout);
    assert_matches_truth(&report, &truth, fixture);
    // The text report, what most users read, gives every site the same exact figures.
    assert_text_matches_truth(&stdout, &report, &truth);
    // reallocarray tail-calls realloc in glibc: the inner call must be seen as nested.
    assert!(report["activity"]["nested_calls"].as_u64().unwrap() > 0);
    // Every churn allocation was recorded and freed: 120,000+ per worker.
    assert!(report["activity"]["alloc_calls"].as_u64().unwrap() >= 2 * 120_000);
}

#[test]
fn launch_single_threaded_matches_truth() {
    launch_and_check(&[]);
}

#[test]
fn launch_multi_threaded_matches_truth() {
    launch_and_check(&["--threads", "4"]);
}

/// Kernels before 6.13 have no uprobe sessions: the plain uprobe and uretprobe pairs, still
/// placed where the kernel emulates the instruction, must be just as exact.
#[test]
fn plain_uprobes_without_sessions_match_truth() {
    launch_and_check_with(&["--no-sessions"], &["--threads", "2"]);
}

/// A fixture waiting on stdin, with its stdout read line by line.
struct WaitingFixture {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    seen: Vec<String>,
}

impl WaitingFixture {
    fn start() -> Self {
        let (child, lines) = spawn_waiting(Command::new(leaky()).arg("--wait"));
        WaitingFixture { child, lines, seen: Vec::new() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the fixture do its work and waits until it says "done".
    fn work(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if line == "done" {
                return;
            }
            self.seen.push(line);
        }
        panic!("fixture ended before saying done");
    }

    /// Asserts the fixture is still running (not merely an unreaped corpse with a /proc
    /// entry), lets it exit and asserts it exited normally with status 0.
    fn finish(mut self) -> Vec<String> {
        assert_eq!(self.child.try_wait().unwrap(), None, "the fixture ended before it was told to");
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "fixture: {status}");
        self.seen
    }
}

#[test]
fn attach_to_running_process_sees_allocations_made_after_attach() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut fixture = WaitingFixture::start();
    let pid = fixture.pid();
    let (tracer, banner) = start_tracing(&["-p".into(), pid.to_string(), "--json".into(), json.display().to_string()]);
    assert!(banner.starts_with(&format!("Tracing pid {pid} (")), "{banner}");
    fixture.work();
    let seen = fixture.finish();
    // The target exiting ends the trace normally: final report, exit 0.
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("target exited"), "{stdout}");
    let report = read_report(&json);
    assert_eq!(report["target"]["pid"], pid, "the attached process");
    assert!(stdout.contains(&format!("Final report: pid {pid} (")), "{stdout}");
    assert_matches_truth(&report, &parse_truth(&seen.join("\n")), leaky());
}

fn signal_ends_trace_with_final_report(signal: &str, reason: &str) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut fixture = WaitingFixture::start();
    let (tracer, _) = start_tracing(&[
        "-p".into(),
        fixture.pid().to_string(),
        "--older".into(),
        "0".into(),
        "--json".into(),
        json.display().to_string(),
    ]);
    fixture.work();
    let truth = parse_truth(&fixture.seen.join("\n"));
    assert!(Command::new("kill").args([signal, &tracer.id().to_string()]).status().unwrap().success());
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(reason), "{stdout}");
    // The target is still running after leaktrace detached, and exits normally when told to.
    fixture.finish();
    let report = read_report(&json);
    assert_eq!(report["target_exited"], false);
    assert_matches_truth(&report, &truth, leaky());
}

#[test]
fn sigint_produces_the_final_report() {
    signal_ends_trace_with_final_report("-INT", "interrupted");
}

#[test]
fn sigterm_produces_the_final_report() {
    signal_ends_trace_with_final_report("-TERM", "terminated");
}

#[test]
fn duration_ends_the_trace_and_periodic_reports_appear() {
    require_root();
    let mut fixture = WaitingFixture::start();
    let started = Instant::now();
    let output = run_leaktrace(&["-p", &fixture.pid().to_string(), "--duration", "1.2", "0.5"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.matches("stacks with outstanding allocations").count() >= 3, "{stdout}");
    assert!(stdout.contains("duration reached"), "{stdout}");
    fixture.work();
    fixture.finish();
}

#[test]
fn statically_linked_executable_is_traced_through_its_own_allocator() {
    require_root();
    let fixture = build_fixture(
        "leaky.c",
        "leaky-static",
        &["-O1", "-g", "-static", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-pthread"],
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = run_leaktrace(&["--json", json.to_str().unwrap(), "--", fixture.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    assert_eq!(report["allocator"].as_str(), fixture.to_str());
    assert_matches_truth(&report, &parse_truth(&stdout), &fixture);
}

#[test]
fn a_command_that_exits_at_once_still_gets_named_frames() {
    require_root();
    let fixture = build_fixture("short_lived.c", "short_lived", &["-O1", "-g", "-fno-omit-frame-pointer"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    for _ in 0..3 {
        let output = run_leaktrace(&["--json", json.to_str().unwrap(), "--", fixture.to_str().unwrap()]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let report = read_report(&json);
        assert_eq!(totals_for(&report, "leak_and_leave"), (77, 1), "{:#}", report["stacks"]);
        let stack =
            report["stacks"].as_array().unwrap().iter().find(|s| stack_symbols(s).contains(&"leak_and_leave")).unwrap();
        assert_eq!(stack_symbols(stack)[..2], ["leak_and_leave", "main"]);
    }
}

/// Attaching to a process that is inside malloc all the time: a call entered between the
/// entry and return probes' attachment must not make every later call look nested in it
/// (which once dropped every allocation of such a process).
#[test]
fn attach_to_a_process_allocating_nonstop_records_its_allocations() {
    require_root();
    let busy = build_fixture("busy.c", "busy", &["-O1", "-g"]);
    let mut child = Command::new(&busy).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufRead::lines(BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("ready "), "{first}");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = run_leaktrace(&["-p", &child.id().to_string(), "--duration", "2", "--json", json.to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    let activity = &report["activity"];
    assert!(activity["alloc_calls"].as_u64().unwrap() > 1000, "{activity}");
    assert_eq!(activity["nested_calls"], 0, "{activity}");
    // Every block was freed at once: nothing of the churn may be left outstanding but the
    // call in flight at the end.
    assert!(report["totals"]["count"].as_u64().unwrap() <= 1, "{}", report["totals"]);
}
