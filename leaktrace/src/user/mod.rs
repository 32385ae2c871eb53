//! User-space mode: trace a process's allocator, attached with `-p PID` or launched with
//! `-- COMMAND`. Sets the probes up, keeps the [process table](processes) current, and turns
//! what the maps hold into reports through the pure [`build`] step.

mod attach;
pub mod build;
pub mod processes;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use leaktrace_common::{Counter, StackStats};

use self::{
    attach::Attach,
    build::{Context, NamedStacks, Snapshot},
    processes::{ProcessTable, TracedProcess},
};
use crate::{
    allocator::AllocatorObject,
    bpf::{LoadOptions, Tracer, UnwindEvents},
    config::{Config, Target, UnwindMode},
    driver::{self, monotonic_ns, Mode, Outcome, RunClock, StopReason},
    error::{Error, Result},
    features::{self, Release, Support},
    model::{Filters, ProbeReport, Report, Sample, TargetInfo},
    php::PhpFrame,
    process::{self, launch},
    sampling::Sampler,
    symbolize::Symbolizer,
    trend::SeriesBook,
    unwind::RowStore,
};

/// Runs a whole user-space trace and prints its reports to stdout.
pub async fn run(mut config: Config) -> Result<Outcome> {
    let mut signals = driver::preflight(&config.exports)?;
    adapt_to_kernel(&mut config, &features::assess(Release::running())?);
    let trace = UserTrace::start(config)?;
    trace.announce();
    let config = trace.config.clone();
    driver::drive(trace, &config, &mut signals).await
}

/// Applies the fallbacks of a kernel that lacks a feature, saying so once.
fn adapt_to_kernel(config: &mut Config, support: &Support) {
    for feature in &support.fallbacks {
        eprintln!(
            "leaktrace: this kernel lacks {} (Linux {}): {}",
            feature.name,
            feature.since,
            feature.fallback.unwrap_or_default()
        );
    }
    if support.lacks("bpf_loop") {
        config.unwind = UnwindMode::Fp;
    }
    if support.lacks("uprobe sessions") {
        config.sessions = false;
    }
}

/// A user-space trace in progress.
struct UserTrace {
    config: Config,
    tracer: Tracer,
    processes: ProcessTable,
    /// The unwind rows shared by every process (none with `--unwind fp`).
    rows: Option<RowStore>,
    symbolizer: Symbolizer,
    clock: RunClock,
    series: SeriesBook<u64>,
    /// Where the allocator functions are probed.
    probes: Vec<ProbeReport>,
    /// `--sample-bytes`: the sampler, and whether unsampled calls skip their return probe.
    sampling: Option<(Sampler, bool)>,
    /// Every traced process has exited.
    exited: bool,
}

/// A process with its probes attached, and whether they are session links.
struct Attached {
    tracer: Tracer,
    process: TracedProcess,
    sessions: bool,
}

impl UserTrace {
    /// Loads the programs and attaches them to the target, launching it if asked to.
    fn start(config: Config) -> Result<Self> {
        let unwind_rows = if config.unwind == UnwindMode::Fp { 0 } else { config.unwind_rows };
        let sampler = config.sample_bytes.map(Sampler::new);
        let load = load_options(&config, unwind_rows, sampler.as_ref());
        let mut rows = (unwind_rows > 0).then(|| RowStore::new(config.unwind, unwind_rows));
        let sampling = sampler.is_some();
        let attached = match &config.target {
            Target::Pid(pid) => attach_running(*pid, &config, &load, rows.as_mut(), sampling)?,
            Target::Launch { program, args } => {
                launch_command(program, args, &config, &load, rows.is_some(), sampling)?
            }
            Target::Kernel(_) => unreachable!("kernel traces are run by kernel::run"),
        };
        let Attached { mut tracer, mut process, sessions } = attached;
        if process.child.is_some() {
            // The command has exec'd: its first mappings (the program and the dynamic linker).
            process.refresh(rows.as_mut(), &mut tracer)?;
        }
        let mut processes = ProcessTable::default();
        let probes = probe_reports(&process.allocator);
        processes.insert(process);
        Ok(Self {
            tracer,
            processes,
            rows,
            symbolizer: Symbolizer::new(),
            clock: RunClock::start(),
            series: SeriesBook::new(Sample { allocated_bytes: Some(0), freed_bytes: Some(0), ..Sample::default() }),
            probes,
            sampling: sampler.map(|s| (s, sessions)),
            exited: false,
            config,
        })
    }

