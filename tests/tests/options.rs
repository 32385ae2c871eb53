//! Root tests of leaktrace's options end to end, each against a small fixture
//! (tests/fixtures/flags.c, prefixed_*.c) whose allocations are known exactly and printed by
//! the fixture as it runs: size bounds, age filter, ordering and top, listed allocations,
//! folded counts, report count, SIGTERM of a launched command, failed allocations, frees of
//! untracked blocks, atomic JSON, full maps, a prefixed allocator, a full unwind table and the
//! reasons a stack is cut short.

use std::{
    collections::BTreeSet,
    io::{BufReader, Lines, Write},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use leaktrace_integration_tests::*;
use serde_json::Value;

fn flags() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build_fixture("flags.c", "flags", &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls"])
    })
}

/// A finished run of leaktrace launching the fixture.
struct Run {
    /// Holds the report's directory for the run's lifetime.
    _dir: tempfile::TempDir,
    stdout: String,
    report: Value,
}

impl Run {
    fn truth(&self) -> Vec<Truth> {
        parse_truth(&self.stdout)
    }
}

/// Runs `leaktrace OPTIONS --json FILE -- flags MODE…` to completion.
fn launch(options: &[&str], fixture_args: &[&str]) -> Run {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut args: Vec<&str> = options.to_vec();
    args.extend(["--json", json.to_str().unwrap(), "--", flags().to_str().unwrap()]);
    args.extend_from_slice(fixture_args);
    let output = run_leaktrace(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "leaktrace {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report(&json);
    Run { _dir: dir, stdout, report }
}

/// The report's stacks that name one of the truth's sites, in report order, by site.
fn site_order<'a>(report: &Value, truth: &'a [Truth]) -> Vec<&'a str> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| truth.iter().find(|t| stack_symbols(s).contains(&t.site.as_str())).map(|t| t.site.as_str()))
        .collect()
}

fn truth_of<'a>(truth: &'a [Truth], site: &str) -> &'a Truth {
    truth.iter().find(|t| t.site == site).unwrap_or_else(|| panic!("no truth for {site}: {truth:?}"))
}

/// `-z`/`-Z` keep requests from the minimum to the maximum, both included: with both at
/// 1000, the 1000-byte blocks stay and the 100- and 10000-byte ones are ignored.
#[test]
fn size_bounds_keep_requests_between_them_inclusive() {
    let run = launch(&["-z", "1000", "-Z", "1000"], &["sizes"]);
    let truth = run.truth();
    assert_eq!(truth.len(), 3);
    let bound = truth_of(&truth, "leak_bound");
    assert_eq!(totals_for(&run.report, "leak_bound"), (bound.bytes, bound.count));
    assert_eq!(totals_for(&run.report, "leak_small"), (0, 0), "below -z");
    assert_eq!(totals_for(&run.report, "leak_large"), (0, 0), "above -Z");
    assert_eq!(run.report["filters"]["min_size"], 1000);
    assert_eq!(run.report["filters"]["max_size"], 1000);
    assert_text_matches_truth(&run.stdout, &run.report, std::slice::from_ref(bound));
    let groups = parse_text_groups(final_text(&run.stdout));
    assert_eq!(text_totals_for(&groups, "leak_small"), (0, 0));
    assert_eq!(text_totals_for(&groups, "leak_large"), (0, 0));
}

