//! A `--kernel-slab` run: attach the kmem tracepoints, optionally run a command repeatedly,
//! and report outstanding kernel objects by stack, cache or command, beside the slab
//! figures the kernel itself reports.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    process::Child,
    time::{Duration, Instant},
};

use leaktrace_common::kernel::{BuildIdFrame, BUILD_ID_VALID};

use super::{
    btf,
    build::{self, Context, NameFilters, NamedStacks, SlabFigures, Snapshot},
    events, lineage, slab, slab_pages, tracefs,
};
use crate::{
    aggregate::GroupKey,
    bpf::{LoadOptions, Mode as LoadMode, Tracer},
    config::{Config, KernelOptions},
    driver::{self, monotonic_ns, Mode, Outcome, RunClock, StopReason},
    error::{Error, Result},
    features::{self, Release},
    mappings::ProcessModules,
    model::{Filters, Frame, GroupBy, KmallocCacheNames, Report, Runs, Sample, TargetInfo},
    process::{self, launch},
    symbolize::{build_ids::BuildIdIndex, kernel::KernelSymbolizer, Symbolizer},
    trend::SeriesBook,
};

/// After the last `--run`, wait this long for RCU-deferred frees before the final report.
const RUN_SETTLE: Duration = Duration::from_millis(500);

/// State of `--run CMD --repeat N`.
struct Runner {
    command: String,
    repeat: u32,
    current: Option<Child>,
    exit_codes: Vec<i32>,
    finished_at: Option<Instant>,
}

struct KernelTrace {
    config: Config,
    options: KernelOptions,
    tracer: Tracer,
    kernel_symbols: KernelSymbolizer,
    /// With --user-stacks: the mappings of each allocating process seen, by tgid.
    user_modules: HashMap<u32, ProcessModules>,
    user_symbols: Symbolizer,
    /// Files by build-id, for user stacks of processes that have exited.
    build_ids: BuildIdIndex,
    events: Vec<String>,
    /// How kmalloc objects' caches are named.
    kmalloc_caches: KmallocCacheNames,
    clock: RunClock,
    meminfo_start: slab::SlabMeminfo,
    slabinfo_start: BTreeMap<String, slab::CacheFigures>,
    runner: Option<Runner>,
    exited: bool,
    series: SeriesBook<GroupKey>,
}

/// Runs a kernel-mode trace and prints its reports.
pub async fn run(config: Config, options: KernelOptions) -> Result<Outcome> {
    let mut signals = driver::preflight(&config.exports)?;
    // Kernel mode walks user stacks by frame pointers and uses no uprobe: no fallback to apply.
    features::assess(Release::running())?;
    let tracefs = tracefs::ensure_mounted()?;
    let specs = event_specs(&options);
    let mut offsets = Vec::new();
    for spec in &specs {
        offsets.extend(events::offsets_of(&tracefs, spec)?);
    }
    let (btf_offsets, slab_layout) = kernel_layouts();
    let raw_tracepoints = !btf_offsets.is_empty();
    offsets.extend(btf_offsets);
    offsets.extend(slab_layout.iter().flat_map(|l| l.globals.iter().copied()));
    for &pid in &options.pids {
        process::inspect_pid(pid)?;
    }
    let filtering = !options.pids.is_empty() || options.run.is_some();
    let mut tracer = Tracer::load(&LoadOptions {
        self_tgid: std::process::id(),
        min_size: 0,
        max_size: u64::MAX,
        max_allocs: config.max_allocs,
        stack_storage: config.stack_storage,
        mode: LoadMode::Kernel {
            filter_targets: filtering,
            user_stacks: options.user_stacks,
            follow_forks: filtering,
            offsets,
        },
    })?;
    for &pid in &options.pids {
        tracer.add_target(pid)?;
    }
    let events = attach_events(&mut tracer, &tracefs, &specs, raw_tracepoints)?;
    let kmalloc_btf = events.iter().any(|e| e == "kmem:kmalloc (tp_btf)");
    let kmalloc_caches = match slab_layout.filter(|_| kmalloc_btf) {
        Some(layout) if slab_pages::attach_and_learn(&mut tracer, &layout) => KmallocCacheNames::Slab,
        _ => KmallocCacheNames::Size,
    };
    let trace = KernelTrace::new(config, options, tracer, (events, kmalloc_caches));
    trace.announce();
    let config = trace.config.clone();
    driver::drive(trace, &config, &mut signals).await
}

