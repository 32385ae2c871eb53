//! A kernel-mode report from what was read out of the maps and /proc: pure, so that it is
//! tested without a kernel. As in user mode, [`rank`] orders the groups and
//! [`build_report`] puts the named stacks and the slab accounting in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use leaktrace_common::{Counter, KernelAlloc, KernelKey, KernelSpace};

use super::slab::{self, CacheFigures};
use crate::{
    aggregate::{self, GroupKey, KernelAggregate, KernelGroupAgg, NamedObject},
    model::{
        self, Activity, CacheAccount, Figures, Frame, GroupBy, KernelGroup, KernelSection, Lost, PerRun, Report, Runs,
        Section, Share, SlabMeminfo, SortBy, StackReport, Stamp, TargetInfo, Totals,
    },
    driver::from_counters,
    trend::{self, SeriesBook},
};

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The cache an object is reported in.
fn cache_name(alloc: &KernelAlloc) -> String {
    match alloc.space {
        s if s == KernelSpace::Page as u32 => format!("pages (order {})", alloc.order),
        s if s == KernelSpace::Percpu as u32 => "percpu".to_string(),
        _ if alloc.cache[0] != 0 => cstr(&alloc.cache),
        _ => slab::kmalloc_cache_name(alloc.bytes_alloc, alloc.gfp_flags),
    }
}

/// `--comm` and `--cache`.
#[derive(Clone, Debug, Default)]
pub struct NameFilters {
    /// Only objects allocated by tasks of this command name.
    pub comm: Option<String>,
    /// Only objects of this cache.
    pub cache: Option<String>,
}

/// Names every outstanding object (cache, command) and keeps those the filters let through.
pub fn name_objects<'a>(raw: &'a [(KernelKey, KernelAlloc)], filters: &NameFilters) -> Vec<NamedObject<'a>> {
    raw.iter()
        .map(|(_, alloc)| NamedObject { alloc, cache: cache_name(alloc), comm: cstr(&alloc.comm) })
        .filter(|o| filters.comm.as_ref().is_none_or(|c| *c == o.comm))
        .filter(|o| filters.cache.as_ref().is_none_or(|c| *c == o.cache))
        .collect()
}

/// One series point per group of everything outstanding, whatever its age.
pub fn series_points(objects: &[NamedObject<'_>], now_ns: u64, by: GroupBy) -> Vec<(GroupKey, model::Sample)> {
    aggregate::kernel_groups(objects, now_ns, 0, by)
        .groups
        .into_iter()
        .map(|g| (g.key, model::Sample { bytes: g.totals.bytes, count: g.totals.count, ..model::Sample::default() }))
        .collect()
}

/// What the maps held at one moment, named.
pub struct Snapshot<'a> {
    /// The objects, named and filtered.
    pub objects: &'a [NamedObject<'a>],
    /// Now, on the clock of the objects' timestamps.
    pub now_ns: u64,
    /// Objects younger than this are left out.
    pub min_age_ns: u64,
    /// How objects are grouped.
    pub group_by: GroupBy,
    /// Each group's series so far.
    pub series: &'a SeriesBook<GroupKey>,
    /// The order (already resolved from `auto`).
    pub sort: SortBy,
    /// Keep only this many groups (interval reports); all of them for the final report.
    pub top: Option<usize>,
    /// With `--run`: runs completed so far.
    pub runs: Option<u32>,
}

/// Every group, in report order, before its stacks are named.
pub struct Ranked {
    aggregate: KernelAggregate,
    groups: Vec<(GroupKey, Option<(u32, u32)>, StackReport)>,
}

impl Ranked {
    /// The kernel stack ids to read and name.
    pub fn kernel_stack_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups.iter().filter_map(|(key, _, _)| match key {
            GroupKey::Stack(id) => Some(*id),
            GroupKey::Name(_) => None,
        })
    }

    /// The (tgid, user stack id) pairs to read and name.
    pub fn user_stacks(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.groups.iter().filter_map(|(_, user, _)| *user)
    }
}