/// `--sort count` and `--sort bytes` order the stacks (JSON and text), and `-T` limits the
/// text to that many, summing the rest in one line; the JSON keeps every stack. The sizes
/// fixture's sites rank small > bound > large by count and the reverse by bytes.
#[test]
fn sort_and_top_order_and_limit_the_stacks() {
    for (sort, expected) in
        [("count", ["leak_small", "leak_bound", "leak_large"]), ("bytes", ["leak_large", "leak_bound", "leak_small"])]
    {
        let run = launch(&["--sort", sort, "-T", "2"], &["sizes"]);
        let truth = run.truth();
        assert_eq!(run.report["filters"]["sort"], sort);
        assert_eq!(run.report["filters"]["top"], 2);
        // The fixture's loops may be unrolled into several call sites: a site can have more
        // than one stack, each holding part of its blocks; order by the site's first stack.
        let mut seen = Vec::new();
        for site in site_order(&run.report, &truth) {
            if !seen.contains(&site) {
                seen.push(site);
            }
        }
        assert_eq!(seen, expected, "--sort {sort}: {:#}", run.report["stacks"]);
        let stacks = run.report["stacks"].as_array().unwrap();
        let key = |s: &Value| s[sort].as_u64().unwrap();
        assert!(stacks.windows(2).all(|w| key(&w[0]) >= key(&w[1])), "--sort {sort} is descending");
        let text = final_text(&run.stdout);
        assert!(text.contains("Top 2 stacks with outstanding allocations:"), "{text}");
        let groups = parse_text_groups(text);
        assert_eq!(groups.len(), 2, "{text}");
        for (group, stack) in groups.iter().zip(stacks) {
            assert_eq!(
                (group.bytes, group.count),
                (stack["bytes"].as_u64().unwrap(), stack["count"].as_u64().unwrap())
            );
        }
        let rest = &stacks[2..];
        let (bytes, count) =
            rest.iter().fold((0, 0), |(b, c), s| (b + s["bytes"].as_u64().unwrap(), c + s["count"].as_u64().unwrap()));
        assert!(
            text.contains(&format!("\t... {} more stacks hold {bytes} bytes in {count} allocations\n", rest.len())),
            "{text}"
        );
        for t in &truth {
            assert_eq!(totals_for(&run.report, &t.site), (t.bytes, t.count), "the JSON keeps every stack");
        }
    }
}

/// `-a` lists every outstanding allocation under its stack: exactly the blocks the fixture
/// kept, at the addresses it printed, with their sizes, oldest first.
#[test]
fn show_allocs_lists_each_block_the_fixture_kept() {
    let run = launch(&["-a", "-T", "100"], &["sizes"]);
    let truth = run.truth();
    let blocks: Vec<(String, u64, u64)> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("BLOCK "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(blocks.len() as u64, truth.iter().map(|t| t.count).sum::<u64>());
    let groups = parse_text_groups(final_text(&run.stdout));
    for t in &truth {
        let expected: BTreeSet<(u64, u64)> = blocks.iter().filter(|b| b.0 == t.site).map(|b| (b.1, b.2)).collect();
        let mut listed = BTreeSet::new();
        for stack in
            run.report["stacks"].as_array().unwrap().iter().filter(|s| stack_symbols(s).contains(&t.site.as_str()))
        {
            let allocations = stack["allocations"].as_array().unwrap();
            assert_eq!(allocations.len() as u64, stack["count"].as_u64().unwrap());
            let ages: Vec<u64> = allocations.iter().map(|a| a["age_ms"].as_u64().unwrap()).collect();
            assert!(ages.windows(2).all(|w| w[0] >= w[1]), "oldest first: {ages:?}");
            listed.extend(allocations.iter().map(|a| (a["address"].as_u64().unwrap(), a["size"].as_u64().unwrap())));
        }
        assert_eq!(listed, expected, "{}: the blocks listed are the blocks kept", t.site);
        let in_text: BTreeSet<(u64, u64)> = groups
            .iter()
            .filter(|g| g.functions().contains(&t.site.as_str()))
            .flat_map(|g| g.allocations.iter().copied())
            .collect();
        assert_eq!(in_text, expected, "{}: the text lists the same blocks", t.site);
    }
}

/// `--folded FILE --folded-count` weighs each folded stack by its allocations.
#[test]
fn folded_count_weighs_stacks_by_allocations() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("r.folded");
    let run = launch(&["--folded", folded.to_str().unwrap(), "--folded-count"], &["sizes"]);
    let text = std::fs::read_to_string(&folded).unwrap();
    for t in run.truth() {
        let count: u64 = text
            .lines()
            .filter(|l| l.rsplit_once(' ').unwrap().0.split(';').any(|f| f == t.site))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(count, t.count, "{}: {text}", t.site);
    }
}