/// What the raw tracepoint programs read of `struct kmem_cache`, and what the kmalloc
/// naming program reads of `struct page` and `struct slab`, from the kernel's BTF. Without
/// the first the classic tracepoints are used; without the second kmalloc objects are named
/// from their size and flags.
fn kernel_layouts() -> (Vec<(&'static str, u32)>, Option<slab_pages::Layout>) {
    match btf::Btf::from_kernel() {
        Ok(btf) => (events::kmem_cache_offsets(&btf), slab_pages::layout(&btf)),
        Err(e) => {
            log::warn!("{e}; the slab events are traced through their classic tracepoints");
            (Vec::new(), None)
        }
    }
}

/// The tracepoints `options` ask for.
fn event_specs(options: &KernelOptions) -> Vec<events::EventSpec> {
    let mut specs: Vec<events::EventSpec> = events::SLAB.to_vec();
    if options.pages {
        specs.extend_from_slice(events::PAGES);
    }
    if options.percpu {
        specs.extend_from_slice(events::PERCPU);
    }
    // Always: besides following forks of traced processes, they record every process's
    // parent and name for the ancestry of each allocating process.
    specs.extend_from_slice(events::LINEAGE);
    specs
}

/// Attaches every tracepoint of `specs` (as a raw BTF tracepoint where it has one and
/// `raw_tracepoints` allows, else the classic one), and the NUMA variants older kernels have.
/// Returns their names: `category:event`, with ` (tp_btf)` for a raw one.
fn attach_events(
    tracer: &mut Tracer,
    tracefs: &std::path::Path,
    specs: &[events::EventSpec],
    raw_tracepoints: bool,
) -> Result<Vec<String>> {
    let mut attached = Vec::new();
    for spec in specs {
        if let Some(program) = spec.btf_program.filter(|_| raw_tracepoints) {
            match tracer.attach_btf_tracepoint(program, spec.event) {
                Ok(()) => {
                    attached.push(format!("{}:{} (tp_btf)", spec.category, spec.event));
                    continue;
                }
                Err(e) => log::warn!("{e}; using the classic tracepoint"),
            }
        }
        tracer.attach_tracepoint(spec.program, spec.category, spec.event)?;
        attached.push(format!("{}:{}", spec.category, spec.event));
    }
    // Kernels before 6.1 report NUMA-aware allocations through separate events.
    for (variant, base) in events::NODE_VARIANTS {
        let spec = events::EventSpec { event: variant, ..*base };
        if let Ok(variant_offsets) = events::offsets_of(tracefs, &spec) {
            if variant_offsets == events::offsets_of(tracefs, base)? {
                tracer.attach_tracepoint(spec.program, spec.category, variant)?;
                attached.push(format!("kmem:{variant}"));
            } else {
                log::warn!("kmem:{variant} has a different layout from kmem:{}; not traced", base.event);
            }
        }
    }
    Ok(attached)
}

impl KernelTrace {
    fn new(
        config: Config,
        options: KernelOptions,
        tracer: Tracer,
        (events, kmalloc_caches): (Vec<String>, KmallocCacheNames),
    ) -> Self {
        let runner = options.run.as_ref().map(|spec| Runner {
            command: spec.command.clone(),
            repeat: spec.repeat,
            current: None,
            exit_codes: Vec::new(),
            finished_at: None,
        });
        Self {
            kernel_symbols: KernelSymbolizer::new(),
            user_modules: HashMap::new(),
            user_symbols: Symbolizer::new(),
            build_ids: BuildIdIndex::new(),
            events,
            kmalloc_caches,
            clock: RunClock::start(),
            meminfo_start: slab::read_meminfo(),
            slabinfo_start: slab::read_slabinfo(),
            runner,
            exited: false,
            // By stack, series carry the stacks' turnover from the start.
            series: SeriesBook::new(if options.group_by == GroupBy::Stack {
                Sample { allocated_bytes: Some(0), freed_bytes: Some(0), ..Sample::default() }
            } else {
                Sample::default()
            }),
            tracer,
            options,
            config,
        }
    }

    fn announce(&self) {
        crate::say!(
            "Tracing kernel allocations ({}){}. Ctrl-C to end.",
            self.events.join(", "),
            match (&self.options.run, self.options.pids.as_slice()) {
                (Some(run), _) => format!(" made by `{}` run {} times", run.command, run.repeat),
                (None, []) => String::new(),
                (None, pids) =>
                    format!(" made by pid {}", pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")),
            }
        );
        if !self.kernel_symbols.visible() {
            crate::say!("leaktrace: kernel addresses are hidden (kernel.kptr_restrict); kernel frames will be shown as addresses");
        }
    }

    /// Starts the next run or reaps the current one. Returns false once all runs are done
    /// and the settle time has passed.
    fn drive_runs(&mut self) -> Result<bool> {
        let Some(runner) = self.runner.as_mut() else { return Ok(true) };
        if let Some(child) = runner.current.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    runner.exit_codes.push(status.code().unwrap_or(-1));
                    runner.current = None;
                }
                Ok(None) => return Ok(true),
                Err(e) => return Err(Error::io("waiting for --run command", e)),
            }
        }
        if runner.exit_codes.len() < runner.repeat as usize {
            let held = launch::hold("sh", &["-c".to_string(), runner.command.clone()])?;
            self.tracer.add_target(held.pid)?;
            runner.current = Some(held.release()?);
            return Ok(true);
        }
        let finished = *runner.finished_at.get_or_insert_with(Instant::now);
        Ok(finished.elapsed() < RUN_SETTLE)
    }

    /// What the report's `target` says: the `--run` command, the `-p` process, or the kernel.
    fn target(&self) -> TargetInfo {
        match (&self.runner, self.options.pids.first()) {
            (Some(r), _) => TargetInfo { pid: 0, command: format!("sh -c {}", r.command), exe: String::new() },
            (None, Some(&pid)) => TargetInfo {
                pid,
                command: process::describe_pid(pid).map(|t| t.command).unwrap_or_default(),
                exe: String::new(),
            },
            (None, None) => TargetInfo { pid: 0, command: "kernel".to_string(), exe: String::new() },
        }
    }

    /// Reads and names the stacks of the ranked groups.
    /// The chains of processes behind the allocating processes `tgids`.
    fn ancestries(&self, tgids: &BTreeSet<u32>) -> build::Ancestries {
        let recorded = |pid: u32| {
            let lineage = self.tracer.lineage([pid]).ok()?.remove(&pid)?;
            Some((lineage.parent, build::cstr(&lineage.comm)))
        };
        lineage::ancestries(tgids.iter().copied(), recorded, std::process::id())
    }

    fn name_stacks(&mut self, ranked: &build::Ranked) -> Result<NamedStacks> {
        let kernel = self.tracer.kernel_stacks(ranked.kernel_stack_ids())?;
        let kernel_frames = self.kernel_symbols.symbolize(&build::distinct_addresses(kernel.values()));
        let mut user = HashMap::new();
        if self.options.user_stacks {
            let wanted: Vec<(u32, u32)> = ranked.user_stacks().collect();
            let stacks = self.tracer.task_user_stacks(wanted.iter().map(|&(_, id)| id))?;
            for path in self.tracer.executables()? {
                self.build_ids.add(&path);
            }
            for (tgid, id) in wanted {
                let stack = stacks.get(&id).map_or(&[][..], Vec::as_slice);
                user.insert((tgid, id), self.user_frames(tgid, stack));
            }
        }
        Ok(NamedStacks { kernel, kernel_frames, user })
    }

    /// The frames of a user stack of process `tgid`: build-id frames from the file with that
    /// build-id (the process may be gone), address-only frames from the process's mappings.
    fn user_frames(&mut self, tgid: u32, stack: &[BuildIdFrame]) -> Vec<Frame> {
        let modules = self.user_modules.entry(tgid).or_insert_with(|| {
            let mut modules = ProcessModules::new(tgid);
            modules.refresh();
            modules
        });
        self.build_ids.add_modules(modules);
        let mut frames = Vec::new();
        for frame in stack {
            let at = frame.offset_or_ip;
            let named = match (frame.status, self.build_ids.find(&frame.build_id)) {
                (BUILD_ID_VALID, Some(file)) => {
                    let name = file.path.display().to_string();
                    self.user_symbols.symbolize_in_file(&name, &file.path, file.file, &[at]).remove(&at)
                }
                (BUILD_ID_VALID, None) => None,
                _ => self.user_symbols.symbolize(modules, &[at]).remove(&at),
            };
            frames.extend(named.unwrap_or_else(|| vec![Frame { address: at, ..Frame::default() }]));
        }
        frames
    }

    fn context(&self, min_age: Duration, sort: crate::model::SortBy) -> Result<Context> {
        Ok(Context {
            target: self.target(),
            stamp: self.clock.stamp(),
            exited: self.exited,
            filters: Filters {
                older_than_ms: min_age.as_millis() as u64,
                min_size: 0,
                max_size: None,
                top: self.config.top,
                sort,
            },
            group_by: self.options.group_by,
            counters: self.tracer.counters()?,
            probe_misses: self.tracer.probe_misses(),
            events: self.events.clone(),
            kmalloc_caches: self.kmalloc_caches,
            symbols_visible: self.kernel_symbols.visible(),
            slab: SlabFigures {
                meminfo_start: self.meminfo_start,
                meminfo_now: slab::read_meminfo(),
                slabinfo_start: self.slabinfo_start.clone(),
                slabinfo_now: slab::read_slabinfo(),
            },
            unconfirmed: BTreeMap::new(),
            runs: self.runner.as_ref().map(|r| Runs {
                command: r.command.clone(),
                repeat: r.repeat,
                completed: r.exit_codes.len() as u32,
                exit_codes: r.exit_codes.clone(),
            }),
        })
    }
}

