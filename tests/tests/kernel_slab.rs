//! Root tests of `--kernel-slab` against a fixture that makes the kernel hold a known number of
//! objects. Tracing is system-wide, so every test filters by the fixture's pid or command name
//! and compares only what the fixture itself made the kernel allocate. Object sizes come from
//! the kernel's own description of each cache (/proc/slabinfo, /sys/kernel/slab), never from an
//! earlier leaktrace run.

use std::{
    io::{BufRead, BufReader, Lines, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::OnceLock,
};

use leaktrace_integration_tests::*;
use serde_json::Value;

fn kernel_objects() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_fixture("kernel_objects.c", "kernel_objects", &["-O1", "-g", "-fno-omit-frame-pointer"]))
}

/// The same program under another name, so that its tasks have another command name.
fn other_objects() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_fixture("kernel_objects.c", "other_objects", &["-O1", "-g", "-fno-omit-frame-pointer"]))
}

/// A kernel_objects process waiting for its commands on stdin.
struct Fixture {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Fixture {
    fn start(exe: &Path, args: &[&str]) -> Self {
        let (child, lines) = spawn_waiting(Command::new(exe).args(args));
        Fixture { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command and waits for the fixture's answer.
    fn say(&mut self, command: &str, answer: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{command}").unwrap();
        assert_eq!(self.lines.next().unwrap().unwrap(), answer, "after {command:?}");
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "fixture: {status}");
    }
}

/// leaktrace --kernel-slab with `args`, started and tracing.
struct KernelTrace {
    tracer: Child,
    dir: tempfile::TempDir,
}

impl KernelTrace {
    fn start(args: &[&str]) -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("k.json");
        let mut tracer = Command::new(leaktrace_bin())
            .args(["--kernel-slab", "--older", "0", "--json", json.to_str().unwrap()])
            .args(args)
            // One report, the final one: nothing fills the pipe while the test drives the fixture.
            .arg("3600")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        BufReader::new(tracer.stderr.as_mut().unwrap()).read_line(&mut banner).unwrap();
        assert!(banner.starts_with("Tracing kernel allocations"), "{banner}");
        KernelTrace { tracer, dir }
    }

    /// Ends the trace with SIGINT; returns the JSON report and the text printed.
    fn stop(self) -> (Value, String) {
        assert!(Command::new("kill").args(["-INT", &self.tracer.id().to_string()]).status().unwrap().success());
        let output = self.tracer.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
        (read_report(&self.dir.path().join("k.json")), stdout)
    }
}

/// One cache as the kernel describes it.
#[derive(Debug, Clone, Copy)]
struct CacheSize {
    /// Bytes a caller gets (`object_size`): what kmem_cache_alloc reports as requested.
    object: u64,
    /// Bytes each object takes in its slab (`slab_size`, slabinfo's objsize): as allocated.
    slab: u64,
}

fn cache_size(name: &str) -> CacheSize {
    let read = |file: &str| -> u64 {
        let path = format!("/sys/kernel/slab/{name}/{file}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().unwrap()
    };
    let size = CacheSize { object: read("object_size"), slab: read("slab_size") };
    assert_eq!(Some(size.slab), slabinfo_object_size(name), "/proc/slabinfo agrees on {name}");
    size
}

/// A cache's object size in /proc/slabinfo.
fn slabinfo_object_size(name: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/slabinfo")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .map(|f| f[3].parse().unwrap())
}

/// The kmalloc cache serving requests of `requested` bytes: the smallest kmalloc-N (or its
/// accounted kmalloc-cg-N variant) of this kernel whose objects hold them.
fn kmalloc_bucket(requested: u64, accounted: bool) -> (String, u64) {
    bucket(if accounted { "kmalloc-cg-" } else { "kmalloc-" }, requested).expect("a kmalloc cache large enough")
}

/// The smallest cache named `prefix`N whose objects hold `requested` bytes.
fn bucket(prefix: &str, requested: u64) -> Option<(String, u64)> {
    std::fs::read_to_string("/proc/slabinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rest = f.first()?.strip_prefix(prefix)?;
            if rest.starts_with("rcl") || rest.starts_with("cg") {
                return None;
            }
            Some((f[0].to_string(), f[3].parse::<u64>().ok()?))
        })
        .filter(|&(_, size)| size >= requested)
        .min_by_key(|&(_, size)| size)
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

/// Stacks with `function` anywhere in their kernel frames.
fn through<'a>(report: &'a Value, function: &str) -> Vec<&'a Value> {
    report["stacks"].as_array().unwrap().iter().filter(|s| stack_symbols(s).contains(&function)).collect()
}

fn sum(stacks: &[&Value], field: &str) -> u64 {
    stacks.iter().map(|s| s[field].as_u64().unwrap()).sum()
}

