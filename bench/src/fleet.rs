//! Many processes and every allocator family: the cost per operation with 1, 4 and 16 traced
//! processes, with each allocator family leaktrace knows, and what launch mode's system-wide
//! probes cost processes that are not traced. Run with the rest of the benchmark, or alone
//! with `leaktrace-bench --only fleet`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{
    proc::{self, TracerProcess},
    stats::{median, round},
    step,
    tools::{self, args, Env},
    workload::{self, LeakCheck, Output},
};

/// How much to run: full sizes (about 200 s on the benchmark VM), or `--quick` ones (about 30 s).
pub struct FleetPlan {
    reps: usize,
    /// Traced process counts of the fleet runs.
    counts: Vec<u64>,
    /// Operations per worker.
    fleet_ops: u64,
    /// Operations of each allocator family's run.
    family_ops: u64,
    /// Operations of the untraced workload beside a system-wide leaktrace.
    bystander_ops: u64,
}

impl FleetPlan {
    /// The sizes for a full or a `--quick` run.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self { reps: 1, counts: vec![1, 4, 16], fleet_ops: 2_000, family_ops: 5_000, bystander_ops: 5_000 }
        } else {
            Self { reps: 5, counts: vec![1, 4, 16], fleet_ops: 20_000, family_ops: 50_000, bystander_ops: 50_000 }
        }
    }
}

/// The three parts, as one JSON object.
pub fn run(env: &Env, plan: &FleetPlan) -> Result<Value> {
    let cxx = build_cxx_workload(env)?;
    Ok(json!({
        "commands": commands(env, &cxx, plan),
        "processes": processes(env, plan)?,
        "families": families(env, &cxx, plan)?,
        "family_probe_sites": family_probe_sites(env, plan)?,
        "system_wide": system_wide(env, plan)?,
    }))
}

