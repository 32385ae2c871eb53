//! Root tests of DWARF unwinding: a fixture and a library it dlopens, both built with -O2
//! and without frame pointers, leak through four known call paths six and more frames deep;
//! every leak stack must be exactly the known chain, with exact bytes and counts, and churn
//! through the same functions must not add stacks. The fixture's truth is itself checked
//! against gdb's backtrace.

use std::{path::PathBuf, process::Command, sync::OnceLock};

use leaktrace_integration_tests::*;
use serde_json::Value;

struct Fixture {
    exe: PathBuf,
    library: PathBuf,
}

/// The fixture and its library, built with or without frame pointers.
fn fixture(frame_pointers: bool) -> &'static Fixture {
    static WITH: OnceLock<Fixture> = OnceLock::new();
    static WITHOUT: OnceLock<Fixture> = OnceLock::new();
    let (cell, variant, fp_flag) = if frame_pointers {
        (&WITH, "fp", "-fno-omit-frame-pointer")
    } else {
        (&WITHOUT, "nofp", "-fomit-frame-pointer")
    };
    cell.get_or_init(|| Fixture {
        library: build_fixture(
            "unwind_lib.c",
            &format!("libunwind_{variant}.so"),
            &["-O2", "-g", fp_flag, "-shared", "-fPIC"],
        ),
        exe: build_fixture("unwind_main.c", &format!("unwind_{variant}"), &["-O2", "-g", fp_flag]),
    })
}

/// One call path as the fixture prints it: `TRUTH bytes count f0,f1,...,main`.
#[derive(Debug)]
struct PathTruth {
    bytes: u64,
    count: u64,
    chain: Vec<String>,
}

fn parse_paths(stdout: &str) -> Vec<PathTruth> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TRUTH "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            PathTruth {
                bytes: f[0].parse().unwrap(),
                count: f[1].parse().unwrap(),
                chain: f[2].split(',').map(str::to_string).collect(),
            }
        })
        .collect()
}

/// The stack's frames that lie in the fixture or its library, by function name, up to main
/// (the C library's start code calls main from the executable's `_start`).
fn fixture_chain<'a>(stack: &'a Value, fx: &Fixture) -> Vec<&'a str> {
    let modules = [fx.exe.to_string_lossy().into_owned(), fx.library.to_string_lossy().into_owned()];
    let mut chain: Vec<&str> = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["module"].as_str().is_some_and(|m| modules.iter().any(|x| x == m)))
        .map(|f| f["symbol"].as_str().unwrap_or("?"))
        .collect();
    if let Some(main) = chain.iter().position(|f| *f == "main") {
        chain.truncate(main + 1);
    }
    chain
}

/// Every leak stack is exactly one of the known chains, with the path's exact bytes and
/// counts; with `whole`, the stack also goes on past main to the C library's start code and
/// the unwinder reached the outermost frame.
fn check_paths(report: &Value, truth: &[PathTruth], fx: &Fixture, whole: bool) {
    assert_eq!(truth.len(), 4, "the fixture prints four paths");
    assert_eq!(report["incomplete"], false, "losses: {}", report["lost"]);
    let leak_stacks: Vec<&Value> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| stack_symbols(s).iter().any(|f| *f == "exe_site" || *f == "lib_site"))
        .collect();
    // As many stacks as call paths: the churn through the same functions, with different
    // stack contents each time, adds none.
    assert_eq!(leak_stacks.len(), truth.len(), "leak stacks: {leak_stacks:#?}");
    for t in truth {
        let matching: Vec<&&Value> = leak_stacks.iter().filter(|s| fixture_chain(s, fx) == t.chain).collect();
        assert_eq!(matching.len(), 1, "path {:?}: stacks {:#?}", t.chain, leak_stacks);
        let stack = matching[0];
        assert_eq!((stack["bytes"].as_u64().unwrap(), stack["count"].as_u64().unwrap()), (t.bytes, t.count), "{stack}");
        let symbols = stack_symbols(stack);
        // The chain is contiguous from the innermost frame: nothing before or between.
        assert_eq!(
            &symbols[..t.chain.len()],
            t.chain.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
            "{stack}"
        );
        if whole {
            assert_eq!(symbols.get(t.chain.len()), Some(&"__libc_start_call_main"), "{stack}");
            assert!(stack["cut_short"].is_null(), "{stack}");
        }
    }
}

fn launch(fx: &Fixture, leaktrace_args: &[&str]) -> (Value, Vec<PathTruth>) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut args = vec!["--json", json.to_str().unwrap()];
    args.extend_from_slice(leaktrace_args);
    args.extend(["--", fx.exe.to_str().unwrap(), fx.library.to_str().unwrap(), "--rounds", "2"]);
    let output = run_leaktrace(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "leaktrace failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    (read_report(&json), parse_paths(&stdout))
}

