//! Root tests: PHP frames in the stacks of a PHP worker (Debian's php-cli, installed by
//! `cargo xtask test`'s setup) that leaks through FFI's libc malloc. Each leak stack must
//! show the exact PHP chain, with files and lines, between the native frames, with the
//! bytes and counts the worker printed.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use leaktrace_integration_tests::*;
use serde_json::Value;

fn worker_script() -> PathBuf {
    workspace_root().join("tests/fixtures/php_worker.php")
}

/// Panics unless Debian's php is installed: the test must not pass vacuously.
fn require_php() {
    let found = Command::new("php").arg("-v").output().is_ok_and(|o| o.status.success());
    assert!(found, "php is not installed (cargo xtask test installs Debian's php-cli)");
}

/// The line of the script that carries `// line: MARK`.
fn line_of(mark: &str) -> u64 {
    let text = std::fs::read_to_string(worker_script()).unwrap();
    let needle = format!("// line: {mark}");
    let index = text.lines().position(|l| l.trim_end().ends_with(&needle)).unwrap_or_else(|| panic!("no {needle}"));
    index as u64 + 1
}

/// What the worker printed: (caller, bytes, count) per leaking caller.
fn truth(lines: &str) -> Vec<(String, u64, u64)> {
    lines
        .lines()
        .filter_map(|l| l.strip_prefix("leak "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

/// The PHP chain each caller's leak must show, innermost first: (function, line).
fn expected_chain(caller: &str) -> Vec<(String, u64)> {
    let (call, queue) = match caller {
        "Worker::process" => ("process", "queue process"),
        "Worker::retry" => ("retry", "queue retry"),
        other => panic!("unexpected caller {other}"),
    };
    vec![
        ("Job::handle".to_string(), line_of("handle")),
        (caller.to_string(), line_of(call)),
        ("run_queue".to_string(), line_of(queue)),
        ("{main}".to_string(), line_of("main")),
    ]
}

fn is_php(frame: &Value) -> bool {
    frame["kind"] == "php"
}

/// Checks the JSON stack holding `caller`'s leak: exact figures, the PHP chain with the
/// script's file and lines, spliced between native frames just above `execute_ex`.
fn check_stack(report: &Value, caller: &str, bytes: u64, count: u64) {
    let stacks = report["stacks"].as_array().unwrap();
    let holding: Vec<&Value> = stacks
        .iter()
        .filter(|s| s["frames"].as_array().unwrap().iter().any(|f| is_php(f) && f["symbol"] == caller))
        .collect();
    assert_eq!(holding.len(), 1, "one stack for {caller}: {:#}", report["stacks"]);
    let stack = holding[0];
    assert_eq!((stack["bytes"].as_u64().unwrap(), stack["count"].as_u64().unwrap()), (bytes, count), "{caller}");
    let frames = stack["frames"].as_array().unwrap();
    let script = worker_script().display().to_string();
    // The frames of PHP code, innermost first; before them only the FFI call's own frame
    // (a trampoline, shown as `[php] ?` once freed, or named), which has no file.
    let code: Vec<(String, u64)> = frames
        .iter()
        .filter(|f| is_php(f) && f["file"].is_string())
        .map(|f| {
            assert_eq!(f["file"].as_str(), Some(script.as_str()), "{f}");
            (f["symbol"].as_str().unwrap().to_string(), f["line"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(code, expected_chain(caller), "{caller}: {frames:#?}");
    let first = frames.iter().position(is_php).unwrap();
    let last = frames.iter().rposition(is_php).unwrap();
    assert!(frames[first..=last].iter().all(is_php), "the PHP frames are one run: {frames:#?}");
    assert!(first > 0 && frames[..first].iter().all(|f| f["module"].is_string()), "native frames first: {frames:#?}");
    assert_eq!(frames[last + 1]["symbol"], "execute_ex", "the VM frame that runs them follows: {frames:#?}");
    assert!(
        stack_symbols(stack).contains(&"php_execute_script"),
        "the native stack goes on below the PHP frames: {frames:#?}"
    );
}

/// Every check of one trace: JSON stacks, text lines and folded stacks against the truth.
fn check_report(json: &Path, folded: &Path, stdout: &str, printed: &str) {
    let report = read_report(json);
    let truth = truth(printed);
    assert_eq!(truth.len(), 2, "{printed}");
    for (caller, bytes, count) in &truth {
        check_stack(&report, caller, *bytes, *count);
        let chain = expected_chain(caller);
        // Text: the PHP frames as `[php] name file:line`, in order, under the stack's figures.
        let script = worker_script().display().to_string();
        let text = final_text(stdout);
        let block_start =
            text.find(&format!("{bytes} bytes in {count} allocations")).unwrap_or_else(|| panic!("{text}"));
        let block = &text[block_start..];
        let mut at = 0;
        for (name, line) in &chain {
            let wanted = format!("[php] {name} {script}:{line}");
            let found = block[at..].find(&wanted).unwrap_or_else(|| panic!("no `{wanted}` in order:\n{block}"));
            at += found + wanted.len();
        }
        // Folded: outermost first, the PHP chain joined like any frames, with the bytes.
        let folded_text = std::fs::read_to_string(folded).unwrap();
        let path: Vec<&str> = chain.iter().rev().map(|(n, _)| n.as_str()).collect();
        let joined = format!("execute_ex;{}", path.join(";"));
        assert!(
            folded_text.lines().any(|l| l.contains(&joined) && l.ends_with(&format!(" {bytes}"))),
            "no folded line with {joined} and {bytes}:\n{folded_text}"
        );
    }
    // A frame-kind field only on PHP frames, and no loss.
    assert_eq!(report["incomplete"], false, "{}", report["lost"]);
}

#[test]
fn attached_php_worker_shows_its_php_chain_in_each_leak() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let (json, folded) = (dir.path().join("report.json"), dir.path().join("report.folded"));
    let mut worker = Command::new("php")
        .arg(worker_script())
        .args(["40", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    let pid = worker.id().to_string();
    let (tracer, _) = start_tracing(
        &[
            "-p",
            &pid,
            "--older",
            "0",
            "--top",
            "1000",
            "--json",
            json.to_str().unwrap(),
            "--folded",
            folded.to_str().unwrap(),
        ]
        .map(String::from),
    );
    writeln!(worker.stdin.as_mut().unwrap(), "go").unwrap();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        printed.push_str(&line);
        printed.push('\n');
    }
    // Ended while the worker still runs, as on a production worker.
    assert!(Command::new("kill").args(["-INT", &tracer.id().to_string()]).status().unwrap().success());
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    drop(worker.stdin.take());
    assert!(worker.wait().unwrap().success());
    check_report(&json, &folded, &stdout, &printed);
}

#[test]
fn launched_php_worker_shows_its_php_chain_in_each_leak() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let (json, folded) = (dir.path().join("report.json"), dir.path().join("report.folded"));
    let (svg, pprof) = (dir.path().join("report.svg"), dir.path().join("report.pb.gz"));
    let script = worker_script();
    // PHP unloads its extensions (dlclose) before it exits, and a report taken at exit names
    // frames from the mappings of that moment, where ffi.so and libffi are gone: keep them
    // loaded, as one does under valgrind, so that the native frames above the PHP ones stay
    // named.
    let output = Command::new(leaktrace_bin())
        .env("ZEND_DONT_UNLOAD_MODULES", "1")
        .args(["--top", "1000", "--json", json.to_str().unwrap(), "--folded", folded.to_str().unwrap()])
        .args(["--svg", svg.to_str().unwrap(), "--pprof", pprof.to_str().unwrap(), "--", "php"])
        .arg(&script)
        .arg("25")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("(NTS) in /usr/bin/php"), "the header names the PHP found: {stderr}");
    check_report(&json, &folded, &stdout, &stdout);
    check_svg_and_pprof(&svg, &pprof, &truth(&stdout));
}

/// The flame graph has each caller's frame as wide as its leak; `go tool pprof -traces`
/// shows each PHP chain in order, in front of `execute_ex`, and PHP frames have their own
/// `[php]` mapping.
fn check_svg_and_pprof(svg: &Path, pprof: &Path, truth: &[(String, u64, u64)]) {
    let svg = std::fs::read_to_string(svg).unwrap();
    let go = |args: &[&str]| go_pprof(args, pprof);
    let traces = go(&["-traces"]);
    for (caller, bytes, _) in truth {
        // inferno writes thousands with commas.
        let digits = bytes.to_string();
        let grouped: Vec<String> =
            digits.as_bytes().rchunks(3).rev().map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        let title = format!("{caller} ({} bytes", grouped.join(","));
        assert!(svg.contains(&title), "{title} missing from the flame graph");
        let chain: Vec<String> = expected_chain(caller).into_iter().map(|(name, _)| name).collect();
        let wanted = [chain, vec!["execute_ex".to_string()]].concat();
        let found = traces.split("-----------+").any(|block| {
            let names: Vec<&str> = block.lines().skip(1).map(|l| l.split_whitespace().last().unwrap_or("")).collect();
            names.windows(wanted.len()).any(|w| w == wanted.as_slice())
        });
        assert!(found, "no pprof trace with {wanted:?}:\n{traces}");
    }
    assert!(go(&["-raw"]).lines().any(|l| l.contains("[php]") && l.contains("0x0/0x0/0x0")), "no [php] mapping");
}

#[test]
fn no_php_frames_leaves_the_native_stack_alone() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let script = worker_script();
    let output = run_leaktrace(&[
        "--no-php-frames",
        "--json",
        json.to_str().unwrap(),
        "--",
        "php",
        script.to_str().unwrap(),
        "10",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    let frames = report["stacks"].as_array().unwrap().iter().flat_map(|s| s["frames"].as_array().unwrap());
    assert_eq!(frames.filter(|f| is_php(f)).count(), 0);
    // Both callers' leaks are one native stack again: 10 × 96 + 4 × 200 bytes.
    assert!(
        report["stacks"].as_array().unwrap().iter().any(|s| s["bytes"] == 1760 && s["count"] == 14),
        "{:#}",
        report["stacks"]
    );
}

/// A chain deeper than the 32 frames kept: each allocation's chain is cut, and counted in
/// the JSON and the text.
#[test]
fn php_chains_deeper_than_the_limit_are_cut_and_counted() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let script = workspace_root().join("bench/workload/php_frames.php");
    // 40 frames of PHP code; 1,000 warm-up calls and 100 timed ones, each a malloc and a free.
    let output = run_leaktrace(&["--json", json.to_str().unwrap(), "--", "php", script.to_str().unwrap(), "40", "100"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    let truncated = report["lost"]["php_frames_truncated"].as_u64().unwrap_or(0);
    assert!(truncated >= 1100, "{}", report["lost"]);
    assert!(stdout.contains(&format!("PHP frames missing: {truncated} PHP frame chains cut at 32 frames")), "{stdout}");
}

/// The line of `script` that carries `// line: MARK`.
fn line_in(script: &Path, mark: &str) -> u64 {
    let text = std::fs::read_to_string(script).unwrap();
    let needle = format!("// line: {mark}");
    let index = text.lines().position(|l| l.trim_end().ends_with(&needle)).unwrap_or_else(|| panic!("no {needle}"));
    index as u64 + 1
}

/// The stacks of `heap` that run PHP function `function`.
fn heap_stacks<'a>(report: &'a Value, heap: &str, function: &str) -> Vec<&'a Value> {
    report["stacks"].as_array().unwrap().iter().filter(|s| s["heap"] == heap && php_calls(s, function)).collect()
}

/// Whether `stack` runs PHP function `function`.
fn php_calls(stack: &Value, function: &str) -> bool {
    stack["frames"].as_array().unwrap().iter().any(|f| is_php(f) && f["symbol"] == function)
}

/// Runs `leaktrace args…` on a growth worker until the worker says `done`, then ends the
/// trace with SIGINT while the worker lingers with its caches, as on a resident worker (at a
/// normal exit PHP would reset its heap first). Returns the worker's `zend`/`malloc` lines
/// and leaktrace's stdout after them.
fn trace_lingering_worker(args: &[String]) -> (String, String) {
    let mut tracer =
        Command::new(leaktrace_bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = tracer.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut lines = BufReader::new(tracer.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        if line.starts_with("zend ") || line.starts_with("malloc ") {
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    assert!(Command::new("kill").args(["-INT", &tracer.id().to_string()]).status().unwrap().success());
    let stdout: String = lines.map(|l| l.unwrap() + "\n").collect();
    let status = tracer.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(status.success() && printed.lines().count() == 2, "{printed}{stderr}");
    (printed, stdout)
}

/// The two figures after `key` on the worker's line that starts with it.
fn figures_of(printed: &str, key: &str) -> (u64, u64) {
    let line = printed.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("{key}: {printed}"));
    let f: Vec<u64> = line.split_whitespace().map(|v| v.parse().unwrap()).collect();
    (f[0], f[1])
}

/// PHP's own heap beside the C one, in one launched worker: static arrays that grow on every
/// iteration are `growing` stacks on the `php` heap, with the exact bytes and count of the
/// strings and tables kept (a size-specialised `_emalloc_56` included), named after the PHP
/// functions that keep them, and together as large as what the script saw
/// `memory_get_usage()` grow by (within 10 %); a malloc leak through FFI in the same process
/// is on the `malloc` heap, exact. Text, folded and pprof output say each stack's heap.
#[test]
fn zend_heap_growth_and_a_malloc_leak_are_reported_on_their_own_heaps() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let (json, folded, pprof) =
        (dir.path().join("report.json"), dir.path().join("report.folded"), dir.path().join("report.pb.gz"));
    let script = workspace_root().join("tests/fixtures/php_zend_growth.php");
    // 300 iterations 10 ms apart, sampled every 0.5 s: more intervals than growth classes need.
    let mut args: Vec<String> =
        ["--older", "0", "--json", json.to_str().unwrap(), "--folded", folded.to_str().unwrap()]
            .map(String::from)
            .to_vec();
    args.extend(
        ["--pprof", pprof.to_str().unwrap(), "0.5", "--", "php", script.to_str().unwrap(), "300", "10"]
            .map(String::from),
    );
    let (printed, stdout) = trace_lingering_worker(&args);
    let figures = |key: &str| figures_of(&printed, key);
    let ((zend_bytes, iterations), (malloc_bytes, malloc_count)) = (figures("zend "), figures("malloc "));
    let report = read_report(&json);

    // The Zend heap. The strings kept: each a block `str_repeat` asked for in `remember`, as
    // many as iterations. The first call of a function may be a stack of its own (its first
    // run binds its static array), so stacks are summed; the largest is growing.
    let strings: Vec<&Value> =
        heap_stacks(&report, "php", "remember").into_iter().filter(|s| php_calls(s, "str_repeat")).collect();
    let sum = |stacks: &[&Value], key: &str| stacks.iter().map(|s| s[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum(&strings, "bytes"), sum(&strings, "count")), (1024 * iterations, iterations), "{strings:#?}");
    let stack = strings.iter().max_by_key(|s| s["bytes"].as_u64()).unwrap();
    assert_eq!(stack["trend"]["class"], "growing", "{}", stack["trend"]);
    // The rows' HashTables, from `_emalloc_56`, whose size is only in its name: one stack,
    // the array's constructor called from `remember_row`.
    let rows = heap_stacks(&report, "php", "remember_row");
    let tables: Vec<&Value> = rows.iter().copied().filter(|s| stack_symbols(s)[0] == "_zend_new_array").collect();
    assert_eq!((sum(&tables, "bytes"), sum(&tables, "count")), (56 * iterations, iterations), "{rows:#?}");
    // Everything both functions keep, against what memory_get_usage() saw (within 10 %: the
    // arrays' own tables grow by doubling, in steps the samples do not see alike).
    let kept = sum(&heap_stacks(&report, "php", "remember"), "bytes") + sum(&rows, "bytes");
    assert!(
        kept.abs_diff(zend_bytes) * 10 <= zend_bytes,
        "php heap: {kept} bytes kept, memory_get_usage() grew by {zend_bytes}"
    );
    let line = line_in(&script, "grow");
    let remember = stack["frames"].as_array().unwrap().iter().find(|f| is_php(f) && f["symbol"] == "remember").unwrap();
    assert_eq!((remember["file"].as_str(), remember["line"].as_u64()), (script.to_str(), Some(line)), "{remember}");

    // The C heap: FFI's malloc blocks, exactly, and on no stack of the other heap.
    let native = heap_stacks(&report, "malloc", "native_leak");
    assert_eq!((sum(&native, "bytes"), sum(&native, "count")), (malloc_bytes, malloc_count), "{native:#?}");
    assert!(heap_stacks(&report, "php", "native_leak").iter().all(|s| s["count"] != malloc_count));
    assert_eq!(report["incomplete"], false, "{}", report["lost"]);

    // The header names the Zend heap's family and object; text, folded and pprof say the heap.
    let families = report["allocators"].as_array().unwrap();
    assert!(families.iter().any(|f| f["family"] == "zend" && f["object"].as_str().unwrap().contains("php")));
    let text = final_text(&stdout);
    let top = (stack["bytes"].as_u64().unwrap(), stack["count"].as_u64().unwrap());
    assert!(text.contains(&format!("{} bytes in {} allocations from stack on the php heap", top.0, top.1)), "{text}");
    assert!(text.contains("Allocators: glibc in libc.so.6") && text.contains("zend in php"), "{text}");
    // Folded output merges stacks whose frames read the same: the strings' stacks are one line.
    let folded_text = std::fs::read_to_string(&folded).unwrap();
    assert!(
        folded_text.lines().any(|l| l.starts_with("[php heap];")
            && l.contains(";remember;str_repeat;")
            && l.ends_with(&format!(" {}", 1024 * iterations))),
        "{folded_text}"
    );
    assert!(folded_text.lines().any(|l| l.starts_with("[malloc heap];") && l.contains(";native_leak;")));
    let tags = go_pprof(&["-tags"], &pprof);
    assert!(tags.contains("heap") && tags.contains("php") && tags.contains("malloc"), "{tags}");
}

/// At the end of the script PHP gives its heap's chunks back whole (`zend_mm_shutdown`)
/// without freeing each block: a report taken after the worker exits holds nothing on the
/// php heap, says how much went with the reset in text and JSON alike, and keeps the malloc
/// leak exact.
#[test]
fn blocks_held_when_php_resets_its_heap_are_released_with_it() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let script = workspace_root().join("tests/fixtures/php_zend_growth.php");
    let output =
        run_leaktrace(&["--json", json.to_str().unwrap(), "--", "php", script.to_str().unwrap(), "50", "1", "exit"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    let php_heap: Vec<&Value> = report["stacks"].as_array().unwrap().iter().filter(|s| s["heap"] == "php").collect();
    assert!(php_heap.iter().all(|s| s["count"] == 0), "{php_heap:#?}");
    let native = heap_stacks(&report, "malloc", "native_leak");
    let sum = |key: &str| native.iter().map(|s| s[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("bytes"), sum("count")), (200 * 50, 50), "{native:#?}");
    let (blocks, bytes) =
        (&report["activity"]["php_heap_released_blocks"], &report["activity"]["php_heap_released_bytes"]);
    assert!(blocks.as_u64().is_some_and(|b| b > 0), "{}", report["activity"]);
    let line = format!("PHP heap resets: {bytes} bytes in {blocks} allocations still held when PHP reset its heap");
    assert!(final_text(&stdout).contains(&line), "{line}: {stdout}");
}

/// A worker started through a shell that execs php (a start script): the php binary appears
/// only after the exec, beside a C library probed already; its Zend heap is probed then, and
/// the strings it keeps are exact on the php heap.
#[test]
fn zend_heap_is_traced_in_php_a_shell_execs() {
    require_root();
    require_php();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let script = workspace_root().join("tests/fixtures/php_zend_growth.php");
    let command = format!("exec php {} 40 5", script.display());
    let args = ["--older", "0", "--json", json.to_str().unwrap(), "--", "sh", "-c", &command].map(String::from);
    let (printed, _) = trace_lingering_worker(&args);
    let (_, iterations) = figures_of(&printed, "zend ");
    let report = read_report(&json);
    let strings: Vec<&Value> =
        heap_stacks(&report, "php", "remember").into_iter().filter(|s| php_calls(s, "str_repeat")).collect();
    let sum = |key: &str| strings.iter().map(|s| s[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("bytes"), sum("count")), (1024 * iterations, iterations), "{strings:#?}");
    assert_eq!(report["target"]["exe"], "/usr/bin/php8.2");
}