/// `--only fleet`: this section alone, beside the machine's description already in `result`;
/// writes bench.json and bench.md into `out` as the whole benchmark does.
pub fn run_alone(
    env: &Env,
    plan: &FleetPlan,
    mut result: serde_json::Map<String, Value>,
    out: &Path,
    started: std::time::Instant,
) -> Result<()> {
    result.insert("fleet".into(), run(env, plan)?);
    result["machine"]["bench_seconds"] = json!(round(started.elapsed().as_secs_f64(), 1));
    let json_path = out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)? + "\n")?;
    let table = markdown(&result["fleet"]);
    std::fs::write(out.join("bench.md"), &table)?;
    println!("{table}");
    eprintln!("bench: wrote {} and bench.md in {:.0} s", json_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Compiles bench/workload/cxx.cc beside the workload, with the same flags.
fn build_cxx_workload(env: &Env) -> Result<PathBuf> {
    let dir = env.workload.parent().context("the workload has a directory")?;
    let program = dir.join("workload-cxx");
    let source = crate::workspace_root().join("bench/workload/cxx.cc");
    proc::output(Command::new("c++").args(workload::CFLAGS).arg("-o").arg(&program).arg(&source))
        .context("compiling the C++ workload")?;
    Ok(program)
}

fn commands(env: &Env, cxx: &Path, plan: &FleetPlan) -> Value {
    let (w, lt) = (env.workload.display(), env.leaktrace.display());
    json!([
        format!("{w} fleet N {} (N = {:?}), untraced", plan.fleet_ops, plan.counts),
        format!("{lt} --json FILE -- {w} fleet N {} (children followed, the launch default)", plan.fleet_ops),
        format!("[LD_PRELOAD=LIBRARY] {w} oneshot {}; {} oneshot {}", plan.family_ops, cxx.display(), plan.family_ops),
        format!(
            "[LD_PRELOAD=LIBRARY] {lt} --json FILE -- {w} oneshot {}; {lt} --json FILE -- {} oneshot {}",
            plan.family_ops,
            cxx.display(),
            plan.family_ops
        ),
        format!(
            "{w} oneshot {} while nothing, `{lt} -- sleep 3600` or `{lt} --no-follow -- sleep 3600` runs",
            plan.bystander_ops
        ),
    ])
}

/// One worker of `workload fleet`.
#[derive(Clone, Debug, PartialEq)]
struct Worker {
    pid: u32,
    elapsed_ns: u64,
    cpu_ns: u64,
    ops: u64,
}

/// The `WORKER pid elapsed_ns cpu_ns ops alloc_calls` lines, in order.
fn parse_workers(lines: &[String]) -> Result<Vec<Worker>> {
    let mut workers = Vec::new();
    for line in lines {
        let mut f = line.split_whitespace();
        if f.next() != Some("WORKER") {
            continue;
        }
        let mut field = || -> Result<u64> {
            f.next()
                .with_context(|| format!("short WORKER line {line:?}"))?
                .parse()
                .with_context(|| format!("{line:?}"))
        };
        let (pid, elapsed_ns, cpu_ns, ops) = (field()? as u32, field()?, field()?, field()?);
        workers.push(Worker { pid, elapsed_ns, cpu_ns, ops });
    }
    Ok(workers)
}

/// One fleet run: the master's output and each worker's.
struct FleetRun {
    out: Output,
    workers: Vec<Worker>,
}

impl FleetRun {
    fn parse(text: &str, count: u64) -> Result<Self> {
        let lines = workload::lines(text);
        let run = Self { out: workload::parse(&lines)?, workers: parse_workers(&lines)? };
        if run.workers.len() as u64 != count {
            bail!("workload fleet {count} printed {} WORKER lines: {lines:?}", run.workers.len());
        }
        Ok(run)
    }

    /// CPU nanoseconds per operation of the whole fleet (every worker's CPU over every op).
    fn cpu_ns_per_op(&self) -> f64 {
        let cpu: u64 = self.workers.iter().map(|w| w.cpu_ns).sum();
        let ops: u64 = self.workers.iter().map(|w| w.ops).sum();
        cpu as f64 / ops.max(1) as f64
    }

    /// Each worker's CPU nanoseconds per operation.
    fn per_worker_cpu(&self) -> impl Iterator<Item = f64> + '_ {
        self.workers.iter().map(|w| w.cpu_ns as f64 / w.ops.max(1) as f64)
    }

    /// Median over workers of the wall time of their loops, per operation.
    fn wall_ns_per_op(&self) -> f64 {
        median(&self.workers.iter().map(|w| w.elapsed_ns as f64 / w.ops.max(1) as f64).collect::<Vec<_>>())
    }
}

/// A leaktrace report against the fleet's truth: combined (every site N times one worker's
/// truth) and per worker (its share of each stack, from `holders`, equals its truth; and the
/// whole it holds, `processes[].totals`, equals the sum of its truth: nothing else held).
fn check_fleet(report: &Value, run: &FleetRun) -> (LeakCheck, LeakCheck) {
    let n = run.workers.len() as u64;
    let combined_truth: BTreeMap<String, (u64, u64)> =
        run.out.truth.iter().map(|(site, (b, c))| (site.clone(), (b * n, c * n))).collect();
    let combined = LeakCheck::compare(&combined_truth, |site| workload::leaktrace_totals(report, site));
    let mut per_process = LeakCheck { exact: !run.workers.is_empty(), mismatches: Vec::new() };
    let whole = run.out.truth.values().fold((0, 0), |(b, c), (tb, tc)| (b + tb, c + tc));
    for worker in &run.workers {
        let check = LeakCheck::compare(&run.out.truth, |site| holder_totals(report, site, worker.pid));
        per_process.merge(check);
        let held = process_totals(report, worker.pid);
        if held != whole {
            per_process.exact = false;
            per_process.mismatches.push(format!("pid {}: holds {held:?} in all, truth {whole:?}", worker.pid));
        }
    }
    (combined, per_process)
}

