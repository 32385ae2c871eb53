//! leaktrace's benchmark: `cargo xtask bench [--quick]` builds leaktrace and this harness in
//! release mode and runs it as root. It compiles the workload (bench/workload/workload.c),
//! runs it untraced, under empty eBPF programs (the floor), under leaktrace, bpftrace, bcc's
//! memleak, heaptrack and valgrind, interleaving the runs and taking medians; times a real
//! program (jq on a generated JSON file) untraced and under leaktrace, valgrind, heaptrack and
//! memleak; and writes `bench.json` and `bench.md` (a table) into the output directory
//! (default target/bench).
//!
//! `--soak MINUTES` runs the soak alone instead (bench/src/soak.rs): soak.json and soak.md.
//! `--only fleet` runs one section alone (bench/src/fleet.rs): many processes, allocator
//! families and system-wide probes.
//!
//! Usage: leaktrace-bench [--quick] [--soak MINUTES] [--only fleet] [--out DIR] [--leaktrace PATH]

mod cost;
mod fleet;
mod proc;
mod real;
mod soak;
mod stats;
mod tools;
mod workload;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use leaktrace_common::names;
use serde_json::{json, Value};
use stats::{median, round};
use tools::{args, Env, Tool};
use workload::LeakCheck;

/// --stack-storage-size of the report-time runs.
const REPORT_STACK_STORAGE: u32 = 262_144;

/// How much of everything to run.
struct Plan {
    quick: bool,
    reps: usize,
    oneshot_ops: u64,
    steady_rate: u64,
    steady_reps: usize,
    steady_warmup: Duration,
    steady_window: Duration,
    footprint_reps: usize,
    scale_points: Vec<u64>,
    scale_ops: u64,
    scale_reps: usize,
    stack_points: Vec<usize>,
    stack_reps: usize,
    kernel_iterations: u64,
    kernel_reps: usize,
    /// Size of the real program's generated JSON input.
    real_input_bytes: u64,
    real_reps: usize,
    /// Runs of the sampled-estimate accuracy check.
    sampled_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                reps: 1,
                oneshot_ops: 5_000,
                steady_rate: 10_000,
                steady_reps: 1,
                steady_warmup: Duration::from_millis(200),
                steady_window: Duration::from_millis(500),
                footprint_reps: 1,
                scale_points: vec![10_000],
                scale_ops: 5_000,
                scale_reps: 1,
                stack_points: vec![1_000],
                stack_reps: 1,
                kernel_iterations: 5_000,
                kernel_reps: 1,
                real_input_bytes: 2 << 20,
                real_reps: 1,
                sampled_runs: 2,
            }
        } else {
            Self {
                quick,
                reps: 5,
                oneshot_ops: 200_000,
                steady_rate: 10_000,
                steady_reps: 2,
                steady_warmup: Duration::from_secs(2),
                steady_window: Duration::from_secs(15),
                footprint_reps: 3,
                scale_points: vec![10_000, 100_000, 1_000_000],
                scale_ops: 100_000,
                scale_reps: 3,
                stack_points: vec![1_000, 10_000],
                stack_reps: 3,
                kernel_iterations: 100_000,
                kernel_reps: 5,
                // About 1.5 million allocation calls: a second or two untraced, up to a minute
                // under the slowest tools.
                real_input_bytes: 10 << 20,
                real_reps: 3,
                sampled_runs: 20,
            }
        }
    }
}

struct Options {
    quick: bool,
    /// Run the soak alone, for this many minutes.
    soak: Option<f64>,
    out: PathBuf,
    leaktrace: PathBuf,
    /// One section alone (`fleet`).
    only: Option<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ is in the workspace").to_path_buf()
}

