//! A `--kernel-slab` run: attach the kmem tracepoints, optionally run a command repeatedly,
//! and report outstanding kernel objects by stack, cache or command, beside the slab
//! figures the kernel itself reports.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    process::Child,
    time::{Duration, Instant},
};

use leaktrace_common::{Counter, KernelSpace};

use super::{events, slab, tracefs};
use crate::{
    aggregate::{self, GroupKey, NamedObject},
    bpf::{LoadOptions, Mode, Tracer},
    config::{Config, KernelOptions},
    error::{Error, Result},
    privileges,
    report::{self, Activity, CacheAccount, Filters, KernelGroup, KernelSection, Lost, PerRun, Report, Runs, Share, StackReport},
    session::{finish, monotonic_ns, now_rfc3339, trace_loop, Outcome, Schedule, StopSignals, Traced},
    symbolize::{kernel::KernelSymbolizer, Symbolizer},
    target::{self, launch, TargetInfo},
    trend::{self, Sample},
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

struct KernelSession {
    config: Config,
    options: KernelOptions,
    tracer: Tracer,
    kernel_symbols: KernelSymbolizer,
    user_symbols: HashMap<u32, Symbolizer>,
    events: Vec<String>,
    started: Instant,
    started_at: String,
    kernel_release: String,
    meminfo_start: slab::SlabMeminfo,
    slabinfo_start: BTreeMap<String, slab::CacheFigures>,
    runner: Option<Runner>,
    exited: bool,
    series: HashMap<GroupKey, Vec<Sample>>,
    last_sample_t: Option<f64>,
    samples: usize,
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn cache_name(alloc: &leaktrace_common::KernelAlloc) -> String {
    match alloc.space {
        s if s == KernelSpace::Page as u32 => format!("pages (order {})", alloc.order),
        s if s == KernelSpace::Percpu as u32 => "percpu".to_string(),
        _ if alloc.cache[0] != 0 => cstr(&alloc.cache),
        _ => slab::kmalloc_cache_name(alloc.bytes_alloc, alloc.gfp_flags),
    }
}

/// Runs a kernel-mode trace and prints its reports.
pub async fn run(config: Config, options: KernelOptions) -> Result<Outcome> {
    for path in config.exports.paths() {
        report::output::check_writable(path)?;
    }
    if !privileges::can_trace() {
        return Err(Error::NotPrivileged);
    }
    let mut signals = StopSignals::install()?;
    let tracefs = tracefs::ensure_mounted()?;
    let mut specs: Vec<events::EventSpec> = events::SLAB.to_vec();
    if options.pages {
        specs.extend_from_slice(events::PAGES);
    }
    if options.percpu {
        specs.extend_from_slice(events::PERCPU);
    }
    let filtering = !options.pids.is_empty() || options.run.is_some();
    if filtering {
        specs.push(events::FORK);
    }
    let mut offsets = Vec::new();
    for spec in &specs {
        offsets.extend(events::offsets_of(&tracefs, spec)?);
    }
    for &pid in &options.pids {
        target::inspect_pid(pid)?;
    }
    let mut tracer = Tracer::load(&LoadOptions {
        self_tgid: std::process::id(),
        min_size: 0,
        max_size: u64::MAX,
        max_allocs: config.max_allocs,
        stack_storage: config.stack_storage,
        mode: Mode::Kernel { filter_targets: filtering, user_stacks: options.user_stacks, follow_forks: filtering, offsets },
    })?;
    for &pid in &options.pids {
        tracer.add_target(pid)?;
    }
    let mut attached = Vec::new();
    for spec in &specs {
        tracer.attach_tracepoint(spec.program, spec.category, spec.event)?;
        attached.push(format!("{}:{}", spec.category, spec.event));
    }
    // Kernels before 6.1 report NUMA-aware allocations through separate events.
    for (variant, base) in events::NODE_VARIANTS {
        let spec = events::EventSpec { event: variant, ..*base };
        if let Ok(variant_offsets) = events::offsets_of(&tracefs, &spec) {
            if variant_offsets == events::offsets_of(&tracefs, base)? {
                tracer.attach_tracepoint(spec.program, spec.category, variant)?;
                attached.push(format!("kmem:{variant}"));
            } else {
                log::warn!("kmem:{variant} has a different layout from kmem:{}; not traced", base.event);
            }
        }
    }
    let runner = options.run.as_ref().map(|spec| Runner {
        command: spec.command.clone(),
        repeat: spec.repeat,
        current: None,
        exit_codes: Vec::new(),
        finished_at: None,
    });
    let mut session = KernelSession {
        kernel_symbols: KernelSymbolizer::new(),
        user_symbols: HashMap::new(),
        events: attached,
        started: Instant::now(),
        started_at: now_rfc3339(),
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        meminfo_start: slab::SlabMeminfo::read(),
        slabinfo_start: slab::read_slabinfo(),
        runner,
        exited: false,
        series: HashMap::new(),
        last_sample_t: None,
        samples: 0,
        tracer,
        options,
        config,
    };
    eprintln!(
        "Tracing kernel allocations ({}){}. Ctrl-C to end.",
        session.events.join(", "),
        match (&session.options.run, session.options.pids.as_slice()) {
            (Some(run), _) => format!(" made by `{}` run {} times", run.command, run.repeat),
            (None, []) => String::new(),
            (None, pids) => format!(" made by pid {}", pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")),
        }
    );
    if !session.kernel_symbols.visible() {
        eprintln!("leaktrace: kernel addresses are hidden (kernel.kptr_restrict); kernel frames will be shown as addresses");
    }
    let schedule = Schedule {
        started: session.started,
        interval: session.config.interval,
        count: session.config.count,
        duration: session.config.duration,
    };
    let stop = trace_loop(&mut session, &schedule, &mut signals, None).await?;
    if let Some(child) = session.runner.as_mut().and_then(|r| r.current.as_mut()) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let report = session.report(true)?;
    let wording = if session.runner.is_some() { "runs completed" } else { "target exited" };
    finish(&report, stop, &session.config.exports, wording)?;
    Ok(Outcome { report, stop })
}

impl KernelSession {
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

    /// One sample per group from everything outstanding now; groups that vanished get a zero.
    fn record_samples(&mut self, t_s: f64, groups: &[aggregate::KernelGroupAgg]) {
        let previous = self.last_sample_t;
        let mut seen = std::collections::HashSet::new();
        for g in groups {
            seen.insert(g.key.clone());
            let sample = Sample { t_s, bytes: g.totals.bytes, count: g.totals.count, ..Sample::default() };
            let series = self.series.entry(g.key.clone()).or_insert_with(|| {
                let mut start = vec![Sample::default()];
                if let Some(previous) = previous {
                    start.push(Sample { t_s: previous, ..Sample::default() });
                }
                start
            });
            trend::push_sample(series, sample);
        }
        for (key, series) in &mut self.series {
            if !seen.contains(key) {
                trend::push_sample(series, Sample { t_s, ..Sample::default() });
            }
        }
        self.last_sample_t = Some(t_s);
        self.samples += 1;
    }

    fn completed_runs(&self) -> Option<u32> {
        self.runner.as_ref().map(|r| r.exit_codes.len() as u32)
    }
}

impl Traced for KernelSession {
    fn poll(&mut self) -> Result<bool> {
        if self.runner.is_some() {
            let more = self.drive_runs()?;
            self.exited = !more;
            return Ok(more);
        }
        if !self.options.pids.is_empty() && !self.options.pids.iter().any(|&p| target::is_alive(p)) {
            self.exited = true;
            return Ok(false);
        }
        for &pid in &self.options.pids {
            self.user_symbols.entry(pid).or_insert_with(|| Symbolizer::new(pid)).refresh();
        }
        Ok(true)
    }

    fn report(&mut self, final_report: bool) -> Result<Report> {
        let raw = self.tracer.kernel_outstanding()?;
        let now = monotonic_ns();
        let min_age = if self.exited { Duration::ZERO } else { self.config.older_than };
        let named: Vec<NamedObject> = raw
            .iter()
            .map(|(_, alloc)| NamedObject { alloc, cache: cache_name(alloc), comm: cstr(&alloc.comm) })
            .filter(|o| self.options.comm.as_ref().is_none_or(|c| *c == o.comm))
            .filter(|o| self.options.cache.as_ref().is_none_or(|c| *c == o.cache))
            .collect();
        // The series follow everything outstanding, whatever its age.
        let everything = aggregate::kernel_groups(&named, now, 0, self.options.group_by);
        if !self.exited || self.runner.is_some() {
            // After a -p target exits nothing changes; after --run the settle time matters.
            self.record_samples(self.started.elapsed().as_secs_f64(), &everything.groups);
        }
        let sort = report::resolve_sort(self.config.sort, self.samples);
        let grouped = aggregate::kernel_groups(&named, now, min_age.as_nanos() as u64, self.options.group_by);
        let runs = self.completed_runs().filter(|&n| n > 0);
        let shares = |map: &BTreeMap<String, report::Totals>| {
            let mut v: Vec<Share> =
                map.iter().map(|(name, t)| Share { name: name.clone(), bytes: t.bytes, count: t.count }).collect();
            v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
            v
        };
        let mut ranked: Vec<(&aggregate::KernelGroupAgg, StackReport)> = grouped
            .groups
            .iter()
            .map(|g| {
                let report = StackReport {
                    bytes: g.totals.bytes,
                    count: g.totals.count,
                    oldest_age_ms: now.saturating_sub(g.oldest_ns) / 1_000_000,
                    kernel: Some(KernelGroup {
                        key: match &g.key {
                            GroupKey::Stack(_) => String::new(),
                            GroupKey::Name(name) => name.clone(),
                        },
                        requested_bytes: g.requested_bytes,
                        caches: shares(&g.caches),
                        comms: shares(&g.comms),
                        user_frames: Vec::new(),
                        per_run: runs.map(|n| PerRun {
                            bytes: g.totals.bytes as f64 / f64::from(n),
                            count: g.totals.count as f64 / f64::from(n),
                        }),
                    }),
                    trend: self.series.get(&g.key).map(|s| trend::classify(s)),
                    ..StackReport::default()
                };
                (g, report)
            })
            .collect();
        report::order_by(&mut ranked, sort, |(_, r)| r);
        if !final_report {
            ranked.truncate(self.config.top);
        }

        let stack_ids = ranked.iter().filter_map(|(g, _)| match g.key {
            GroupKey::Stack(id) => Some(id),
            GroupKey::Name(_) => None,
        });
        let kernel_stacks = self.tracer.kernel_stacks(stack_ids)?;
        let addresses: Vec<u64> = kernel_stacks.values().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let kernel_frames = self.kernel_symbols.symbolize(&addresses);
        let user_stacks = if self.options.user_stacks {
            self.tracer.task_user_stacks(ranked.iter().filter_map(|(g, _)| g.user_stack.map(|(_, id)| id)))?
        } else {
            HashMap::new()
        };
        let mut stacks = Vec::with_capacity(ranked.len());
        for (g, mut report) in ranked {
            if let GroupKey::Stack(id) = &g.key {
                report.frames = kernel_stacks
                    .get(id)
                    .map(|s| s.iter().filter_map(|a| kernel_frames.get(a).cloned()).collect())
                    .unwrap_or_default();
            }
            if let (Some((tgid, id)), Some(kernel)) = (g.user_stack, report.kernel.as_mut()) {
                let addresses = user_stacks.get(&id).cloned().unwrap_or_default();
                let symbolizer = self.user_symbols.entry(tgid).or_insert_with(|| {
                    let mut s = Symbolizer::new(tgid);
                    s.refresh();
                    s
                });
                let named = symbolizer.symbolize(&addresses);
                kernel.user_frames = addresses.iter().flat_map(|a| named.get(a).cloned().unwrap_or_default()).collect();
            }
            stacks.push(report);
        }

        let slabinfo_now = slab::read_slabinfo();
        let mut cache_names: BTreeSet<String> = grouped.by_cache.keys().cloned().collect();
        cache_names.retain(|n| !n.starts_with("pages") && n != "percpu");
        let mut caches: Vec<CacheAccount> = cache_names
            .into_iter()
            .map(|name| {
                let traced = grouped.by_cache.get(&name).copied().unwrap_or_default();
                let (before, after) = (self.slabinfo_start.get(&name), slabinfo_now.get(&name));
                let objects = before.zip(after).map(|(b, a)| a.active_objects as i64 - b.active_objects as i64);
                CacheAccount {
                    reclaimable: slab::is_reclaimable(&name),
                    traced,
                    slabinfo_objects_delta: objects,
                    slabinfo_bytes_delta: objects.zip(after).map(|(d, a)| d * a.object_size as i64),
                    name,
                }
            })
            .collect();
        caches.sort_by(|a, b| b.traced.bytes.cmp(&a.traced.bytes).then(a.name.cmp(&b.name)));
        let traced_unreclaimable_bytes = caches.iter().filter(|c| c.reclaimable != Some(true)).map(|c| c.traced.bytes).sum();

        let c = self.tracer.counters()?;
        let lost = Lost {
            allocs_map_full: c[Counter::KernelMapFull as usize],
            stack_lost: c[Counter::KernelStackLost as usize],
            stack_collision: c[Counter::KernelStackCollision as usize],
            probe_misses: self.tracer.probe_misses(),
            user_stack_lost: c[Counter::KernelUserStackLost as usize],
            ..Lost::default()
        };
        let activity = Activity {
            alloc_calls: c[Counter::KernelAllocs as usize],
            free_calls: c[Counter::KernelFrees as usize],
            free_unknown: c[Counter::KernelFreeUnknown as usize],
            ..Activity::default()
        };
        let (pid, command) = match (&self.runner, self.options.pids.first()) {
            (Some(r), _) => (0, format!("sh -c {}", r.command)),
            (None, Some(&pid)) => (pid, target::describe_pid(pid).map(|t| t.command).unwrap_or_default()),
            (None, None) => (0, "kernel".to_string()),
        };
        Ok(Report {
            schema_version: report::SCHEMA_VERSION,
            mode: "kernel".into(),
            target: TargetInfo { pid, command, exe: String::new() },
            allocator: "kernel".into(),
            started_at: self.started_at.clone(),
            generated_at: now_rfc3339(),
            duration_s: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            kernel_release: self.kernel_release.clone(),
            target_exited: self.exited,
            filters: Filters {
                older_than_ms: min_age.as_millis() as u64,
                min_size: 0,
                max_size: None,
                top: self.config.top,
                sort,
            },
            totals: grouped.outstanding,
            too_young: grouped.too_young,
            without_stack: grouped.without_stack,
            incomplete: lost.total() > 0,
            lost,
            activity,
            stacks,
            build_ids: Default::default(),
            kernel: Some(KernelSection {
                group_by: self.options.group_by,
                events: self.events.clone(),
                symbols_visible: self.kernel_symbols.visible(),
                meminfo_start: self.meminfo_start,
                meminfo_now: slab::SlabMeminfo::read(),
                caches,
                traced_unreclaimable_bytes,
                runs: self.runner.as_ref().map(|r| Runs {
                    command: r.command.clone(),
                    repeat: r.repeat,
                    completed: r.exit_codes.len() as u32,
                    exit_codes: r.exit_codes.clone(),
                }),
            }),
            unwind: None,
            probes: Vec::new(),
            sampling: None,
        })
    }
}
