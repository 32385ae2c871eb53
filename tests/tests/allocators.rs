//! Allocator families against ground truth: fixtures linked with Debian's jemalloc, tcmalloc
//! (gperftools) and mimalloc, C++'s new/delete on libstdc++ and on jemalloc, a libc stripped
//! of `.symtab` that keeps its MiniDebugInfo, and a probe another tool holds. Each fixture is
//! attached with `-p` while it waits, then leaks at named sites and prints what it did.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use leaktrace_integration_tests::{
    assert_text_matches_truth, build_linked_fixture, ensure_debian_packages, leaktrace_bin, parse_truth, read_report,
    require_root, totals_for, Truth,
};
use serde_json::Value;

const FLAGS: &[&str] = &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls"];

/// What one traced run of a fixture gave.
struct Traced {
    report: Value,
    stdout: String,
    stderr: String,
    /// The fixture's own lines (TRUTH, ACTIVITY).
    seen: Vec<String>,
}

impl Traced {
    fn truth(&self) -> Vec<Truth> {
        parse_truth(&self.seen.join("\n"))
    }

    /// The fixture's `ACTIVITY allocations frees` line.
    fn activity(&self) -> (u64, u64) {
        let line = self.seen.iter().find_map(|l| l.strip_prefix("ACTIVITY ")).expect("an ACTIVITY line");
        let f: Vec<u64> = line.split_whitespace().map(|n| n.parse().unwrap()).collect();
        (f[0], f[1])
    }
}