fn parse_options() -> Result<Options> {
    let root = workspace_root();
    let mut options = Options {
        quick: false,
        soak: None,
        out: root.join("target/bench"),
        leaktrace: root.join("target/release/leaktrace"),
        only: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--soak" => {
                options.soak =
                    Some(argv.next().context("--soak needs minutes")?.parse().context("--soak needs minutes")?)
            }
            "--out" => options.out = argv.next().context("--out needs a directory")?.into(),
            "--leaktrace" => options.leaktrace = argv.next().context("--leaktrace needs a path")?.into(),
            "--only" => match argv.next().as_deref() {
                Some("fleet") => options.only = Some("fleet".into()),
                other => bail!("--only takes a section name: fleet (got {:?})", other.unwrap_or("nothing")),
            },
            "-h" | "--help" => {
                println!(
                    "usage: leaktrace-bench [--quick] [--soak MINUTES] [--only fleet] [--out DIR] [--leaktrace PATH]"
                );
                std::process::exit(0);
            }
            other => {
                bail!("unknown argument {other:?} (usage: leaktrace-bench [--quick] [--soak MINUTES] [--only fleet] [--out DIR] [--leaktrace PATH])")
            }
        }
    }
    Ok(options)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("leaktrace-bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// When the run started, for the progress lines.
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn step(what: &str) {
    let at = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench: [{at:5.1} s] {what}");
}

fn run() -> Result<()> {
    let options = parse_options()?;
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    if !options.leaktrace.is_file() {
        bail!("{} is missing: build it with `cargo build --release -p leaktrace`", options.leaktrace.display());
    }
    let started = *STARTED.get_or_init(Instant::now);
    let plan = Plan::new(options.quick);
    let root = workspace_root();
    let scratch = options.out.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let max_sites = plan.stack_points.iter().copied().max().unwrap_or(1000);
    let env = Env {
        workload: workload::build(&root, &options.out, max_sites)?,
        leaktrace: options.leaktrace.canonicalize()?,
        bpftrace_script: root.join("bench/workload/memleak.bt"),
        memleak_script: root.join("bench/workload/memleak-bpfcc.py"),
        scratch,
    };
    if let Some(minutes) = options.soak {
        return soak::run(&env, minutes, &options.out);
    }
    // Timed runs without per-program statistics, whoever turned them on.
    let quiet = stats::BpfStats::set(false)?;
    let mut result = serde_json::Map::new();
    let mut machine = machine(&plan)?;
    machine["bpf_stats_enabled_before"] = json!(quiet.previous() == "1");
    result.insert("machine".into(), machine);
    if options.only.is_some() {
        return fleet::run_alone(&env, &fleet::FleetPlan::new(plan.quick), result, &options.out, started);
    }
    result.insert("commands".into(), commands(&env, &plan));
    result.insert("oneshot".into(), oneshot(&env, &plan)?);
    result.insert("floor_per_site".into(), cost::floor_per_site(&env, &plan)?);
    result.insert("sampled_accuracy".into(), cost::sampled_accuracy(&env, &plan)?);
    result.insert("startup".into(), cost::startup(&env, &plan)?);
    result.insert("moderate_rate".into(), moderate(&env, &plan)?);
    result.insert("footprint".into(), footprint(&env, &plan)?);
    result.insert("scale".into(), scale(&env, &plan)?);
    result.insert("kernel".into(), kernel(&env, &plan)?);
    result.insert("real_program".into(), real_program(&env, &plan)?);
    result.insert("bpf_stats".into(), where_the_time_goes(&env, &plan)?);
    result.insert("fleet".into(), fleet::run(&env, &fleet::FleetPlan::new(plan.quick))?);
    drop(quiet);
    let mut result = Value::Object(result);
    derived(&mut result);
    result["targets"] = targets(&result);
    result["machine"]["bench_seconds"] = json!(round(started.elapsed().as_secs_f64(), 1));
    let json_path = options.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)? + "\n")?;
    let table = markdown(&result) + &fleet::markdown(&result["fleet"]);
    std::fs::write(options.out.join("bench.md"), &table)?;
    println!("{table}");
    eprintln!("bench: wrote {} and bench.md in {:.0} s", json_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn first_line(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn machine(plan: &Plan) -> Result<Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1)).unwrap_or("").trim();
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let hypervisor = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    Ok(json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "cpu_model": model,
        "cpus": cpus,
        "virtual_machine": hypervisor,
        "memory_gib": round(mem_kb as f64 / 1024.0 / 1024.0, 1),
        "quick": plan.quick,
        "tools": {
            "leaktrace": env!("CARGO_PKG_VERSION"),
            "bpftrace": first_line(Command::new("bpftrace").arg("--version")),
            "heaptrack": first_line(Command::new("heaptrack").arg("--version")),
            "valgrind": first_line(Command::new("valgrind").arg("--version")),
            "memleak": format!("bcc memleak-bpfcc {}", first_line(Command::new("dpkg-query").args(["-W", "--showformat=${Version}", "bpfcc-tools"]))),
            "memleak_kernel_headers": std::fs::read_link(format!("/lib/modules/{}/build", std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()))
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "jq": first_line(Command::new("jq").arg("--version")),
            "cc": first_line(Command::new("cc").arg("--version")),
        },
    }))
}

fn commands(env: &Env, plan: &Plan) -> Value {
    let w = env.workload.display();
    let lt = env.leaktrace.display();
    let n = plan.oneshot_ops;
    json!([
        format!("{w} oneshot {n}"),
        format!("floor: empty uprobe+uretprobe on every allocator function leaktrace hooks, uprobe on free, launched held before exec, then {w} oneshot {n}"),
        format!("{lt} [--unwind fp|dwarf] --json FILE -- {w} oneshot {n}"),
        format!("BPFTRACE_MAP_KEYS_MAX=65536 bpftrace -p PID bench/workload/memleak.bt (PID: {w} --wait oneshot {n})"),
        format!(
            "PYTHONUNBUFFERED=1 /usr/bin/python3 bench/workload/memleak-bpfcc.py -p PID {} (memleak-bpfcc with Debian's bcc Python binding fixed; PID: {w} --wait oneshot {n}; the first report begun 250 ms after the workload's done)",
            tools::MEMLEAK_ONESHOT_OPTIONS.join(" ")
        ),
        format!("heaptrack -o FILE {w} oneshot {n}; heaptrack_print -f FILE.zst -l 1 -F LEAKED --flamegraph-cost-type leaked"),
        format!("valgrind --tool=memcheck --leak-check=full --show-leak-kinds=all --xml=yes --xml-file=FILE {w} oneshot {n}"),
        format!("{w} --wait steady {} SECS, each tool attached (-p) or launching it (memleak: python3 bench/workload/memleak-bpfcc.py -p PID, its defaults)", plan.steady_rate),
        format!("{lt} -p PID --json FILE 3600 (footprint and scale: {w} --wait oneshot N [OUTSTANDING])"),
        format!("{lt} -p PID -o 0 --json FILE 3600, then SIGINT (report time: {w} --wait stacks N)"),
        format!("{lt} --kernel-slab --json FILE 3600 while {w} syscalls {}", plan.kernel_iterations),
        format!("real program: jq -c '{}' FILE (FILE: generated JSON, {} bytes or a little more)", real::JQ_FILTER, plan.real_input_bytes),
        format!("real program under leaktrace: {lt} 3600 -- jq -c FILTER FILE"),
        "real program under valgrind: valgrind --tool=memcheck --leak-check=full --show-leak-kinds=all --xml=yes --xml-file=XML jq -c FILTER FILE".to_string(),
        "real program under heaptrack: heaptrack -o DATA jq -c FILTER FILE".to_string(),
        "real program under memleak: jq -c FILTER FILE forked and held before exec; PYTHONUNBUFFERED=1 /usr/bin/python3 bench/workload/memleak-bpfcc.py -p PID 3600; jq let through and timed from exec to exit".to_string(),
    ])
}

fn check_json(check: &LeakCheck) -> Value {
    json!({ "leaks_exact": check.exact, "mismatches": check.mismatches })
}

/// leaktrace's runs in the one-shot comparison: the default (`--unwind auto`: DWARF rows for
/// the C library, frame pointers for the workload, which keeps them) and each unwinder alone.
/// Then leaktrace's production mode, sampling (its leak figures are estimates, measured in
/// `sampled_accuracy`, not checked for exactness here).
const ONESHOT_LEAKTRACE_VARIANTS: [(&str, &[&str]); 4] = [
    ("leaktrace", &[]),
    ("leaktrace_fp", &["--unwind", "fp"]),
    ("leaktrace_dwarf", &["--unwind", "dwarf"]),
    ("leaktrace_sampled", tools::SAMPLED),
];

