//! Fuzzing of the parsers of untrusted input: any ELF file a user points leaktrace at or a
//! traced process maps (unwind tables from `.eh_frame`/`.debug_frame`, allocator symbols),
//! /proc/PID/maps, tracefs `format` files, the kernel's BTF, and saved JSON reports given to
//! `leaktrace report` and `leaktrace diff`. Each target mutates real files (the C library,
//! objects compiled from the test fixtures, the golden reports) and checks that the parser
//! returns a value or an error, and never panics.
//!
//! Each target runs a bounded number of cases here (seconds in all, with a fixed seed). To
//! run longer, with other seeds and overflow checks on (docs/testing.md):
//! `LEAKTRACE_FUZZ_SCALE=1000 LEAKTRACE_FUZZ_SEED=7 CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
//! cargo test --release -p leaktrace --test fuzz -- --nocapture`. A failure prints the
//! smallest input proptest found; keep it as a regression test below.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use leaktrace::{
    allocator,
    kernel::{btf::Btf, tracefs::EventFormat},
    mappings,
    model::Report,
    render::{self, diff, RENDERERS},
    unwind::table,
};
use proptest::{prelude::*, test_runner::TestRunner};

/// Cases per target: `default` (sized for seconds per target in a debug build) times
/// `LEAKTRACE_FUZZ_SCALE` (1 unless set).
fn cases(default: u32) -> u32 {
    let scale: u32 = std::env::var("LEAKTRACE_FUZZ_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    default.saturating_mul(scale)
}

/// A runner with a fixed seed, so that a run in CI is repeatable; `LEAKTRACE_FUZZ_SEED`
/// (a number) explores other inputs.
fn runner(default_cases: u32) -> TestRunner {
    eprintln!("{} cases", cases(default_cases));
    let seed = std::env::var("LEAKTRACE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x1ea4_7ace);
    TestRunner::new(ProptestConfig {
        cases: cases(default_cases),
        // Findings are kept as named regression tests in this file, not in a side file.
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    })
}

/// One edit of a byte string. Positions are taken modulo the edited region.
#[derive(Clone, Debug)]
enum Edit {
    /// Flip one bit.
    Flip(usize, u8),
    /// Set a byte.
    Byte(usize, u8),
    /// Write a little-endian u32 often found at the edges of length and offset checks.
    Word(usize, u32),
    /// Cut the input here.
    Truncate(usize),
    /// Copy `len` bytes from one place to another.
    Copy(usize, usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let word = prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        Just(u32::MAX - 3),
        any::<u32>()
    ];
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
        3 => (any::<usize>(), word).prop_map(|(at, w)| Edit::Word(at, w)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(from, to, len)| Edit::Copy(from, to, len)),
    ]
}

/// Applies `edits` to `data[region]` (a truncation cuts the whole input).
fn mutate(data: &mut Vec<u8>, region: std::ops::Range<usize>, edits: &[Edit]) {
    let (start, len) = (region.start, region.len().max(1));
    for edit in edits {
        if data.len() <= start {
            return;
        }
        let last = data.len() - 1;
        let at = |i: usize| (start + i % len).min(last);
        match *edit {
            Edit::Flip(i, bit) => data[at(i)] ^= 1 << bit,
            Edit::Byte(i, b) => data[at(i)] = b,
            Edit::Word(i, w) => {
                let i = at(i);
                let end = (i + 4).min(data.len());
                data[i..end].copy_from_slice(&w.to_le_bytes()[..end - i]);
            }
            Edit::Truncate(i) => data.truncate(at(i)),
            Edit::Copy(from, to, n) => {
                let (from, to) = (at(from), at(to));
                let n = usize::from(n).min(data.len() - from).min(data.len() - to);
                data.copy_within(from..from + n, to);
            }
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..8)
}

// ---- seeds -----------------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Compiles a test fixture with `flags` into a scratch directory kept for the whole run.
fn compile(source: &str, out: &str, flags: &[&str]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(out);
    let status = Command::new("cc").args(flags).arg("-o").arg(&path).arg(fixtures_dir().join(source)).status();
    assert!(status.expect("cc runs").success(), "compiling {source}");
    path
}

/// Real ELF files: a shared library with `.eh_frame`, the same without `.eh_frame` but with
/// `.debug_frame`, a library defining prefixed allocator functions, and the C library.
fn elf_seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let files = [
            compile("unwind_lib.c", "eh_frame.so", &["-O2", "-g", "-shared", "-fPIC"]),
            compile(
                "unwind_lib.c",
                "debug_frame.so",
                &["-O2", "-g", "-shared", "-fPIC", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
            ),
            compile("prefixed_alloc.c", "prefixed.so", &["-O1", "-g", "-shared", "-fPIC"]),
            c_library(),
        ];
        files.iter().map(|f| (f.display().to_string(), std::fs::read(f).unwrap())).collect()
    })
}