/// Starts `fixture --wait` (with `env`), attaches leaktrace with `-p` and `args`, lets the
/// fixture work, then lets it exit, which ends the trace.
fn trace_attached(fixture: &Path, env: &[(&str, &str)], args: &[&str]) -> Traced {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut child: Child = Command::new(fixture)
        .arg("--wait")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    let mut tracer = Command::new(leaktrace_bin())
        .args(["-p", &child.id().to_string(), "--json", &json.display().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap());
    let mut head = String::new();
    // Everything up to the banner (warnings come before it), then the rest in the background.
    while !head.lines().last().is_some_and(|l| l.starts_with("Tracing pid")) {
        let before = head.len();
        stderr.read_line(&mut head).unwrap();
        assert!(head.len() > before, "leaktrace did not start: {head}");
    }
    let rest = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
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
    assert!(child.wait().unwrap().success(), "the fixture failed");
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = head + &rest.join().unwrap();
    assert!(output.status.success(), "leaktrace failed: {stderr}\n{stdout}");
    Traced { report: read_report(&json), stdout, stderr, seen }
}

/// Every leak site exact in JSON and text, the totals exactly their sum (nothing counted
/// twice, nothing else outstanding), every call counted once, nothing lost.
fn assert_exact(traced: &Traced) {
    let report = &traced.report;
    let truth = traced.truth();
    assert!(!truth.is_empty(), "{:?}", traced.seen);
    for t in &truth {
        assert_eq!(
            totals_for(report, &t.site),
            (t.bytes, t.count),
            "site {}: stacks {:#}\nactivity {}\nstderr {}",
            t.site,
            report["stacks"],
            report["activity"],
            traced.stderr
        );
    }
    let sum = truth.iter().fold((0, 0), |(b, c), t| (b + t.bytes, c + t.count));
    let totals = (report["totals"]["bytes"].as_u64().unwrap(), report["totals"]["count"].as_u64().unwrap());
    assert_eq!(totals, sum, "outstanding beyond the leak sites: {:#}", report["stacks"]);
    let (allocations, frees) = traced.activity();
    let activity = &report["activity"];
    assert_eq!(activity["alloc_calls"], allocations, "allocations counted once: {activity}");
    assert_eq!(activity["free_calls"], frees, "frees counted once: {activity}");
    assert_eq!(activity["free_unknown"], 0, "{activity}");
    assert_eq!(report["incomplete"], false, "losses: {}", report["lost"]);
    assert_text_matches_truth(&traced.stdout, report, &truth);
}

/// The families the report says it found, as (family, object file name).
fn families(report: &Value) -> Vec<(String, String)> {
    report["allocators"]
        .as_array()
        .expect("the report lists the allocators it found")
        .iter()
        .map(|f| {
            let object = f["object"].as_str().unwrap();
            (f["family"].as_str().unwrap().to_string(), object.rsplit('/').next().unwrap().to_string())
        })
        .collect()
}

/// Builds families.c against one family's Debian library, traces it attached, and checks it
/// exactly, and that the report names the family and the library it was found in.
fn assert_family_exact(family: &str, define: &str, library: &str, package: &str, soname: &str) {
    require_root();
    ensure_debian_packages(&[package]);
    let define = format!("-D{define}");
    let flags: Vec<&str> = FLAGS.iter().copied().chain([define.as_str()]).collect();
    let fixture = build_linked_fixture("cc", "families.c", &format!("families-{family}"), &flags, &[library]);
    let traced = trace_attached(&fixture, &[], &[]);
    assert_exact(&traced);
    let found = families(&traced.report);
    assert!(found.iter().any(|(f, o)| f == family && o.starts_with(soname)), "{found:?}");
    assert!(traced.stdout.contains(&format!("Allocators: {family} in {soname}")), "{}", traced.stdout);
}

#[test]
fn jemalloc_linked_program_is_traced_exactly() {
    assert_family_exact("jemalloc", "FAMILY_JEMALLOC", "-ljemalloc", "libjemalloc-dev", "libjemalloc.so.2");
}

#[test]
fn tcmalloc_linked_program_is_traced_exactly() {
    assert_family_exact("tcmalloc", "FAMILY_TCMALLOC", "-ltcmalloc", "libgoogle-perftools-dev", "libtcmalloc.so.4");
}

#[test]
fn mimalloc_linked_program_is_traced_exactly() {
    assert_family_exact("mimalloc", "FAMILY_MIMALLOC", "-lmimalloc", "libmimalloc-dev", "libmimalloc.so.2");
}

/// A program linked with a stand-in for Google's tcmalloc (its exported names, aliases at
/// one address as its libc_override.h makes them): the family is named `google-tcmalloc`,
/// each alias group is one probe, and every leak site, through the C API, `new`, `new[]`,
/// the size-returning `new` extensions and the aligned functions, is exact, once.
#[test]
fn google_tcmalloc_names_are_one_family_probed_once_per_alias_group() {
    require_root();
    let lib_dir = leaktrace_integration_tests::workspace_root().join("target/fixtures/google-tcmalloc-lib");
    std::fs::create_dir_all(&lib_dir).unwrap();
    let lib_source = leaktrace_integration_tests::workspace_root().join("tests/fixtures/google_tcmalloc_lib.c");
    shell(&lib_dir, &format!("cc {} -shared -fPIC -o libtcmalloc_google.so {}", FLAGS.join(" "), lib_source.display()));
    let link =
        [format!("-L{}", lib_dir.display()), "-ltcmalloc_google".into(), format!("-Wl,-rpath,{}", lib_dir.display())];
    let link: Vec<&str> = link.iter().map(String::as_str).collect();
    let fixture = build_linked_fixture("cc", "google_tcmalloc_main.c", "google-tcmalloc", FLAGS, &link);
    // Every leaking stack in the text report too.
    let traced = trace_attached(&fixture, &[], &["--top", "100"]);
    assert_exact(&traced);
    assert_new_callers_first(&traced);
    let found = families(&traced.report);
    assert!(found.contains(&("google-tcmalloc".into(), "libtcmalloc_google.so".into())), "{found:?}");
    assert!(!found.iter().any(|(f, _)| f == "tcmalloc"), "not gperftools: {found:?}");
    // One probe per address, under the C or C++ name, the internal name as its alias.
    let probes = traced.report["probes"].as_array().unwrap();
    let aliases_of = |function: &str| -> Vec<&str> {
        let probe =
            probes.iter().find(|p| p["function"] == function).unwrap_or_else(|| panic!("{function}: {probes:#?}"));
        probe["aliases"].as_array().map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect())
    };
    assert_eq!(aliases_of("malloc"), ["TCMallocInternalMalloc"]);
    assert_eq!(aliases_of("free"), ["TCMallocInternalFree"]);
    assert_eq!(aliases_of("TCMallocInternalNew"), ["_Znwm"]);
    assert_eq!(aliases_of("TCMallocInternalDeleteSized"), ["_ZdlPvm"]);
    assert!(probes.iter().any(|p| p["function"] == "tcmalloc_size_returning_operator_new"), "{probes:#?}");
    assert!(!probes.iter().any(|p| p["function"] == "TCMallocInternalMalloc"), "{probes:#?}");
    assert!(traced.stdout.contains("Allocators: google-tcmalloc in "), "{}", traced.stdout);
}