fn requested(stacks: &[&Value]) -> u64 {
    stacks.iter().map(|s| s["kernel"]["requested_bytes"].as_u64().unwrap()).sum()
}

fn cache_names(stack: &Value) -> Vec<&str> {
    stack["kernel"]["caches"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
}

/// (bytes, count) of the share named `name` in a group's `caches` or `comms`.
fn share(group: &Value, list: &str, name: &str) -> (u64, u64) {
    group["kernel"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map_or((0, 0), |s| (s["bytes"].as_u64().unwrap(), s["count"].as_u64().unwrap()))
}

const OPENED: u32 = 64;
const CLOSED: u32 = 24;
const HELD: u64 = (OPENED - CLOSED) as u64;

/// Traces the eventfd fixture with -p and `args`: it opens OPENED eventfds, then closes the
/// first CLOSED of them before the report is taken.
fn trace_eventfds(args: &[&str]) -> (Value, String, u32) {
    let mut fixture = Fixture::start(kernel_objects(), &["eventfd", &OPENED.to_string()]);
    let pid = fixture.pid().to_string();
    let mut all = vec!["-p", &pid];
    all.extend_from_slice(args);
    let trace = KernelTrace::start(&all);
    fixture.say("open", "opened");
    fixture.say(&format!("close {CLOSED}"), "closed");
    let (report, text) = trace.stop();
    let pid = fixture.pid();
    fixture.finish();
    (report, text, pid)
}

/// Each eventfd is one eventfd_ctx kmalloc'd by do_eventfd and one struct file from the filp
/// cache: of 64 opened and 24 closed, exactly 40 of each are outstanding, with the bytes the
/// kernel's caches give such objects. The closed ones prove that kfree and kmem_cache_free
/// are matched with their allocations (64 would be left otherwise), the held ones that the
/// allocations were recorded.
#[test]
fn eventfds_held_by_a_process_are_attributed_exactly() {
    let (report, text, pid) = trace_eventfds(&[]);
    assert_eq!(report["mode"], "kernel");
    assert_eq!(report["target"]["pid"], pid);
    // Nothing of leaktrace's own maps overflowed. (probe_misses is not checked: it counts
    // tracepoint hits the kernel skipped anywhere on the machine, e.g. an allocation in an
    // interrupt while the program ran on that CPU, and other activity makes it non-zero.)
    for cause in ["allocs_map_full", "stack_lost", "stack_collision"] {
        assert_eq!(report["lost"][cause], 0, "{}", report["lost"]);
    }

    // eventfd_ctx: kmalloc(sizeof(struct eventfd_ctx), GFP_KERNEL), a kmalloc-64 object.
    let ctx = direct_from(&report, "do_eventfd");
    assert_eq!(sum(&ctx, "count"), HELD, "{ctx:#?}");
    let per_object = requested(&ctx) / HELD;
    assert_eq!(requested(&ctx) % HELD, 0);
    let (bucket, bucket_size) = kmalloc_bucket(per_object, false);
    assert_eq!(bucket, "kmalloc-64", "eventfd_ctx of {per_object} bytes");
    assert_eq!(sum(&ctx, "bytes"), HELD * bucket_size, "allocated bytes of the eventfd contexts");
    for stack in &ctx {
        assert_eq!(cache_names(stack), [bucket.as_str()]);
        assert_eq!(stack["kernel"]["comms"].as_array().unwrap().len(), 1);
        assert_eq!(stack["kernel"]["comms"][0]["name"], format!("kernel_objects[{pid}]"));
        assert!(stack_symbols(stack).iter().any(|s| s.contains("sys_eventfd2")), "{stack}");
    }

    // struct file: kmem_cache_alloc(filp): the cache's object size requested, its slab size
    // allocated.
    let filp = cache_size("filp");
    assert_ne!(filp.object, filp.slab, "this kernel pads struct file; the two figures must differ to be told apart");
    let files = direct_from(&report, "alloc_empty_file");
    assert_eq!(sum(&files, "count"), HELD, "{files:#?}");
    assert_eq!(sum(&files, "bytes"), HELD * filp.slab, "allocated bytes of the files");
    assert_eq!(requested(&files), HELD * filp.object, "requested bytes of the files");
    for stack in &files {
        assert_eq!(cache_names(stack), ["filp"]);
    }

    // Every cache name leaktrace reports is one the kernel has.
    for cache in report["kernel"]["caches"].as_array().unwrap() {
        let name = cache["name"].as_str().unwrap();
        assert!(slabinfo_object_size(name).is_some(), "{name} is not in /proc/slabinfo");
    }

    // The text report says the same: parse the group of the files.
    let groups = parse_text_groups(final_text(&text));
    let file_groups: Vec<&TextGroup> =
        groups.iter().filter(|g| g.functions().get(1) == Some(&"alloc_empty_file")).collect();
    let in_text = file_groups.iter().fold((0, 0), |(b, c), g| (b + g.bytes, c + g.count));
    assert_eq!(in_text, (HELD * filp.slab, HELD), "{text}");
    for g in &file_groups {
        assert_eq!(
            g.detail("caches: "),
            Some(format!("filp ({} objects, {} bytes)", g.count, g.bytes).as_str()),
            "{g:?}"
        );
        let by = format!("kernel_objects[{pid}] ({} objects, {} bytes)", g.count, g.bytes);
        assert_eq!(g.detail("allocated by: "), Some(by.as_str()), "{g:?}");
    }
}

/// `--by cache` groups by slab cache and `--cache` keeps one cache: the filp group holds
/// exactly the fixture's files, allocated by the fixture.
#[test]
fn grouping_by_cache_with_a_cache_filter_keeps_exactly_that_cache() {
    let (report, text, pid) = trace_eventfds(&["--by", "cache", "--cache", "filp"]);
    let filp = cache_size("filp");
    assert_eq!(report["kernel"]["group_by"], "cache");
    let stacks = report["stacks"].as_array().unwrap();
    let keys: Vec<&str> = stacks.iter().map(|s| s["kernel"]["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["filp"], "--cache filp leaves one group");
    let group = &stacks[0];
    assert_eq!((group["bytes"].as_u64().unwrap(), group["count"].as_u64().unwrap()), (HELD * filp.slab, HELD));
    assert_eq!(group["kernel"]["requested_bytes"], HELD * filp.object);
    assert!(group["frames"].as_array().unwrap().is_empty(), "a cache group has no single stack");
    assert_eq!(share(group, "comms", &format!("kernel_objects[{pid}]")), (HELD * filp.slab, HELD));
    let caches: Vec<&str> =
        report["kernel"]["caches"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(caches, ["filp"]);
    assert!(text.contains(&format!("\t{} bytes in {HELD} allocations from filp (oldest", HELD * filp.slab)), "{text}");
    assert!(text.contains("Top 1 caches with outstanding allocations"), "{text}");
}

/// `--comm` keeps the tasks of one name, system-wide, and `--by comm` groups by it: a second
/// process holding eventfds under another name is left out.
#[test]
fn comm_filter_and_grouping_by_comm_see_only_the_named_tasks() {
    let mut mine = Fixture::start(kernel_objects(), &["eventfd", &OPENED.to_string()]);
    let mut other = Fixture::start(other_objects(), &["eventfd", "32"]);
    let trace = KernelTrace::start(&["--comm", "kernel_objects", "--by", "comm"]);
    other.say("open", "opened");
    mine.say("open", "opened");
    mine.say(&format!("close {CLOSED}"), "closed");
    other.say("close 0", "closed");
    let (report, text) = trace.stop();
    let pid = mine.pid();
    mine.finish();
    other.finish();
    let filp = cache_size("filp");
    assert_eq!(report["kernel"]["group_by"], "comm");
    let stacks = report["stacks"].as_array().unwrap();
    let keys: Vec<&str> = stacks.iter().map(|s| s["kernel"]["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["kernel_objects"], "only the named tasks");
    let group = &stacks[0];
    assert_eq!(share(group, "caches", "filp"), (HELD * filp.slab, HELD), "{group:#}");
    let comms: Vec<&str> =
        group["kernel"]["comms"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(comms, [format!("kernel_objects[{pid}]")]);
    // On a busy machine every cache of the group can turn unconfirmed (another task's frees
    // skipped): the group is then listed apart, not in the top.
    let apart = group["kernel"]["unconfirmed"] == true;
    assert!(apart || text.contains("Top 1 commands with outstanding allocations"), "{text}");
    assert!(!text.contains("other_objects"), "{text}");
}

/// `--pages`: a pipe holding 16 written pages holds 16 order-0 pages from pipe_write.
#[test]
fn pages_held_by_a_pipe_are_counted() {
    const PAGES: u64 = 16;
    let mut fixture = Fixture::start(kernel_objects(), &["pipe", &PAGES.to_string()]);
    let pid = fixture.pid().to_string();
    let trace = KernelTrace::start(&["-p", &pid, "--pages"]);
    fixture.say("write", "written");
    let (report, _) = trace.stop();
    fixture.finish();
    let events = report["kernel"]["events"].as_array().unwrap();
    for event in ["kmem:mm_page_alloc", "kmem:mm_page_free", "kmem:mm_page_free_batched"] {
        assert!(events.iter().any(|e| e == event), "{event} not attached: {events:?}");
    }
    let pipe_pages = through(&report, "anon_pipe_write");
    assert_eq!((sum(&pipe_pages, "bytes"), sum(&pipe_pages, "count")), (PAGES * 4096, PAGES), "{pipe_pages:#?}");
    for stack in &pipe_pages {
        assert_eq!(cache_names(stack), ["pages (order 0)"]);
    }
}

/// `--percpu`: a BPF per-CPU array of N entries makes N per-CPU allocations of the value size
/// rounded up to 8 bytes, each taking that much on every possible CPU, plus, where memory
/// cgroups account kernel memory, one obj_cgroup pointer per 4-byte unit (the kernel's
/// pcpu_obj_full_size(), which the percpu_alloc_percpu event reports).
#[test]
fn percpu_objects_of_a_bpf_map_are_counted() {
    const ENTRIES: u64 = 10;
    const VALUE_SIZE: u64 = 60;
    let mut fixture = Fixture::start(kernel_objects(), &["percpu", &ENTRIES.to_string(), &VALUE_SIZE.to_string()]);
    let pid = fixture.pid().to_string();
    let trace = KernelTrace::start(&["-p", &pid, "--percpu"]);
    fixture.say("create", "created");
    let (report, _) = trace.stop();
    fixture.finish();
    let element = VALUE_SIZE.div_ceil(8) * 8;
    let per_object = element * possible_cpus() + if memcg_kmem() { element / 4 * 8 } else { 0 };
    let map = through(&report, "array_map_alloc");
    let percpu: Vec<&Value> = map.into_iter().filter(|s| cache_names(s) == ["percpu"]).collect();
    assert_eq!((sum(&percpu, "bytes"), sum(&percpu, "count")), (ENTRIES * per_object, ENTRIES), "{percpu:#?}");
    assert!(report["kernel"]["events"].as_array().unwrap().iter().any(|e| e == "percpu:percpu_alloc_percpu"));
}

fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Whether memory cgroups account kernel memory (CONFIG_MEMCG, not cgroup.memory=nokmem).
fn memcg_kmem() -> bool {
    let cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let enabled = cgroups.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&"memory") && f.last() == Some(&"1")
    });
    enabled && !std::fs::read_to_string("/proc/cmdline").unwrap().contains("cgroup.memory=nokmem")
}

/// `--user-stacks`: each group carries the allocating task's user stack, which here starts in
/// the fixture's open_eventfds (it makes the system call itself, with frame pointers).
#[test]
fn user_stacks_name_the_allocating_function() {
    let (report, _, _) = trace_eventfds(&["--user-stacks"]);
    let files = direct_from(&report, "alloc_empty_file");
    assert_eq!(sum(&files, "count"), HELD);
    for stack in files.iter().chain(direct_from(&report, "do_eventfd").iter()) {
        let user: Vec<&str> =
            stack["kernel"]["user_frames"].as_array().unwrap().iter().filter_map(|f| f["symbol"].as_str()).collect();
        assert!(user.contains(&"open_eventfds"), "user stack {user:?} of {stack:#}");
        let module = stack["kernel"]["user_frames"][0]["module"].as_str().unwrap_or("");
        assert_eq!(module, kernel_objects().to_str().unwrap());
    }
    assert_eq!(report["lost"]["user_stack_lost"], 0);
}

/// Beside the traced objects, the slab figures the kernel gives: meminfo's slab lines (Slab
/// is SReclaimable + SUnreclaim, read at one instant), each cache's reclaimable flag as
/// /sys/kernel/slab says, its slabinfo change in objects and bytes, and the traced bytes in
/// unreclaimable caches; the text's cache table shows them.
#[test]
fn slab_accounting_matches_what_the_kernel_reports() {
    let before = meminfo_slab();
    let (report, text, _) = trace_eventfds(&[]);
    let after = meminfo_slab();
    let kernel = &report["kernel"];
    for (name, snapshot) in [("meminfo_start", &kernel["meminfo_start"]), ("meminfo_now", &kernel["meminfo_now"])] {
        let field = |f: &str| snapshot[f].as_u64().unwrap();
        assert_eq!(field("slab"), field("reclaimable") + field("unreclaimable"), "{name}: {snapshot}");
        for (i, f) in ["slab", "reclaimable", "unreclaimable"].into_iter().enumerate() {
            let (low, high) = (before[i].min(after[i]), before[i].max(after[i]));
            // Other tasks allocate meanwhile: within 10 % of the values read around the trace.
            assert!(
                field(f) >= low - low / 10 && field(f) <= high + high / 10,
                "{name}.{f} = {} outside {low}..{high}",
                field(f)
            );
            assert_eq!(field(f) % 1024, 0, "meminfo counts kB");
        }
    }
    let filp = cache_size("filp");
    let caches = kernel["caches"].as_array().unwrap();
    let mut unreclaimable = 0;
    for cache in caches {
        let name = cache["name"].as_str().unwrap();
        let flag = std::fs::read_to_string(format!("/sys/kernel/slab/{name}/reclaim_account")).unwrap();
        assert_eq!(cache["reclaimable"], flag.trim() == "1", "{name}");
        if cache["reclaimable"] != true {
            unreclaimable += cache["traced"]["bytes"].as_u64().unwrap();
        }
        let objects = cache["slabinfo_objects_delta"].as_i64().expect("slabinfo is readable as root");
        assert_eq!(
            cache["slabinfo_bytes_delta"].as_i64().unwrap(),
            objects * slabinfo_object_size(name).unwrap() as i64,
            "{name}"
        );
    }
    assert_eq!(kernel["traced_unreclaimable_bytes"], unreclaimable);
    let file_cache = caches.iter().find(|c| c["name"] == "filp").expect("filp traced");
    assert_eq!(file_cache["reclaimable"], false);
    assert_eq!(file_cache["traced"], serde_json::json!({"bytes": HELD * filp.slab, "count": HELD}));
    // The text's table row for filp: name, traced bytes, objects, slabinfo change, reclaimable.
    let row = text
        .rsplit("\nFinal report: ")
        .next()
        .unwrap()
        .lines()
        .find(|l| l.trim_start().starts_with("filp "))
        .unwrap_or_else(|| panic!("no filp row in {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    let delta = file_cache["slabinfo_objects_delta"].as_i64().unwrap();
    assert_eq!(
        cells,
        ["filp", &(HELD * filp.slab).to_string(), &HELD.to_string(), &format!("{delta:+}"), "no"],
        "{row}"
    );
    let start = kernel["meminfo_start"]["unreclaimable"].as_i64().unwrap();
    let now = kernel["meminfo_now"]["unreclaimable"].as_i64().unwrap();
    assert!(text.contains(&format!("SUnreclaim {:+} kB", (now - start) / 1024)), "{text}");
}

/// Slab, SReclaimable and SUnreclaim from /proc/meminfo, in bytes.
fn meminfo_slab() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    [kb("Slab:"), kb("SReclaimable:"), kb("SUnreclaim:")]
}

/// Without CAP_SYSLOG (and perf_event_paranoid above 1), /proc/kallsyms shows zeros: the
/// report says kernel addresses are hidden and shows the frames as bare kernel addresses,
/// still grouped by stack.
#[test]
fn hidden_kernel_addresses_are_reported_as_addresses() {
    require_root();
    let without_syslog = ["--bounding-set", "-syslog"];
    let probe = Command::new("setpriv").args(without_syslog).args(["head", "-1", "/proc/kallsyms"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&probe.stdout).starts_with("0000000000000000 "),
        "precondition: kallsyms must hide addresses without CAP_SYSLOG (kernel.perf_event_paranoid > 1): {probe:?}"
    );
    let mut fixture = Fixture::start(kernel_objects(), &["eventfd", &OPENED.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("k.json");
    let mut tracer = Command::new("setpriv")
        .args(without_syslog)
        .arg(leaktrace_bin())
        .args([
            "--kernel-slab",
            "--older",
            "0",
            "-p",
            &fixture.pid().to_string(),
            "--json",
            json.to_str().unwrap(),
            "3600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.starts_with("Tracing kernel allocations"), "{banner}");
    let rest = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    fixture.say("open", "opened");
    fixture.say(&format!("close {CLOSED}"), "closed");
    assert!(Command::new("kill").args(["-INT", &tracer.id().to_string()]).status().unwrap().success());
    let output = tracer.wait_with_output().unwrap();
    fixture.finish();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let warnings = rest.join().unwrap();
    assert!(warnings.contains("leaktrace: kernel addresses are hidden"), "{warnings}");
    assert!(
        text.contains("Kernel addresses are hidden by kernel.kptr_restrict: kernel frames are shown as addresses"),
        "{text}"
    );
    let report = read_report(&json);
    assert_eq!(report["kernel"]["symbols_visible"], false);
    let filp = cache_size("filp");
    // Without names the files are still one stack of their own, of 40 objects.
    let files: Vec<&Value> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| cache_names(s) == ["filp"] && s["count"] == HELD)
        .collect();
    assert_eq!(files.len(), 1, "{:#}", report["stacks"]);
    assert_eq!(files[0]["bytes"], HELD * filp.slab);
    for stack in report["stacks"].as_array().unwrap() {
        let frames = stack["frames"].as_array().unwrap();
        assert!(!frames.is_empty());
        for frame in frames {
            assert!(frame["symbol"].is_null(), "{frame}");
            assert_eq!(frame["kernel"], true, "{frame}");
            assert!(frame["address"].as_u64().unwrap() >= 0xffff_8000_0000_0000, "{frame}");
        }
    }
}

/// A full object map (`--max-allocs`) is counted as lost and marks the report incomplete,
/// with the warning in the text: 64 eventfds hold 128 objects (a context and a file each),
/// of which a 16-entry map keeps at most 16.
#[test]
fn a_full_object_map_is_counted_as_lost() {
    const MAP: u64 = 16;
    let mut fixture = Fixture::start(kernel_objects(), &["eventfd", &OPENED.to_string()]);
    let pid = fixture.pid().to_string();
    let trace = KernelTrace::start(&["-p", &pid, "--max-allocs", &MAP.to_string()]);
    fixture.say("open", "opened");
    let (report, text) = trace.stop();
    fixture.say("close 0", "closed");
    fixture.finish();
    let held = 2 * u64::from(OPENED);
    assert!(report["totals"]["count"].as_u64().unwrap() <= MAP, "{}", report["totals"]);
    let lost = report["lost"]["allocs_map_full"].as_u64().unwrap();
    assert!(lost >= held - MAP, "{lost} objects counted lost, at least {} were", held - MAP);
    assert_eq!(report["incomplete"], true);
    let warning = format!("Lost events: {lost} allocations not tracked (allocation map full, raise --max-allocs)");
    assert!(text.contains(&warning), "{text}");
    assert!(
        text.contains("outstanding figures may be inflated (a missed free looks like a leak) or incomplete"),
        "{text}"
    );
}

/// `--kernel-slab --run COMMAND --repeat RUNS` with `extra` arguments, for a command that
/// leaves messages in the System V queue `key` (removed afterwards): the JSON report and the
/// text.
fn run_sending(command: &str, runs: u64, key: u32, extra: &[&str], json: &Path) -> (Value, String) {
    let repeat = runs.to_string();
    let mut args = vec!["--kernel-slab", "--run", command, "--repeat", &repeat, "--top", "100"];
    args.extend_from_slice(extra);
    args.extend(["--json", json.to_str().unwrap()]);
    let output = run_leaktrace(&args);
    let _ = Command::new("ipcrm").args(["-Q", &key.to_string()]).status();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (read_report(json), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn run_reports_the_growth_each_run_leaves_behind() {
    require_root();
    const RUNS: u64 = 4;
    const MESSAGE: u64 = 100;
    // msg_msg is a 48-byte header followed by the text: kmem_buckets_alloc(msg_buckets, …,
    // GFP_KERNEL), from the msg_msg-N caches on kernels built with CONFIG_SLAB_BUCKETS, from
    // plain kmalloc-N on the others.
    const MSG_MSG_HEADER: u64 = 48;
    let (bucket, bucket_size) =
        bucket("msg_msg-", MSG_MSG_HEADER + MESSAGE).unwrap_or_else(|| kmalloc_bucket(MSG_MSG_HEADER + MESSAGE, false));
    let key = 0x4c54_0000 + std::process::id() % 0xffff;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let command = format!("{} msgsnd {key} {MESSAGE}", kernel_objects().display());
    let (report, stdout) = run_sending(&command, RUNS, key, &[], &json);
    assert!(stdout.contains("runs completed"), "{stdout}");
    assert_eq!(report["kernel"]["runs"]["completed"], RUNS);
    assert_eq!(report["kernel"]["runs"]["exit_codes"], serde_json::json!([0, 0, 0, 0]));
    let messages = direct_from(&report, "load_msg");
    assert_eq!(sum(&messages, "count"), RUNS, "{messages:#?}");
    assert_eq!(requested(&messages), RUNS * (MSG_MSG_HEADER + MESSAGE));
    assert_eq!(sum(&messages, "bytes"), RUNS * bucket_size, "allocated from {bucket}");
    assert_eq!(messages.len(), 1, "one call path");
    // The kmalloc event does not say which cache served the object: its name is the one of
    // the object's slab, msg_msg-N where the kernel has kmem_buckets (a name guessed from size
    // and flags would be kmalloc-N, whose slabinfo count does not move).
    assert_eq!(report["kernel"]["kmalloc_caches"], "slab");
    assert_eq!(cache_names(messages[0]), [bucket.as_str()], "{:#}", messages[0]);
    let account = report["kernel"]["caches"].as_array().unwrap().iter().find(|c| c["name"] == bucket.as_str());
    assert_eq!(account.map(|c| c["traced"]["count"].clone()), Some(RUNS.into()), "{:#}", report["kernel"]["caches"]);
    assert_eq!(messages[0]["kernel"]["per_run"]["count"], 1.0);
    assert_eq!(messages[0]["kernel"]["per_run"]["bytes"], bucket_size as f64);
    for comm in messages[0]["kernel"]["comms"].as_array().unwrap() {
        assert!(comm["name"].as_str().unwrap().starts_with("kernel_objects["), "{comm}");
    }
    // The text report's group of the messages says the same.
    let groups = parse_text_groups(final_text(&stdout));
    let group = groups.iter().find(|g| g.functions().get(1) == Some(&"load_msg")).unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!((group.bytes, group.count), (RUNS * bucket_size, RUNS), "{group:?}");
    assert_eq!(group.detail("per run: "), Some(format!("1.00 objects, {bucket_size}.0 bytes").as_str()), "{group:?}");
}

/// A status script that starts a child which leaves kernel objects behind: the child is
/// gone by the report, and so is the script, but each group names the chain that led to the
/// allocation (child ← script ← the shell of `--run`), in JSON and text, with the child's
/// user stack, and `--by origin` files the objects under the script, the top-most process
/// that is not a shell.
#[test]
fn the_chain_behind_an_allocation_is_named_after_it_exited() {
    require_root();
    const RUNS: u64 = 2;
    let key = 0x4c55_0000 + std::process::id() % 0xffff;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-status.sh");
    // The fixture runs as a child (not exec'd) of the script, which runs on after it.
    std::fs::write(&script, format!("#!/bin/sh\n{} msgsnd {key} 100\necho done\n", kernel_objects().display()))
        .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let trace = |by: &str| {
        let json = dir.path().join(format!("{by}.json"));
        run_sending(script.to_str().unwrap(), RUNS, key, &["--by", by, "--user-stacks"], &json)
    };
    let (report, stdout) = trace("stack");
    let messages = direct_from(&report, "load_msg");
    // The fixture's user stack is named although the fixture had exited: its frames were
    // captured as build-ids and file offsets, and its file found by its build-id.
    let user: Vec<&str> =
        messages[0]["kernel"]["user_frames"].as_array().unwrap().iter().filter_map(|f| f["symbol"].as_str()).collect();
    assert_eq!(user.first(), Some(&"send_message"), "{:#}", messages[0]);
    let module = messages[0]["kernel"]["user_frames"][0]["module"].as_str().unwrap_or("");
    assert_eq!(std::fs::canonicalize(module).ok().as_ref(), std::fs::canonicalize(kernel_objects()).ok().as_ref());
    assert_eq!(sum(&messages, "count"), RUNS, "{messages:#?}");
    let holders = messages[0]["kernel"]["comms"].as_array().unwrap();
    assert_eq!(holders.len() as u64, RUNS, "one fixture process per run: {holders:#?}");
    for holder in holders {
        assert!(holder["name"].as_str().unwrap().starts_with("kernel_objects["), "{holder}");
        let chain: Vec<&str> =
            holder["ancestry"].as_array().unwrap().iter().map(|a| a["comm"].as_str().unwrap()).collect();
        // The shell leaktrace runs the command with, and nothing above it (leaktrace).
        assert_eq!(chain, ["fake-status.sh", "sh"], "{holder:#}");
    }
    let groups = parse_text_groups(final_text(&stdout));
    let group = groups.iter().find(|g| g.functions().get(1) == Some(&"load_msg")).unwrap_or_else(|| panic!("{stdout}"));
    let chain = group.detail("chain: ").unwrap_or_else(|| panic!("{group:?}"));
    assert!(chain.starts_with("kernel_objects[") && chain.contains("] ← fake-status.sh["), "{chain}");
    let (by_origin, _) = trace("origin");
    let keys: Vec<&str> =
        by_origin["stacks"].as_array().unwrap().iter().filter_map(|s| s["kernel"]["key"].as_str()).collect();
    assert!(keys.contains(&"fake-status.sh"), "{keys:?}");
    assert!(!keys.contains(&"kernel_objects"), "the fixture's objects are filed under the script: {keys:?}");
}

/// A stack that allocates and frees thousands of objects while holding a steady few is
/// churn, never growing: the fixture keeps 4 eventfds open while it opens and closes
/// thousands for 5 s, traced with a report every second.
#[test]
fn a_busy_but_balanced_kernel_stack_is_churn() {
    require_root();
    const HELD: u64 = 4;
    let mut fixture = Fixture::start(kernel_objects(), &["churn", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("churn.json");
    let pid = fixture.pid().to_string();
    let mut tracer = Command::new(leaktrace_bin())
        .args(["--kernel-slab", "-p", &pid, "--older", "0", "--json", json.to_str().unwrap(), "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(tracer.stderr.as_mut().unwrap()).read_line(&mut banner).unwrap();
    writeln!(fixture.child.stdin.as_mut().unwrap(), "go").unwrap();
    let answer = fixture.lines.next().unwrap().unwrap();
    let opened: u64 =
        answer.strip_prefix("churned ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{answer}"));
    assert!(Command::new("kill").args(["-INT", &tracer.id().to_string()]).status().unwrap().success());
    assert!(tracer.wait().unwrap().success());
    fixture.finish();
    let report = read_report(&json);
    let contexts = direct_from(&report, "do_eventfd");
    assert_eq!(contexts.len(), 1, "{contexts:#?}");
    let stack = contexts[0];
    assert_eq!(stack["count"], HELD, "{stack:#}");
    assert_eq!(stack["trend"]["class"], "churn", "{opened} opened, {HELD} held: {stack:#}");
    let allocated_per_min = stack["trend"]["allocated_per_min"].as_f64().unwrap();
    assert!(allocated_per_min > 0.0, "{stack:#}");
}

/// System V queues, each a msg_queue allocated by newque and freed in an RCU callback when
/// the queue is removed: held, all of them are outstanding; removed, none is, in each of 5
/// repetitions (a free in an RCU callback that interrupts another traced program on its CPU
/// was once skipped, and its queue looked leaked).
#[test]
fn queues_freed_in_rcu_callbacks_are_all_seen_freed() {
    const QUEUES: u64 = 64;
    let queues_of = |report: &Value| -> u64 { sum(&direct_from(report, "newque"), "count") };
    // Held: the allocations are seen and attributed.
    let mut fixture = Fixture::start(kernel_objects(), &["queues", &QUEUES.to_string()]);
    let pid = fixture.pid().to_string();
    let trace = KernelTrace::start(&["-p", &pid]);
    fixture.say("create", "created");
    let (report, _) = trace.stop();
    fixture.say("remove", "removed");
    fixture.finish();
    assert_eq!(queues_of(&report), QUEUES, "{:#}", report["stacks"]);
    // Removed: every free is seen.
    for round in 0..5 {
        let mut fixture = Fixture::start(kernel_objects(), &["queues", &QUEUES.to_string()]);
        let pid = fixture.pid().to_string();
        let trace = KernelTrace::start(&["-p", &pid]);
        fixture.say("create", "created");
        fixture.say("remove", "removed");
        // The RCU callbacks run after a grace period.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (report, _) = trace.stop();
        fixture.finish();
        assert_eq!(queues_of(&report), 0, "round {round}: {:#}", report["stacks"]);
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
    let output =
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    assert_one_line_error(&output, "tracefs");
}

/// Short-lived processes leave maple_node objects that the kernel frees in bulk or through
/// its per-CPU sheaves, without a per-object tracepoint. Once leaktrace sees an address of
/// such an object allocated again while it was still outstanding, it knows those frees are
/// missed: the cache is marked unconfirmed with that evidence, and none of its groups is
/// ranked as a leak or classed growing.
#[test]
fn bulk_freed_maple_nodes_are_unconfirmed_not_leaks() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("true.json");
    let output = run_leaktrace(&[
        "--kernel-slab",
        "--run",
        "for i in $(seq 200); do /bin/true; done",
        "--top",
        "100",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = read_report(&json);
    let caches = report["kernel"]["caches"].as_array().unwrap();
    let maple = caches.iter().find(|c| c["name"] == "maple_node").expect("200 execs leave maple_node objects traced");
    assert_eq!(maple["unconfirmed"], true, "{maple}");
    assert!(maple["silently_freed"].as_u64().unwrap() > 0, "{maple}");
    for stack in report["stacks"].as_array().unwrap() {
        let kernel = &stack["kernel"];
        let only_maple = kernel["caches"].as_array().unwrap().iter().all(|c| c["name"] == "maple_node");
        if only_maple {
            assert_eq!(kernel["unconfirmed"], true, "{stack:#}");
        }
        if kernel["unconfirmed"] == true {
            assert_ne!(stack["trend"]["class"], "growing", "{stack:#}");
        }
    }
    // The text ranks no maple_node group among the leaks and says why they are left out.
    let text = final_text(&stdout);
    assert!(text.contains("unconfirmed: maple_node holds"), "{text}");
    assert!(text.contains("frees of maple_node are not traced on this kernel"), "{text}");
    for group in parse_text_groups(text) {
        let caches = group.details.iter().find(|d| d.starts_with("caches:")).cloned().unwrap_or_default();
        let only_maple = caches.starts_with("caches: maple_node (") && !caches.contains("), ");
        assert!(!only_maple, "a maple_node group is ranked as a leak:\n{text}");
    }
}
