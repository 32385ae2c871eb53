//! One tracing run: resolve the target, load and attach, report every interval, and produce
//! the final report when the target exits, the time is up, or on Ctrl-C / SIGTERM.

use std::{
    collections::{BTreeSet, HashMap},
    io::Write as _,
    process::Child,
    time::{Duration, Instant},
};

use leaktrace_common::{names, Counter, StackEnd};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    aggregate,
    allocator::AllocatorObject,
    bpf::{LoadOptions, Tracer, UnwindEvents},
    config::{Config, Target, UnwindMode},
    error::{Error, Result},
    privileges,
    report::{self, Activity, Allocation, Filters, Lost, Report, StackReport},
    sampling::Sampler,
    symbolize::Symbolizer,
    target::{self, launch, TargetInfo},
    trend::{self, Sample},
    unwind::{self, UnwindTables},
};

/// How often the target's mappings are re-read while it runs: often at first, when a
/// launched program is still loading its libraries, then at a slower pace.
const FAST_REFRESH: Duration = Duration::from_millis(20);
const FAST_REFRESH_FOR: Duration = Duration::from_secs(2);
const SLOW_REFRESH: Duration = Duration::from_millis(200);

/// What the shared tracing loop drives: the user-space session or the kernel one.
pub(crate) trait Traced {
    /// Called on every refresh tick; false once the traced target is gone (or, with
    /// `--run`, once its runs are done).
    fn poll(&mut self) -> Result<bool>;
    /// Takes a report (`final_report`: all stacks, for the files).
    fn report(&mut self, final_report: bool) -> Result<Report>;
    /// The dynamic linker changed a traced process's libraries and stopped it (see
    /// `UnwindEvents`): update what depends on its mappings and resume it.
    fn libraries_changed(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The next batch of library-change events, or never when there is no event source.
async fn next_library_change(events: &mut Option<UnwindEvents>) -> Result<()> {
    match events {
        Some(events) => events.next_batch().await.map(drop),
        None => std::future::pending().await,
    }
}

/// When and how often to report.
pub(crate) struct Schedule {
    /// Start of tracing.
    pub started: Instant,
    /// Between reports.
    pub interval: Option<Duration>,
    /// Number of interval reports.
    pub count: Option<u64>,
    /// Total tracing time.
    pub duration: Option<Duration>,
}

/// SIGINT and SIGTERM, caught from before the first probe is attached: a signal that
/// arrives while leaktrace is still setting up ends the trace with a report, it does not kill
/// leaktrace with probes half attached.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts catching SIGINT and SIGTERM.
    pub(crate) fn install() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(|e| Error::io("installing a SIGINT handler", e))?,
            terminate: signal(SignalKind::terminate()).map_err(|e| Error::io("installing a SIGTERM handler", e))?,
        })
    }
}

/// Runs until the target is gone, the time or count is up, or a signal arrives, printing a
/// report every interval.
pub(crate) async fn trace_loop(
    traced: &mut impl Traced,
    schedule: &Schedule,
    signals: &mut StopSignals,
    mut library_changes: Option<UnwindEvents>,
) -> Result<StopReason> {
    let far = Duration::from_secs(365 * 24 * 3600);
    let deadline = tokio::time::sleep(schedule.duration.unwrap_or(far));
    tokio::pin!(deadline);
    let interval = schedule.interval.unwrap_or(far);
    let mut reports = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut printed = 0u64;
    loop {
        let refresh_every = if schedule.started.elapsed() < FAST_REFRESH_FOR { FAST_REFRESH } else { SLOW_REFRESH };
        tokio::select! {
            _ = signals.interrupt.recv() => return Ok(StopReason::Interrupted),
            _ = signals.terminate.recv() => return Ok(StopReason::Terminated),
            () = &mut deadline => return Ok(StopReason::Duration),
            changed = next_library_change(&mut library_changes) => {
                changed?;
                traced.libraries_changed()?;
            }
            _ = reports.tick() => {
                let report = traced.report(false)?;
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(report::text::render(&report).as_bytes());
                let _ = stdout.flush();
                printed += 1;
                if schedule.count.is_some_and(|count| printed >= count) {
                    return Ok(StopReason::Count);
                }
            }
            () = tokio::time::sleep(refresh_every) => {
                if !traced.poll()? {
                    return Ok(StopReason::TargetExited);
                }
            }
        }
    }
}

