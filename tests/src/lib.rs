//! Helpers for leaktrace's root integration tests: building the C fixture, running the real
//! `leaktrace` binary, and reading its JSON report against the fixture's ground truth.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use serde_json::Value;

/// The leaktrace binary under test (`cargo xtask test` sets LEAKTRACE_BIN).
pub fn leaktrace_bin() -> PathBuf {
    std::env::var_os("LEAKTRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/leaktrace"))
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Panics unless running as root: these tests load eBPF programs and must not pass vacuously.
pub fn require_root() {
    assert!(
        nix_geteuid() == 0,
        "the integration tests load eBPF programs and must run as root (cargo xtask test as root)"
    );
}

fn nix_geteuid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:").map(|r| r.split_whitespace().nth(1).unwrap_or("1").parse().unwrap_or(1))
            })
        })
        .unwrap_or(1)
}

/// Compiles tests/fixtures/<source> with `flags` into the target directory, once per variant.
pub fn build_fixture(source: &str, variant: &str, flags: &[&str]) -> PathBuf {
    let out_dir = workspace_root().join("target/fixtures");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(variant);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(workspace_root().join("tests/fixtures").join(source))
        .status()
        .expect("cc runs");
    assert!(status.success(), "compiling {source} ({variant}) failed");
    out
}

/// Compiles tests/fixtures/<source> with `compiler` (`cc`, `c++`) and `flags`, linked with
/// `libraries` (after the source, so that the linker keeps them), once per variant.
pub fn build_linked_fixture(
    compiler: &str,
    source: &str,
    variant: &str,
    flags: &[&str],
    libraries: &[&str],
) -> PathBuf {
    let out_dir = workspace_root().join("target/fixtures");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(variant);
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(workspace_root().join("tests/fixtures").join(source))
        .args(libraries)
        .status()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(status.success(), "compiling {source} ({variant}) failed");
    out
}

/// Installs Debian's `packages` that are not installed yet (apt-get, as root), so that a test
/// that needs a library brings it itself.
pub fn ensure_debian_packages(packages: &[&str]) {
    let installed = |package: &str| {
        Command::new("dpkg-query")
            .args(["-W", "--showformat=${Status}", package])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with(" installed"))
    };
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing Debian's {} for this test", missing.join(", "));
    let update = Command::new("apt-get").args(["update", "-q"]).status().expect("apt-get runs");
    assert!(update.success(), "apt-get update failed");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get runs");
    assert!(status.success(), "installing {} failed", missing.join(", "));
}

/// The ground-truth fixture with frame pointers and debug info (-O1 so it is realistic).
pub fn leaky() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build_fixture(
            "leaky.c",
            "leaky",
            &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-pthread"],
        )
    })
}

/// One leak site's truth as the fixture prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// Function name.
    pub site: String,
    /// Bytes leaked.
    pub bytes: u64,
    /// Allocations leaked.
    pub count: u64,
}

/// Parses the fixture's `TRUTH site bytes count` lines.
pub fn parse_truth(stdout: &str) -> Vec<Truth> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TRUTH "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Truth { site: f[0].to_string(), bytes: f[1].parse().unwrap(), count: f[2].parse().unwrap() }
        })
        .collect()
}

/// Functions named in a stack's frames.
pub fn stack_symbols(stack: &Value) -> Vec<&str> {
    stack["frames"].as_array().unwrap().iter().filter_map(|f| f["symbol"].as_str()).collect()
}

/// Sum of bytes and counts of the report's stacks that contain `function`.
pub fn totals_for(report: &Value, function: &str) -> (u64, u64) {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| stack_symbols(s).contains(&function))
        .fold((0, 0), |(b, c), s| (b + s["bytes"].as_u64().unwrap(), c + s["count"].as_u64().unwrap()))
}

/// Reads a JSON report.
pub fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("report is valid JSON")
}