impl Mode for KernelTrace {
    fn poll(&mut self) -> Result<bool> {
        if self.runner.is_some() {
            let more = self.drive_runs()?;
            self.exited = !more;
            return Ok(more);
        }
        if !self.options.pids.is_empty() && !self.options.pids.iter().any(|&p| process::is_alive(p)) {
            self.exited = true;
            return Ok(false);
        }
        for &pid in &self.options.pids {
            self.user_modules.entry(pid).or_insert_with(|| ProcessModules::new(pid)).refresh();
        }
        Ok(true)
    }

    fn report(&mut self, final_report: bool) -> Result<Report> {
        let raw = self.tracer.kernel_outstanding()?;
        let now_ns = monotonic_ns();
        let min_age = if self.exited { Duration::ZERO } else { self.config.older_than };
        let filters = NameFilters { comm: self.options.comm.clone(), cache: self.options.cache.clone() };
        let ancestry = self.ancestries(&build::allocating_processes(&raw));
        let objects = build::name_objects(&raw, &filters, &ancestry);
        if !self.exited || self.runner.is_some() {
            // After a -p target exits nothing changes; after --run the settle time matters.
            let turnover = self.tracer.stack_stats()?;
            let points = build::series_points(&objects, now_ns, self.options.group_by, &turnover);
            self.series.record(self.clock.elapsed_s(), points, true);
        }
        let sort = self.config.sort.resolve(self.series.samples());
        let unconfirmed = build::silently_freed(&self.tracer.reused_addresses()?);
        let snapshot = Snapshot {
            objects: &objects,
            now_ns,
            min_age_ns: min_age.as_nanos() as u64,
            group_by: self.options.group_by,
            series: &self.series,
            sort,
            top: (!final_report).then_some(self.config.top),
            runs: self.runner.as_ref().map(|r| r.exit_codes.len() as u32),
            unconfirmed: &unconfirmed,
            ancestry: &ancestry,
        };
        let ranked = build::rank(&snapshot);
        let named = self.name_stacks(&ranked)?;
        let context = Context { unconfirmed, ..self.context(min_age, sort)? };
        Ok(build::build_report(ranked, &named, context))
    }

    fn wind_down(&mut self, _stop: StopReason) {
        if let Some(child) = self.runner.as_mut().and_then(|r| r.current.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn detach(self) {
        drop(self.tracer);
    }

    fn exit_wording(&self) -> &'static str {
        if self.runner.is_some() {
            "runs completed"
        } else {
            "target exited"
        }
    }
}