fn shares(map: &BTreeMap<String, Totals>) -> Vec<Share> {
    let mut v: Vec<Share> = map.iter().map(|(name, t)| Share { name: name.clone(), bytes: t.bytes, count: t.count }).collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    v
}

fn group_report(g: &KernelGroupAgg, snapshot: &Snapshot<'_>) -> StackReport {
    StackReport {
        bytes: g.totals.bytes,
        count: g.totals.count,
        oldest_age_ms: snapshot.now_ns.saturating_sub(g.oldest_ns) / 1_000_000,
        kernel: Some(KernelGroup {
            key: match &g.key {
                GroupKey::Stack(_) => String::new(),
                GroupKey::Name(name) => name.clone(),
            },
            requested_bytes: g.requested_bytes,
            caches: shares(&g.caches),
            comms: shares(&g.comms),
            user_frames: Vec::new(),
            per_run: snapshot.runs.filter(|&n| n > 0).map(|n| PerRun {
                bytes: g.totals.bytes as f64 / f64::from(n),
                count: g.totals.count as f64 / f64::from(n),
            }),
        }),
        trend: snapshot.series.get(&g.key).map(trend::classify),
        ..StackReport::default()
    }
}

/// Groups the objects old enough to report, gives each group its trend, and orders them.
pub fn rank(snapshot: &Snapshot<'_>) -> Ranked {
    let aggregate = aggregate::kernel_groups(snapshot.objects, snapshot.now_ns, snapshot.min_age_ns, snapshot.group_by);
    let mut groups: Vec<(GroupKey, Option<(u32, u32)>, StackReport)> =
        aggregate.groups.iter().map(|g| (g.key.clone(), g.user_stack, group_report(g, snapshot))).collect();
    model::order_by(&mut groups, snapshot.sort, |(_, _, r)| r);
    if let Some(top) = snapshot.top {
        groups.truncate(top);
    }
    Ranked { aggregate, groups }
}

/// The stacks of the ranked groups, read and named.
#[derive(Default)]
pub struct NamedStacks {
    /// Kernel stacks by id: return addresses, innermost first.
    pub kernel: HashMap<u32, Vec<u64>>,
    /// The frame of each kernel address.
    pub kernel_frames: HashMap<u64, Frame>,
    /// With `--user-stacks`: the allocating task's user frames by (tgid, user stack id).
    pub user: HashMap<(u32, u32), Vec<Frame>>,
}

/// The slab figures the kernel itself reports, at the start and now.
pub struct SlabFigures {
    /// /proc/meminfo at the start.
    pub meminfo_start: SlabMeminfo,
    /// /proc/meminfo now.
    pub meminfo_now: SlabMeminfo,
    /// /proc/slabinfo at the start.
    pub slabinfo_start: BTreeMap<String, CacheFigures>,
    /// /proc/slabinfo now.
    pub slabinfo_now: BTreeMap<String, CacheFigures>,
}

/// Everything else the report says.
pub struct Context {
    /// The `-p` process, or the `--run` command, or the kernel.
    pub target: TargetInfo,
    /// When.
    pub stamp: Stamp,
    /// Whether the target had exited (or the runs were done).
    pub exited: bool,
    /// The filters in force.
    pub filters: model::Filters,
    /// How groups are keyed.
    pub group_by: GroupBy,
    /// The `COUNTERS` array, summed over CPUs.
    pub counters: [u64; Counter::LEN as usize],
    /// Probe hits the kernel skipped.
    pub probe_misses: u64,
    /// Tracepoints traced.
    pub events: Vec<String>,
    /// Whether kernel addresses could be symbolized.
    pub symbols_visible: bool,
    /// /proc's slab figures.
    pub slab: SlabFigures,
    /// With `--run`.
    pub runs: Option<Runs>,
}