/// Prints the final report and writes every requested file.
pub(crate) fn finish(report: &Report, stop: StopReason, exports: &crate::config::Exports, exited_wording: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "\nFinal report: pid {} ({}), traced {:.1} s, {}:",
        report.target.pid,
        report.target.command,
        report.duration_s,
        match stop {
            StopReason::TargetExited => exited_wording,
            StopReason::Duration => "duration reached",
            StopReason::Count => "report count reached",
            StopReason::Interrupted => "interrupted",
            StopReason::Terminated => "terminated",
        }
    );
    let _ = stdout.write_all(report::text::render(report).as_bytes());
    let _ = stdout.flush();
    drop(stdout);
    export(report, exports)
}

/// Why tracing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The target exited.
    TargetExited,
    /// --duration elapsed.
    Duration,
    /// COUNT interval reports were printed.
    Count,
    /// SIGINT.
    Interrupted,
    /// SIGTERM.
    Terminated,
}

/// What a finished run produced.
pub struct Outcome {
    /// The final report.
    pub report: Report,
    /// Why tracing ended.
    pub stop: StopReason,
}

struct Session {
    config: Config,
    tracer: Tracer,
    symbolizer: Symbolizer,
    target: TargetInfo,
    allocator: String,
    started: Instant,
    started_at: String,
    kernel_release: String,
    exited: bool,
    child: Option<Child>,
    series: HashMap<u64, Vec<Sample>>,
    last_sample_t: Option<f64>,
    samples: usize,
    /// DWARF unwind tables of the target (none with `--unwind fp`).
    unwind: Option<UnwindTables>,
    /// Where the allocator functions are probed.
    probes: Vec<report::ProbeReport>,
    /// `--sample-bytes`: the sampler, and whether unsampled calls skip their return probe.
    sampling: Option<(Sampler, bool)>,
}

/// Sends SIGCONT (to a process our probes stopped at exit or at a library load).
fn resume(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGCONT);
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC is what bpf_ktime_get_ns reads.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Local time as RFC 3339 with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// Stops the process at every library load so its unwind table can take the new library in
/// before the library's code runs. Without the hook (a linker without the symbol), new
/// libraries are still picked up at the next refresh, and their first stacks may end early.
fn attach_library_hook(tracer: &mut Tracer, linker: &std::path::Path, pid: u32, sessions: bool) -> Result<()> {
    match crate::allocator::library_change_hook(linker)? {
        Some(hook) => attach_probe(tracer, names::PROG_DL_STATE, false, hook.symbol, linker, hook.probe_offset(), pid, sessions),
        None => {
            log::warn!("{} has no _dl_debug_state: libraries loaded later are unwound from the next refresh", linker.display());
            Ok(())
        }
    }
}

/// Attaches `entry_program` at file offset `offset` of `path` for process `pid`, and the
/// shared return program when `returns`: as one uprobe session link where the kernel has
/// them and `session` allows (it detaches with a single wait, and lets an unsampled call skip
/// its return), else as a uprobe and a uretprobe.
#[allow(clippy::too_many_arguments)]
fn attach_probe(
    tracer: &mut Tracer,
    entry_program: &str,
    returns: bool,
    symbol: &str,
    path: &std::path::Path,
    offset: u64,
    pid: u32,
    session: bool,
) -> Result<()> {
    if session {
        match tracer.attach_session(entry_program, symbol, path, offset, pid) {
            Ok(()) => return Ok(()),
            Err(e) => log::debug!("{e}; using a uprobe and a uretprobe"),
        }
    }
    // The return probe first: a call entered between an entry probe and its return probe
    // would leave an entry that never returns, and with its stack pointer standing, every
    // later call from deeper in the stack would be taken as nested in it and ignored (a
    // busy process attached with -p lost every allocation that way).
    if returns {
        tracer.attach_uprobe(names::PROG_ALLOC_RETURN, symbol, path, offset, pid)?;
    }
    tracer.attach_uprobe(entry_program, symbol, path, offset, pid)
}