/// Bytes and count that process `pid` holds in the stacks naming `site`.
fn holder_totals(report: &Value, site: &str, pid: u32) -> (u64, u64) {
    let names_site =
        |s: &&Value| s["frames"].as_array().is_some_and(|f| f.iter().any(|f| f["symbol"].as_str() == Some(site)));
    report["stacks"].as_array().into_iter().flatten().filter(names_site).fold((0, 0), |(b, c), s| {
        let held = s["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["pid"].as_u64() == Some(pid.into()))
            .fold((0, 0), |(b, c), h| (b + h["bytes"].as_u64().unwrap_or(0), c + h["count"].as_u64().unwrap_or(0)));
        (b + held.0, c + held.1)
    })
}

/// `processes[].totals` of `pid`.
fn process_totals(report: &Value, pid: u32) -> (u64, u64) {
    report["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pid"].as_u64() == Some(pid.into()))
        .map_or((0, 0), |p| (p["totals"]["bytes"].as_u64().unwrap_or(0), p["totals"]["count"].as_u64().unwrap_or(0)))
}

/// `leaktrace --json FILE [options] -- program args`, with `envs` set for leaktrace and so
/// for the command it launches; the command's stdout and the report.
fn leaktrace_run(env: &Env, program: &Path, a: &[String], envs: &[(&str, &str)]) -> Result<(String, Value)> {
    let json = env.scratch.join("leaktrace-fleet.json");
    let _ = std::fs::remove_file(&json);
    let mut command = Command::new(&env.leaktrace);
    command.envs(envs.iter().copied()).arg("--json").arg(&json).arg("--").arg(program).args(a);
    command.stderr(std::process::Stdio::null());
    let text = proc::output(&mut command)?;
    Ok((text, workload::read_json(&json)?))
}

/// Samples of one fleet size.
#[derive(Default)]
struct FleetSamples {
    untraced_cpu: Vec<f64>,
    traced_cpu: Vec<f64>,
    untraced_wall: Vec<f64>,
    traced_wall: Vec<f64>,
    untraced_workers: Vec<f64>,
    traced_workers: Vec<f64>,
    combined: Option<LeakCheck>,
    per_process: Option<LeakCheck>,
    processes_in_report: Vec<f64>,
}

fn merge_into(slot: &mut Option<LeakCheck>, check: LeakCheck) {
    match slot {
        Some(c) => c.merge(check),
        None => *slot = Some(check),
    }
}

/// Part 1: N workers untraced and traced together (launched, children followed),
/// interleaved by repetition.
fn processes(env: &Env, plan: &FleetPlan) -> Result<Value> {
    let mut samples: BTreeMap<u64, FleetSamples> = BTreeMap::new();
    for rep in 0..plan.reps {
        for &n in &plan.counts {
            step(&format!("fleet: {n} processes, repetition {} of {}", rep + 1, plan.reps));
            let a = args(&["fleet", &n.to_string(), &plan.fleet_ops.to_string()]);
            let s = samples.entry(n).or_default();
            let untraced = FleetRun::parse(&proc::output(Command::new(&env.workload).args(&a))?, n)?;
            s.untraced_cpu.push(untraced.cpu_ns_per_op());
            s.untraced_wall.push(untraced.wall_ns_per_op());
            s.untraced_workers.extend(untraced.per_worker_cpu());
            let (text, report) = leaktrace_run(env, &env.workload, &a, &[])?;
            let traced = FleetRun::parse(&text, n)?;
            s.traced_cpu.push(traced.cpu_ns_per_op());
            s.traced_wall.push(traced.wall_ns_per_op());
            s.traced_workers.extend(traced.per_worker_cpu());
            s.processes_in_report.push(report["processes"].as_array().map_or(0, Vec::len) as f64);
            let (combined, per_process) = check_fleet(&report, &traced);
            merge_into(&mut s.combined, combined);
            merge_into(&mut s.per_process, per_process);
        }
    }
    let rows: Vec<Value> = samples.iter().map(|(n, s)| fleet_row(*n, s)).collect();
    Ok(json!({ "ops_per_process": plan.fleet_ops, "repetitions": plan.reps, "counts": rows }))
}