/// Each block is attributed to the stack of `new`'s caller: the first frame of every stack
/// that holds memory is a leak site, not `operator new` or `malloc`.
fn assert_new_callers_first(traced: &Traced) {
    let sites: Vec<String> = traced.truth().into_iter().map(|t| t.site).collect();
    for stack in traced.report["stacks"].as_array().unwrap().iter().filter(|s| s["bytes"] != 0) {
        let first = stack["frames"][0]["symbol"].as_str().unwrap_or("?");
        assert!(sites.iter().any(|s| s == first), "first frame {first}: {stack:#}");
    }
}

fn cxx_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let flags: Vec<&str> = FLAGS.iter().copied().chain(["-std=c++17"]).collect();
        build_linked_fixture("c++", "cxx.cc", "cxx", &flags, &[])
    })
}

#[test]
fn cxx_new_and_delete_of_every_form_are_counted_once() {
    require_root();
    let traced = trace_attached(cxx_fixture(), &[], &[]);
    assert_exact(&traced);
    assert_new_callers_first(&traced);
    let found = families(&traced.report);
    assert!(found.iter().any(|(f, o)| f == "c++" && o.starts_with("libstdc++.so")), "{found:?}");
    assert!(found.iter().any(|(f, o)| f == "glibc" && o == "libc.so.6"), "{found:?}");
    // libstdc++'s new calls malloc: the inner call is nested, not a second block.
    assert!(traced.report["activity"]["nested_calls"].as_u64().unwrap() > 0, "{}", traced.report["activity"]);
}

#[test]
fn cxx_on_jemalloc_is_counted_once() {
    require_root();
    ensure_debian_packages(&["libjemalloc-dev"]);
    let flags: Vec<&str> = FLAGS.iter().copied().chain(["-std=c++17"]).collect();
    let fixture = build_linked_fixture("c++", "cxx.cc", "cxx-jemalloc", &flags, &["-ljemalloc"]);
    let traced = trace_attached(&fixture, &[], &[]);
    assert_exact(&traced);
    assert_new_callers_first(&traced);
    let found = families(&traced.report);
    assert!(found.contains(&("jemalloc".into(), "libjemalloc.so.2".into())), "{found:?}");
}

/// Runs `script` with `sh -e` in `dir`.
fn shell(dir: &Path, script: &str) {
    let output = Command::new("sh").args(["-e", "-c", script]).current_dir(dir).output().expect("sh runs");
    assert!(output.status.success(), "{script}\n{}", String::from_utf8_lossy(&output.stderr));
}

/// The MiniDebugInfo recipe (Fedora's find-debuginfo, Debian's dh_strip): the function symbols
/// of `debug` named in `keep`, in an ELF of its own, xz-compressed into `mini.xz`.
const MINI_DEBUGINFO: &str = "objcopy -S --remove-section .gdb_index --remove-section .comment \
     --keep-symbols=keep debug mini && rm -f mini.xz && xz mini";

/// leaky.c linked statically, without `.symtab` (DWARF kept, so its own frames are named)
/// and, with `mini`, with a `.gnu_debugdata` holding its function symbols: then malloc and
/// the others are only there.
fn stripped_static_leaky(mini: bool) -> PathBuf {
    let variant = if mini { "leaky-static-minidebuginfo" } else { "leaky-static-stripped" };
    let dir = tempfile::tempdir().unwrap();
    let source = leaktrace_integration_tests::workspace_root().join("tests/fixtures/leaky.c");
    let out = leaktrace_integration_tests::workspace_root().join("target/fixtures").join(variant);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let flags = FLAGS.join(" ");
    let mut script = format!("cc -static -pthread {flags} -o full {}\n", source.display());
    if mini {
        script += "nm full --format=posix --defined-only | awk '$2 ~ /^[TtWw]$/ {print $1}' | sort -u > keep\n";
        script += "objcopy --only-keep-debug full debug\n";
        script += MINI_DEBUGINFO;
        script += "\nobjcopy --add-section .gnu_debugdata=mini.xz full full\n";
    }
    script +=
        &format!("strip --strip-all --keep-section='.debug_*' --keep-section=.gnu_debugdata -o {} full", out.display());
    shell(dir.path(), &script);
    out
}