/// Asserts the report matches the truth exactly for every site, and that the report is
/// clean: no churn function outstanding, every fixture frame named, nothing lost.
pub fn assert_matches_truth(report: &Value, truth: &[Truth], fixture: &Path) {
    assert_eq!(truth.len(), 10, "the fixture prints ten leak sites, one per allocation function and more");
    for t in truth {
        assert_eq!(
            totals_for(report, &t.site),
            (t.bytes, t.count),
            "site {} (bytes, count); lost {}, activity {}, without_stack {}, stacks {:#}",
            t.site,
            report["lost"],
            report["activity"],
            report["without_stack"],
            report["stacks"]
        );
    }
    let fixture_name = fixture.to_string_lossy();
    for stack in report["stacks"].as_array().unwrap() {
        // Churn stacks may be listed (with their turnover) but must hold nothing.
        if stack_symbols(stack).iter().any(|s| s.starts_with("churn_")) {
            assert_eq!(stack["bytes"], 0, "a churn function holds outstanding memory: {stack}");
            assert_eq!(stack["count"], 0, "a churn function holds outstanding memory: {stack}");
        }
        for frame in stack["frames"].as_array().unwrap() {
            if frame["module"].as_str() == Some(&*fixture_name) {
                assert!(frame["symbol"].is_string(), "unnamed fixture frame {frame}");
            }
        }
    }
    assert_eq!(report["incomplete"], false, "losses: {}", report["lost"]);
    let lost = report["lost"].as_object().unwrap();
    assert!(lost.values().all(|v| v == 0), "losses: {lost:?}");
    let sum: u64 = truth.iter().map(|t| t.bytes).sum();
    assert!(report["totals"]["bytes"].as_u64().unwrap() >= sum);
}

/// Starts `leaktrace args…` and waits until it says it is tracing.
pub fn start_tracing(args: &[String]) -> (std::process::Child, String) {
    let mut tracer = Command::new(leaktrace_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(tracer.stderr.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut banner).unwrap();
    assert!(banner.starts_with("Tracing pid"), "leaktrace did not start: {banner}");
    // Keep draining stderr so leaktrace never blocks on it.
    let rest = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    std::mem::forget(rest);
    (tracer, banner)
}

/// Spawns a fixture run with `--wait`, with piped stdin and stdout, and waits for its
/// "ready PID" line. Returns the child and the rest of its stdout, line by line.
pub fn spawn_waiting(
    command: &mut Command,
) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::BufRead as _;
    let mut child = command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("ready "), "{first}");
    (child, lines)
}

