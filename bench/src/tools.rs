//! One run of the workload under each tool.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use leaktrace::{
    bpf::Tracer,
    process::{self, launch},
};
use leaktrace_common::names;

use crate::{
    proc::{self, TracerProcess, Waiting},
    workload::{self, LeakCheck, Output},
};

/// leaktrace's production mode as benchmarked: sampling once per 512 KiB on average.
pub const SAMPLED: &[&str] = &["--sample-bytes", "512K"];

/// Generous limits: a run that takes longer has hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Paths of everything the runs use.
pub struct Env {
    /// The compiled workload.
    pub workload: PathBuf,
    /// target/release/leaktrace.
    pub leaktrace: PathBuf,
    /// The bpftrace script template.
    pub bpftrace_script: PathBuf,
    /// bench/workload/memleak-bpfcc.py: bcc's memleak-bpfcc with Debian's Python binding fixed.
    pub memleak_script: PathBuf,
    /// Scratch directory for reports.
    pub scratch: PathBuf,
}

impl Env {
    fn workload_command(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.workload);
        c.args(args);
        c
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }
}

/// Arguments as owned strings.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The workload, untraced.
pub fn untraced(env: &Env, a: &[String]) -> Result<Output> {
    let text = proc::output(&mut env.workload_command(a))?;
    workload::parse(&workload::lines(&text))
}

/// A tracer of empty programs: floor_enter/floor_return wherever leaktrace attaches its
/// entry and return programs (every allocator function it hooks), scoped to `pid`.
pub fn floor_user(allocator: &leaktrace::allocator::AllocatorObject, pid: u32) -> Result<Tracer> {
    floor_user_with(allocator, pid, names::PROG_FLOOR_RETURN)
}

/// [`floor_user`] with another return program (floor_stack_return: only the stack walk).
pub fn floor_user_with(
    allocator: &leaktrace::allocator::AllocatorObject,
    pid: u32,
    return_program: &str,
) -> Result<Tracer> {
    let mut tracer = Tracer::load_floor()?;
    for f in &allocator.functions {
        tracer.attach_uprobe(names::PROG_FLOOR_ENTER, &f.symbol, &f.object, (f.probe_offset(), 0), pid)?;
        if f.function.returns_block {
            tracer.attach_uprobe(return_program, &f.symbol, &f.object, (f.probe_offset(), 0), pid)?;
        }
    }
    Ok(tracer)
}

/// Empty programs on the four slab tracepoints leaktrace --kernel-slab uses; with
/// `kernel_stacks`, the two allocation events get floor_kstack (only the stack walk).
pub fn floor_kernel(kernel_stacks: bool) -> Result<Tracer> {
    let mut tracer = Tracer::load_floor()?;
    for (program, category, event) in names::PROG_FLOOR_SLAB {
        let program = if kernel_stacks && (event == "kmalloc" || event == "kmem_cache_alloc") {
            names::PROG_FLOOR_KSTACK
        } else {
            program
        };
        tracer.attach_tracepoint(program, category, event)?;
    }
    Ok(tracer)
}

/// The workload launched held before exec, with the floor attached from its first allocation.
pub fn floor(env: &Env, a: &[String]) -> Result<Output> {
    let allocator = process::find_allocator_for_program(&env.workload, None, "")?;
    let mut command = env.workload_command(a);
    command.stdout(Stdio::piped()).stdin(Stdio::null());
    let held = launch::hold_command(command)?;
    let tracer = floor_user(&allocator, held.pid)?;
    let child = held.release()?;
    let out = child.wait_with_output()?;
    drop(tracer);
    if !out.status.success() {
        bail!("the workload failed under the floor programs ({})", out.status);
    }
    workload::parse(&workload::lines(&String::from_utf8_lossy(&out.stdout)))
}

/// The workload launched held before exec, with one empty entry program at file offset
/// `offset` of the C library and nothing else: the cost of one probe site.
/// Returns the workload's output and how many times per operation the program ran (counted
/// only while `kernel.bpf_stats_enabled` is on, 0 otherwise).
pub fn floor_at(env: &Env, a: &[String], offset: u64) -> Result<(Output, f64)> {
    let allocator = process::find_allocator_for_program(&env.workload, None, "")?;
    floor_at_in(env.workload_command(a), &allocator.path, offset)
}