fn spread(samples: &[f64]) -> Value {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!([round(min, 1), round(max, 1)])
}

fn check_json(check: &Option<LeakCheck>) -> Value {
    let check = check.clone().unwrap_or_default();
    json!({ "leaks_exact": check.exact, "mismatches": check.mismatches })
}

fn fleet_row(n: u64, s: &FleetSamples) -> Value {
    let (u, t) = (median(&s.untraced_cpu), median(&s.traced_cpu));
    json!({
        "processes": n,
        "untraced_cpu_ns_per_op": round(u, 1),
        "traced_cpu_ns_per_op": round(t, 1),
        "added_cpu_ns_per_op": round(t - u, 1),
        "ratio": round(t / u, 2),
        "untraced_worker_spread": spread(&s.untraced_workers),
        "traced_worker_spread": spread(&s.traced_workers),
        "untraced_wall_ns_per_op": round(median(&s.untraced_wall), 1),
        "traced_wall_ns_per_op": round(median(&s.traced_wall), 1),
        "samples_traced_cpu_ns_per_op": s.traced_cpu.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
        "samples_untraced_cpu_ns_per_op": s.untraced_cpu.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
        "processes_in_report": median(&s.processes_in_report),
        "combined": check_json(&s.combined),
        "per_process": check_json(&s.per_process),
    })
}

/// An allocator family as the benchmark runs it: its key, the library preloaded into the
/// workload (none: glibc's own malloc), whether the run is the C++ workload, and the family
/// name leaktrace's report must list.
struct Family {
    key: &'static str,
    preload: Option<&'static str>,
    cxx: bool,
    family: &'static str,
}

/// Debian's libraries: libjemalloc2, libtcmalloc-minimal4, libmimalloc2.0 (`cargo xtask bench`
/// installs them).
const FAMILIES: [Family; 5] = [
    Family { key: "glibc", preload: None, cxx: false, family: "glibc" },
    Family { key: "jemalloc", preload: Some("libjemalloc.so.2"), cxx: false, family: "jemalloc" },
    Family { key: "tcmalloc", preload: Some("libtcmalloc_minimal.so.4"), cxx: false, family: "tcmalloc" },
    Family { key: "mimalloc", preload: Some("libmimalloc.so.2"), cxx: false, family: "mimalloc" },
    Family { key: "c++ new/delete", preload: None, cxx: true, family: "c++" },
];

/// The functions the two workloads call in their timed loops: the C API, and C++'s operators
/// (new, new[], aligned new, nothrow new; sized, array, aligned sized and plain delete).
const HOT_FUNCTIONS: [&str; 12] = [
    "malloc",
    "calloc",
    "realloc",
    "free",
    "_Znwm",
    "_Znam",
    "_ZnwmSt11align_val_t",
    "_ZnwmRKSt9nothrow_t",
    "_ZdlPvm",
    "_ZdaPv",
    "_ZdlPvmSt11align_val_t",
    "_ZdlPv",
];

/// Where the dynamic linker finds `soname`, from `ldconfig -p`
/// (`\tlibjemalloc.so.2 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libjemalloc.so.2`).
fn library_path(soname: &str) -> Result<PathBuf> {
    let cache = proc::output(Command::new("ldconfig").arg("-p"))?;
    cache
        .lines()
        .filter_map(|l| l.trim().split_once(" => "))
        .find(|(name, _)| name.split_whitespace().next() == Some(soname))
        .map(|(_, path)| PathBuf::from(path.trim()))
        .with_context(|| {
            format!("{soname} is not installed (Debian's libjemalloc2, libtcmalloc-minimal4, libmimalloc2.0)")
        })
}

/// Samples of one family.
#[derive(Default)]
struct FamilySamples {
    untraced: Vec<f64>,
    traced: Vec<f64>,
    check: Option<LeakCheck>,
    found: Vec<String>,
    probes: Vec<Value>,
}