/// Tells a fixture spawned by [`spawn_waiting`] to work ("go" on its stdin) and returns what
/// it prints until its "done" line.
pub fn work_until_done(
    child: &mut std::process::Child,
    lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> String {
    use std::io::Write as _;
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "done" {
            return seen;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    panic!("the fixture ended before saying done: {seen}");
}

/// Runs leaktrace with `args` to completion.
pub fn run_leaktrace(args: &[&str]) -> Output {
    Command::new(leaktrace_bin()).args(args).output().expect("leaktrace runs")
}

/// Asserts a failed run: non-zero exit, one `leaktrace: error:` line on stderr containing
/// `needle`, and no panic.
pub fn assert_one_line_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected failure, got {:?}; stderr: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("leaktrace: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "expected {needle:?} in: {stderr}");
}

/// One group of a text report: its header line's figures and what is printed under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextGroup {
    /// Bytes in the header (`N bytes in M allocations from …`).
    pub bytes: u64,
    /// Allocations in the header.
    pub count: u64,
    /// What follows "from": `stack`, or the cache or command name.
    pub source: String,
    /// Lines describing the group (`trend: …`, `caches: …`, `allocated by: …`, `per run: …`).
    pub details: Vec<String>,
    /// Frame lines, innermost first, as printed (`symbol+0xoff [module] file:line`).
    pub frames: Vec<String>,
    /// The user stack's frame lines, in kernel mode with --user-stacks.
    pub user_frames: Vec<String>,
    /// `(stack cut short: REASON)`: the reason.
    pub cut_short: Option<String>,
    /// `addr = … size = … age = … ms` lines (--show-allocs): (address, size).
    pub allocations: Vec<(u64, u64)>,
}

impl TextGroup {
    /// The detail line starting with `prefix`, without it.
    pub fn detail(&self, prefix: &str) -> Option<&str> {
        self.details.iter().find_map(|d| d.strip_prefix(prefix))
    }

    /// Function names of the frames (the text before `+0x`, ` [` or ` (inlined)`).
    pub fn functions(&self) -> Vec<&str> {
        self.frames.iter().map(|f| frame_function(f)).collect()
    }
}

/// The function a text frame line names.
pub fn frame_function(line: &str) -> &str {
    let end = [line.find("+0x"), line.find(' ')].into_iter().flatten().min().unwrap_or(line.len());
    &line[..end]
}

const GROUP_DETAILS: [&str; 7] =
    ["trend: ", "caches: ", "allocated by: ", "chain: ", "per run: ", "user stack of the allocating task:", "held by "];

/// Parses the groups of the first report in `text` (from its `Top N … with outstanding
/// allocations:` line to its `Outstanding:` line).
pub fn parse_text_groups(text: &str) -> Vec<TextGroup> {
    let mut groups: Vec<TextGroup> = Vec::new();
    let mut started = false;
    for line in text.lines() {
        if !started {
            started = line.contains("with outstanding allocations:");
            continue;
        }
        if line.starts_with("Outstanding: ") {
            break;
        }
        if let Some(rest) = line.strip_prefix("\t\t\t") {
            let group = groups.last_mut().expect("a line under a group");
            if let Some(alloc) = rest.strip_prefix("addr = ") {
                // "0x55… size = 100 age = 12 ms"
                let f: Vec<&str> = alloc.split_whitespace().collect();
                let address = u64::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap();
                group.allocations.push((address, f[3].parse().unwrap()));
            } else {
                group.user_frames.push(rest.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("\t\t") {
            let group = groups.last_mut().expect("a line under a group");
            if let Some(reason) = rest.strip_prefix("(stack cut short: ") {
                group.cut_short = Some(reason.trim_end_matches(')').to_string());
            } else if GROUP_DETAILS.iter().any(|p| rest.starts_with(p)) {
                group.details.push(rest.to_string());
            } else {
                group.frames.push(rest.to_string());
            }
        } else if let Some(rest) = line.strip_prefix('\t') {
            // Summaries below the top N: the rest, the churn line, unconfirmed caches.
            if rest.starts_with("... ") || rest.starts_with("unconfirmed: ") || rest.contains(" churned ") {
                continue;
            }
            if let Some(source) = rest.strip_prefix("nothing outstanding from ") {
                // A churn stack listed with --show-churn.
                groups.push(TextGroup { source: source.to_string(), ..TextGroup::default() });
                continue;
            }
            // "100 bytes in 1 allocations from stack (oldest 5 ms)", "~…" when sampled.
            let f: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                f.len() >= 6 && f[1] == "bytes" && f[2] == "in" && f[4] == "allocations" && f[5] == "from",
                "not a group header: {line}"
            );
            groups.push(TextGroup {
                bytes: f[0].parse().unwrap_or_else(|_| panic!("bytes in {line}")),
                count: f[3].parse().unwrap_or_else(|_| panic!("count in {line}")),
                source: f[6].to_string(),
                ..TextGroup::default()
            });
        }
    }
    assert!(started, "no report in {text}");
    groups
}

/// Sum of bytes and counts of the text groups whose frames name `function`.
pub fn text_totals_for(groups: &[TextGroup], function: &str) -> (u64, u64) {
    groups.iter().filter(|g| g.functions().contains(&function)).fold((0, 0), |(b, c), g| (b + g.bytes, c + g.count))
}

/// The final report's text: what follows its `Final report:` line.
pub fn final_text(stdout: &str) -> &str {
    stdout.split_once("\nFinal report: ").unwrap_or_else(|| panic!("no final report in {stdout}")).1
}

/// The figures of the `Outstanding: B bytes in C allocations` line of `text`.
pub fn text_outstanding(text: &str) -> (u64, u64) {
    let line = text.lines().find_map(|l| l.strip_prefix("Outstanding: ")).expect("an Outstanding: line");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f[1], f[2], f[4].trim_end_matches(';')), ("bytes", "in", "allocations"), "{line}");
    (f[0].trim_start_matches('~').parse().unwrap(), f[3].trim_start_matches('~').parse().unwrap())
}

/// Asserts that the final text report gives every truth site its exact bytes and count,
/// and the same outstanding totals as the JSON report.
pub fn assert_text_matches_truth(stdout: &str, report: &Value, truth: &[Truth]) {
    let text = final_text(stdout);
    let groups = parse_text_groups(text);
    for t in truth {
        assert_eq!(text_totals_for(&groups, &t.site), (t.bytes, t.count), "text report of {}:\n{text}", t.site);
    }
    let totals = (report["totals"]["bytes"].as_u64().unwrap(), report["totals"]["count"].as_u64().unwrap());
    assert_eq!(text_outstanding(text), totals, "{text}");
}

/// Installs Debian's `package` when it is missing (a library a test preloads: no command of
/// its own tells whether it is there). `cargo xtask setup` installs the same ones.
pub fn ensure_debian_package(package: &str) {
    let installed = Command::new("dpkg-query")
        .args(["-W", "--showformat=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with(" installed"));
    if installed {
        return;
    }
    let update = Command::new("apt-get").args(["update", "-q"]).status().expect("apt-get runs");
    assert!(update.success(), "apt-get update failed");
    let install = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get runs");
    assert!(install.success(), "installing {package} failed");
}

/// `go tool pprof ARGS FILE`'s output (Go is installed by `cargo xtask test`'s setup).
pub fn go_pprof(args: &[&str], file: &Path) -> String {
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("go is installed by cargo xtask setup");
    assert!(output.status.success(), "go tool pprof failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