/// [`floor_at`] for any workload command, with the probe at file offset `offset` of `object`
/// (an allocator library the command loads).
pub fn floor_at_in(mut command: Command, object: &Path, offset: u64) -> Result<(Output, f64)> {
    command.stdout(Stdio::piped()).stdin(Stdio::null());
    let held = launch::hold_command(command)?;
    let mut tracer = Tracer::load_floor()?;
    tracer.attach_uprobe(names::PROG_FLOOR_ENTER, "site", object, (offset, 0), held.pid)?;
    let before = crate::stats::snapshot(std::process::id());
    let child = held.release()?;
    let out = child.wait_with_output()?;
    let after = crate::stats::snapshot(std::process::id());
    drop(tracer);
    if !out.status.success() {
        bail!("the workload failed under one floor probe ({})", out.status);
    }
    let out = workload::parse(&workload::lines(&String::from_utf8_lossy(&out.stdout)))?;
    let hits = crate::stats::delta(&before, &after, out.ops)["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["runs_per_op"].as_f64())
        .sum();
    Ok((out, hits))
}

/// `leaktrace --json FILE -- workload …`: the timing, and the report checked against the truth.
pub fn leaktrace_launch(env: &Env, a: &[String], options: &[&str]) -> Result<(Output, LeakCheck)> {
    let json = env.scratch("leaktrace-oneshot.json");
    let _ = std::fs::remove_file(&json);
    let mut command = Command::new(&env.leaktrace);
    command.args(options).arg("--json").arg(&json).arg("--").arg(&env.workload).args(a).stderr(Stdio::null());
    let text = proc::output(&mut command)?;
    let out = workload::parse(&workload::lines(&text))?;
    let report = workload::read_json(&json)?;
    let check = LeakCheck::compare(&out.truth, |site| workload::leaktrace_totals(&report, site));
    Ok((out, check))
}

/// `leaktrace OPTIONS --json FILE -- workload …`, returning the report itself.
pub fn leaktrace_report(env: &Env, a: &[String], options: &[&str]) -> Result<(Output, serde_json::Value)> {
    let json = env.scratch("leaktrace-report.json");
    let _ = std::fs::remove_file(&json);
    let mut command = Command::new(&env.leaktrace);
    command.args(options).arg("--json").arg(&json).arg("--").arg(&env.workload).args(a).stderr(Stdio::null());
    let text = proc::output(&mut command)?;
    Ok((workload::parse(&workload::lines(&text))?, workload::read_json(&json)?))
}

/// What a `leaktrace -p` run measured.
pub struct Attached {
    /// The workload's output.
    pub out: Output,
    /// The report against the truth.
    pub check: LeakCheck,
    /// leaktrace's own CPU time and peak RSS.
    pub usage: proc::Usage,
    /// Summed `memlock` of its BPF maps when the workload finished.
    pub map_bytes: u64,
    /// leaktrace's resident set once attached, before the workload ran (MiB).
    pub rss_attached_mib: f64,
}

/// Starts `leaktrace -p PID extra…` on a waiting workload and waits until it has attached.
pub fn start_leaktrace(env: &Env, pid: u32, extra: &[String]) -> Result<TracerProcess> {
    let mut command = Command::new(&env.leaktrace);
    command.arg("-p").arg(pid.to_string()).args(extra);
    let mut tracer = TracerProcess::spawn(&mut command)?;
    tracer.wait_for_either(READY_TIMEOUT, |l| l.starts_with("Tracing "))?;
    Ok(tracer)
}

/// The workload started waiting, `leaktrace -p` attached, then let through; leaktrace ends
/// when the workload exits.
pub fn leaktrace_attached(env: &Env, a: &[String]) -> Result<Attached> {
    let json = env.scratch("leaktrace-attached.json");
    let _ = std::fs::remove_file(&json);
    let mut wait_args = vec!["--wait".to_string()];
    wait_args.extend_from_slice(a);
    let mut w = Waiting::spawn(&mut env.workload_command(&wait_args), READY_TIMEOUT)?;
    // One interval report an hour: the only report is the final one.
    let extra = vec!["--json".to_string(), json.display().to_string(), "3600".to_string()];
    let tracer = start_leaktrace(env, w.pid, &extra)?;
    let rss_attached_mib = proc::status_kb(tracer.child.id(), "VmRSS").unwrap_or(0) as f64 / 1024.0;
    w.go()?;
    let lines = w.wait_done(RUN_TIMEOUT)?;
    let (_, map_bytes) = proc::bpf_fds(tracer.child.id());
    w.finish(RUN_TIMEOUT)?;
    let (code, usage, _, err) = tracer.wait(RUN_TIMEOUT)?;
    if code != 0 {
        bail!("leaktrace -p exited with {code}: {err:?}");
    }
    let out = workload::parse(&lines)?;
    let report = workload::read_json(&json)?;
    let check = LeakCheck::compare(&out.truth, |site| workload::leaktrace_totals(&report, site));
    Ok(Attached { out, check, usage, map_bytes, rss_attached_mib })
}

/// The bpftrace script for `pid` and the C library at `libc`.
pub fn bpftrace_script(env: &Env, libc: &Path, pid: u32) -> Result<PathBuf> {
    let template = std::fs::read_to_string(&env.bpftrace_script)?;
    let script = template.replace("LIBC", &libc.display().to_string()).replace("PID", &pid.to_string());
    let path = env.scratch("memleak.bt");
    std::fs::write(&path, script)?;
    Ok(path)
}

/// Starts bpftrace on a waiting workload and waits until its probes are attached.
pub fn start_bpftrace(env: &Env, w: &Waiting) -> Result<TracerProcess> {
    let allocator = process::find_allocator(w.pid, None, "", &[])?;
    let script = bpftrace_script(env, &allocator.path, w.pid)?;
    let mut command = Command::new("bpftrace");
    // Room for every outstanding block (the default is 4096 keys per map).
    command.env("BPFTRACE_MAP_KEYS_MAX", "65536").arg("-p").arg(w.pid.to_string()).arg(&script);
    let mut tracer = TracerProcess::spawn(&mut command)?;
    tracer.wait_for_either(READY_TIMEOUT, |l| l.starts_with("Attaching "))?;
    // bpftrace prints "Attaching N probes..." before attaching them: wait for one perf event
    // per probe (the script has 8), and a little longer for its signal handlers.
    let deadline = Instant::now() + READY_TIMEOUT;
    while proc::perf_event_fds(tracer.child.id()) < 8 {
        if Instant::now() > deadline {
            bail!("bpftrace did not attach its 8 probes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(tracer)
}

/// bpftrace with the memleak-like script, attached with -p to the waiting workload; its map
/// dump is taken (SIGINT) while the workload is still alive, so that stacks have names.
pub fn bpftrace(env: &Env, a: &[String]) -> Result<(Output, LeakCheck)> {
    let mut wait_args = vec!["--wait".to_string()];
    wait_args.extend_from_slice(a);
    let mut w = Waiting::spawn(&mut env.workload_command(&wait_args), READY_TIMEOUT)?;
    let tracer = start_bpftrace(env, &w)?;
    w.go()?;
    let lines = w.wait_done(RUN_TIMEOUT)?;
    let (_, _, dump, err) = tracer.stop(libc::SIGINT, RUN_TIMEOUT)?;
    w.finish(RUN_TIMEOUT)?;
    let out = workload::parse(&lines)?;
    let totals = workload::bpftrace_totals(&dump);
    if totals.is_empty() {
        bail!("bpftrace printed no outstanding allocation; stderr: {err:?}");
    }
    let check = LeakCheck::compare(&out.truth, |site| totals.get(site).copied().unwrap_or_default());
    Ok((out, check))
}

/// Options of the one-shot memleak run: every outstanding allocation whatever its age (`-o 0`;
/// the default hides those younger than 500 ms), every stack (`-T`, default 10), and a report
/// every second (the only way to get one: on SIGINT memleak exits without reporting).
/// bcc 0.26 has no --max-outstanding: its map holds 1,000,000 allocations.
pub const MEMLEAK_ONESHOT_OPTIONS: [&str; 5] = ["-o", "0", "-T", "1000000", "1"];

/// Probes memleak attaches to a glibc target: entry and return probes on malloc, calloc,
/// realloc, mmap, posix_memalign, valloc, memalign, pvalloc and aligned_alloc, entry probes on
/// free and munmap; each is one perf event.
const MEMLEAK_PROBES: usize = 20;

/// `python3 bench/workload/memleak-bpfcc.py -p PID options…` (the script runs Debian's
/// /usr/sbin/memleak-bpfcc with bcc's Python binding fixed), unbuffered so that each report
/// header arrives when memleak starts the report.
pub fn memleak_command(env: &Env, pid: u32, options: &[&str]) -> Command {
    // The system interpreter: bcc's Python module is Debian's python3-bpfcc.
    let mut c = Command::new("/usr/bin/python3");
    c.env("PYTHONUNBUFFERED", "1").arg(&env.memleak_script).arg("-p").arg(pid.to_string()).args(options);
    c
}

/// Starts memleak on process `pid` and waits until all its probes are attached. It compiles
/// its eBPF program first (a second or two), then prints "Attaching to pid …" and attaches.
pub fn start_memleak(env: &Env, pid: u32, options: &[&str]) -> Result<TracerProcess> {
    let mut tracer = TracerProcess::spawn(&mut memleak_command(env, pid, options))?;
    tracer.wait_for_either(READY_TIMEOUT, |l| l.starts_with("Attaching to pid"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while proc::perf_event_fds(tracer.child.id()) < MEMLEAK_PROBES {
        if Instant::now() > deadline || matches!(tracer.child.try_wait(), Ok(Some(_))) {
            bail!(
                "memleak did not attach its {MEMLEAK_PROBES} probes (it holds {}); stderr: {:?}",
                proc::perf_event_fds(tracer.child.id()),
                tracer.err.drain(Duration::from_secs(1))
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(tracer)
}

/// Whether a memleak output line starts a report ("[12:00:00] Top N stacks with outstanding
/// allocations:").
fn memleak_report_header(line: &str) -> bool {
    line.starts_with('[') && line.contains("stacks with outstanding allocations")
}

/// The lines of the first whole report memleak started at or after `not_before`.
fn memleak_report(tracer: &mut TracerProcess, not_before: Instant) -> Result<Vec<String>> {
    loop {
        let Some((at, _)) = tracer.out.wait_for(READY_TIMEOUT, memleak_report_header) else {
            bail!("memleak printed no report; stderr: {:?}", tracer.err.drain(Duration::from_secs(1)));
        };
        if at >= not_before {
            break;
        }
    }
    let start = tracer.out.seen.len();
    // The report is complete when the next one starts.
    if tracer.out.wait_for(RUN_TIMEOUT, memleak_report_header).is_none() {
        bail!("memleak's report did not end; stderr: {:?}", tracer.err.drain(Duration::from_secs(1)));
    }
    Ok(tracer.out.seen[start..tracer.out.seen.len() - 1].to_vec())
}

/// bcc's memleak attached with -p to the waiting workload. Its report is read while the
/// workload is still alive (memleak symbolizes through /proc/PID), from the first report it
/// began at least 250 ms after the workload printed `done`, so after the leaks were made.
pub fn memleak(env: &Env, a: &[String]) -> Result<(Output, LeakCheck)> {
    let mut wait_args = vec!["--wait".to_string()];
    wait_args.extend_from_slice(a);
    let mut w = Waiting::spawn(&mut env.workload_command(&wait_args), READY_TIMEOUT)?;
    let mut tracer = start_memleak(env, w.pid, &MEMLEAK_ONESHOT_OPTIONS)?;
    w.go()?;
    let lines = w.wait_done(RUN_TIMEOUT)?;
    let report = memleak_report(&mut tracer, Instant::now() + Duration::from_millis(250))?;
    let (_, _, _, err) = tracer.stop(libc::SIGINT, RUN_TIMEOUT)?;
    w.finish(RUN_TIMEOUT)?;
    let out = workload::parse(&lines)?;
    let totals = workload::memleak_totals(&report);
    if totals.is_empty() {
        bail!("memleak reported no outstanding allocation; report: {report:?}; stderr: {err:?}");
    }
    let check = LeakCheck::compare(&out.truth, |site| totals.get(site).copied().unwrap_or_default());
    Ok((out, check))
}

/// heaptrack launching the workload; leaks read back with heaptrack_print.
pub fn heaptrack(env: &Env, a: &[String], check_leaks: bool) -> Result<(Output, Option<LeakCheck>)> {
    let base = env.scratch("heaptrack");
    let data = env.scratch("heaptrack.zst");
    let _ = std::fs::remove_file(&data);
    let text = proc::output(Command::new("heaptrack").arg("-o").arg(&base).arg(&env.workload).args(a))?;
    let out = workload::parse(&workload::lines(&text))?;
    if !check_leaks {
        return Ok((out, None));
    }
    let flame = env.scratch("heaptrack-leaked.txt");
    let leaks = proc::output(
        Command::new("heaptrack_print")
            .arg("-f")
            .arg(&data)
            .args(["-p", "0", "-a", "0", "-T", "0", "-l", "1", "--flamegraph-cost-type", "leaked", "-F"])
            .arg(&flame),
    )?;
    let flame = std::fs::read_to_string(&flame).context("heaptrack_print wrote no flame graph")?;
    let totals = workload::heaptrack_totals(&flame, &leaks);
    let check = LeakCheck::compare(&out.truth, |site| totals.get(site).copied().unwrap_or_default());
    Ok((out, Some(check)))
}

/// The valgrind command line (memcheck, every leak kind, XML).
pub fn valgrind_command(xml: &Path) -> Command {
    let mut c = Command::new("valgrind");
    c.args(["--tool=memcheck", "--leak-check=full", "--show-leak-kinds=all", "--xml=yes"])
        .arg(format!("--xml-file={}", xml.display()));
    c
}

/// valgrind memcheck launching the workload.
pub fn valgrind(env: &Env, a: &[String]) -> Result<(Output, LeakCheck)> {
    let xml = env.scratch("memcheck.xml");
    let text = proc::output(valgrind_command(&xml).arg(&env.workload).args(a))?;
    let out = workload::parse(&workload::lines(&text))?;
    let totals = workload::valgrind_totals(&std::fs::read_to_string(&xml)?);
    let check = LeakCheck::compare(&out.truth, |site| totals.get(site).copied().unwrap_or_default());
    Ok((out, check))
}

/// The tools compared at a moderate allocation rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// No tracer.
    Untraced,
    /// Empty uprobes.
    Floor,
    /// leaktrace -p.
    Leaktrace,
    /// leaktrace -p --sample-bytes 512K.
    LeaktraceSampled,
    /// bpftrace -p with the memleak-like script.
    Bpftrace,
    /// bcc's memleak -p.
    Memleak,
    /// heaptrack launching the workload.
    Heaptrack,
    /// valgrind memcheck launching the workload.
    Valgrind,
}

impl Tool {
    /// Every tool, in table order.
    pub const ALL: [Tool; 8] = [
        Tool::Untraced,
        Tool::Floor,
        Tool::Leaktrace,
        Tool::LeaktraceSampled,
        Tool::Bpftrace,
        Tool::Memleak,
        Tool::Heaptrack,
        Tool::Valgrind,
    ];

    /// Its key in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Tool::Untraced => "untraced",
            Tool::Floor => "floor",
            Tool::Leaktrace => "leaktrace",
            Tool::LeaktraceSampled => "leaktrace_sampled",
            Tool::Bpftrace => "bpftrace",
            Tool::Memleak => "memleak",
            Tool::Heaptrack => "heaptrack",
            Tool::Valgrind => "valgrind",
        }
    }
}

/// CPU use of the target (and of the tracer, where it is a separate process) over a window
/// of steady-rate work.
#[derive(Clone, Copy, Debug)]
pub struct SteadyCpu {
    /// Target CPU, % of one CPU.
    pub target_pct: f64,
    /// Tracer process CPU, % of one CPU (None when the tool has no separate process).
    pub tracer_pct: Option<f64>,
    /// Allocation calls per second the workload achieved over its whole run.
    pub achieved_rate: f64,
}

/// The steady-rate workload under `tool`: target (and tracer) CPU between `warmup` and
/// `warmup + window` after it is let through.
pub fn steady(env: &Env, tool: Tool, rate: u64, warmup: Duration, window: Duration) -> Result<SteadyCpu> {
    let seconds = (warmup + window).as_secs_f64() + 0.5;
    let wl = args(&["--wait", "steady", &rate.to_string(), &format!("{seconds:.3}")]);
    let mut command = match tool {
        Tool::Heaptrack => {
            let mut c = Command::new("heaptrack");
            c.arg("-o").arg(env.scratch("heaptrack-steady")).arg(&env.workload).args(&wl);
            c
        }
        Tool::Valgrind => {
            let mut c = valgrind_command(&env.scratch("memcheck-steady.xml"));
            c.arg(&env.workload).args(&wl);
            c
        }
        _ => env.workload_command(&wl),
    };
    let mut w = Waiting::spawn(&mut command, READY_TIMEOUT)?;
    let mut floor_tracer = None;
    let mut tracer = None;
    match tool {
        Tool::Floor => {
            let allocator = process::find_allocator(w.pid, None, "", &[])?;
            floor_tracer = Some(floor_user(&allocator, w.pid)?);
        }
        // Default settings: a report every 5 s, as someone watching a service would run it.
        Tool::Leaktrace => tracer = Some(start_leaktrace(env, w.pid, &[])?),
        Tool::LeaktraceSampled => tracer = Some(start_leaktrace(env, w.pid, &args(SAMPLED))?),
        Tool::Bpftrace => tracer = Some(start_bpftrace(env, &w)?),
        // Its defaults too: a report of the top 10 stacks of allocations older than 500 ms
        // every 5 s.
        Tool::Memleak => tracer = Some(start_memleak(env, w.pid, &[])?),
        _ => {}
    }
    let started = w.go()?;
    std::thread::sleep(warmup);
    let tracer_pid = match tool {
        Tool::Leaktrace | Tool::LeaktraceSampled | Tool::Bpftrace | Tool::Memleak => {
            tracer.as_ref().map(|t| t.child.id())
        }
        Tool::Heaptrack => proc::pids_named("heaptrack_inter").first().copied(),
        _ => None,
    };
    let t0 = Instant::now();
    let target0 = proc::cpu_ticks(w.pid);
    let tracer0 = tracer_pid.and_then(proc::cpu_ticks);
    std::thread::sleep(window);
    let target1 = proc::cpu_ticks(w.pid);
    let tracer1 = tracer_pid.and_then(proc::cpu_ticks);
    let wall = t0.elapsed().as_secs_f64();
    let lines = w.wait_done(RUN_TIMEOUT)?;
    let tracer = match tracer {
        Some(t) if tool == Tool::Bpftrace || tool == Tool::Memleak => {
            t.stop(libc::SIGINT, RUN_TIMEOUT)?;
            None
        }
        other => other,
    };
    w.finish(RUN_TIMEOUT)?;
    if let Some(t) = tracer {
        t.wait(RUN_TIMEOUT)?;
    }
    drop(floor_tracer);
    let out = workload::parse(&lines)?;
    let hz = proc::ticks_per_second();
    let pct = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / hz / wall * 100.0);
    let target_pct = pct(target0, target1).context("the target's /proc/PID/stat could not be read")?;
    let _ = started;
    Ok(SteadyCpu {
        target_pct,
        tracer_pct: pct(tracer0, tracer1),
        achieved_rate: out.alloc_calls as f64 / (out.elapsed_ns as f64 / 1e9),
    })
}

/// How long leaktrace takes to build its final report for a waiting workload holding one
/// block from each of `sites` unique stacks: from SIGINT to the "Final report" line (after
/// reading, aggregating and symbolizing), and to the JSON file being written.
pub struct ReportTime {
    /// SIGINT → the report built (its header printed).
    pub build_s: f64,
    /// SIGINT → JSON written.
    pub json_s: f64,
    /// Stacks in the JSON.
    pub stacks: usize,
    /// Allocations recorded without a stack because their stack collided in the stack map.
    pub stack_collisions: u64,
    /// The unique-stack blocks against the truth.
    pub check: LeakCheck,
}

/// Measures [`ReportTime`]; `stack_storage` sets --stack-storage-size.
pub fn report_time(env: &Env, sites: usize, stack_storage: Option<u32>) -> Result<ReportTime> {
    let json = env.scratch("leaktrace-stacks.json");
    let _ = std::fs::remove_file(&json);
    let mut w =
        Waiting::spawn(&mut env.workload_command(&args(&["--wait", "stacks", &sites.to_string()])), READY_TIMEOUT)?;
    let mut extra = vec!["-o".into(), "0".into(), "--json".into(), json.display().to_string(), "3600".into()];
    if let Some(storage) = stack_storage {
        extra.extend(["--stack-storage-size".to_string(), storage.to_string()]);
    }
    let mut tracer = start_leaktrace(env, w.pid, &extra)?;
    w.go()?;
    let lines = w.wait_done(RUN_TIMEOUT)?;
    let t0 = Instant::now();
    tracer.signal(libc::SIGINT);
    let built = tracer.out.wait_for(RUN_TIMEOUT, |l| l.starts_with("Final report"));
    let written = tracer.err.wait_for(RUN_TIMEOUT, |l| l.starts_with("Wrote JSON report"));
    let (code, _, _, err) = tracer.wait(RUN_TIMEOUT)?;
    w.finish(RUN_TIMEOUT)?;
    let (Some((built, _)), Some((written, _))) = (built, written) else {
        bail!("leaktrace printed no final report (exit {code}); stderr: {err:?}");
    };
    let out = workload::parse(&lines)?;
    let report = workload::read_json(&json)?;
    let check = LeakCheck::compare(&out.truth, |site| workload::leaktrace_totals(&report, &format!("{site}_")));
    Ok(ReportTime {
        build_s: built.duration_since(t0).as_secs_f64(),
        json_s: written.duration_since(t0).as_secs_f64(),
        stacks: workload::leaktrace_stack_count(&report),
        stack_collisions: report["lost"]["stack_collision"].as_u64().unwrap_or(0),
        check,
    })
}

/// The syscall loop under `leaktrace --kernel-slab` (whole machine, as by default).
pub fn kernel_leaktrace(env: &Env, iterations: u64) -> Result<Output> {
    let json = env.scratch("leaktrace-kernel.json");
    let mut command = Command::new(&env.leaktrace);
    command.arg("--kernel-slab").arg("--json").arg(&json).arg("3600");
    let mut tracer = TracerProcess::spawn(&mut command)?;
    tracer.wait_for_either(READY_TIMEOUT, |l| l.starts_with("Tracing kernel allocations"))?;
    let out = untraced(env, &args(&["syscalls", &iterations.to_string()]));
    let (code, _, _, err) = tracer.stop(libc::SIGINT, RUN_TIMEOUT)?;
    if code != 0 {
        bail!("leaktrace --kernel-slab exited with {code}: {err:?}");
    }
    out
}

/// The syscall loop with empty programs on the same tracepoints.
pub fn kernel_floor(env: &Env, iterations: u64) -> Result<Output> {
    let tracer = floor_kernel(false)?;
    let out = untraced(env, &args(&["syscalls", &iterations.to_string()]));
    drop(tracer);
    out
}