/// Part 2: the one-shot workload with each allocator family, untraced and launched under
/// leaktrace, interleaved by repetition.
fn families(env: &Env, cxx: &Path, plan: &FleetPlan) -> Result<Value> {
    let a = args(&["oneshot", &plan.family_ops.to_string()]);
    let mut samples: Vec<FamilySamples> = FAMILIES.iter().map(|_| FamilySamples::default()).collect();
    for rep in 0..plan.reps {
        for (family, s) in FAMILIES.iter().zip(samples.iter_mut()) {
            step(&format!("allocator family {}, repetition {} of {}", family.key, rep + 1, plan.reps));
            let program = if family.cxx { cxx } else { env.workload.as_path() };
            let preload = family.preload.map(library_path).transpose()?.map(|p| p.display().to_string());
            let envs: Vec<(&str, &str)> = preload.iter().map(|p| ("LD_PRELOAD", p.as_str())).collect();
            let text = proc::output(Command::new(program).envs(envs.iter().copied()).args(&a))?;
            s.untraced.push(workload::parse(&workload::lines(&text))?.ns_per_op());
            let (text, report) = leaktrace_run(env, program, &a, &envs)?;
            let out = workload::parse(&workload::lines(&text))?;
            s.traced.push(out.ns_per_op());
            let check = LeakCheck::compare(&out.truth, |site| workload::leaktrace_totals(&report, site));
            s.found = found_families(&report);
            merge_into(&mut s.check, check);
            s.probes = hot_probes(&report);
        }
    }
    let rows: Vec<Value> = FAMILIES.iter().zip(&samples).map(|(f, s)| family_row(f, s)).collect();
    Ok(json!({ "ops": plan.family_ops, "repetitions": plan.reps, "families": rows }))
}

/// `family in object` for each entry of the report's `allocators`.
fn found_families(report: &Value) -> Vec<String> {
    report["allocators"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let object = a["object"].as_str().unwrap_or("");
            let file = Path::new(object).file_name().map_or(object.into(), |f| f.to_string_lossy());
            format!("{} in {file}", a["family"].as_str().unwrap_or("?"))
        })
        .collect()
}