/// Allocation calls that return NULL (or an error from posix_memalign) are counted as
/// failed, exactly as many as the fixture saw fail, and record nothing.
#[test]
fn failed_allocations_are_counted() {
    let run = launch(&[], &["failures"]);
    let failed: u64 = run.stdout.lines().find_map(|l| l.strip_prefix("FAILED ")).expect("FAILED line").parse().unwrap();
    assert_eq!(failed, 7, "the fixture's calls all failed");
    assert_eq!(run.report["activity"]["failed_allocs"], failed, "{}", run.report["activity"]);
    assert_eq!(totals_for(&run.report, "failures"), (0, 0));
    assert!(run.stdout.contains(&format!(" nested calls, {failed} failed allocations\n")), "{}", run.stdout);
}

/// The phases fixture, waiting for commands, traced with -p.
struct Phases {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    printed: Vec<String>,
}

impl Phases {
    fn start() -> Self {
        require_root();
        let (child, lines) = spawn_waiting(Command::new(flags()).arg("phases"));
        Phases { child, lines, printed: Vec::new() }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends a command and collects what the fixture prints up to its "ok".
    fn say(&mut self, command: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{command}").unwrap();
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if line == "ok" {
                return;
            }
            self.printed.push(line);
        }
        panic!("the fixture ended during {command:?}");
    }

