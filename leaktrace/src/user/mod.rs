//! User-space mode: trace a process's allocator, attached with `-p PID` or launched with
//! `-- COMMAND`. Sets the probes up, keeps the [process table](processes) current, and turns
//! what the maps hold into reports through the pure [`build`] step.

mod attach;
pub mod build;
mod follow;
pub mod processes;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use leaktrace_common::{Counter, StackStats};

use self::{
    build::{Context, NamedStacks, Snapshot},
    processes::{ProcessTable, TracedProcess},
};
use crate::{
    allocator::AllocatorObject,
    bpf::{LoadOptions, Tracer, UnwindEvents},
    config::{Config, Target, UnwindMode},
    driver::{self, monotonic_ns, Mode, Outcome, RunClock, StopReason},
    error::Result,
    features::{self, Release, Support},
    guardian::Guardian,
    mappings::ProcessModules,
    model::{Filters, Frame, ProbeReport, ProcessSummary, Report, Sample, Totals},
    php::PhpFrame,
    process,
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
        crate::say!(
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
    /// Frames of stacks through libraries unloaded since, by stack id and address.
    pinned: HashMap<u64, HashMap<u64, Vec<Frame>>>,
    clock: RunClock,
    series: SeriesBook<u64>,
    /// Where the allocator functions are probed.
    probes: Vec<ProbeReport>,
    /// `--sample-bytes`: the sampler, and whether unsampled calls skip their return probe.
    sampling: Option<(Sampler, bool)>,
    /// Every traced process has exited.
    exited: bool,
    /// Probes go on every process that maps the probed file and the programs keep to the
    /// traced set (`--follow`, `--comm`): a child is then traced from its first instruction,
    /// where a probe scoped to a process would have to be attached after it runs.
    everywhere: bool,
    /// With `everywhere`: the files (device, inode) already probed.
    probed: BTreeSet<(u64, u64)>,
    /// The dynamic linkers hooked for library loads: (pid the hook is scoped to, 0 for
    /// every process; the file's device and inode).
    hooked: BTreeSet<(u32, (u64, u64))>,
    /// With `everywhere`: objects beside the malloc provider (a PHP binary) probed since.
    companions: BTreeSet<(u64, u64)>,
    /// Launched commands (and their followed children) stop at exit for a last mappings read.
    freeze_at_exit: bool,
    /// Whether the allocator probes are session links (unsampled calls skip their return).
    sessions: bool,
    /// Blocks and bytes dropped because their process ran a new program.
    exec_dropped: (u64, u64),
    /// Blocks and bytes of PHP's heap still held when the heap was reset (released whole).
    php_heap_released: (u64, u64),
    /// Resumes what the probes stopped should leaktrace die (launched commands only).
    guardian: Option<Guardian>,
    /// `--cgroup`: the cgroup whose processes are traced, and those of its processes that
    /// could not be (said once, not tried again).
    cgroup: Option<process::cgroup::Cgroup>,
    cgroup_skipped: BTreeSet<u32>,
}

impl UserTrace {
    /// Loads the programs and attaches them to the targets, launching the command if asked to.
    fn start(config: Config) -> Result<Self> {
        let mut trace = Self::load(config)?;
        match trace.config.target.clone() {
            Target::Processes { pids, comm, .. } => trace.attach_running(&pids, comm.as_deref())?,
            Target::Launch { program, args } => trace.launch_command(&program, &args)?,
            Target::Kernel(_) => unreachable!("kernel traces are run by kernel::run"),
        }
        if let Some(primary) = trace.processes.primary() {
            trace.probes = probe_reports(&primary.allocator);
        }
        Ok(trace)
    }

    /// Loads the programs and the process tracepoints; nothing is probed yet.
    fn load(config: Config) -> Result<Self> {
        let unwind_rows = if config.unwind == UnwindMode::Fp { 0 } else { config.unwind_rows };
        let sampler = config.sample_bytes.map(Sampler::new);
        let (comm, cgroup) = match &config.target {
            Target::Processes { comm, cgroup, .. } => {
                (comm.clone(), cgroup.as_deref().map(process::cgroup::resolve).transpose()?)
            }
            _ => (None, None),
        };
        let everywhere = config.follow || comm.is_some() || cgroup.is_some();
        let tracefs = crate::kernel::tracefs::ensure_mounted();
        let offsets = match (&tracefs, everywhere) {
            (Ok(tracefs), true) => crate::kernel::events::offsets_of(tracefs, &crate::kernel::events::NEW_TASK)?,
            _ => Vec::new(),
        };
        let mut load = load_options(&config, unwind_rows, sampler.as_ref(), comm.as_deref(), offsets);
        if let (Some(cgroup), crate::bpf::Mode::User { cgroup: wanted, .. }) = (&cgroup, &mut load.mode) {
            *wanted = Some((cgroup.id, cgroup.level));
        }
        let mut tracer = Tracer::load(&load)?;
        attach_process_events(&mut tracer, tracefs, everywhere)?;
        Ok(Self {
            tracer,
            processes: ProcessTable::default(),
            rows: (unwind_rows > 0).then(|| RowStore::new(config.unwind, unwind_rows)),
            symbolizer: Symbolizer::new(),
            pinned: HashMap::new(),
            clock: RunClock::start(),
            series: SeriesBook::new(Sample { allocated_bytes: Some(0), freed_bytes: Some(0), ..Sample::default() }),
            probes: Vec::new(),
            sampling: sampler.map(|s| (s, false)),
            exited: false,
            everywhere,
            probed: BTreeSet::new(),
            hooked: BTreeSet::new(),
            companions: BTreeSet::new(),
            freeze_at_exit: matches!(config.target, Target::Launch { .. }),
            sessions: false,
            exec_dropped: (0, 0),
            php_heap_released: (0, 0),
            guardian: None,
            cgroup,
            cgroup_skipped: BTreeSet::new(),
            config,
        })
    }

    /// Says what is traced, where the probes sit, and how sampling works.
    fn announce(&self) {
        for p in self.processes.iter() {
            let absent = &p.allocator.absent;
            crate::say!(
                "Tracing pid {} ({}): {} allocator functions in {}{}. Ctrl-C to end.",
                p.pid(),
                p.info.command,
                p.allocator.functions.len(),
                p.allocator.path.display(),
                if absent.is_empty() { String::new() } else { format!(" (absent: {})", absent.join(", ")) },
            );
            if let Some(notice) = p.php.as_ref().and_then(|php| php.notice()) {
                crate::say!("{notice}");
            }
            if p.allocator.has_php_heap() && process::zend_alloc_disabled(p.pid()) {
                crate::say!(
                    "PHP's heap in pid {} is served by malloc (USE_ZEND_ALLOC=0): each of its blocks is counted \
                     once, on the php heap, at the _emalloc call that asked for it",
                    p.pid()
                );
            }
        }
        for p in self.processes.iter() {
            let families: Vec<String> = p
                .allocator
                .families()
                .iter()
                .map(|f| format!("{} in {} ({})", f.family, f.object, f.functions.join(", ")))
                .collect();
            crate::say!("Allocators: {}", families.join("; "));
        }
        if let Target::Processes { comm: Some(comm), .. } = &self.config.target {
            crate::say!("Tracing every process named {comm}, now and as they start. Ctrl-C to end.");
        }
        if let Some(cgroup) = &self.cgroup {
            crate::say!(
                "Tracing every process in cgroup {} (id {}), now and as they join. Ctrl-C to end.",
                cgroup.path.display(),
                cgroup.id
            );
        }
        crate::say!("Probes: {}", ProbeReport::summary(&self.probes));
        if self.everywhere {
            // The price of tracing children from their first instruction falls on processes
            // that did not ask for it: they are told (docs/benchmarks.md measures it).
            let alone = if matches!(self.config.target, Target::Launch { .. }) {
                " (--no-follow traces the command alone, without this)"
            } else {
                ""
            };
            crate::say!(
                "Note: to follow processes, the probes are on every process that maps these files: untraced ones \
                 pay a trap (about 1 µs) per allocator call while leaktrace runs, and programs under valgrind \
                 die of SIGTRAP{alone}"
            );
        }
        if let Some((sampler, _)) = &self.sampling {
            crate::say!(
                "Sampling: one allocation per {} bytes on average (figures are estimates with 95 % intervals); {}",
                sampler.period(),
                if self.sessions {
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

    /// Whom a trace that has no process yet waits for.
    fn awaited(&self) -> String {
        match (&self.config.target, &self.cgroup) {
            (_, Some(cgroup)) => format!("every process in cgroup {}", cgroup.path.display()),
            (Target::Processes { comm: Some(comm), .. }, None) => format!("every process named {comm}"),
            _ => "no process".to_string(),
        }
    }

    /// Everything the report says besides the stacks.
    fn context(&self, min_age: Duration, counters: [u64; Counter::LEN as usize]) -> Context {
        let (target, allocator) = match self.processes.primary() {
            Some(primary) => (primary.info.clone(), primary.allocator.path.display().to_string()),
            // `--comm` or `--cgroup` before any process has matched: the report says whom it
            // waits for.
            None => (crate::model::TargetInfo { pid: 0, command: self.awaited(), exe: String::new() }, String::new()),
        };
        let unwinds = self.processes.iter().filter_map(|p| p.unwind.as_ref());
        Context {
            target,
            allocator,
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
            unwind: self.rows.as_ref().map(|rows| {
                let lost = counters[Counter::UnwindEventLost as usize];
                rows.section(unwinds, Default::default(), (lost, counters[Counter::UnwindTableNotReady as usize]))
            }),
            probes: self.probes.clone(),
            sampling: self.sampling.as_ref().map(|(sampler, _)| (sampler.period(), self.sessions)),
            build_ids: self
                .processes
                .iter()
                .flat_map(|p| p.modules.build_ids())
                .map(|(m, id)| (m.to_string(), id.to_string()))
                .collect(),
            allocators: distinct(self.processes.iter().flat_map(|p| p.allocator.families())),
            not_attached: distinct(self.processes.iter().flat_map(|p| p.allocator.not_attached.iter().cloned())),
            exec_dropped: self.exec_dropped,
            php_heap_released: self.php_heap_released,
            processes: Vec::new(),
            by_process: self.config.by_process,
        }
    }

    /// The processes of a trace of several, for the report.
    fn summaries(&self, outstanding: &[crate::bpf::Outstanding]) -> Vec<ProcessSummary> {
        if self.processes.len() < 2 {
            return Vec::new();
        }
        let mut totals: BTreeMap<u32, Totals> = BTreeMap::new();
        for block in outstanding {
            totals.entry(block.info.tgid).or_default().add(block.info.size);
        }
        self.processes
            .iter()
            .map(|p| ProcessSummary {
                pid: p.pid(),
                comm: p.comm.clone(),
                command: p.info.command.clone(),
                exe: p.info.exe.clone(),
                parent: p.parent,
                execs: p.exec_generation,
                exited: p.exited,
                allocator: p.allocator.path.display().to_string(),
                totals: totals.get(&p.pid()).copied().unwrap_or_default(),
            })
            .collect()
    }

    /// Names the frames of every ranked stack with the mappings of the process that holds it.
    fn name_stacks(&mut self, ranked: &build::Ranked) -> Result<NamedStacks> {
        let stacks = self.tracer.stacks(ranked.stack_ids())?;
        let mut by_process: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for (id, (ips, _)) in &stacks {
            by_process.entry(ranked.owner(*id)).or_default().extend(ips.iter().copied());
        }
        let primary = self.processes.primary().map_or(0, TracedProcess::pid);
        let mut frames = HashMap::new();
        for (tgid, addresses) in by_process {
            let modules = self.processes.modules_of(if tgid == 0 { primary } else { tgid });
            let Some(modules) = modules.or_else(|| self.processes.modules_of(primary)) else { continue };
            let addresses: Vec<u64> = addresses.into_iter().collect();
            for (address, named) in self.symbolizer.symbolize(modules, &addresses) {
                frames.insert((tgid, address), named);
            }
        }
        let pinned = ranked.stack_ids().filter_map(|id| self.pinned.get(&id).map(|p| (id, p.clone()))).collect();
        Ok(NamedStacks { stacks, frames, pinned, php: HashMap::new() })
    }
}

impl Mode for UserTrace {
    fn poll(&mut self) -> Result<bool> {
        self.take_process_events()?;
        self.scan_cgroup()?;
        let mut any_alive = false;
        let tgids: Vec<u32> = self.processes.iter().map(TracedProcess::pid).collect();
        for tgid in tgids {
            let Some(process) = self.processes.get_mut(tgid) else { continue };
            if process.exited || !process.is_alive() {
                continue;
            }
            any_alive = true;
            process.refresh(self.rows.as_mut(), &mut self.tracer)?;
            pin_unloaded(&self.tracer, &mut self.symbolizer, &mut self.pinned, &process.modules)?;
            self.settle_allocator(tgid)?;
            if self.freeze_at_exit && process::is_stopped(tgid) && self.tracer.is_held(tgid) {
                // Stopped by our exit probe: its mappings are now read; let it finish exiting.
                processes::resume_held(&mut self.tracer, tgid);
            }
        }
        // With --comm or --cgroup, processes may still come: only the user ends the trace.
        let waiting = matches!(self.config.target, Target::Processes { comm: Some(_), .. }) || self.cgroup.is_some();
        self.exited = !any_alive && !waiting;
        Ok(any_alive || waiting)
    }

    fn take_library_events(&mut self) -> Result<Option<UnwindEvents>> {
        match self.rows {
            Some(_) => self.tracer.take_unwind_events().map(Some),
            None => Ok(None),
        }
    }

    fn libraries_changed(&mut self, events: &[leaktrace_common::UnwindEvent]) -> Result<()> {
        // A child stopped at its first library load may be told of in the same breath.
        self.take_process_events()?;
        let tgids: BTreeSet<u32> = events.iter().map(|e| e.tgid).collect();
        for tgid in tgids {
            if let Some(process) = self.processes.get_mut(tgid) {
                process.refresh(self.rows.as_mut(), &mut self.tracer)?;
                pin_unloaded(&self.tracer, &mut self.symbolizer, &mut self.pinned, &process.modules)?;
                // Its libraries are mapped and none of their code has run: the moment to
                // choose its allocator.
                self.settle_allocator(tgid)?;
            }
            // Stopped by our hook, known or not (its event lost): never left stopped.
            processes::resume_held(&mut self.tracer, tgid);
            // An attached process was not stopped: its allocations made before now are counted
            // as cut short at the new library ("library not in table yet").
            if self.processes.get(tgid).is_some_and(|p| p.child.is_none()) {
                self.tracer.settle_table_stale(tgid)?;
            }
        }
        Ok(())
    }

    fn report(&mut self, final_report: bool) -> Result<Report> {
        // An exec since the last poll must drop its old blocks before they are read.
        self.take_process_events()?;
        let outstanding = self.tracer.outstanding()?;
        let now_ns = monotonic_ns();
        // Once the target is gone nothing can change: a sample taken now would only add a
        // flat tail that drags the recent growth rate down.
        if !self.exited {
            self.record_samples()?;
        }
        let min_age = if self.exited { Duration::ZERO } else { self.config.older_than };
        let comms: BTreeMap<u32, String> = self.processes.iter().map(|p| (p.pid(), p.comm.clone())).collect();
        let snapshot = Snapshot {
            outstanding: &outstanding,
            now_ns,
            min_age_ns: min_age.as_nanos() as u64,
            show_allocs: self.config.show_allocs,
            sampler: self.sampling.as_ref().map(|(s, _)| s),
            series: &self.series,
            sort: self.config.sort.resolve(self.series.samples()),
            top: (!final_report).then_some(self.config.top),
            holders: (self.processes.len() > 1).then_some(&comms),
            tag_heaps: self.processes.iter().any(|p| p.allocator.has_php_heap()),
        };
        let ranked = build::rank(&snapshot);
        let mut named = self.name_stacks(&ranked)?;
        named.php = self.php_frames(&named.stacks)?;
        let mut context = self.context(min_age, self.tracer.counters()?);
        context.processes = self.summaries(&outstanding);
        Ok(build::build_report(ranked, &named, context))
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
            process.resume(&mut self.tracer);
        }
    }

    fn detach(self) {
        let Self { mut tracer, processes, guardian, .. } = self;
        // Detach every probe (which takes the kernel a while), then resume the targets: no new
        // stop can happen after the detach, and one that happened since the last event was
        // read is undone here.
        tracer.detach_probes();
        for process in processes.iter() {
            process.resume(&mut tracer);
        }
        drop(tracer);
        if let Some(guardian) = guardian {
            guardian.dismiss();
        }
    }
}

/// Each item once, in first-seen order (processes share their allocator objects).
fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// One series sample from a stack's in-kernel turnover counters.
/// Names the frames that stacks recorded so far have in the libraries `modules` just saw
/// unloaded, while their mappings are known: at report time those addresses lie in no
/// mapping, or in a library loaded at the same place since, whose names would be wrong.
/// Reads every recorded stack, so it costs one map lookup per stack at each unload.
fn pin_unloaded(
    tracer: &Tracer,
    symbolizer: &mut Symbolizer,
    pinned: &mut HashMap<u64, HashMap<u64, Vec<Frame>>>,
    modules: &ProcessModules,
) -> Result<()> {
    if !modules.has_retired() {
        return Ok(());
    }
    for (id, (ips, _)) in tracer.stacks(tracer.stack_ids()?)? {
        let known = pinned.get(&id);
        let unloaded: Vec<u64> = ips
            .into_iter()
            .filter(|&a| modules.locate_retired(a.saturating_sub(1)).is_some())
            .filter(|a| known.is_none_or(|k| !k.contains_key(a)))
            .collect();
        if !unloaded.is_empty() {
            pinned.entry(id).or_default().extend(symbolizer.symbolize_retired(modules, &unloaded));
        }
    }
    Ok(())
}

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
fn load_options(
    config: &Config,
    unwind_rows: u32,
    sampler: Option<&Sampler>,
    comm: Option<&str>,
    offsets: Vec<(&'static str, u32)>,
) -> LoadOptions {
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
            follow: config.follow,
            cgroup: None,
            comm: comm.map(|name| {
                let mut bytes = [0u8; 16];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                bytes
            }),
            offsets,
        },
    }
}

/// Attaches the process tracepoints: exec always (a traced process that runs a new program
/// loses its old blocks), new tasks when children are followed. Without tracefs, execs go
/// unnoticed: said once, and the trace goes on.
fn attach_process_events(tracer: &mut Tracer, tracefs: Result<std::path::PathBuf>, everywhere: bool) -> Result<()> {
    if let Err(e) = tracefs {
        if everywhere {
            return Err(e);
        }
        crate::say!("leaktrace: {e}: a traced process that runs a new program keeps its old blocks in the report");
        return Ok(());
    }
    let exec = crate::kernel::events::EXEC;
    tracer.attach_tracepoint(exec.program, exec.category, exec.event)?;
    if everywhere {
        let new_task = crate::kernel::events::NEW_TASK;
        tracer.attach_tracepoint(new_task.program, new_task.category, new_task.event)?;
    }
    Ok(())
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