/// The report's probes on the functions the loops call: name, offset and how the kernel runs
/// the probed instruction.
fn hot_probes(report: &Value) -> Vec<Value> {
    report["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["function"].as_str().is_some_and(|f| HOT_FUNCTIONS.contains(&f)))
        .map(|p| json!({ "function": p["function"], "offset": p["offset"], "handling": p["handling"] }))
        .collect()
}

fn family_row(family: &Family, s: &FamilySamples) -> Value {
    let (u, t) = (median(&s.untraced), median(&s.traced));
    let stepped: Vec<&Value> = s.probes.iter().filter(|p| p["handling"] != "emulated").collect();
    json!({
        "family": family.key,
        "preload": family.preload,
        "untraced_ns_per_op": round(u, 1),
        "traced_ns_per_op": round(t, 1),
        "added_ns_per_op": round(t - u, 1),
        "ratio": round(t / u, 2),
        "untraced_spread": spread(&s.untraced),
        "traced_spread": spread(&s.traced),
        "allocators_found": s.found,
        "family_probed": s.found.iter().any(|f| f.starts_with(&format!("{} in ", family.family))),
        "hot_probes": s.probes,
        "hot_probes_not_emulated": stepped,
        "leaks": check_json(&s.check),
    })
}

/// The C functions whose probe cost per hit is measured for each family.
const SITE_FUNCTIONS: [&str; 2] = ["malloc", "free"];

/// What the kernel charges per hit of one empty entry program at leaktrace's site of malloc
/// and of free in each family's library (as `floor_per_site` does for the C library): a
/// single-stepped site pays a second trap per call.
fn family_probe_sites(env: &Env, plan: &FleetPlan) -> Result<Value> {
    let a = args(&["oneshot", &plan.family_ops.to_string()]);
    let mut rows = Vec::new();
    for family in FAMILIES.iter().filter(|f| !f.cxx) {
        let preload = family.preload.map(library_path).transpose()?;
        let allocator = leaktrace::process::find_allocator_for_program(&env.workload, preload.as_deref(), "")?;
        let library = std::fs::read(&allocator.path)?;
        let command = || {
            let mut c = Command::new(&env.workload);
            c.args(&a);
            if let Some(p) = &preload {
                c.env("LD_PRELOAD", p);
            }
            c
        };
        let sites: Vec<_> = allocator
            .functions
            .iter()
            .filter(|f| f.object == allocator.path && SITE_FUNCTIONS.contains(&f.function.name))
            .collect();
        let (mut base, mut with): (Vec<f64>, Vec<Vec<f64>>) = (Vec::new(), vec![Vec::new(); sites.len()]);
        for rep in 0..plan.reps {
            step(&format!("floor per probe site of {}, repetition {} of {}", family.key, rep + 1, plan.reps));
            base.push(workload::parse(&workload::lines(&proc::output(&mut command())?))?.ns_per_op());
            for (f, samples) in sites.iter().zip(with.iter_mut()) {
                samples.push(tools::floor_at_in(command(), &allocator.path, f.probe_offset())?.0.ns_per_op());
            }
        }
        let _enabled = crate::stats::BpfStats::set(true)?;
        for (f, samples) in sites.iter().zip(&with) {
            let (_, hits) = tools::floor_at_in(command(), &allocator.path, f.probe_offset())?;
            let added = median(samples) - median(&base);
            rows.push(json!({
                "family": family.key,
                "site": format!("{}+{}", f.symbol, f.site.offset),
                "handling": leaktrace::probe_site::kernel_handling(&library[f.probe_offset() as usize..]),
                "hits_per_op": round(hits, 3),
                "added_ns_per_op": round(added, 1),
                "ns_per_hit": round(added / hits, 1),
            }));
        }
    }
    Ok(json!({ "ops": plan.family_ops, "repetitions": plan.reps, "sites": rows }))
}

/// Starts `leaktrace OPTIONS -- sleep 3600` and waits until its probes are attached (the
/// "Probes:" line follows the last attach).
fn start_bystander_tracer(env: &Env, options: &[&str]) -> Result<TracerProcess> {
    let mut command = Command::new(&env.leaktrace);
    command.args(options).args(["--", "sleep", "3600"]);
    let mut tracer = TracerProcess::spawn(&mut command)?;
    tracer.wait_for_either(Duration::from_secs(60), |l| l.starts_with("Probes:"))?;
    Ok(tracer)
}

/// Part 3: an untraced workload while a launched leaktrace runs, followed (the default: the
/// allocator's probes are on the C library for every process, filtered in eBPF) or not, and
/// with no leaktrace at all.
fn system_wide(env: &Env, plan: &FleetPlan) -> Result<Value> {
    let a = args(&["oneshot", &plan.bystander_ops.to_string()]);
    let runs: [(&str, Option<&[&str]>); 3] =
        [("none", None), ("followed", Some(&[])), ("no_follow", Some(&["--no-follow"]))];
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut calls_per_op = 0.0;
    for rep in 0..plan.reps {
        for (key, options) in runs {
            step(&format!("untraced workload beside leaktrace ({key}), repetition {} of {}", rep + 1, plan.reps));
            let tracer = options.map(|o| start_bystander_tracer(env, o)).transpose()?;
            let out = tools::untraced(env, &a);
            if let Some(tracer) = tracer {
                let (code, _, _, err) = tracer.stop(libc::SIGINT, tools::RUN_TIMEOUT)?;
                if code != 0 {
                    bail!("leaktrace {options:?} -- sleep exited with {code}: {err:?}");
                }
            }
            let out = out?;
            calls_per_op = (out.alloc_calls as f64 + out.ops as f64) / out.ops.max(1) as f64;
            samples.entry(key).or_default().push(out.ns_per_op());
        }
    }
    let base = median(&samples["none"]);
    let mut rows = serde_json::Map::new();
    for (key, _) in runs {
        let m = median(&samples[key]);
        let mut row = json!({ "ns_per_op": round(m, 1), "spread": spread(&samples[key]) });
        if key != "none" {
            row["added_ns_per_op"] = json!(round(m - base, 1));
            row["ratio"] = json!(round(m / base, 2));
            row["added_ns_per_allocator_call"] = json!(round((m - base) / calls_per_op, 1));
        }
        rows.insert(key.into(), row);
    }
    Ok(json!({
        "ops": plan.bystander_ops,
        "repetitions": plan.reps,
        "allocator_calls_per_op": round(calls_per_op, 3),
        "runs": rows,
    }))
}

fn fmt(v: &Value) -> String {
    crate::fmt(v)
}

/// The section's tables, for bench.md.
pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    processes_table(&mut s, &r["processes"]);
    families_table(&mut s, &r["families"]);
    probe_sites_table(&mut s, &r["family_probe_sites"]);
    system_wide_table(&mut s, &r["system_wide"]);
    s
}