/// Rows of the one-shot table, in order.
fn oneshot_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = Tool::ALL.iter().map(|t| t.key()).collect();
    keys.splice(4..4, ["leaktrace_fp", "leaktrace_dwarf"]);
    keys
}

/// One-shot workload: every tool, interleaved, medians of ns per operation.
fn oneshot(env: &Env, plan: &Plan) -> Result<Value> {
    let a = args(&["oneshot", &plan.oneshot_ops.to_string()]);
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut checks: BTreeMap<&str, LeakCheck> = BTreeMap::new();
    let mut alloc_calls_per_op = 0.0;
    let merge = |checks: &mut BTreeMap<&str, LeakCheck>, key: &'static str, check: LeakCheck| match checks.get_mut(key)
    {
        Some(c) => c.merge(check),
        None => {
            checks.insert(key, check);
        }
    };
    for rep in 0..plan.reps {
        step(&format!("one-shot workload, repetition {} of {}", rep + 1, plan.reps));
        let out = tools::untraced(env, &a)?;
        alloc_calls_per_op = out.alloc_calls as f64 / out.ops as f64;
        samples.entry("untraced").or_default().push(out.ns_per_op());
        samples.entry("floor").or_default().push(tools::floor(env, &a)?.ns_per_op());
        for (key, options) in ONESHOT_LEAKTRACE_VARIANTS {
            let (out, check) = tools::leaktrace_launch(env, &a, options)?;
            samples.entry(key).or_default().push(out.ns_per_op());
            if key != Tool::LeaktraceSampled.key() {
                merge(&mut checks, key, check);
            }
        }
        let (out, check) = tools::bpftrace(env, &a)?;
        samples.entry("bpftrace").or_default().push(out.ns_per_op());
        merge(&mut checks, "bpftrace", check);
        let (out, check) = tools::memleak(env, &a)?;
        samples.entry("memleak").or_default().push(out.ns_per_op());
        merge(&mut checks, "memleak", check);
        let (out, check) = tools::heaptrack(env, &a, true)?;
        samples.entry("heaptrack").or_default().push(out.ns_per_op());
        merge(&mut checks, "heaptrack", check.expect("leaks checked"));
        let (out, check) = tools::valgrind(env, &a)?;
        samples.entry("valgrind").or_default().push(out.ns_per_op());
        merge(&mut checks, "valgrind", check);
    }
    let base = median(&samples["untraced"]);
    let floor_added = median(&samples["floor"]) - base;
    let mut tools_json = serde_json::Map::new();
    for key in oneshot_keys() {
        let m = median(&samples[key]);
        let mut entry = json!({
            "ns_per_op": round(m, 1),
            "samples_ns_per_op": samples[key].iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
        });
        if key != Tool::Untraced.key() {
            entry["slowdown"] = json!(round(m / base, 2));
            entry["added_ns_per_op"] = json!(round(m - base, 1));
            entry["ratio_to_floor"] = json!(round((m - base) / floor_added, 2));
        }
        if let Some(check) = checks.get(key) {
            entry["leaks"] = check_json(check);
        }
        if key == Tool::Memleak.key() {
            entry["leaks"]["note"] = json!(MEMLEAK_LEAK_NOTE);
        }
        tools_json.insert(key.into(), entry);
    }
    Ok(json!({
        "ops": plan.oneshot_ops,
        "alloc_calls_per_op": round(alloc_calls_per_op, 3),
        "repetitions": plan.reps,
        "tools": tools_json,
    }))
}

/// What memleak's leak report is, beside the truth.
const MEMLEAK_LEAK_NOTE: &str =
    "memleak reports bytes and allocations per stack, so per-site figures are compared like the others'. \
It also probes mmap and munmap: glibc serves leak_large's 200 KiB malloc with mmap, so memleak records the mapping, \
its page-rounded length (208896 B), with a stack taken inside libc (sysmalloc_mmap), where the frame-pointer walk ends \
(libc keeps no frame pointers) before reaching leak_large; malloc's own return then finds its size already consumed.";

/// Steady rate: target CPU per tool.
fn moderate(env: &Env, plan: &Plan) -> Result<Value> {
    let mut target: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut tracer: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut achieved: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for rep in 0..plan.steady_reps {
        for tool in Tool::ALL {
            step(&format!(
                "moderate rate ({}/s, {:.1} s), {} repetition {} of {}",
                plan.steady_rate,
                plan.steady_window.as_secs_f64(),
                tool.key(),
                rep + 1,
                plan.steady_reps
            ));
            let cpu = tools::steady(env, tool, plan.steady_rate, plan.steady_warmup, plan.steady_window)?;
            target.entry(tool.key()).or_default().push(cpu.target_pct);
            achieved.entry(tool.key()).or_default().push(cpu.achieved_rate);
            if let Some(t) = cpu.tracer_pct {
                tracer.entry(tool.key()).or_default().push(t);
            }
        }
    }
    let base = median(&target["untraced"]);
    let mut tools_json = serde_json::Map::new();
    for tool in Tool::ALL {
        let key = tool.key();
        let pct = median(&target[key]);
        let mut entry = json!({
            "target_cpu_pct": round(pct, 2),
            "achieved_allocs_per_s": round(median(&achieved[key]), 0),
        });
        if tool != Tool::Untraced {
            entry["added_cpu_pct"] = json!(round(pct - base, 2));
        }
        if let Some(t) = tracer.get(key) {
            entry["tracer_cpu_pct"] = json!(round(median(t), 2));
        }
        tools_json.insert(key.into(), entry);
    }
    Ok(json!({
        "rate_allocs_per_s": plan.steady_rate,
        "window_s": plan.steady_window.as_secs_f64(),
        "repetitions": plan.steady_reps,
        "tools": tools_json,
    }))
}