    /// Says what is traced, where the probes sit, and how sampling works.
    fn announce(&self) {
        for p in self.processes.iter() {
            let absent = &p.allocator.absent;
            eprintln!(
                "Tracing pid {} ({}): {} allocator functions in {}{}. Ctrl-C to end.",
                p.pid(),
                p.info.command,
                p.allocator.functions.len(),
                p.allocator.path.display(),
                if absent.is_empty() { String::new() } else { format!(" (absent: {})", absent.join(", ")) },
            );
            if let Some(notice) = p.php.as_ref().and_then(|php| php.notice()) {
                eprintln!("{notice}");
            }
        }
        eprintln!("Probes: {}", ProbeReport::summary(&self.probes));
        if let Some((sampler, sessions)) = &self.sampling {
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
    }

    /// Samples every stack's turnover counters (while a process still runs).
    fn record_samples(&mut self) -> Result<()> {
        let turnover = self.tracer.stack_stats()?;
        let points = turnover.iter().map(|(&id, stats)| (id, turnover_sample(stats)));
        self.series.record(self.clock.elapsed_s(), points, false);
        Ok(())
    }

    /// The PHP frames of the stacks to report, by stack key.
    fn php_frames<T>(&mut self, stacks: &HashMap<u64, T>) -> Result<HashMap<u64, Vec<PhpFrame>>> {
        let mut found = HashMap::new();
        for process in self.processes.iter_mut() {
            let Some(php) = process.php.as_mut() else { continue };
            if !process.exited {
                php.collect(&self.tracer)?;
            }
            found.extend(stacks.keys().filter_map(|&key| Some((key, php.frames(key)?))));
        }
        Ok(found)
    }

    /// Everything the report says besides the stacks.
    fn context(&self, min_age: Duration, counters: [u64; Counter::LEN as usize]) -> Context {
        let primary = self.processes.primary().expect("a user trace traces at least one process");
        let unwinds = self.processes.iter().filter_map(|p| p.unwind.as_ref());
        Context {
            target: primary.info.clone(),
            allocator: primary.allocator.path.display().to_string(),
            stamp: self.clock.stamp(),
            exited: self.exited,
            filters: Filters {
                older_than_ms: min_age.as_millis() as u64,
                min_size: self.config.min_size,
                max_size: (self.config.max_size != u64::MAX).then_some(self.config.max_size),
                top: self.config.top,
                sort: self.config.sort.resolve(self.series.samples()),
            },
            counters,
            probe_misses: self.tracer.probe_misses(),
            unwind: self
                .rows
                .as_ref()
                .map(|rows| rows.section(unwinds, Default::default(), counters[Counter::UnwindEventLost as usize])),
            probes: self.probes.clone(),
            sampling: self.sampling.as_ref().map(|(sampler, sessions)| (sampler.period(), *sessions)),
            build_ids: primary.modules.build_ids().map(|(m, id)| (m.to_string(), id.to_string())).collect(),
        }
    }
}

impl Mode for UserTrace {
    fn poll(&mut self) -> Result<bool> {
        let mut any_alive = false;
        for process in self.processes.iter_mut() {
            if process.exited || !process.is_alive() {
                continue;
            }
            any_alive = true;
            process.refresh(self.rows.as_mut(), &mut self.tracer)?;
            if process.child.is_some() && process::is_stopped(process.pid()) {
                // Stopped by our exit probe: its mappings are now read; let it finish exiting.
                process.resume();
            }
        }
        self.exited = !any_alive;
        Ok(any_alive)
    }

    fn take_library_events(&mut self) -> Result<Option<UnwindEvents>> {
        match self.rows {
            Some(_) => self.tracer.take_unwind_events().map(Some),
            None => Ok(None),
        }
    }

    fn libraries_changed(&mut self, events: &[leaktrace_common::UnwindEvent]) -> Result<()> {
        let tgids: BTreeSet<u32> = events.iter().map(|e| e.tgid).collect();
        for tgid in tgids {
            if let Some(process) = self.processes.get_mut(tgid) {
                process.refresh(self.rows.as_mut(), &mut self.tracer)?;
                process.resume();
            }
        }
        Ok(())
    }

    fn report(&mut self, final_report: bool) -> Result<Report> {
        let outstanding = self.tracer.outstanding()?;
        let now_ns = monotonic_ns();
        // Once the target is gone nothing can change: a sample taken now would only add a
        // flat tail that drags the recent growth rate down.
        if !self.exited {
            self.record_samples()?;
        }
        let min_age = if self.exited { Duration::ZERO } else { self.config.older_than };
        let snapshot = Snapshot {
            outstanding: &outstanding,
            now_ns,
            min_age_ns: min_age.as_nanos() as u64,
            show_allocs: self.config.show_allocs,
            sampler: self.sampling.as_ref().map(|(s, _)| s),
            series: &self.series,
            sort: self.config.sort.resolve(self.series.samples()),
            top: (!final_report).then_some(self.config.top),
        };
        let ranked = build::rank(&snapshot);
        let stacks = self.tracer.stacks(ranked.stack_ids())?;
        let addresses: Vec<u64> =
            stacks.values().flat_map(|(ips, _)| ips).copied().collect::<BTreeSet<u64>>().into_iter().collect();
        let primary = self.processes.primary().expect("a user trace traces at least one process");
        let frames = self.symbolizer.symbolize(&primary.modules, &addresses);
        let php = self.php_frames(&stacks)?;
        let context = self.context(min_age, self.tracer.counters()?);
        Ok(build::build_report(ranked, &NamedStacks { stacks, frames, php }, context))
    }