/// The fleet sizes.
fn processes_table(s: &mut String, p: &Value) {
    let _ = writeln!(
        s,
        "\nMany processes: `workload fleet N {}` (N workers released together, each the one-shot loop), untraced and launched under leaktrace (children followed); CPU time (user + system) of the workers' loops per operation, median of {} interleaved repetitions; spread: lowest and highest single worker.\n",
        fmt(&p["ops_per_process"]),
        fmt(&p["repetitions"])
    );
    s.push_str("| processes | untraced CPU ns/op | traced CPU ns/op | added | ratio | untraced spread | traced spread | wall ns/op (untraced, traced) | leaks exact combined | per process |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for row in p["counts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {}–{} | {}–{} | {}, {} | {} | {} |",
            fmt(&row["processes"]),
            fmt(&row["untraced_cpu_ns_per_op"]),
            fmt(&row["traced_cpu_ns_per_op"]),
            fmt(&row["added_cpu_ns_per_op"]),
            fmt(&row["ratio"]),
            fmt(&row["untraced_worker_spread"][0]),
            fmt(&row["untraced_worker_spread"][1]),
            fmt(&row["traced_worker_spread"][0]),
            fmt(&row["traced_worker_spread"][1]),
            fmt(&row["untraced_wall_ns_per_op"]),
            fmt(&row["traced_wall_ns_per_op"]),
            fmt(&row["combined"]["leaks_exact"]),
            fmt(&row["per_process"]["leaks_exact"])
        );
    }
}

/// The allocator families.
fn families_table(s: &mut String, f: &Value) {
    let _ = writeln!(
        s,
        "\nAllocator families: `[LD_PRELOAD=LIBRARY] workload oneshot {}` and `workload-cxx oneshot {}`, untraced and launched under leaktrace, median of {} interleaved repetitions.\n",
        fmt(&f["ops"]),
        fmt(&f["ops"]),
        fmt(&f["repetitions"])
    );
    s.push_str("| family | untraced ns/op | traced ns/op | added | ratio | probes not emulated | families found | family probed | leak sites exact |\n|---|---|---|---|---|---|---|---|---|\n");
    for row in f["families"].as_array().into_iter().flatten() {
        let stepped: Vec<String> = row["hot_probes_not_emulated"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}+{} ({})",
                    fmt(&p["function"]).trim_matches('"'),
                    fmt(&p["offset"]),
                    fmt(&p["handling"]).trim_matches('"')
                )
            })
            .collect();
        let found: Vec<&str> =
            row["allocators_found"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row["family"].as_str().unwrap_or(""),
            fmt(&row["untraced_ns_per_op"]),
            fmt(&row["traced_ns_per_op"]),
            fmt(&row["added_ns_per_op"]),
            fmt(&row["ratio"]),
            if stepped.is_empty() { "none".to_string() } else { stepped.join(", ") },
            found.join("; "),
            fmt(&row["family_probed"]),
            fmt(&row["leaks"]["leaks_exact"])
        );
    }
}