#[test]
fn static_executable_with_symbols_only_in_minidebuginfo_is_traced_exactly() {
    require_root();
    let fixture = stripped_static_leaky(true);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = leaktrace_integration_tests::run_leaktrace(&[
        "--json",
        json.to_str().unwrap(),
        "--",
        fixture.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    leaktrace_integration_tests::assert_matches_truth(&report, &parse_truth(&stdout), &fixture);
    let found = families(&report);
    assert_eq!(found, [("glibc".to_string(), fixture.file_name().unwrap().to_string_lossy().into_owned())]);
}

#[test]
fn static_executable_without_allocator_symbols_is_one_clear_error() {
    require_root();
    let fixture = stripped_static_leaky(false);
    let output = leaktrace_integration_tests::run_leaktrace(&["--", fixture.to_str().unwrap()]);
    leaktrace_integration_tests::assert_one_line_error(&output, &fixture.display().to_string());
    leaktrace_integration_tests::assert_one_line_error(&output, "no .gnu_debugdata");
}

/// A copy of this system's libc with a `.gnu_debugdata` made by the recipe from its debug file
/// (Debian's libc6-dbg): the functions that `.dynsym` does not export.
fn libc_with_minidebuginfo() -> PathBuf {
    ensure_debian_packages(&["libc6-dbg"]);
    let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("glibc present");
    let out_dir = leaktrace_integration_tests::workspace_root().join("target/fixtures/libc-minidebuginfo");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "id=$(readelf -n {libc} | sed -n 's/.*Build ID: //p')\n\
         debug=/usr/lib/debug/.build-id/$(echo $id | cut -c1-2)/$(echo $id | cut -c3-).debug\n\
         cp $debug debug\n\
         nm -D {libc} --format=posix --defined-only | awk '{{print $1}}' | sort -u > dynsyms\n\
         nm debug --format=posix --defined-only | awk '$2 ~ /^[TtD]$/ {{print $1}}' | sort -u > funcsyms\n\
         comm -13 dynsyms funcsyms > keep\n\
         {MINI_DEBUGINFO}\n\
         strip --strip-all -o stripped {libc}\n\
         objcopy --add-section .gnu_debugdata=mini.xz stripped {}/libc.so.6",
        out_dir.display()
    );
    shell(dir.path(), &script);
    out_dir
}

#[test]
fn libc_copy_with_minidebuginfo_loaded_through_ld_library_path_is_traced_exactly() {
    require_root();
    let libc_dir = libc_with_minidebuginfo();
    let fixture = leaktrace_integration_tests::leaky();
    let traced = trace_attached(fixture, &[("LD_LIBRARY_PATH", libc_dir.to_str().unwrap())], &[]);
    leaktrace_integration_tests::assert_matches_truth(&traced.report, &traced.truth(), fixture);
    let copy = libc_dir.join("libc.so.6");
    let glibc: Vec<&Value> =
        traced.report["allocators"].as_array().unwrap().iter().filter(|f| f["family"] == "glibc").collect();
    assert_eq!(glibc.len(), 1, "{:#}", traced.report["allocators"]);
    let object = glibc[0]["object"].as_str().unwrap();
    assert!(object.ends_with(copy.to_str().unwrap()), "the copy is probed, not the system's libc: {object}");
}

const POOL_FUNCTIONS: &[&str] = &[
    "--alloc-fn",
    "pool_alloc:malloc-like",
    "--alloc-fn",
    "pool_calloc:calloc-like",
    "--alloc-fn",
    "pool_realloc:realloc-like",
    "--alloc-fn",
    "pool_free:free-like",
    "--alloc-fn",
    "pool_free_sized:size-free-like",
];

fn pool_fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_linked_fixture("cc", "pool.c", "pool", FLAGS, &[]))
}

#[test]
fn functions_added_with_alloc_fn_are_traced_exactly() {
    require_root();
    let traced = trace_attached(pool_fixture(), &[], POOL_FUNCTIONS);
    assert_exact(&traced);
    let custom: Vec<&Value> =
        traced.report["allocators"].as_array().unwrap().iter().filter(|f| f["family"] == "custom").collect();
    assert_eq!(custom.len(), 1, "{:#}", traced.report["allocators"]);
    assert_eq!(custom[0]["functions"].as_array().unwrap().len(), 5, "{:#}", custom[0]);
}