    fn wind_down(&mut self, stop: StopReason) {
        for process in self.processes.iter_mut() {
            let Some(child) = process.child.as_mut() else { continue };
            if stop != StopReason::TargetExited {
                // A command launched under tracing does not outlive the trace.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.try_wait();
            // It may be stopped at exit by our probe: a stopped process acts on no signal.
            process.resume();
        }
    }

    fn detach(self) {
        let Self { tracer, processes, rows, .. } = self;
        // Detach every probe (which takes the kernel a while), then resume the targets: no new
        // library-load stop can happen after the detach, and one that happened since the last
        // event was read is undone here.
        drop(tracer);
        if rows.is_some() {
            for process in processes.iter() {
                process.resume();
            }
        }
    }
}

/// One series sample from a stack's in-kernel turnover counters.
fn turnover_sample(stats: &StackStats) -> Sample {
    Sample {
        t_s: 0.0,
        bytes: stats.alloc_bytes.saturating_sub(stats.free_bytes),
        count: stats.alloc_count.saturating_sub(stats.free_count),
        allocated_bytes: Some(stats.alloc_bytes),
        freed_bytes: Some(stats.free_bytes),
    }
}

/// The load-time settings of a user-space trace.
fn load_options(config: &Config, unwind_rows: u32, sampler: Option<&Sampler>) -> LoadOptions {
    LoadOptions {
        self_tgid: std::process::id(),
        min_size: config.min_size,
        max_size: config.max_size,
        max_allocs: config.max_allocs,
        stack_storage: config.stack_storage,
        mode: crate::bpf::Mode::User {
            freeze_at_exit: matches!(config.target, Target::Launch { .. }),
            unwind_rows,
            sample_period: sampler.map_or(0, Sampler::period),
            sample_table: sampler.map(|s| s.table().to_vec()).unwrap_or_default(),
        },
    }
}

/// Attaches to a running process. Its unwind table is built before the first allocation is
/// recorded, so that every stack gets it.
fn attach_running(
    pid: u32,
    config: &Config,
    load: &LoadOptions,
    rows: Option<&mut RowStore>,
    sampling: bool,
) -> Result<Attached> {
    let info = process::inspect_pid(pid)?;
    let allocator = process::find_allocator(pid, config.object.as_deref(), &config.symbol_prefix)?;
    let mut tracer = Tracer::load(load)?;
    let attach = Attach { pid, sessions: config.sessions };
    let mut process = TracedProcess::new(info, allocator, rows.is_some(), config.php_frames);
    if let Some(rows) = rows {
        process.refresh(Some(rows), &mut tracer)?;
        if let Some(linker) = process::dynamic_linker_of_pid(pid)? {
            attach.library_hook(&mut tracer, &linker)?;
        }
    } else {
        // Its mappings, for its PHP frames: the header says what PHP it runs.
        process.refresh(None, &mut tracer)?;
    }
    tracer.add_target(pid)?;
    let sessions = attach.allocator(&mut tracer, &process.allocator, sampling)?;
    Ok(Attached { tracer, process, sessions })
}

/// Launches `program args…` held before exec, attaches, then lets it run: its first
/// allocation is traced. Its unwind table is filled when the dynamic linker reports the
/// first libraries, before main runs (a static executable's at the first refresh).
fn launch_command(
    program: &str,
    args: &[String],
    config: &Config,
    load: &LoadOptions,
    dwarf_unwinding: bool,
    sampling: bool,
) -> Result<Attached> {
    let path = which::which(program).map_err(|e| Error::Launch { program: program.to_string(), source: e.into() })?;
    let allocator = process::find_allocator_for_program(&path, config.object.as_deref(), &config.symbol_prefix)?;
    // Checked before forking: every failure after `hold` must undo the fork.
    let linker = if dwarf_unwinding { process::dynamic_linker_of_program(&path)? } else { None };
    let mut tracer = Tracer::load(load)?;
    let held = launch::hold(program, args)?;
    tracer.add_target(held.pid)?;
    // On failure `held` is dropped, which closes the gate: the command never runs.
    let attach = Attach { pid: held.pid, sessions: config.sessions };
    let sessions = attach.allocator(&mut tracer, &allocator, sampling)?;
    attach.exit_hooks(&mut tracer, &allocator)?;
    if let Some(linker) = &linker {
        attach.library_hook(&mut tracer, linker)?;
    }
    let child = held.release()?;
    let command = std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
    let info = TargetInfo { pid: child.id(), command, exe: path.display().to_string() };
    let mut process = TracedProcess::new(info, allocator, dwarf_unwinding, config.php_frames);
    process.child = Some(child);
    Ok(Attached { tracer, process, sessions })
}

/// The probes of an allocator's functions, for the report.
fn probe_reports(allocator: &AllocatorObject) -> Vec<ProbeReport> {
    allocator
        .functions
        .iter()
        .map(|f| ProbeReport {
            function: f.symbol.clone(),
            aliases: f.aliases.clone(),
            offset: f.site.offset,
            handling: f.site.handling,
            return_probe: f.function.returns_block,
        })
        .collect()
}