/// The floor per probe site of each family.
fn probe_sites_table(s: &mut String, fs: &Value) {
    let _ = writeln!(
        s,
        "\nFloor per probe site per family: one empty entry program at leaktrace's site, `[LD_PRELOAD=LIBRARY] workload oneshot {}`, median of {} repetitions.\n",
        fmt(&fs["ops"]),
        fmt(&fs["repetitions"])
    );
    s.push_str("| family | site | kernel | hits/op | added ns/op | ns per hit |\n|---|---|---|---|---|---|\n");
    for row in fs["sites"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            row["family"].as_str().unwrap_or(""),
            row["site"].as_str().unwrap_or(""),
            row["handling"].as_str().unwrap_or(""),
            fmt(&row["hits_per_op"]),
            fmt(&row["added_ns_per_op"]),
            fmt(&row["ns_per_hit"])
        );
    }
}

/// The untraced workload beside a launched leaktrace.
fn system_wide_table(s: &mut String, w: &Value) {
    let _ = writeln!(
        s,
        "\nAn untraced `workload oneshot {}` while a launched leaktrace runs (`leaktrace [--no-follow] -- sleep 3600`), median of {} interleaved repetitions.\n",
        fmt(&w["ops"]),
        fmt(&w["repetitions"])
    );
    s.push_str("| leaktrace running | ns/op | spread | added ns/op | ratio | added ns per allocator call |\n|---|---|---|---|---|---|\n");
    for key in ["none", "followed", "no_follow"] {
        let row = &w["runs"][key];
        let _ = writeln!(
            s,
            "| {key} | {} | {}–{} | {} | {} | {} |",
            fmt(&row["ns_per_op"]),
            fmt(&row["spread"][0]),
            fmt(&row["spread"][1]),
            fmt(&row["added_ns_per_op"]),
            fmt(&row["ratio"]),
            fmt(&row["added_ns_per_allocator_call"])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_worker_lines() {
        let lines = workload::lines("WORKER 10 2000 1000 100 112\nELAPSED_NS 5\nWORKER 11 4000 3000 100 112\n");
        let workers = parse_workers(&lines).unwrap();
        assert_eq!(workers[1], Worker { pid: 11, elapsed_ns: 4000, cpu_ns: 3000, ops: 100 });
        let run = FleetRun { out: Output::default(), workers };
        assert_eq!(run.cpu_ns_per_op(), 20.0);
        assert_eq!(run.wall_ns_per_op(), 30.0);
        assert!(parse_workers(&workload::lines("WORKER 1 2\n")).is_err());
    }

    #[test]
    fn checks_a_fleet_report_per_process_and_combined() {
        let run = FleetRun {
            out: Output { truth: [("leak_a".to_string(), (200, 2))].into(), ..Output::default() },
            workers: vec![
                Worker { pid: 10, elapsed_ns: 1, cpu_ns: 1, ops: 1 },
                Worker { pid: 11, elapsed_ns: 1, cpu_ns: 1, ops: 1 },
            ],
        };
        let report = json!({
            "stacks": [{ "bytes": 400, "count": 4, "frames": [{ "symbol": "leak_a" }],
                "holders": [{ "pid": 10, "bytes": 200, "count": 2 }, { "pid": 11, "bytes": 200, "count": 2 }] }],
            "processes": [{ "pid": 10, "totals": { "bytes": 200, "count": 2 } }, { "pid": 11, "totals": { "bytes": 200, "count": 2 } }],
        });
        let (combined, per_process) = check_fleet(&report, &run);
        assert!(combined.exact && per_process.exact, "{combined:?} {per_process:?}");
        let mut wrong = report.clone();
        wrong["stacks"][0]["holders"][1]["count"] = json!(1);
        wrong["processes"][1]["totals"]["bytes"] = json!(300);
        let (combined, per_process) = check_fleet(&wrong, &run);
        assert!(combined.exact);
        assert!(!per_process.exact);
        assert_eq!(per_process.mismatches.len(), 2, "{per_process:?}");
    }
}