/// Attaches the allocator's probes. With `sampling`, a function that calls another probed
/// function keeps a plain return probe: the state that marks the inner call as nested must
/// live until the outer call returns, even when the outer call is not sampled. Returns
/// whether every allocating function got a session (so that unsampled calls skip their
/// return probe).
fn attach_all(tracer: &mut Tracer, allocator: &AllocatorObject, pid: u32, sampling: bool, sessions: bool) -> Result<bool> {
    if sessions {
        let mut programs: Vec<&str> = allocator.functions.iter().map(|f| f.function.entry_program).collect();
        programs.extend([names::PROG_EXIT, names::PROG_DL_STATE]);
        tracer.preload_sessions(&programs);
    }
    for f in &allocator.functions {
        let session = sessions && !(sampling && f.function.calls_allocator);
        let result =
            attach_probe(tracer, f.function.entry_program, f.function.returns_block, &f.symbol, &allocator.path, f.probe_offset(), pid, session);
        match result {
            Ok(()) => {}
            Err(e) if !f.function.required && matches!(e, Error::Attach { .. }) => {
                log::warn!("{e}; {} calls are not traced", f.symbol);
            }
            Err(e) => return Err(e),
        }
    }
    // The first refusal turns sessions off for every later probe (`Tracer::attach_session`).
    if let Some(reason) = tracer.sessions_refused() {
        log::debug!("uprobe sessions refused: {reason}");
        return Ok(false);
    }
    Ok(sessions)
}