#[test]
fn an_alloc_fn_nothing_defines_is_one_clear_error() {
    require_root();
    let mut child =
        Command::new(pool_fixture()).arg("--wait").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("ready "));
    let pid = child.id().to_string();
    let output = leaktrace_integration_tests::run_leaktrace(&["-p", &pid, "--alloc-fn", "no_such_pool_fn:free-like"]);
    leaktrace_integration_tests::assert_one_line_error(&output, "--alloc-fn no_such_pool_fn");
    drop(child.stdin.take());
    child.wait().unwrap();
    let output = leaktrace_integration_tests::run_leaktrace(&["-p", &pid, "--alloc-fn", "pool_alloc:sideways"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown kind \"sideways\""), "{output:?}");
}

/// A uprobe registered through tracefs with a `ref_ctr_offset`, as USDT tools (bcc's) do,
/// removed on drop.
struct ForeignProbe {
    tracefs: PathBuf,
}

impl ForeignProbe {
    const EVENT: &'static str = "leaktrace_test/conflict";

    fn place(object: &Path, offset: u64) -> Self {
        let tracefs = PathBuf::from("/sys/kernel/tracing");
        if !tracefs.join("uprobe_events").exists() {
            shell(Path::new("/"), "mount -t tracefs nodev /sys/kernel/tracing");
        }
        // The counter's offset is in the ELF header, which no process maps writable: the
        // kernel never writes it, but the probe holds the place with a non-zero one.
        let definition = format!("p:{} {}:{offset:#x}(0x10)\n", Self::EVENT, object.display());
        let probe = ForeignProbe { tracefs };
        std::fs::OpenOptions::new()
            .append(true)
            .open(probe.tracefs.join("uprobe_events"))
            .and_then(|mut f| f.write_all(definition.as_bytes()))
            .expect("tracefs takes the uprobe");
        std::fs::write(probe.tracefs.join("events").join(Self::EVENT).join("enable"), "1").expect("enabled");
        probe
    }
}

impl Drop for ForeignProbe {
    fn drop(&mut self) {
        let _ = std::fs::write(self.tracefs.join("events").join(Self::EVENT).join("enable"), "0");
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(self.tracefs.join("uprobe_events"))
            .and_then(|mut f| f.write_all(format!("-:{}\n", Self::EVENT).as_bytes()));
    }
}

/// File offset of `symbol`'s first instruction in `object` (from nm and the section table).
fn file_offset_of(object: &Path, symbol: &str) -> u64 {
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).arg(object).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    let address = run(&["nm", "--defined-only"])
        .lines()
        .find_map(|l| l.strip_suffix(&format!(" T {symbol}")).map(hex))
        .expect("the symbol is defined");
    let sections = run(&["readelf", "-SW"]);
    let text = sections.lines().find(|l| l.contains(" .text ")).expect("a .text section");
    let f: Vec<&str> = text.split(']').nth(1).unwrap().split_whitespace().collect();
    address - hex(f[2]) + hex(f[3])
}

#[test]
fn a_probe_another_tool_holds_is_named_counted_and_the_rest_traced() {
    require_root();
    let fixture = pool_fixture();
    // pool_alloc starts with `push %rbp`, which the kernel emulates: leaktrace probes its entry.
    let _foreign = ForeignProbe::place(fixture, file_offset_of(fixture, "pool_alloc"));
    let traced = trace_attached(fixture, &[], POOL_FUNCTIONS);
    let warning = traced.stderr.lines().find(|l| l.contains("pool_alloc")).expect("a warning naming the probe");
    assert!(warning.starts_with("leaktrace: warning: pool_alloc in "), "{warning}");
    assert!(warning.contains("ref_ctr_offset"), "{warning}");
    let report = &traced.report;
    assert_eq!(report["lost"]["probes_not_attached"], 1, "{}", report["lost"]);
    assert_eq!(report["incomplete"], true);
    assert_eq!(report["not_attached"][0]["function"], "pool_alloc", "{}", report["not_attached"]);
    // The other functions are traced: their blocks exactly, pool_alloc's own not at all.
    for t in traced.truth() {
        let expected = if t.site == "leak_alloc" { (0, 0) } else { (t.bytes, t.count) };
        assert_eq!(totals_for(report, &t.site), expected, "{}: {:#}", t.site, report["stacks"]);
    }
    assert!(traced.stdout.contains("Not traced: pool_alloc in "), "{}", traced.stdout);
    assert!(traced.stdout.contains("1 allocator functions not traced"), "{}", traced.stdout);
}