/// leaktrace's own CPU and memory on the one-shot workload (attached with -p, so that its
/// rusage is its own and not the workload's).
fn footprint(env: &Env, plan: &Plan) -> Result<Value> {
    let a = args(&["oneshot", &plan.oneshot_ops.to_string()]);
    let (mut cpu, mut rss, mut maps, mut attached) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut check = LeakCheck { exact: true, mismatches: Vec::new() };
    for rep in 0..plan.footprint_reps {
        step(&format!("leaktrace footprint, repetition {} of {}", rep + 1, plan.footprint_reps));
        let run = tools::leaktrace_attached(env, &a)?;
        cpu.push(run.usage.cpu_s);
        rss.push(run.usage.max_rss_mib);
        attached.push(run.rss_attached_mib);
        maps.push(run.map_bytes as f64 / 1024.0 / 1024.0);
        check.merge(run.check);
    }
    Ok(json!({
        "ops": plan.oneshot_ops,
        "cpu_s": round(median(&cpu), 3),
        "peak_rss_mib": round(median(&rss), 1),
        "rss_once_attached_mib": round(median(&attached), 1),
        "bpf_maps_mib": round(median(&maps), 1),
        "leaks": check_json(&check),
    }))
}

/// Cost per operation and tracer memory against outstanding allocations; report time
/// against unique stacks.
fn scale(env: &Env, plan: &Plan) -> Result<Value> {
    let mut points = Vec::new();
    for &outstanding in &plan.scale_points {
        let a = args(&["oneshot", &plan.scale_ops.to_string(), &outstanding.to_string()]);
        let (mut base, mut traced, mut rss, mut maps, mut cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut check = LeakCheck { exact: true, mismatches: Vec::new() };
        for rep in 0..plan.scale_reps {
            step(&format!(
                "scale: {outstanding} outstanding allocations, repetition {} of {}",
                rep + 1,
                plan.scale_reps
            ));
            base.push(tools::untraced(env, &a)?.ns_per_op());
            let run = tools::leaktrace_attached(env, &a)?;
            traced.push(run.out.ns_per_op());
            rss.push(run.usage.max_rss_mib);
            cpu.push(run.usage.cpu_s);
            maps.push(run.map_bytes as f64 / 1024.0 / 1024.0);
            check.merge(run.check);
        }
        let (b, t) = (median(&base), median(&traced));
        points.push(json!({
            "outstanding": outstanding,
            "ops": plan.scale_ops,
            "untraced_ns_per_op": round(b, 1),
            "leaktrace_ns_per_op": round(t, 1),
            "added_ns_per_op": round(t - b, 1),
            "leaktrace_peak_rss_mib": round(median(&rss), 1),
            "leaktrace_cpu_s": round(median(&cpu), 2),
            "bpf_maps_mib": round(median(&maps), 1),
            "leaks": check_json(&check),
        }));
    }
    // The kernel's stack map keeps one stack per hash bucket and drops a colliding stack:
    // with the default 16384 slots, thousands of unique stacks collide often. The timed runs
    // use 262144 slots so that nearly every stack is in the report; one run per point with
    // the default shows what the default loses.
    let mut reports = Vec::new();
    for &sites in &plan.stack_points {
        let (mut build, mut json_s) = (Vec::new(), Vec::new());
        let (mut stacks, mut collisions) = (0, 0);
        let mut check = LeakCheck { exact: true, mismatches: Vec::new() };
        for rep in 0..plan.stack_reps {
            step(&format!("report time: {sites} unique stacks, repetition {} of {}", rep + 1, plan.stack_reps));
            let r = tools::report_time(env, sites, Some(REPORT_STACK_STORAGE))?;
            build.push(r.build_s);
            json_s.push(r.json_s);
            stacks = r.stacks;
            collisions = r.stack_collisions;
            check.merge(r.check);
        }
        step(&format!("report time: {sites} unique stacks, default --stack-storage-size"));
        let default = tools::report_time(env, sites, None)?;
        reports.push(json!({
            "unique_stacks": sites,
            "stack_storage_size": REPORT_STACK_STORAGE,
            "stacks_in_report": stacks,
            "stack_collisions": collisions,
            "report_s": round(median(&build), 3),
            "report_and_json_s": round(median(&json_s), 3),
            "leaks": check_json(&check),
            "default_storage": {
                "stacks_in_report": default.stacks,
                "stack_collisions": default.stack_collisions,
                "report_s": round(default.build_s, 3),
            },
        }));
    }
    Ok(json!({ "outstanding": points, "report": reports }))
}

/// Syscall loop: untraced, empty tracepoint programs, leaktrace --kernel-slab.
fn kernel(env: &Env, plan: &Plan) -> Result<Value> {
    let n = plan.kernel_iterations;
    let (mut base, mut floor, mut traced) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..plan.kernel_reps {
        step(&format!("kernel mode: {n} eventfd+close, repetition {} of {}", rep + 1, plan.kernel_reps));
        base.push(tools::untraced(env, &args(&["syscalls", &n.to_string()]))?.ns_per_op());
        floor.push(tools::kernel_floor(env, n)?.ns_per_op());
        traced.push(tools::kernel_leaktrace(env, n)?.ns_per_op());
    }
    let (b, f, t) = (median(&base), median(&floor), median(&traced));
    Ok(json!({
        "iterations": n,
        "repetitions": plan.kernel_reps,
        "untraced_ns_per_iteration": round(b, 1),
        "floor_ns_per_iteration": round(f, 1),
        "leaktrace_ns_per_iteration": round(t, 1),
        "floor_added_ns": round(f - b, 1),
        "leaktrace_added_ns": round(t - b, 1),
        "leaktrace_slowdown": round(t / b, 3),
        "ratio_to_floor": round((t - b) / (f - b), 2),
        "samples": { "untraced": base, "floor": floor, "leaktrace": traced },
    }))
}

/// Rows of the real-program table, in order (also the order of each repetition's runs).
const REAL_PROGRAM_KEYS: [&str; 5] = ["untraced", "leaktrace", "valgrind", "heaptrack", "memleak"];

/// A real allocation-heavy program: jq over a generated JSON file, the wall time of the whole
/// process untraced and under each tool, interleaved; medians and their ratios to untraced.
/// Each run's standard output must hold what jq printed untraced.
fn real_program(env: &Env, plan: &Plan) -> Result<Value> {
    let input = real::generate_input(&env.scratch.join("jq-input.json"), plan.real_input_bytes)?;
    step(&format!(
        "real program: generated {} ({} bytes, {} records)",
        input.path.display(),
        input.bytes,
        input.records
    ));
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut output_ok: BTreeMap<&str, bool> = REAL_PROGRAM_KEYS.iter().map(|k| (*k, true)).collect();
    let mut alloc_calls = None;
    let mut expected = String::new();
    for rep in 0..plan.real_reps {
        for key in REAL_PROGRAM_KEYS {
            step(&format!("real program: jq, {key}, repetition {} of {}", rep + 1, plan.real_reps));
            let run = match key {
                "untraced" => real::untraced(&input)?,
                "leaktrace" => real::leaktrace(env, &input)?,
                "valgrind" => real::valgrind(env, &input)?,
                "heaptrack" => {
                    let (run, data) = real::heaptrack(env, &input)?;
                    if alloc_calls.is_none() {
                        alloc_calls = real::heaptrack_alloc_calls(&data);
                    }
                    run
                }
                _ => real::memleak(env, &input)?,
            };
            if expected.is_empty() {
                expected = run.stdout.trim().to_string();
            }
            let ok = !expected.is_empty() && run.stdout.contains(&expected);
            output_ok.entry(key).and_modify(|o| *o &= ok);
            samples.entry(key).or_default().push(run.wall_s);
        }
    }
    let base = median(&samples["untraced"]);
    let mut tools_json = serde_json::Map::new();
    for key in REAL_PROGRAM_KEYS {
        let m = median(&samples[key]);
        let mut entry = json!({
            "wall_s": round(m, 3),
            "samples_s": samples[key].iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
            "output_ok": output_ok[key],
        });
        if key != "untraced" {
            entry["ratio_to_untraced"] = json!(round(m / base, 2));
            entry["added_s"] = json!(round(m - base, 3));
            if let Some(calls) = alloc_calls.filter(|c| *c > 0) {
                entry["added_us_per_alloc_call"] = json!(round((m - base) / calls as f64 * 1e6, 2));
            }
        }
        tools_json.insert(key.into(), entry);
    }
    Ok(json!({
        "program": "jq",
        "version": first_line(Command::new("jq").arg("--version")),
        "filter": real::JQ_FILTER,
        "input_bytes": input.bytes,
        "input_records": input.records,
        "alloc_calls": alloc_calls,
        "repetitions": plan.real_reps,
        "timing": "wall time of the whole process: for leaktrace (launch mode) its start-up and final report included; \
                   for memleak jq's own, from exec to exit, memleak attached beforehand to jq held before exec",
        "tools": tools_json,
    }))
}

/// Per-program run time with kernel.bpf_stats_enabled=1, for the floor, leaktrace and
/// bpftrace on the one-shot workload and for the kernel-mode programs on the syscall loop.
fn where_the_time_goes(env: &Env, plan: &Plan) -> Result<Value> {
    step("where the time goes: per-program run time (kernel.bpf_stats_enabled=1)");
    let _enabled = stats::BpfStats::set(true)?;
    let wait_args = args(&["--wait", "oneshot", &plan.oneshot_ops.to_string()]);
    let me = std::process::id();
    let mut out = serde_json::Map::new();

    // Floor, attached to the waiting workload; then with the return program walking the
    // user stack and nothing else.
    for (key, return_program) in
        [("floor", names::PROG_FLOOR_RETURN), ("floor_user_stack", names::PROG_FLOOR_STACK_RETURN)]
    {
        let mut w = proc::Waiting::spawn(Command::new(&env.workload).args(&wait_args), Duration::from_secs(30))?;
        let allocator = leaktrace::process::find_allocator(w.pid, None, "", &[])?;
        let floor = tools::floor_user_with(&allocator, w.pid, return_program)?;
        let before = stats::snapshot(me);
        w.go()?;
        let lines = w.wait_done(tools::RUN_TIMEOUT)?;
        let after = stats::snapshot(me);
        w.finish(tools::RUN_TIMEOUT)?;
        drop(floor);
        let o = workload::parse(&lines)?;
        let mut d = stats::delta(&before, &after, o.ops);
        d["ns_per_op"] = json!(round(o.ns_per_op(), 1));
        out.insert(key.into(), d);
    }

    // leaktrace -p, with each unwinder: the return program's time shows what unwinding costs.
    for (key, unwind, sample) in [
        ("leaktrace", "auto", "0"),
        ("leaktrace_fp", "fp", "0"),
        ("leaktrace_dwarf", "dwarf", "0"),
        ("leaktrace_sampled", "auto", "512K"),
    ] {
        let mut w = proc::Waiting::spawn(Command::new(&env.workload).args(&wait_args), Duration::from_secs(30))?;
        let json_path = env.scratch.join("leaktrace-stats.json");
        let mut options: Vec<String> =
            vec!["--unwind".into(), unwind.into(), "--json".into(), json_path.display().to_string()];
        if sample != "0" {
            options.extend(["--sample-bytes".into(), sample.into()]);
        }
        options.push("3600".into());
        let tracer = tools::start_leaktrace(env, w.pid, &options)?;
        let before = stats::snapshot(tracer.child.id());
        w.go()?;
        let lines = w.wait_done(tools::RUN_TIMEOUT)?;
        let after = stats::snapshot(tracer.child.id());
        w.finish(tools::RUN_TIMEOUT)?;
        tracer.wait(tools::RUN_TIMEOUT)?;
        let o = workload::parse(&lines)?;
        let mut d = stats::delta(&before, &after, o.ops);
        d["ns_per_op"] = json!(round(o.ns_per_op(), 1));
        out.insert(key.into(), d);
    }

    // bpftrace -p.
    let mut w = proc::Waiting::spawn(Command::new(&env.workload).args(&wait_args), Duration::from_secs(30))?;
    let tracer = tools::start_bpftrace(env, &w)?;
    let before = stats::snapshot(tracer.child.id());
    w.go()?;
    let lines = w.wait_done(tools::RUN_TIMEOUT)?;
    let after = stats::snapshot(tracer.child.id());
    tracer.stop(libc::SIGINT, tools::RUN_TIMEOUT)?;
    w.finish(tools::RUN_TIMEOUT)?;
    let o = workload::parse(&lines)?;
    let mut d = stats::delta(&before, &after, o.ops);
    d["ns_per_op"] = json!(round(o.ns_per_op(), 1));
    out.insert("bpftrace".into(), d);

    // Kernel mode: empty tracepoint programs, then leaktrace --kernel-slab.
    let syscalls = args(&["syscalls", &plan.kernel_iterations.to_string()]);
    for (key, kernel_stacks) in [("kernel_floor", false), ("kernel_floor_kernel_stack", true)] {
        let floor = tools::floor_kernel(kernel_stacks)?;
        let before = stats::snapshot(me);
        let o = tools::untraced(env, &syscalls)?;
        let after = stats::snapshot(me);
        drop(floor);
        let mut d = stats::delta(&before, &after, o.ops);
        d["ns_per_op"] = json!(round(o.ns_per_op(), 1));
        out.insert(key.into(), d);
    }

    let json_path = env.scratch.join("leaktrace-kernel-stats.json");
    let mut tracer = proc::TracerProcess::spawn(
        Command::new(&env.leaktrace).arg("--kernel-slab").arg("--json").arg(&json_path).arg("3600"),
    )?;
    tracer.wait_for_either(Duration::from_secs(60), |l| l.starts_with("Tracing kernel allocations"))?;
    let before = stats::snapshot(tracer.child.id());
    let o = tools::untraced(env, &syscalls)?;
    let after = stats::snapshot(tracer.child.id());
    tracer.stop(libc::SIGINT, tools::RUN_TIMEOUT)?;
    let mut d = stats::delta(&before, &after, o.ops);
    d["ns_per_op"] = json!(round(o.ns_per_op(), 1));
    out.insert("kernel_leaktrace".into(), d);
    Ok(Value::Object(out))
}

/// Per-event figures: probe hits per operation and tracepoint events per iteration, counted
/// by the floor programs' run counts with bpf_stats on, divide the added times.
fn derived(r: &mut Value) {
    let runs_per_op = |run: &str| -> f64 {
        r["bpf_stats"][run]["programs"].as_array().into_iter().flatten().filter_map(|p| p["runs_per_op"].as_f64()).sum()
    };
    let hits = runs_per_op("floor");
    let events = runs_per_op("kernel_floor");
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let floor_added = f(&r["oneshot"]["tools"]["floor"]["added_ns_per_op"]);
    let leaktrace_added = f(&r["oneshot"]["tools"]["leaktrace"]["added_ns_per_op"]);
    r["oneshot"]["probe_hits_per_op"] = json!(round(hits, 3));
    r["oneshot"]["floor_added_ns_per_probe_hit"] = json!(round(floor_added / hits, 1));
    r["oneshot"]["leaktrace_added_ns_per_probe_hit"] = json!(round(leaktrace_added / hits, 1));
    // DWARF against frame-pointer unwinding, per operation (one malloc+free and more) and
    // beyond the floor, which both pay alike.
    let fp_added = f(&r["oneshot"]["tools"]["leaktrace_fp"]["added_ns_per_op"]);
    let dwarf_added = f(&r["oneshot"]["tools"]["leaktrace_dwarf"]["added_ns_per_op"]);
    r["oneshot"]["unwinding"] = json!({
        "fp_added_ns_per_op": fp_added,
        "dwarf_added_ns_per_op": dwarf_added,
        "floor_added_ns_per_op": floor_added,
        "dwarf_to_fp_added": round(dwarf_added / fp_added, 2),
        "dwarf_to_fp_beyond_floor": round((dwarf_added - floor_added) / (fp_added - floor_added), 2),
    });
    let k_floor = f(&r["kernel"]["floor_added_ns"]);
    let k_leaktrace = f(&r["kernel"]["leaktrace_added_ns"]);
    r["kernel"]["events_per_iteration"] = json!(round(events, 3));
    r["kernel"]["floor_added_ns_per_event"] = json!(round(k_floor / events, 1));
    r["kernel"]["leaktrace_added_ns_per_event"] = json!(round(k_leaktrace / events, 1));
}

/// The cost targets, against the figures (reported, never asserted).
fn targets(r: &Value) -> Value {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let o = &r["oneshot"]["tools"];
    let added = |key: &str| f(&o[key]["added_ns_per_op"]);
    let to_memleak = added("leaktrace") / added("memleak");
    let ratio = f(&o["leaktrace"]["ratio_to_floor"]);
    let sampled_to_full = added("leaktrace_sampled") / added("leaktrace");
    let added_cpu = f(&r["moderate_rate"]["tools"]["leaktrace"]["added_cpu_pct"]);
    let kernel_ratio = f(&r["kernel"]["ratio_to_floor"]);
    let rss = f(&r["footprint"]["peak_rss_mib"]);
    let real = &r["real_program"]["tools"];
    let real_ratio = f(&real["leaktrace"]["wall_s"]) / f(&real["valgrind"]["wall_s"]);
    let startup = f(&r["startup"]["launch_to_main_s"]);
    let attach = f(&r["startup"]["attach_until_probes_live_s"]);
    // Sites of at least 1 MiB whose estimate fell within 10 % in at least 19 of 20 runs (95 %).
    let accuracy: Vec<String> = r["sampled_accuracy"]["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{} {}/{}", s["site"].as_str().unwrap_or(""), fmt(&s["runs_within_10pct"]), fmt(&s["runs"])))
        .collect();
    let all_accurate = r["sampled_accuracy"]["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|s| f(&s["runs_within_10pct"]) >= 0.95 * f(&s["runs"]));
    let churn = f(&r["sampled_accuracy"]["churn_stacks_holding_memory"]);
    json!([
        { "target": "full tracing: added cost <= 0.4x bcc memleak's", "value": round(to_memleak, 3), "met": to_memleak <= 0.4 },
        { "target": "full tracing: added cost <= 1.5x empty programs at the same sites", "value": ratio, "met": ratio <= 1.5 },
        { "target": "10,000 allocations/s: <= 8 % of a CPU added to the target", "value": added_cpu, "met": added_cpu <= 8.0 },
        { "target": "sampled (512 KiB): added cost <= 0.5x full tracing", "value": round(sampled_to_full, 3), "met": sampled_to_full <= 0.5 },
        { "target": "sampled: every leak of >= 1 MiB within 10 % in >= 95 % of runs", "value": accuracy.join(", "), "met": all_accurate },
        { "target": "sampled: no churn stack holds memory", "value": churn, "met": churn == 0.0 },
        { "target": "real program (jq): full tracing faster than valgrind", "value": round(real_ratio, 3), "met": real_ratio < 1.0 },
        { "target": "start-up: launch until the command runs < 0.5 s", "value": startup, "met": startup < 0.5 },
        { "target": "start-up: attach until probes are live < 0.5 s", "value": attach, "met": attach < 0.5 },
        { "target": "kernel mode within 1.5x of empty tracepoint programs (added cost)", "value": kernel_ratio, "met": kernel_ratio <= 1.5 },
        { "target": "leaktrace peak RSS <= 25 MB on the one-shot workload", "value": rss, "met": rss * 1.048_576 <= 25.0 },
    ])
}

fn fmt(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                format!("{x}")
            }
        }
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Null => "–".to_string(),
        other => other.to_string(),
    }
}