/// Runs a whole trace and prints its reports to stdout. Returns the final report.
pub async fn run(config: Config) -> Result<Outcome> {
    if let Target::Kernel(options) = &config.target {
        let options = options.clone();
        return crate::kernel::session::run(config, options).await;
    }
    for path in config.exports.paths() {
        report::output::check_writable(path)?;
    }
    if !privileges::can_trace() {
        return Err(Error::NotPrivileged);
    }
    let mut signals = StopSignals::install()?;
    let unwind_rows = if config.unwind == UnwindMode::Fp { 0 } else { config.unwind_rows };
    let sampler = config.sample_bytes.map(Sampler::new);
    let load_options = LoadOptions {
        self_tgid: std::process::id(),
        min_size: config.min_size,
        max_size: config.max_size,
        max_allocs: config.max_allocs,
        stack_storage: config.stack_storage,
        mode: crate::bpf::Mode::User {
            freeze_at_exit: matches!(config.target, Target::Launch { .. }),
            unwind_rows,
            sample_period: sampler.as_ref().map_or(0, Sampler::period),
            sample_table: sampler.as_ref().map(|s| s.table().to_vec()).unwrap_or_default(),
        },
    };
    let prefix = config.symbol_prefix.clone();
    let object = config.object.clone();
    let mut child: Option<Child> = None;
    let mut unwind_tables: Option<UnwindTables> = None;
    // An attached process's mappings are read before tracing starts (the unwind tables need
    // them); a launched command's once it has exec'd.
    let mut symbolizer: Option<Symbolizer> = None;
    let sessions;
    let (mut tracer, target, allocator) = match &config.target {
        Target::Pid(pid) => {
            let pid = *pid;
            let info = target::inspect_pid(pid)?;
            let allocator = target::find_allocator(pid, object.as_deref(), &prefix)?;
            let mut tracer = Tracer::load(&load_options)?;
            if unwind_rows > 0 {
                // Before the first allocation is recorded, so that every stack gets the tables.
                let mut tables = UnwindTables::new(config.unwind, unwind_rows, pid);
                let mut snapshot = Symbolizer::new(pid);
                snapshot.refresh();
                tables.sync(&mut tracer, snapshot.mappings())?;
                unwind_tables = Some(tables);
                symbolizer = Some(snapshot);
                if let Some(linker) = target::dynamic_linker_of_pid(pid)? {
                    attach_library_hook(&mut tracer, &linker, pid, config.sessions)?;
                }
            }
            tracer.add_target(pid)?;
            sessions = attach_all(&mut tracer, &allocator, pid, sampler.is_some(), config.sessions)?;
            (tracer, info, allocator)
        }
        Target::Launch { program, args } => {
            let path = which::which(program)
                .map_err(|e| Error::Launch { program: program.clone(), reason: e.to_string() })?;
            let allocator = target::find_allocator_for_program(&path, object.as_deref(), &prefix)?;
            // Checked before forking: every failure after `hold` must undo the fork.
            let linker = if unwind_rows > 0 { target::dynamic_linker_of_program(&path)? } else { None };
            let mut tracer = Tracer::load(&load_options)?;
            let held = launch::hold(program, args)?;
            tracer.add_target(held.pid)?;
            // On failure `held` is dropped, which closes the gate: the command never runs.
            sessions = attach_all(&mut tracer, &allocator, held.pid, sampler.is_some(), config.sessions)?;
            // A short-lived command may exit before its mappings are first read; it is stopped
            // at exit() for that (see `Session::poll`).
            for hook in crate::allocator::exit_functions(&allocator.path)? {
                attach_probe(&mut tracer, names::PROG_EXIT, false, hook.symbol, &allocator.path, hook.probe_offset(), held.pid, config.sessions)?;
            }
            if unwind_rows > 0 {
                // The tables are filled when the dynamic linker reports the first libraries,
                // before main runs (a static executable's at the first refresh).
                unwind_tables = Some(UnwindTables::new(config.unwind, unwind_rows, held.pid));
                if let Some(linker) = &linker {
                    attach_library_hook(&mut tracer, linker, held.pid, config.sessions)?;
                }
            }
            let launched = held.release()?;
            let pid = launched.id();
            child = Some(launched);
            let command = std::iter::once(program.clone()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
            (tracer, TargetInfo { pid, command, exe: path.display().to_string() }, allocator)
        }
        Target::Kernel(_) => unreachable!("kernel mode returned above"),
    };
    let library_changes = if unwind_tables.is_some() { Some(tracer.take_unwind_events()?) } else { None };
    let mut session = Session {
        unwind: unwind_tables,
        probes: report::ProbeReport::of(&allocator),
        sampling: sampler.map(|s| (s, sessions)),
        symbolizer: symbolizer.unwrap_or_else(|| Symbolizer::new(target.pid)),
        allocator: allocator.path.display().to_string(),
        target,
        tracer,
        started: Instant::now(),
        started_at: now_rfc3339(),
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        exited: false,
        child: None,
        series: HashMap::new(),
        last_sample_t: None,
        samples: 0,
        config,
    };
    session.symbolizer.refresh();
    eprintln!(
        "Tracing pid {} ({}): {} allocator functions in {}{}. Ctrl-C to end.",
        session.target.pid,
        session.target.command,
        allocator.functions.len(),
        session.allocator,
        if allocator.absent.is_empty() { String::new() } else { format!(" (absent: {})", allocator.absent.join(", ")) },
    );
    eprintln!("Probes: {}", report::ProbeReport::summary(&session.probes));
    if let Some((sampler, sessions)) = &session.sampling {
        eprintln!(
            "Sampling: one allocation per {} bytes on average (figures are estimates with 95 % intervals); {}",
            sampler.period(),
            if *sessions {
                "unsampled calls skip their return probe"
            } else {
                "this kernel has no uprobe sessions, so unsampled calls still pay their return probe"
            }
        );
    }
    session.child = child;
    let schedule = Schedule {
        started: session.started,
        interval: session.config.interval,
        count: session.config.count,
        duration: session.config.duration,
    };
    let stop = trace_loop(&mut session, &schedule, &mut signals, library_changes).await?;
    if let Some(child) = session.child.as_mut() {
        if stop != StopReason::TargetExited {
            // A command launched under tracing does not outlive the trace.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        // It may be stopped at exit by our probe: a stopped process acts on no signal.
        resume(child.id());
        let _ = child.try_wait();
    }
    let report = session.report(true)?;
    let finished = finish(&report, stop, &session.config.exports, "target exited");
    let pid = session.target.pid;
    let hooked = session.unwind.is_some();
    // Detach every probe (which takes the kernel a while), then resume the target: no new
    // library-load stop can happen after the detach, and one that happened since the last
    // event was read is undone here.
    drop(session);
    if hooked {
        resume(pid);
    }
    finished?;
    Ok(Outcome { report, stop })
}

/// Writes the final report to every requested file.
fn export(report: &Report, exports: &crate::config::Exports) -> Result<()> {
    use crate::config::Format;
    for (path, format) in [
        (&exports.json, Format::Json),
        (&exports.folded, if exports.folded_count { Format::FoldedCount } else { Format::Folded }),
        (&exports.svg, Format::Svg),
        (&exports.pprof, Format::Pprof),
    ] {
        if let Some(path) = path {
            report::output::write_atomic(path, &report::render(report, format)?)?;
            eprintln!("Wrote {} report to {}", format.name(), path.display());
        }
    }
    Ok(())
}

impl Session {
    /// Appends one sample per stack from the in-kernel turnover counters. A stack seen for the
    /// first time gets zero samples at the start and at the previous sample, so its series
    /// says when it appeared.
    fn record_samples(&mut self, t_s: f64, turnover: &HashMap<u64, leaktrace_common::StackStats>) {
        for (&id, stats) in turnover {
            let sample = Sample {
                t_s,
                bytes: stats.alloc_bytes.saturating_sub(stats.free_bytes),
                count: stats.alloc_count.saturating_sub(stats.free_count),
                allocated_bytes: Some(stats.alloc_bytes),
                freed_bytes: Some(stats.free_bytes),
            };
            let previous = self.last_sample_t;
            let series = self.series.entry(id).or_insert_with(|| {
                let zero = Sample { allocated_bytes: Some(0), freed_bytes: Some(0), ..Sample::default() };
                let mut start = vec![zero];
                if let Some(previous) = previous {
                    start.push(Sample { t_s: previous, ..zero });
                }
                start
            });
            trend::push_sample(series, sample);
        }
        self.last_sample_t = Some(t_s);
        self.samples += 1;
    }
}

impl Traced for Session {
    fn poll(&mut self) -> Result<bool> {
        let alive = match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => target::is_alive(self.target.pid),
        };
        if !alive {
            self.exited = true;
            return Ok(false);
        }
        self.symbolizer.refresh();
        if let Some(tables) = self.unwind.as_mut() {
            tables.sync(&mut self.tracer, self.symbolizer.mappings())?;
        }
        if self.child.is_some() && target::is_stopped(self.target.pid) {
            // Stopped by our exit probe: its mappings are now read; let it finish exiting.
            resume(self.target.pid);
        }
        Ok(true)
    }

    fn libraries_changed(&mut self) -> Result<()> {
        self.symbolizer.refresh();
        if let Some(tables) = self.unwind.as_mut() {
            tables.sync(&mut self.tracer, self.symbolizer.mappings())?;
        }
        resume(self.target.pid);
        Ok(())
    }

    fn report(&mut self, symbolize_all: bool) -> Result<Report> {
        let outstanding = self.tracer.outstanding()?;
        let now = monotonic_ns();
        let t = self.started.elapsed().as_secs_f64();
        // Once the target is gone nothing can change: a sample taken now would only add a
        // flat tail that drags the recent growth rate down.
        if !self.exited {
            let turnover = self.tracer.stack_stats()?;
            self.record_samples(t, &turnover);
        }
        let sort = report::resolve_sort(self.config.sort, self.samples);
        let min_age = if self.exited { Duration::ZERO } else { self.config.older_than };
        let sampler = self.sampling.as_ref().map(|(s, _)| s);
        let grouped = aggregate::by_stack(&outstanding, now, min_age.as_nanos() as u64, self.config.show_allocs, sampler);
        // Every group gets its trend and is ordered first; only then are the shown ones
        // symbolized, so that the top by growth is named even when it is not the top by bytes.
        let mut ranked: Vec<(u64, StackReport)> = grouped
            .groups
            .iter()
            .map(|g| {
                let report = StackReport {
                    bytes: g.totals.bytes,
                    count: g.totals.count,
                    oldest_age_ms: now.saturating_sub(g.oldest_ns) / 1_000_000,
                    allocations: g
                        .allocations
                        .iter()
                        .map(|&(address, size, ts)| Allocation { address, size, age_ms: now.saturating_sub(ts) / 1_000_000 })
                        .collect(),
                    trend: self.series.get(&g.stack_id).map(|s| trend::classify(s)),
                    estimate: g.estimate.map(|e| e.summary()),
                    ..StackReport::default()
                };
                (g.stack_id, report)
            })
            .collect();
        // Stacks holding nothing now but turning memory over at a high rate are reported too
        // (with zero bytes): telling churn from a leak is part of the answer.
        let holding: std::collections::HashSet<u64> = ranked.iter().map(|(id, _)| *id).collect();
        for (&id, series) in &self.series {
            if holding.contains(&id) {
                continue;
            }
            let trend = trend::classify(series);
            if trend.class == trend::Class::Churn {
                let report = StackReport { trend: Some(trend), ..StackReport::default() };
                ranked.push((id, report));
            }
        }
        report::order_by(&mut ranked, sort, |(_, r)| r);
        if !symbolize_all {
            ranked.truncate(self.config.top);
        }
        let stacks = self.tracer.stacks(ranked.iter().map(|(id, _)| *id))?;
        let addresses: Vec<u64> =
            stacks.values().flat_map(|(ips, _)| ips).copied().collect::<BTreeSet<u64>>().into_iter().collect();
        let frames = self.symbolizer.symbolize(&addresses);
        let mut cut_short = 0u64;
        let mut stacks_by_end = std::collections::BTreeMap::new();
        let stack_reports: Vec<StackReport> = ranked
            .into_iter()
            .map(|(id, mut report)| {
                let (addresses, end) = stacks.get(&id).map_or((&[][..], StackEnd::Complete), |(ips, end)| (ips.as_slice(), *end));
                if unwind::is_cut_short(end) {
                    report.cut_short = Some(unwind::stack_end_name(end).to_string());
                }
                *stacks_by_end.entry(unwind::stack_end_name(end).to_string()).or_insert(0u64) += 1;
                // A frame-pointer walk through code built without frame pointers reads
                // arbitrary stack words as return addresses; the first one outside every
                // executable mapping ends the stack, and what follows it is not shown.
                let mapped = addresses
                    .iter()
                    .take_while(|a| frames.get(a).is_some_and(|f| f.first().is_some_and(|f| f.module.is_some())))
                    .count();
                if mapped < addresses.len() {
                    cut_short += 1;
                }
                report.frames =
                    addresses[..mapped].iter().flat_map(|a| frames.get(a).cloned().unwrap_or_default()).collect();
                report
            })
            .collect();
        let c = self.tracer.counters()?;
        let lost = Lost {
            allocs_map_full: c[Counter::AllocsMapFull as usize],
            stack_lost: c[Counter::StackLost as usize],
            stack_collision: c[Counter::StackCollision as usize],
            return_without_entry: c[Counter::ReturnWithoutEntry as usize],
            pending_map_full: c[Counter::PendingMapFull as usize],
            pending_stale: c[Counter::PendingStale as usize],
            out_pointer_unreadable: c[Counter::OutPointerUnreadable as usize],
            probe_misses: self.tracer.probe_misses(),
            user_stack_lost: 0,
        };
        let activity = Activity {
            alloc_calls: c[Counter::AllocCalls as usize],
            free_calls: c[Counter::FreeCalls as usize],
            free_unknown: c[Counter::FreeUnknown as usize],
            nested_calls: c[Counter::NestedCalls as usize],
            failed_allocs: c[Counter::FailedAllocs as usize],
            stacks_cut_short: cut_short,
        };
        Ok(Report {
            schema_version: report::SCHEMA_VERSION,
            mode: "user".into(),
            target: self.target.clone(),
            allocator: self.allocator.clone(),
            started_at: self.started_at.clone(),
            generated_at: now_rfc3339(),
            duration_s: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            kernel_release: self.kernel_release.clone(),
            target_exited: self.exited,
            filters: Filters {
                older_than_ms: min_age.as_millis() as u64,
                min_size: self.config.min_size,
                max_size: (self.config.max_size != u64::MAX).then_some(self.config.max_size),
                top: self.config.top,
                sort,
            },
            totals: grouped.outstanding,
            too_young: grouped.too_young,
            without_stack: grouped.without_stack,
            incomplete: lost.total() > 0,
            lost,
            activity,
            build_ids: {
                let used: BTreeSet<&str> =
                    stack_reports.iter().flat_map(|s| &s.frames).filter_map(|f| f.module.as_deref()).collect();
                self.symbolizer.build_ids().into_iter().filter(|(m, _)| used.contains(m.as_str())).collect()
            },
            stacks: stack_reports,
            kernel: None,
            unwind: self.unwind.as_ref().map(|t| t.summary(stacks_by_end, c[Counter::UnwindEventLost as usize])),
            probes: self.probes.clone(),
            sampling: self.sampling.as_ref().map(|(sampler, sessions)| crate::sampling::SamplingSection {
                period_bytes: sampler.period(),
                return_probes_skipped: *sessions,
                unsampled_calls: c[Counter::SampledOut as usize],
            }),
        })
    }
}