    fn figure(&self, key: &str) -> u64 {
        self.printed
            .iter()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key}: {:?}", self.printed))
            .parse()
            .unwrap()
    }

    /// Asserts the fixture still runs, then lets it exit normally.
    fn finish(mut self) {
        assert_eq!(self.child.try_wait().unwrap(), None, "the fixture ended early");
        drop(self.child.stdin.take());
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

/// Ends a trace started with [`start_tracing`] by SIGINT and returns its stdout.
fn interrupt(tracer: Child) -> String {
    assert!(Command::new("kill").args(["-INT", &tracer.id().to_string()]).status().unwrap().success());
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    stdout
}

/// Frees and reallocs of blocks allocated before tracing began are counted as frees of
/// unknown blocks; the reallocated blocks are tracked from then on.
#[test]
fn frees_of_blocks_from_before_tracing_are_counted_as_unknown() {
    let mut fixture = Phases::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (tracer, _) = start_tracing(&[
        "-p".into(),
        fixture.pid(),
        "-o".into(),
        "0".into(),
        "--json".into(),
        json.display().to_string(),
        "3600".into(),
    ]);
    fixture.say("free");
    let stdout = interrupt(tracer);
    let (freed, realloced) = (fixture.figure("FREED "), fixture.figure("REALLOCED "));
    fixture.finish();
    let report = read_report(&json);
    let activity = &report["activity"];
    assert_eq!(activity["free_unknown"], freed + realloced, "{activity}");
    assert_eq!(activity["free_calls"], freed, "{activity}");
    assert_eq!(totals_for(&report, "free_pre"), (realloced * 50, realloced), "the reallocated blocks are tracked");
    let line = format!(
        "{} frees ({} of untracked blocks: allocated before tracing, or freed again from a thread's cache)",
        freed,
        freed + realloced
    );
    assert!(final_text(&stdout).contains(&line), "{stdout}");
}

/// `-o MS` on a live target: blocks younger than MS are left out of the stacks and counted
/// as too young; older ones are shown. Phase one is made 1.5 s before the report, phase two
/// just before it.
#[test]
fn older_hides_the_young_blocks_of_a_live_target() {
    let mut fixture = Phases::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (tracer, _) = start_tracing(&[
        "-p".into(),
        fixture.pid(),
        "-o".into(),
        "1000".into(),
        "--json".into(),
        json.display().to_string(),
        "3600".into(),
    ]);
    fixture.say("one");
    std::thread::sleep(Duration::from_millis(1500));
    fixture.say("two");
    let stdout = interrupt(tracer);
    let truth = parse_truth(&fixture.printed.join("\n"));
    fixture.finish();
    let report = read_report(&json);
    let (one, two) = (truth_of(&truth, "leak_phase_one"), truth_of(&truth, "leak_phase_two"));
    assert_eq!(report["target_exited"], false);
    assert_eq!(report["filters"]["older_than_ms"], 1000);
    assert_eq!(totals_for(&report, "leak_phase_one"), (one.bytes, one.count), "old enough");
    assert_eq!(totals_for(&report, "leak_phase_two"), (0, 0), "too young");
    assert_eq!(report["too_young"], serde_json::json!({"bytes": two.bytes, "count": two.count}));
    let text = final_text(&stdout);
    assert!(
        text.contains(&format!("; {} bytes in {} allocations younger than 1000 ms not shown", two.bytes, two.count)),
        "{text}"
    );
    assert_eq!(text_totals_for(&parse_text_groups(text), "leak_phase_one"), (one.bytes, one.count));
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn wait_at_most(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", String::from_utf8_lossy(&output.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `INTERVAL COUNT`: COUNT reports, one every INTERVAL, then the final one; the attached
/// target keeps running.
#[test]
fn count_ends_the_trace_after_that_many_reports() {
    let mut fixture = Phases::start();
    fixture.say("one");
    let tracer = Command::new(leaktrace_bin())
        .args(["-p", &fixture.pid(), "-o", "0", "0.3", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_at_most(tracer, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches("stacks with outstanding allocations:").count(), 3 + 1, "{stdout}");
    assert_eq!(stdout.matches("\nFinal report: ").count(), 1, "{stdout}");
    assert!(stdout.contains("report count reached"), "{stdout}");
    fixture.finish();
}

/// A command launched under tracing does not outlive the trace: when the trace ends first
/// (here --duration), the command gets SIGTERM (its handler writes a marker and exits 0).
#[test]
fn a_launched_command_gets_sigterm_when_the_trace_ends_first() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    // Files, not pipes: a command left running would hold a pipe open and hang the test.
    let out = std::fs::File::create(dir.path().join("out")).unwrap();
    let err = std::fs::File::create(dir.path().join("err")).unwrap();
    let tracer = Command::new(leaktrace_bin())
        .args(["--duration", "1", "--"])
        .arg(flags())
        .arg("term")
        .arg(&marker)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let status = wait_at_most(tracer, Duration::from_secs(30)).status;
    let stdout = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("duration reached"), "{stdout}");
    let pid: i32 = stderr
        .strip_prefix("Tracing pid ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    let started = Instant::now();
    while !marker.exists() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = std::fs::read_to_string(&marker).unwrap_or_default();
    if got.is_empty() {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert_eq!(got, "SIGTERM\n", "the launched command (pid {pid}) was not sent SIGTERM");
}

/// `--json FILE` replaces FILE by renaming a complete file over it: a reader holding the old
/// file (here a second link to it) never sees it truncated or half written, and no
/// temporary file is left behind.
#[test]
fn json_report_replaces_the_file_atomically() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let old = dir.path().join("old.json");
    std::fs::write(&json, "old report\n").unwrap();
    std::fs::hard_link(&json, &old).unwrap();
    let output = run_leaktrace(&["--json", json.to_str().unwrap(), "--", flags().to_str().unwrap(), "sizes"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "old report\n", "the old file was written in place");
    let report = read_report(&json);
    assert_eq!(report["schema_version"], 1);
    use std::os::unix::fs::MetadataExt as _;
    assert_ne!(std::fs::metadata(&json).unwrap().ino(), std::fs::metadata(&old).unwrap().ino());
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["old.json", "report.json"], "a temporary file was left behind");
}

/// A full allocation map (`--max-allocs 4`) keeps 4 blocks; the other 8 of the 12 leaked
/// blocks are counted as lost, the report is incomplete and the text says why.
#[test]
fn a_full_allocation_map_is_counted_as_lost() {
    let run = launch(&["--max-allocs", "4"], &["sizes"]);
    let leaked: u64 = run.truth().iter().map(|t| t.count).sum();
    assert_eq!(leaked, 12);
    assert_eq!(run.report["totals"]["count"], 4, "the map ends full: its 4 entries are leaks");
    let lost = run.report["lost"]["allocs_map_full"].as_u64().unwrap();
    assert!(lost >= leaked - 4, "{lost} lost, at least {} were", leaked - 4);
    assert_eq!(run.report["incomplete"], true);
    let warning = format!("Lost events: {lost} allocations not tracked (allocation map full, raise --max-allocs); the figures above may be incomplete\n");
    assert!(run.stdout.contains(&warning), "{}", run.stdout);
}

/// A full stack map (`--stack-storage-size 1`) keeps one stack: every other block is still
/// counted, without a stack, the stacks lost are counted and the text says so.
#[test]
fn a_full_stack_map_is_counted_as_lost() {
    let run = launch(&["--stack-storage-size", "1"], &["sizes"]);
    let truth = run.truth();
    let report = &run.report;
    let stacks: Vec<&Value> =
        report["stacks"].as_array().unwrap().iter().filter(|s| s["count"].as_u64().unwrap() > 0).collect();
    assert_eq!(stacks.len(), 1, "one stack fits: {stacks:#?}");
    let in_stacks = stacks[0]["count"].as_u64().unwrap();
    let leaked: u64 = truth.iter().map(|t| t.count).sum();
    let leaked_bytes: u64 = truth.iter().map(|t| t.bytes).sum();
    let without = &report["without_stack"];
    assert_eq!(report["totals"]["count"].as_u64().unwrap(), in_stacks + without["count"].as_u64().unwrap());
    assert!(report["totals"]["bytes"].as_u64().unwrap() >= leaked_bytes, "every block is still counted");
    assert!(without["count"].as_u64().unwrap() >= leaked - in_stacks, "{without}");
    let lost = report["lost"]["stack_lost"].as_u64().unwrap();
    assert!(lost >= without["count"].as_u64().unwrap(), "{}", report["lost"]);
    assert_eq!(report["incomplete"], true);
    let text = final_text(&run.stdout);
    assert!(
        text.contains(&format!("; {} bytes in {} allocations have no stack", without["bytes"], without["count"])),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Lost events: {lost} stacks not captured (stack map full or unwalkable, raise --stack-storage-size)"
        )),
        "{text}"
    );
}

/// `-O LIBRARY --symbols-prefix xx_`: the prefixed allocator in that library is probed, and
/// only it: its leaks are exact, the C library's malloc beside it is not traced.
#[test]
fn a_prefixed_allocator_given_with_obj_is_traced() {
    require_root();
    let library = build_fixture("prefixed_alloc.c", "libprefixed.so", &["-O1", "-g", "-shared", "-fPIC"]);
    let fixtures = library.parent().unwrap();
    let exe = fixtures.join("prefixed");
    let status = Command::new("cc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(workspace_root().join("tests/fixtures/prefixed_main.c"))
        .arg(format!("-L{}", fixtures.display()))
        .arg(format!("-Wl,-rpath,{}", fixtures.display()))
        .arg("-lprefixed")
        .status()
        .unwrap();
    assert!(status.success(), "building prefixed_main.c");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let output = run_leaktrace(&[
        "-O",
        library.to_str().unwrap(),
        "--symbols-prefix",
        "xx_",
        "--json",
        json.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    assert_eq!(report["allocator"].as_str(), library.to_str());
    let truth = parse_truth(&stdout);
    let prefixed = truth_of(&truth, "leak_prefixed");
    assert_eq!(totals_for(&report, "leak_prefixed"), (prefixed.bytes, prefixed.count));
    assert!(truth_of(&truth, "leak_plain").count > 0);
    assert_eq!(totals_for(&report, "leak_plain"), (0, 0), "the C library's malloc is not the traced allocator");
    assert_eq!(totals_for(&report, "churn_prefixed"), (0, 0));
    let probed: Vec<&str> =
        report["probes"].as_array().unwrap().iter().map(|p| p["function"].as_str().unwrap()).collect();
    for function in ["xx_malloc", "xx_calloc", "xx_realloc", "xx_free"] {
        assert!(probed.contains(&function), "{function} not probed: {probed:?}");
    }
    assert_eq!(report["activity"]["free_calls"], 20, "churn_prefixed's 20 xx_free calls");
}

/// An unwind table too small for any module (`--unwind-rows 64`): every module is walked by
/// frame pointers instead, the report says why, and the fixture's leaks stay exact.
#[test]
fn a_full_unwind_table_falls_back_to_frame_pointers_and_says_so() {
    let run = launch(&["--unwind", "dwarf", "--unwind-rows", "64"], &["sizes"]);
    let unwind = &run.report["unwind"];
    assert_eq!(unwind["rows_capacity"], 64);
    assert_eq!(unwind["table_bytes"], 64 * 8);
    let modules = unwind["modules"].as_array().unwrap();
    let exe = modules.iter().find(|m| m["module"].as_str() == flags().to_str()).expect("the fixture's module");
    assert_eq!(exe["unwinder"], "frame-pointer", "{exe}");
    assert_eq!(exe["reason"], "unwind table full (raise --unwind-rows)");
    assert!(unwind["rows_used"].as_u64().unwrap() <= 64);
    let used: u64 = modules.iter().map(|m| m["rows"].as_u64().unwrap()).sum();
    assert_eq!(unwind["rows_used"], used);
    for t in run.truth() {
        assert_eq!(totals_for(&run.report, &t.site), (t.bytes, t.count), "{}", t.site);
    }
    let line = run.stdout.lines().rev().find(|l| l.starts_with("Unwinding (dwarf): ")).expect("unwinding line");
    assert!(line.contains("flags (unwind table full (raise --unwind-rows))"), "{line}");
    assert!(line.ends_with(&format!("{used} rows of 64 (0 KiB of 0 KiB)")), "{line}");
}

/// Stacks the unwinder cannot finish say why: 100 nested calls end at the 64-frame limit, a
/// return into anonymous executable memory at an unknown mapping, and a signal handler's
/// frame at the signal frame; the figures stay exact.
#[test]
fn stacks_cut_short_say_why() {
    let run = launch(&["--unwind", "dwarf"], &["ends"]);
    let truth = run.truth();
    let groups = parse_text_groups(final_text(&run.stdout));
    for (site, reason) in
        [("leak_deep", "frame limit"), ("leak_from_jit", "unknown mapping"), ("leak_in_handler", "signal frame")]
    {
        let t = truth_of(&truth, site);
        let stacks: Vec<&Value> =
            run.report["stacks"].as_array().unwrap().iter().filter(|s| stack_symbols(s).contains(&site)).collect();
        assert_eq!(stacks.len(), 1, "{site}: {stacks:#?}");
        assert_eq!((stacks[0]["bytes"].as_u64().unwrap(), stacks[0]["count"].as_u64().unwrap()), (t.bytes, t.count));
        assert_eq!(stacks[0]["cut_short"], reason, "{site}: {:#}", stacks[0]);
        let group = groups.iter().find(|g| g.functions().contains(&site)).unwrap();
        assert_eq!(group.cut_short.as_deref(), Some(reason), "{site} in the text");
    }
    let deep =
        run.report["stacks"].as_array().unwrap().iter().find(|s| stack_symbols(s).contains(&"leak_deep")).unwrap();
    assert_eq!(deep["frames"].as_array().unwrap().len(), 64, "the frame limit");
    let by_end = &run.report["unwind"]["stacks_by_end"];
    for reason in ["frame limit", "unknown mapping", "signal frame"] {
        assert_eq!(by_end[reason], 1, "{by_end}");
    }
    assert!(
        run.stdout.contains("Stacks cut short: 1 frame limit, 1 signal frame, 1 unknown mapping\n"),
        "{}",
        run.stdout
    );
}