fn unwinder_of<'a>(report: &'a Value, module: &std::path::Path) -> &'a str {
    let name = module.to_string_lossy();
    report["unwind"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"].as_str() == Some(&*name))
        .and_then(|m| m["unwinder"].as_str())
        .unwrap_or_else(|| panic!("{name} not in {:#}", report["unwind"]))
}

#[test]
fn stacks_without_frame_pointers_match_the_call_chains_including_a_dlopened_library() {
    let fx = fixture(false);
    // Default mode (auto): DWARF for modules without frame pointers. The library is loaded
    // right before its first allocations, so this also checks the stop at library load.
    let (report, truth) = launch(fx, &[]);
    check_paths(&report, &truth, fx, true);
    assert_eq!(report["unwind"]["mode"], "auto");
    assert_eq!(unwinder_of(&report, &fx.exe), "dwarf");
    assert_eq!(unwinder_of(&report, &fx.library), "dwarf");
    assert!(report["unwind"]["rows_used"].as_u64().unwrap() > 0);
}

#[test]
fn attached_process_with_library_loaded_before_attach_gets_whole_stacks() {
    require_root();
    let fx = fixture(false);
    let (mut child, mut lines) =
        spawn_waiting(Command::new(&fx.exe).args([fx.library.to_str().unwrap(), "--load-first", "--wait"]));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (tracer, _) = start_tracing(&[
        "-p".into(),
        child.id().to_string(),
        "--unwind".into(),
        "dwarf".into(),
        "--json".into(),
        json.display().to_string(),
    ]);
    let stdout = work_until_done(&mut child, &mut lines);
    // The target exiting ends the trace with the final report.
    drop(child.stdin.take());
    child.wait().unwrap();
    let output = tracer.wait_with_output().unwrap();
    assert!(output.status.success(), "leaktrace failed: {}", String::from_utf8_lossy(&output.stdout));
    let report = read_report(&json);
    check_paths(&report, &parse_paths(&stdout), fx, true);
    assert_eq!(report["unwind"]["mode"], "dwarf");
}

#[test]
fn frame_pointer_build_gives_the_same_stacks_with_fp_and_dwarf_unwinding() {
    let fx = fixture(true);
    let (fp_report, truth) = launch(fx, &["--unwind", "fp"]);
    assert!(fp_report["unwind"].is_null(), "no tables with --unwind fp");
    // The kernel's rbp walk ends somewhere in the C library's start code, which keeps no
    // frame pointers: only the chains up to main are compared.
    check_paths(&fp_report, &truth, fx, false);
    let (dwarf_report, truth) = launch(fx, &["--unwind", "dwarf"]);
    check_paths(&dwarf_report, &truth, fx, true);
    assert_eq!(unwinder_of(&dwarf_report, &fx.exe), "dwarf");
    // In auto mode the same build is walked by frame pointers in its own modules.
    let (auto_report, truth) = launch(fx, &[]);
    check_paths(&auto_report, &truth, fx, true);
    assert_eq!(unwinder_of(&auto_report, &fx.exe), "frame-pointer");
    assert_eq!(unwinder_of(&auto_report, &fx.library), "frame-pointer");
}

#[test]
fn fixture_truth_agrees_with_gdb_backtraces() {
    let fx = fixture(false);
    let output = Command::new("gdb")
        .args(["-q", "-batch", "-nx", "-ex", "set breakpoint pending on", "-ex", "set debuginfod enabled off"])
        .args(["-ex", "break exe_site", "-ex", "break lib_site", "-ex", "run", "-ex", "bt", "-ex", "delete 1"])
        .args(["-ex", "continue", "-ex", "bt", "-ex", "kill", "--args"])
        .arg(&fx.exe)
        .arg(&fx.library)
        .output()
        .expect("gdb runs (Debian package gdb)");
    let text = String::from_utf8_lossy(&output.stdout);
    // Two backtraces: the first exe_site call (path 1), then the first lib_site call (path 3).
    let mut traces: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else { continue };
        let (number, frame) = rest.split_once(' ').unwrap();
        if number == "0" {
            traces.push(Vec::new());
        }
        let frame = frame.trim_start();
        let frame = frame.split_once(" in ").map_or(frame, |(_, f)| f);
        traces.last_mut().unwrap().push(frame.split_whitespace().next().unwrap().to_string());
    }
    // The truth as the fixture prints it when it runs to the end.
    let run = Command::new(&fx.exe).arg(&fx.library).output().unwrap();
    let truth = parse_paths(&String::from_utf8_lossy(&run.stdout));
    assert_eq!(truth.len(), 4, "{run:?}");
    assert_eq!(traces.len(), 2, "{text}");
    assert_eq!(traces[0], truth[0].chain, "{text}");
    assert_eq!(traces[1], truth[2].chain, "{text}");
}