fn c_library() -> PathBuf {
    mappings::read_maps(std::process::id())
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .find(|p| p.file_name().is_some_and(|n| n == "libc.so.6"))
        .expect("the test maps the C library")
}

/// The file range of section `name` of an ELF image, if it has one.
fn section_range(data: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).ok()?;
    let (offset, size) = file.section_by_name(name)?.file_range()?;
    Some(offset as usize..(offset + size) as usize)
}

/// Writes `data` to a scratch file (the parsers under test read paths).
fn scratch(data: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, data).unwrap();
    file
}

// ---- unwind tables -------------------------------------------------------------------------

/// Compiles the rows of `data`; the result must be rows or an error, and lookups in any
/// table must not panic.
fn unwind_table_of(data: &[u8]) {
    let file = scratch(data);
    if let Ok(compiled) = table::compile(file.path()) {
        for vaddr in [0, 1, compiled.base, compiled.base + 0x10, u64::MAX] {
            let _ = compiled.lookup(vaddr);
            let _ = compiled.vaddr_of_file_offset(vaddr);
        }
        let _ = compiled.has_frame_pointers();
    }
}

#[test]
fn fuzz_unwind_table_builder() {
    let seeds = elf_seeds();
    // Most edits go to the section the builder reads; some anywhere in the file (headers,
    // section table, compressed debug sections).
    let strategy = (0..seeds.len() - 1, any::<bool>(), any::<bool>(), edits());
    runner(96)
        .run(&strategy, |(seed, in_section, debug_frame, edits)| {
            let data = &seeds[seed].1;
            let section = if debug_frame { ".debug_frame" } else { ".eh_frame" };
            let region = section_range(data, section).filter(|_| in_section).unwrap_or(0..data.len());
            let mut data = data.clone();
            mutate(&mut data, region, &edits);
            unwind_table_of(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_unwind_table_builder_on_the_c_library() {
    let (_, libc) = elf_seeds().last().unwrap();
    let region = section_range(libc, ".eh_frame").unwrap();
    runner(8)
        .run(&edits(), |edits| {
            let mut data = libc.clone();
            mutate(&mut data, region.clone(), &edits);
            unwind_table_of(&data);
            Ok(())
        })
        .unwrap();
}

// ---- allocator symbols ---------------------------------------------------------------------

fn allocator_facts_of(data: &[u8]) {
    let file = scratch(data);
    for prefix in ["", "je_"] {
        if let Ok(facts) = allocator::inspect(file.path(), prefix) {
            for f in &facts.defined {
                let _ = f.probe_offset();
            }
            let _ = allocator::plan(file.path(), facts, prefix);
        }
    }
    let _ = allocator::interpreter(file.path());
    let _ = allocator::library_change_hook(file.path());
    let _ = allocator::exit_functions(file.path());
}

#[test]
fn fuzz_allocator_symbol_finder() {
    let seeds = elf_seeds();
    let regions = [".dynsym", ".symtab", ".dynstr", ".text", ".interp"];
    let strategy = (0..seeds.len(), 0..regions.len() + 1, edits());
    runner(64)
        .run(&strategy, |(seed, region, edits)| {
            let data = &seeds[seed].1;
            let range = regions.get(region).and_then(|r| section_range(data, r)).unwrap_or(0..data.len());
            let mut data = data.clone();
            mutate(&mut data, range, &edits);
            allocator_facts_of(&data);
            Ok(())
        })
        .unwrap();
}

// ---- /proc/PID/maps ------------------------------------------------------------------------

/// Lines of a maps file: real ones, and ones assembled from the fields' edge cases.
fn maps_line() -> impl Strategy<Value = String> {
    let address = prop_oneof![Just("7f00-7f10".to_string()), Just("0-ffffffffffffffff".into()), "[0-9a-fx-]{0,20}"];
    let perms = prop_oneof![Just("r-xp".to_string()), Just("rw-s".into()), "[rwxps-]{0,5}"];
    let offset = prop_oneof![Just("00000000".to_string()), "[0-9a-f]{0,18}"];
    let device = prop_oneof![Just("08:01".to_string()), Just("fff:fffff".into()), "[0-9a-f:]{0,8}"];
    let inode = prop_oneof![Just("0".to_string()), Just("18446744073709551615".into()), "[0-9]{0,21}"];
    let path = prop_oneof![
        Just("/usr/lib/x86_64-linux-gnu/libc.so.6".to_string()),
        Just("[vdso]".into()),
        Just("[stack:123]".into()),
        Just("/lib/x (deleted)".into()),
        Just("/SYSV00000000 (deleted)".into()),
        "/SYSV[0-9a-z]{0,10}",
        "\\[[a-z]{0,5}",
        "[ -~]{0,30}",
        Just(String::new()),
    ];
    let fields = (address, perms, offset, device, inode, path);
    prop_oneof![
        4 => fields.prop_map(|(a, p, o, d, i, path)| format!("{a} {p} {o} {d} {i}                 {path}")),
        1 => "[ -~\t]{0,80}",
        1 => "[A-Z][a-z]{0,8}: +[0-9]{0,25}( kB)?",
    ]
}

fn check_maps(text: &[u8]) {
    let maps = mappings::parse_maps(text);
    // Every mapping listed is a file mapping, with the path it was mapped by.
    assert!(maps.iter().all(|m| !m.path.as_os_str().is_empty()), "{maps:?}");
}

#[test]
fn fuzz_maps_parser() {
    let real = std::fs::read(format!("/proc/{}/maps", std::process::id())).unwrap();
    let assembled = proptest::collection::vec(maps_line(), 0..12).prop_map(|lines| lines.join("\n").into_bytes());
    runner(512)
        .run(&assembled, |text| {
            check_maps(&text);
            Ok(())
        })
        .unwrap();
    runner(256)
        .run(&edits(), |edits| {
            let mut text = real.clone();
            mutate(&mut text, 0..real.len(), &edits);
            check_maps(&text);
            Ok(())
        })
        .unwrap();
}

// ---- tracefs formats ----------------------------------------------------------------------

fn check_format(text: &str) {
    let format = EventFormat::parse(text);
    for (field, size) in [("ptr", 8), ("bytes_alloc", 8), ("gfp_flags", 4), ("name", 4), ("", 0)] {
        let _ = format.offset("fuzzed", field, size);
    }
}

#[test]
fn fuzz_tracefs_format_parser() {
    let real =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kmem_cache_alloc-6.18.format")).unwrap();
    runner(512)
        .run(&edits(), |edits| {
            let mut text = real.clone();
            mutate(&mut text, 0..real.len(), &edits);
            check_format(&String::from_utf8_lossy(&text));
            Ok(())
        })
        .unwrap();
    let line =
        "(\tfield:[ -~]{0,20};\toffset:-?[0-9]{0,12};\tsize:-?[0-9]{0,12};\tsigned:[01];\n){0,6}[ -~\t\n;:]{0,40}";
    runner(512)
        .run(&line, |text| {
            check_format(&text);
            Ok(())
        })
        .unwrap();
}

// ---- kernel BTF ----------------------------------------------------------------------------

/// A small BTF blob shaped like the kernel's: `int`, a typedef of it, and `struct page`
/// with a named member and an anonymous union holding another.
fn small_btf() -> Vec<u8> {
    let strings = b"\0int\0page\0flags\0private\0u32\0";
    let (int, page, flags, private, u32_name) = (1u32, 5u32, 10u32, 16u32, 24u32);
    let mut types: Vec<u32> = Vec::new();
    // [1] INT "int" size 4, encoding: signed, 32 bits.
    types.extend([int, 1 << 24, 4, (1 << 24) | 32]);
    // [2] TYPEDEF "u32" -> 1.
    types.extend([u32_name, 8 << 24, 1]);
    // [3] UNION (anonymous) size 8, one member "private" of type 2 at bit 0.
    types.extend([0, (5 << 24) | 1, 8, private, 2, 0]);
    // [4] STRUCT "page" size 16: "flags" (type 1, bit 0), anonymous member of type 3 at bit 64.
    types.extend([page, (4 << 24) | 2, 16, flags, 1, 0, 0, 3, 64]);
    let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut data = Vec::new();
    data.extend(0xeb9fu16.to_le_bytes());
    data.extend([1u8, 0]);
    for word in [24u32, 0, type_bytes.len() as u32, type_bytes.len() as u32, strings.len() as u32] {
        data.extend(word.to_le_bytes());
    }
    data.extend(type_bytes);
    data.extend(strings);
    data
}

fn check_btf(data: Vec<u8>) {
    if let Ok(btf) = Btf::parse(data) {
        for (name, member) in [("page", "flags"), ("page", "private"), ("page", "nope"), ("task_struct", "pid")] {
            let _ = btf.member_offset(name, member);
        }
    }
}

#[test]
fn small_btf_seed_is_read_as_the_kernel_layout() {
    let btf = Btf::parse(small_btf()).unwrap();
    assert_eq!(btf.member_offset("page", "flags").unwrap(), 0);
    assert_eq!(btf.member_offset("page", "private").unwrap(), 8);
}

#[test]
fn fuzz_btf_reader() {
    let seed = small_btf();
    runner(1024)
        .run(&edits(), |edits| {
            let mut data = seed.clone();
            mutate(&mut data, 0..seed.len(), &edits);
            check_btf(data);
            Ok(())
        })
        .unwrap();
    // The running kernel's BTF, edited in its type section.
    let Ok(kernel) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
    runner(8)
        .run(&edits(), |edits| {
            let mut data = kernel.clone();
            mutate(&mut data, 0..(1 << 20).min(kernel.len()), &edits);
            check_btf(data);
            Ok(())
        })
        .unwrap();
}

// ---- saved reports -----------------------------------------------------------------------------

fn golden_reports() -> &'static [serde_json::Value] {
    static REPORTS: OnceLock<Vec<serde_json::Value>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        ["user", "user-sampled", "kernel", "growth"]
            .iter()
            .map(|name| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
            })
            .collect()
    })
}