const LOSSES: &[(Counter, fn(&mut Lost) -> &mut u64)] = &[
    (Counter::KernelMapFull, |l| &mut l.allocs_map_full),
    (Counter::KernelStackLost, |l| &mut l.stack_lost),
    (Counter::KernelStackCollision, |l| &mut l.stack_collision),
    (Counter::KernelUserStackLost, |l| &mut l.user_stack_lost),
];

const ACTIVITY: &[(Counter, fn(&mut Activity) -> &mut u64)] = &[
    (Counter::KernelAllocs, |a| &mut a.alloc_calls),
    (Counter::KernelFrees, |a| &mut a.free_calls),
    (Counter::KernelFreeUnknown, |a| &mut a.free_unknown),
];

/// Per cache: traced outstanding objects beside the cache's /proc/slabinfo change, most
/// traced bytes first. Pages and percpu chunks are not slab caches.
fn cache_accounts(by_cache: &BTreeMap<String, Totals>, slab: &SlabFigures) -> Vec<CacheAccount> {
    let mut caches: Vec<CacheAccount> = by_cache
        .iter()
        .filter(|(name, _)| !name.starts_with("pages") && name.as_str() != "percpu")
        .map(|(name, &traced)| {
            let (before, after) = (slab.slabinfo_start.get(name), slab.slabinfo_now.get(name));
            let objects = before.zip(after).map(|(b, a)| a.active_objects as i64 - b.active_objects as i64);
            CacheAccount {
                reclaimable: slab::is_reclaimable(name),
                traced,
                slabinfo_objects_delta: objects,
                slabinfo_bytes_delta: objects.zip(after).map(|(d, a)| d * a.object_size as i64),
                name: name.clone(),
            }
        })
        .collect();
    caches.sort_by(|a, b| b.traced.bytes.cmp(&a.traced.bytes).then(a.name.cmp(&b.name)));
    caches
}

/// The report: the ranked groups with their named frames, totals, losses and slab accounting.
pub fn build_report(ranked: Ranked, named: &NamedStacks, context: Context) -> Report {
    let Ranked { aggregate, groups } = ranked;
    let stacks: Vec<StackReport> = groups
        .into_iter()
        .map(|(key, user, mut report)| {
            if let GroupKey::Stack(id) = key {
                report.frames = named
                    .kernel
                    .get(&id)
                    .map(|s| s.iter().filter_map(|a| named.kernel_frames.get(a).cloned()).collect())
                    .unwrap_or_default();
            }
            if let (Some(user), Some(kernel)) = (user, report.kernel.as_mut()) {
                kernel.user_frames = named.user.get(&user).cloned().unwrap_or_default();
            }
            report
        })
        .collect();
    let caches = cache_accounts(&aggregate.by_cache, &context.slab);
    let traced_unreclaimable_bytes = caches.iter().filter(|c| c.reclaimable != Some(true)).map(|c| c.traced.bytes).sum();
    let c = &context.counters;
    let section = Section::Kernel {
        kernel: KernelSection {
            group_by: context.group_by,
            events: context.events,
            symbols_visible: context.symbols_visible,
            meminfo_start: context.slab.meminfo_start,
            meminfo_now: context.slab.meminfo_now,
            caches,
            traced_unreclaimable_bytes,
            runs: context.runs,
        },
    };
    let figures = Figures {
        target_exited: context.exited,
        filters: context.filters,
        totals: aggregate.outstanding,
        too_young: aggregate.too_young,
        without_stack: aggregate.without_stack,
        lost: Lost { probe_misses: context.probe_misses, ..from_counters(c, LOSSES) },
        activity: from_counters(c, ACTIVITY),
        stacks,
        build_ids: BTreeMap::new(),
    };
    Report::assemble(section, context.target, "kernel".into(), context.stamp, figures)
}

/// Every address of `stacks`, once, in order.
pub fn distinct_addresses<'a>(stacks: impl IntoIterator<Item = &'a Vec<u64>>) -> Vec<u64> {
    stacks.into_iter().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect()
}