/// The tables of docs/benchmarks.md, from the JSON.
fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {} GiB, kernel {}{}.\n",
        fmt(&m["cpus"]),
        m["cpu_model"].as_str().unwrap_or(""),
        fmt(&m["memory_gib"]),
        m["kernel"].as_str().unwrap_or(""),
        if m["virtual_machine"] == true { ", virtual machine" } else { "" }
    );
    let o = &r["oneshot"];
    let _ = writeln!(
        s,
        "One-shot workload: {} operations ({} allocation calls per operation, each block freed), median of {} interleaved repetitions.\n",
        fmt(&o["ops"]),
        fmt(&o["alloc_calls_per_op"]),
        fmt(&o["repetitions"])
    );
    s.push_str(
        "| tool | ns/op | slowdown | added ns/op | added vs floor | leak sites exact |\n|---|---|---|---|---|---|\n",
    );
    for key in oneshot_keys() {
        let t = &o["tools"][key];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            key,
            fmt(&t["ns_per_op"]),
            fmt(&t["slowdown"]),
            fmt(&t["added_ns_per_op"]),
            fmt(&t["ratio_to_floor"]),
            fmt(&t["leaks"]["leaks_exact"])
        );
    }
    let fs = &r["floor_per_site"];
    let _ = writeln!(
        s,
        "\nFloor per probe site: one empty entry program at one site, one-shot workload, median of {} repetitions; untraced {} ns/op.\n",
        fmt(&fs["repetitions"]),
        fmt(&fs["untraced_ns_per_op"])
    );
    s.push_str(
        "| site | kernel | leaktrace's site | hits/op | added ns/op | ns per hit |\n|---|---|---|---|---|---|\n",
    );
    for site in fs["sites"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            site["site"].as_str().unwrap_or(""),
            site["handling"].as_str().unwrap_or(""),
            if site["chosen"] == true { "yes" } else { "" },
            fmt(&site["hits_per_op"]),
            fmt(&site["added_ns_per_op"]),
            fmt(&site["ns_per_hit"])
        );
    }
    let sa = &r["sampled_accuracy"];
    let _ = writeln!(
        s,
        "\nSampled estimates (--sample-bytes 512K), {} runs of `workload sampled N`; median {} blocks tracked per run; churn stacks holding memory: {}.\n",
        fmt(&sa["runs"]),
        fmt(&sa["median_sampled_blocks"]),
        fmt(&sa["churn_stacks_holding_memory"])
    );
    s.push_str("| site | bytes | block size | expected relative SD | runs within ±10 % | median estimate |\n|---|---|---|---|---|---|\n");
    for site in sa["sites"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {}/{} | {} |",
            site["site"].as_str().unwrap_or(""),
            fmt(&site["bytes"]),
            fmt(&site["block_size"]),
            fmt(&site["expected_relative_sd"]),
            fmt(&site["runs_within_10pct"]),
            fmt(&site["runs"]),
            fmt(&site["median_estimate"])
        );
    }
    let st = &r["startup"];
    let _ = writeln!(
        s,
        "\nStart-up: launch until the command's main {} s ({} s sampled); attach until the probes are live {} s.",
        fmt(&st["launch_to_main_s"]),
        fmt(&st["launch_sampled_to_main_s"]),
        fmt(&st["attach_until_probes_live_s"])
    );
    let mr = &r["moderate_rate"];
    let _ = writeln!(
        s,
        "\nModerate rate: {} allocation calls/s, CPU over {} s windows, median of {} repetitions.\n",
        fmt(&mr["rate_allocs_per_s"]),
        fmt(&mr["window_s"]),
        fmt(&mr["repetitions"])
    );
    s.push_str(
        "| tool | target CPU % | added CPU % | tracer process CPU % | achieved allocs/s |\n|---|---|---|---|---|\n",
    );
    for tool in Tool::ALL {
        let t = &mr["tools"][tool.key()];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            tool.key(),
            fmt(&t["target_cpu_pct"]),
            fmt(&t["added_cpu_pct"]),
            fmt(&t["tracer_cpu_pct"]),
            fmt(&t["achieved_allocs_per_s"])
        );
    }
    if let Some(note) = o["tools"]["memleak"]["leaks"]["note"].as_str() {
        let mismatches: Vec<&str> = o["tools"]["memleak"]["leaks"]["mismatches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = writeln!(
            s,
            "\nmemleak's leak sites: {} {note}",
            if mismatches.is_empty() { "all exact.".to_string() } else { format!("{}.", mismatches.join("; ")) }
        );
    }
    let _ = writeln!(
        s,
        "\nProbe hits per operation: {} (counted by the floor programs); added ns per probe hit: floor {}, leaktrace {}.",
        fmt(&o["probe_hits_per_op"]),
        fmt(&o["floor_added_ns_per_probe_hit"]),
        fmt(&o["leaktrace_added_ns_per_probe_hit"])
    );
    let u = &o["unwinding"];
    let _ = writeln!(
        s,
        "\nUnwinding: added ns/op with frame pointers (kernel walk) {}, with DWARF rows for every module {} ({}x; beyond the floor {}x); floor {}.",
        fmt(&u["fp_added_ns_per_op"]),
        fmt(&u["dwarf_added_ns_per_op"]),
        fmt(&u["dwarf_to_fp_added"]),
        fmt(&u["dwarf_to_fp_beyond_floor"]),
        fmt(&u["floor_added_ns_per_op"])
    );
    let fp = &r["footprint"];
    let _ = writeln!(
        s,
        "\nleaktrace footprint on the one-shot workload (-p): {} s CPU, peak RSS {} MiB ({} MiB once attached, before the workload ran), BPF maps {} MiB, leak sites exact: {}.\n",
        fmt(&fp["cpu_s"]),
        fmt(&fp["peak_rss_mib"]),
        fmt(&fp["rss_once_attached_mib"]),
        fmt(&fp["bpf_maps_mib"]),
        fmt(&fp["leaks"]["leaks_exact"])
    );
    s.push_str("| outstanding allocations | untraced ns/op | leaktrace ns/op | added ns/op | leaktrace peak RSS MiB | leaktrace CPU s | BPF maps MiB | exact |\n|---|---|---|---|---|---|---|---|\n");
    for p in r["scale"]["outstanding"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(&p["outstanding"]),
            fmt(&p["untraced_ns_per_op"]),
            fmt(&p["leaktrace_ns_per_op"]),
            fmt(&p["added_ns_per_op"]),
            fmt(&p["leaktrace_peak_rss_mib"]),
            fmt(&p["leaktrace_cpu_s"]),
            fmt(&p["bpf_maps_mib"]),
            fmt(&p["leaks"]["leaks_exact"])
        );
    }
    s.push_str("\n| unique stacks | --stack-storage-size | stacks in report | collisions | report built (s) | report + JSON written (s) | default size: stacks in report | default size: collisions |\n|---|---|---|---|---|---|---|---|\n");
    for p in r["scale"]["report"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(&p["unique_stacks"]),
            fmt(&p["stack_storage_size"]),
            fmt(&p["stacks_in_report"]),
            fmt(&p["stack_collisions"]),
            fmt(&p["report_s"]),
            fmt(&p["report_and_json_s"]),
            fmt(&p["default_storage"]["stacks_in_report"]),
            fmt(&p["default_storage"]["stack_collisions"])
        );
    }
    let rp = &r["real_program"];
    let _ = writeln!(
        s,
        "\nReal program: {} -c '{}' on a generated JSON file of {} bytes ({} records; {} allocation calls, counted by heaptrack), median of {} interleaved repetitions. Wall time of the whole process: leaktrace's includes its start-up and final report; memleak's is jq's own, from exec to exit (memleak attached to jq held before exec).\n",
        rp["version"].as_str().unwrap_or("jq"),
        rp["filter"].as_str().unwrap_or(""),
        fmt(&rp["input_bytes"]),
        fmt(&rp["input_records"]),
        fmt(&rp["alloc_calls"]),
        fmt(&rp["repetitions"])
    );
    s.push_str("| tool | wall s | x untraced | added s | added µs per allocation call | output as untraced |\n|---|---|---|---|---|---|\n");
    for key in REAL_PROGRAM_KEYS {
        let t = &rp["tools"][key];
        let _ = writeln!(
            s,
            "| {key} | {} | {} | {} | {} | {} |",
            fmt(&t["wall_s"]),
            fmt(&t["ratio_to_untraced"]),
            fmt(&t["added_s"]),
            fmt(&t["added_us_per_alloc_call"]),
            fmt(&t["output_ok"])
        );
    }
    let k = &r["kernel"];
    let _ = writeln!(
        s,
        "\nKernel mode: {} eventfd()+close() iterations, median of {} repetitions.\n\n| run | ns/iteration | added ns/iteration |\n|---|---|---|\n| untraced | {} | |\n| empty tracepoint programs | {} | {} |\n| leaktrace --kernel-slab | {} | {} |\n\nleaktrace added / floor added: {}; tracepoint events per iteration: {}; added ns per event: floor {}, leaktrace {}\n",
        fmt(&k["iterations"]),
        fmt(&k["repetitions"]),
        fmt(&k["untraced_ns_per_iteration"]),
        fmt(&k["floor_ns_per_iteration"]),
        fmt(&k["floor_added_ns"]),
        fmt(&k["leaktrace_ns_per_iteration"]),
        fmt(&k["leaktrace_added_ns"]),
        fmt(&k["ratio_to_floor"]),
        fmt(&k["events_per_iteration"]),
        fmt(&k["floor_added_ns_per_event"]),
        fmt(&k["leaktrace_added_ns_per_event"])
    );
    s.push_str("Per-program run time (kernel.bpf_stats_enabled=1):\n\n| run | program | runs/op | avg ns | ns/op |\n|---|---|---|---|---|\n");
    if let Some(runs) = r["bpf_stats"].as_object() {
        for (run, d) in runs {
            for p in d["programs"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "| {run} | {} | {} | {} | {} |",
                    p["name"].as_str().unwrap_or(""),
                    fmt(&p["runs_per_op"]),
                    fmt(&p["avg_ns"]),
                    fmt(&p["per_op_ns"])
                );
            }
        }
    }
    s.push_str("\n| target | value | met |\n|---|---|---|\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "| {} | {} | {} |", t["target"].as_str().unwrap_or(""), fmt(&t["value"]), fmt(&t["met"]));
    }
    s
}