/// One change to a JSON value: the `pick`-th node in document order gets `value`, or is
/// removed from its object or array.
#[derive(Clone, Debug)]
struct JsonEdit {
    pick: usize,
    value: Option<serde_json::Value>,
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!(0.5)),
        Just(Value::Null),
        Just(json!("")),
        Just(json!("x;y\n<&>\u{0}")),
        Just(json!([])),
        Just(json!({})),
        Just(json!(true)),
        any::<i64>().prop_map(|v| json!(v)),
        "[ -~]{0,12}".prop_map(|s| json!(s)),
    ]
}

fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    let edit = (any::<usize>(), proptest::option::weighted(0.85, json_value()))
        .prop_map(|(pick, value)| JsonEdit { pick, value });
    proptest::collection::vec(edit, 1..6)
}

fn count_nodes(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count_nodes).sum(),
        serde_json::Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Replaces or removes the `pick`-th descendant of `v` (0 is `v`'s first child).
fn apply_json_edit(v: &mut serde_json::Value, pick: &mut usize, value: &Option<serde_json::Value>) -> bool {
    let keys: Vec<String> = match v {
        serde_json::Value::Object(o) => o.keys().cloned().collect(),
        serde_json::Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
        _ => return false,
    };
    for key in keys {
        if *pick == 0 {
            match (v, value) {
                (serde_json::Value::Object(o), Some(new)) => *o.get_mut(&key).unwrap() = new.clone(),
                (serde_json::Value::Object(o), None) => drop(o.remove(&key)),
                (serde_json::Value::Array(a), Some(new)) => a[key.parse::<usize>().unwrap()] = new.clone(),
                (serde_json::Value::Array(a), None) => drop(a.remove(key.parse::<usize>().unwrap())),
                _ => unreachable!(),
            }
            return true;
        }
        *pick -= 1;
        let child = match v {
            serde_json::Value::Object(o) => o.get_mut(&key).unwrap(),
            serde_json::Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
        if apply_json_edit(child, pick, value) {
            return true;
        }
    }
    false
}

/// Renders a saved report every way `leaktrace report` and `leaktrace diff` do.
fn render_everything(before: &Report, after: &Report) {
    for renderer in RENDERERS {
        let _ = (renderer.render)(after);
    }
    let _ = render::text::render_with(after, leaktrace::config::TextOptions::default(), true);
    let compared = diff::compare(before, after);
    let _ = diff::render_text(&compared, 10);
    let _ = diff::to_json(&compared);
    let _ = diff::growth_above(&compared, 0);
    let _ = diff::render_svg(before, after);
}

fn check_report_edits(seed: usize, edits: &[JsonEdit], as_text: bool) {
    let original = &golden_reports()[seed];
    let mut edited = original.clone();
    let nodes = count_nodes(&edited);
    for edit in edits {
        let mut pick = edit.pick % nodes;
        apply_json_edit(&mut edited, &mut pick, &edit.value);
    }
    let mut text = serde_json::to_vec(&edited).unwrap();
    if as_text {
        // The same edits, then a byte changed in the text: what a hand-edited file is.
        let len = text.len();
        mutate(&mut text, 0..len, &[Edit::Byte(edits[0].pick, b'9')]);
    }
    let parsed = render::json::parse(&String::from_utf8_lossy(&text));
    let Ok(after) = parsed else { return };
    let before = render::json::parse(&original.to_string()).unwrap();
    render_everything(&before, &after);
    render_everything(&after, &before);
}

#[test]
fn fuzz_report_and_diff_on_edited_json() {
    let reports = golden_reports().len();
    runner(256)
        .run(&(0..reports, json_edits(), any::<bool>()), |(seed, edits, as_text)| {
            check_report_edits(seed, &edits, as_text);
            Ok(())
        })
        .unwrap();
}

/// Through the binary: `leaktrace report` and `leaktrace diff` on an edited report either
/// succeed or fail with one `leaktrace: error:` line, never a panic.
#[test]
fn fuzz_report_and_diff_commands_on_edited_files() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/user.json");
    let run = |args: &[&std::ffi::OsStr]| {
        let output = Command::new(env!("CARGO_BIN_EXE_leaktrace")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Exit 3 is `diff --fail-if-growth` finding growth, not an error.
        if !output.status.success() && output.status.code() != Some(3) {
            let lines: Vec<&str> = stderr.lines().collect();
            assert!(lines.len() == 1 && lines[0].starts_with("leaktrace: error: "), "{args:?}: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    };
    runner(12)
        .run(&(0..golden_reports().len(), json_edits(), any::<usize>()), |(seed, edits, cut)| {
            let mut edited = golden_reports()[seed].clone();
            let nodes = count_nodes(&edited);
            for edit in &edits {
                apply_json_edit(&mut edited, &mut (edit.pick % nodes), &edit.value);
            }
            let mut text = serde_json::to_vec(&edited).unwrap();
            // Every other case is also cut short, as a file written by a crashed program.
            if cut % 2 == 1 {
                text.truncate(cut % text.len());
            }
            let path = dir.path().join("edited.json");
            std::fs::write(&path, &text).unwrap();
            for format in ["text", "folded", "svg", "pprof", "json", "plot"] {
                run(&[
                    "report".as_ref(),
                    path.as_os_str(),
                    "--format".as_ref(),
                    format.as_ref(),
                    "-o".as_ref(),
                    dir.path().join("out").as_os_str(),
                ]);
            }
            run(&["diff".as_ref(), golden.as_os_str(), path.as_os_str()]);
            run(&["diff".as_ref(), path.as_os_str(), golden.as_os_str(), "--fail-if-growth".as_ref(), "0".as_ref()]);
            Ok(())
        })
        .unwrap();
}

// ---- regressions found by the targets above ------------------------------------------------------

/// [`small_btf`] with some of its type words (counted from the first type) replaced.
fn small_btf_with(words: &[(usize, u32)]) -> Vec<u8> {
    let mut data = small_btf();
    for &(word, value) in words {
        let at = 24 + 4 * word;
        data[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    data
}

/// Word 21 is the bit offset of `struct page`'s anonymous member, word 12 that of the
/// union's `private`, word 20 the anonymous member's type.
#[test]
fn btf_member_offsets_past_4_gbit_are_not_found() {
    // Found by fuzz_btf_reader: the offsets were added without a check.
    let btf = Btf::parse(small_btf_with(&[(21, u32::MAX), (12, 8)])).unwrap();
    assert!(btf.member_offset("page", "private").is_err());
    assert_eq!(btf.member_offset("page", "flags").unwrap(), 0);
}

#[test]
fn btf_struct_containing_itself_is_searched_to_a_bounded_depth() {
    // The anonymous member's type is the struct itself: a search that follows it forever
    // overflows the stack.
    let btf = Btf::parse(small_btf_with(&[(20, 4)])).unwrap();
    assert!(btf.member_offset("page", "private").is_err());
}

#[test]
fn maps_lines_procfs_would_panic_on_are_skipped() {
    // Found by fuzz_maps_parser: procfs 0.18 slices `/SYSV` names at 5..13, a `[…]` name at
    // its last byte, and multiplies an smaps value by 1024, all unchecked.
    for line in [
        "7f00-7f10 r-xp 00000000 08:01 0 /SYSV",
        "7f00-7f10 r-xp 00000000 08:01 0 /SYSV00\u{e9}0000",
        "7f00-7f10 r-xp 00000000 08:01 0 [stack:\u{e9}]",
        "7f00-7f10 r-xp 00000000 08:01 0 /lib/libx.so\nSize: 18446744073709551615 kB",
        "Size: 1 kB",
    ] {
        check_maps(line.as_bytes());
    }
    let good = "7f00-7f10 r-xp 00001000 08:01 42 /lib/libx.so\n";
    let text = format!("garbage\n7f00-7f10 r-xp 00000000 08:01 0 /SYSV\n{good}");
    let maps = mappings::parse_maps(text.as_bytes());
    let expected = mappings::FileMapping {
        start: 0x7f00,
        end: 0x7f10,
        file_offset: 0x1000,
        device: libc::makedev(8, 1),
        inode: 42,
        path: PathBuf::from("/lib/libx.so"),
        executable: true,
    };
    assert_eq!(maps, vec![expected]);
}

#[test]
fn maps_line_with_a_file_name_that_is_not_utf8_keeps_its_mapping() {
    // One such name used to make the whole file unreadable: no mapping, so no stack, at all.
    let mut text = b"7f00-7f10 r-xp 00000000 08:01 42 /tmp/lib\xff.so\n".to_vec();
    text.extend_from_slice(b"8f00-8f10 r-xp 00000000 08:01 43 /lib/ok.so\n");
    let maps = mappings::parse_maps(&text);
    assert_eq!(maps.len(), 2, "{maps:?}");
    assert_eq!(maps[1].path, PathBuf::from("/lib/ok.so"));
}

#[test]
fn allocator_symbol_below_its_section_is_not_defined() {
    // Found by fuzz_allocator_symbol_finder (60× run): malloc's st_value below its section's
    // address made the file-offset computation underflow.
    use object::{Object, ObjectSection, ObjectSymbol};
    let (_, libc) = elf_seeds().last().unwrap();
    let file = object::File::parse(&**libc).unwrap();
    let malloc = file.dynamic_symbols().find(|s| s.name() == Ok("malloc")).unwrap().index().0;
    let (dynsym, _) = file.section_by_name(".dynsym").unwrap().file_range().unwrap();
    // Elf64_Sym: st_name (4), st_info, st_other, st_shndx (2), then st_value (8).
    let at = dynsym as usize + 24 * malloc + 8;
    let mut data = libc.clone();
    data[at..at + 8].copy_from_slice(&1u64.to_le_bytes());
    let path = scratch(&data);
    let facts = allocator::inspect(path.path(), "").unwrap();
    assert!(!facts.defined.iter().any(|f| f.covers("malloc", "")));
    let error = allocator::plan(path.path(), facts, "").unwrap_err().to_string();
    assert!(error.contains("malloc"), "{error}");
}

#[test]
fn report_whose_figures_overflow_is_refused() {
    // Found by fuzz_report_and_diff_on_edited_json (60× run): a stack of 2^64 − 1 bytes made
    // the folded renderer's sum overflow.
    let mut edited = golden_reports()[0].clone();
    edited["stacks"][0]["bytes"] = serde_json::json!(u64::MAX);
    let error = render::json::parse(&edited.to_string()).map(|_| ()).unwrap_err().to_string();
    assert!(error.contains("past 2^54"), "{error}");
    let mut edited = golden_reports()[0].clone();
    edited["totals"]["count"] = serde_json::json!(u64::MAX);
    assert!(render::json::parse(&edited.to_string()).is_err());
    // Figures at the limit still render.
    let mut edited = golden_reports()[0].clone();
    for stack in edited["stacks"].as_array_mut().unwrap() {
        stack["bytes"] = serde_json::json!(0);
    }
    edited["stacks"][0]["bytes"] = serde_json::json!(1u64 << 54);
    let report = render::json::parse(&edited.to_string()).unwrap();
    render_everything(&report, &report);
    // Found by fuzz_report_and_diff_on_edited_json (100× run): a stack that went from the
    // limit to nothing, beside one that went from nothing to the limit, overflowed the
    // differential flame graph's colour scale (150 × the change).
    let mut before = edited.clone();
    before["stacks"][0]["bytes"] = serde_json::json!(0);
    before["stacks"][1]["bytes"] = serde_json::json!(1u64 << 54);
    let before = render::json::parse(&before.to_string()).unwrap();
    render_everything(&before, &report);
    render_everything(&report, &before);
    edited["stacks"][0]["bytes"] = serde_json::json!((1u64 << 54) + 1);
    assert!(render::json::parse(&edited.to_string()).is_err());
}

#[test]
fn an_error_quoting_a_newline_is_still_one_line() {
    // Found by fuzz_report_and_diff_commands_on_edited_files (100× run): the error for an
    // unknown `filters.sort` quoted the edited value, whose newline broke the error line.
    let dir = tempfile::tempdir().unwrap();
    let mut edited = golden_reports()[0].clone();
    edited["filters"]["sort"] = serde_json::json!("x;y\n<&> ");
    let path = dir.path().join("edited.json");
    std::fs::write(&path, edited.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_leaktrace")).arg("report").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("leaktrace: error: ") && stderr.contains(r"x;y\n<&>"), "{stderr}");
}
