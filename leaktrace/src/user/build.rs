//! A user-mode report from what was read out of the maps: pure, so that it is tested without
//! a kernel. Two steps, because only the stacks that will be shown are read and named:
//! [`rank`] orders every group, then [`build_report`] puts the named stacks in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use leaktrace_common::{Counter, StackEnd};

use crate::{
    aggregate::{self, Aggregate},
    bpf::Outstanding,
    driver::{from_counters, CounterFields},
    focus,
    model::{
        self, Activity, Allocation, FamilyReport, Figures, Frame, FrameKind, Holder, Lost, NotAttached, ProbeReport,
        ProcessSummary, Report, SamplingSection, Section, SortBy, StackReport, Stamp, TargetInfo, UnwindSection,
        UserSection,
    },
    php::{self, PhpFrame},
    sampling::Sampler,
    trend::{self, SeriesBook},
    unwind,
};

/// What the maps held at one moment.
pub struct Snapshot<'a> {
    /// Every outstanding allocation.
    pub outstanding: &'a [Outstanding],
    /// Now, on the clock of the allocations' timestamps.
    pub now_ns: u64,
    /// Allocations younger than this are left out.
    pub min_age_ns: u64,
    /// Keep each allocation under its stack (`--show-allocs`).
    pub show_allocs: bool,
    /// With `--sample-bytes`.
    pub sampler: Option<&'a Sampler>,
    /// Each stack's series so far.
    pub series: &'a SeriesBook<u64>,
    /// The order (already resolved from `auto`).
    pub sort: SortBy,
    /// Keep only this many stacks (interval reports); all of them for the final report.
    pub top: Option<usize>,
    /// With several traced processes, each one's name: every stack then lists its holders.
    pub holders: Option<&'a BTreeMap<u32, String>>,
    /// More than the C heap is traced (PHP's): every stack names its heap.
    pub tag_heaps: bool,
}

/// Every group, in report order, before its stack is named.
pub struct Ranked {
    aggregate: Aggregate,
    stacks: Vec<(u64, StackReport)>,
    /// The process that holds each stack's blocks (a stack id is one process's: its hash
    /// covers the tgid).
    owners: HashMap<u64, u32>,
}

impl Ranked {
    /// The stack ids to read and name, in report order.
    pub fn stack_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.stacks.iter().map(|(id, _)| *id)
    }

    /// The process whose blocks stack `id` holds; 0 when it holds none (a churn stack).
    pub fn owner(&self, id: u64) -> u32 {
        self.owners.get(&id).copied().unwrap_or(0)
    }
}

/// Groups the outstanding allocations by stack, gives each its trend, adds the churn stacks
/// that hold nothing now, and orders them. Every group gets its trend and is ordered before
/// any is named, so that the top by growth is named even when it is not the top by bytes.
pub fn rank(snapshot: &Snapshot<'_>) -> Ranked {
    let now = snapshot.now_ns;
    let aggregate =
        aggregate::by_stack(snapshot.outstanding, now, snapshot.min_age_ns, snapshot.show_allocs, snapshot.sampler);
    let owners: HashMap<u64, u32> = snapshot.outstanding.iter().map(|o| (o.info.stack_id, o.info.tgid)).collect();
    // A stack's blocks are all on one heap: the heap is part of its key.
    let heaps: HashMap<u64, u32> = if snapshot.tag_heaps {
        snapshot.outstanding.iter().map(|o| (o.info.stack_id, o.info.heap)).collect()
    } else {
        HashMap::new()
    };
    let mut stacks: Vec<(u64, StackReport)> = aggregate
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
                    .map(|&(address, size, ts)| Allocation {
                        address,
                        size,
                        age_ms: now.saturating_sub(ts) / 1_000_000,
                    })
                    .collect(),
                trend: snapshot.series.get(&g.stack_id).map(trend::classify),
                estimate: g.estimate.map(|e| e.summary()),
                holders: snapshot
                    .holders
                    .and_then(|comms| {
                        let pid = *owners.get(&g.stack_id)?;
                        let comm = comms.get(&pid).cloned().unwrap_or_default();
                        Some(vec![Holder { pid, comm, bytes: g.totals.bytes, count: g.totals.count }])
                    })
                    .unwrap_or_default(),
                heap: heaps
                    .get(&g.stack_id)
                    .and_then(|&h| leaktrace_common::Heap::from_u32(h))
                    .map(crate::allocator::model_heap),
                ..StackReport::default()
            };
            (g.stack_id, report)
        })
        .collect();
    // Stacks holding nothing now but turning memory over at a high rate are reported too
    // (with zero bytes): telling churn from a leak is part of the answer.
    let holding: HashSet<u64> = stacks.iter().map(|(id, _)| *id).collect();
    let churn = snapshot.series.churning(|id| holding.contains(id));
    stacks.extend(
        churn.into_iter().map(|(id, trend)| (id, StackReport { trend: Some(trend), ..StackReport::default() })),
    );
    model::order_by(&mut stacks, snapshot.sort, |(_, r)| r);
    if let Some(top) = snapshot.top {
        stacks.truncate(top);
    }
    Ranked { aggregate, stacks, owners }
}

/// The stacks of the ranked groups, read and named.
#[derive(Default)]
pub struct NamedStacks {
    /// Each stack's return addresses (innermost first) and how its unwinding ended.
    pub stacks: HashMap<u64, (Vec<u64>, StackEnd)>,
    /// The frames of each address, by the process it is in (0: a stack without an owner,
    /// named with the first process's mappings).
    pub frames: HashMap<(u32, u64), Vec<Frame>>,
    /// Frames of stacks captured in a library since unloaded, named while its mapping was
    /// known, by stack id and address: they take precedence over `frames`.
    pub pinned: HashMap<u64, HashMap<u64, Vec<Frame>>>,
    /// The PHP frames of each stack of a PHP process, innermost first.
    pub php: HashMap<u64, Vec<PhpFrame>>,
}

/// Everything else the report says.
pub struct Context {
    /// The traced process.
    pub target: TargetInfo,
    /// The allocator's object.
    pub allocator: String,
    /// When.
    pub stamp: Stamp,
    /// Whether the process had exited.
    pub exited: bool,
    /// The filters in force.
    pub filters: model::Filters,
    /// The `COUNTERS` array, summed over CPUs.
    pub counters: [u64; Counter::LEN as usize],
    /// Probe hits the kernel skipped.
    pub probe_misses: u64,
    /// The unwind section without its `stacks_by_end` (filled here); none with `--unwind fp`.
    pub unwind: Option<UnwindSection>,
    /// Where each function is probed.
    pub probes: Vec<ProbeReport>,
    /// With `--sample-bytes`: the period and whether unsampled calls skipped their returns.
    pub sampling: Option<(u64, bool)>,
    /// Build-ids of every module the processes mapped, by path.
    pub build_ids: BTreeMap<String, String>,
    /// Which allocator families were found in which objects.
    pub allocators: Vec<FamilyReport>,
    /// Probes the kernel refused.
    pub not_attached: Vec<NotAttached>,
    /// Blocks and bytes dropped because their process ran a new program.
    pub exec_dropped: (u64, u64),
    /// Blocks and bytes of PHP's heap still held when the heap was reset.
    pub php_heap_released: (u64, u64),
    /// Every process, when there were several.
    pub processes: Vec<ProcessSummary>,
    /// `--by process`: the same stack in two processes stays two stacks.
    pub by_process: bool,
}

/// Which counter feeds which loss.
const LOSSES: &CounterFields<Lost> = &[
    (Counter::AllocsMapFull, |l| &mut l.allocs_map_full),
    (Counter::StackLost, |l| &mut l.stack_lost),
    (Counter::StackCollision, |l| &mut l.stack_collision),
    (Counter::ReturnWithoutEntry, |l| &mut l.return_without_entry),
    (Counter::PendingMapFull, |l| &mut l.pending_map_full),
    (Counter::PendingStale, |l| &mut l.pending_stale),
    (Counter::OutPointerUnreadable, |l| &mut l.out_pointer_unreadable),
    (Counter::ProcessEventLost, |l| &mut l.process_events_lost),
    (Counter::PhpStackLost, |l| &mut l.php_frames_lost),
    (Counter::PhpStackTruncated, |l| &mut l.php_frames_truncated),
];

/// Which counter feeds which activity figure.
const ACTIVITY: &CounterFields<Activity> = &[
    (Counter::AllocCalls, |a| &mut a.alloc_calls),
    (Counter::FreeCalls, |a| &mut a.free_calls),
    (Counter::FreeUnknown, |a| &mut a.free_unknown),
    (Counter::NestedCalls, |a| &mut a.nested_calls),
    (Counter::FailedAllocs, |a| &mut a.failed_allocs),
];

/// The report: the ranked groups with their named frames, totals, losses and sections.
pub fn build_report(ranked: Ranked, named: &NamedStacks, context: Context) -> Report {
    let Ranked { aggregate, stacks: ranked, owners } = ranked;
    let mut cut_short = 0u64;
    let mut stacks_by_end = BTreeMap::new();
    let stacks: Vec<StackReport> = ranked
        .into_iter()
        .map(|(id, mut report)| {
            let (addresses, end) =
                named.stacks.get(&id).map_or((&[][..], StackEnd::Complete), |(ips, end)| (ips.as_slice(), *end));
            let owner = owners.get(&id).copied().unwrap_or(0);
            let ending = unwind::ending(end);
            report.cut_short = ending.is_cut_short().then_some(ending);
            *stacks_by_end.entry(ending).or_insert(0u64) += 1;
            // A frame-pointer walk through code built without frame pointers reads arbitrary
            // stack words as return addresses; the first one outside every executable mapping
            // ends the stack, and what follows it is not shown.
            let pinned = named.pinned.get(&id);
            let frames_of = |a: &u64| pinned.and_then(|p| p.get(a)).or_else(|| named.frames.get(&(owner, *a)));
            let mapped = addresses
                .iter()
                .take_while(|a| frames_of(a).is_some_and(|f| f.first().is_some_and(|f| f.module.is_some())))
                .count();
            if mapped < addresses.len() {
                cut_short += 1;
            }
            report.frames =
                addresses[..mapped].iter().flat_map(|a| frames_of(a).cloned().unwrap_or_default()).collect();
            if let Some(php_frames) = named.php.get(&id) {
                report.frames = php::splice(std::mem::take(&mut report.frames), php_frames);
            }
            report.focus_frame = focus::user_focus(&report.frames);
            report
        })
        .collect();
    let stacks = if context.by_process { by_process(stacks) } else { merge_holders(stacks, context.filters.sort) };
    let c = &context.counters;
    let php_names_unreadable =
        stacks.iter().flat_map(|s| &s.frames).filter(|f| f.kind == Some(FrameKind::Php) && f.symbol.is_none()).count();
    let lost = Lost {
        probe_misses: context.probe_misses,
        probes_not_attached: context.not_attached.len() as u64,
        php_names_unreadable: php_names_unreadable as u64,
        ..from_counters(c, LOSSES)
    };
    let activity = Activity {
        stacks_cut_short: cut_short,
        exec_dropped_blocks: context.exec_dropped.0,
        exec_dropped_bytes: context.exec_dropped.1,
        php_heap_released_blocks: context.php_heap_released.0,
        php_heap_released_bytes: context.php_heap_released.1,
        ..from_counters(c, ACTIVITY)
    };
    let used: BTreeSet<&str> = stacks.iter().flat_map(|s| &s.frames).filter_map(|f| f.module.as_deref()).collect();
    let build_ids = context.build_ids.into_iter().filter(|(m, _)| used.contains(m.as_str())).collect();
    let section = Section::User(UserSection {
        unwind: context.unwind.map(|u| UnwindSection { stacks_by_end, ..u }),
        probes: context.probes,
        sampling: context.sampling.map(|(period_bytes, return_probes_skipped)| SamplingSection {
            period_bytes,
            return_probes_skipped,
            unsampled_calls: c[Counter::SampledOut as usize],
        }),
        allocators: context.allocators,
        not_attached: context.not_attached,
        processes: context.processes,
    });
    let figures = Figures {
        target_exited: context.exited,
        filters: context.filters,
        totals: aggregate.outstanding,
        too_young: aggregate.too_young,
        without_stack: aggregate.without_stack,
        lost,
        activity,
        stacks,
        build_ids,
    };
    Report::assemble(section, context.target, context.allocator, context.stamp, figures)
}

/// What makes two processes' stacks the same stack: the same functions at the same offsets
/// in the same files (their addresses differ between processes). Per frame: module, symbol,
/// offset.
type Signature = Vec<(Option<String>, Option<String>, Option<u64>)>;

fn signature(stack: &StackReport) -> Signature {
    stack.frames.iter().map(|f| (f.module.clone(), f.symbol.clone(), f.offset)).collect()
}

/// One stack for every process holding memory from it: bytes, counts and holders summed,
/// the oldest age kept. Stacks without holders (one process traced) are left as they are.
fn merge_holders(stacks: Vec<StackReport>, sort: SortBy) -> Vec<StackReport> {
    if stacks.iter().all(|s| s.holders.is_empty()) {
        return stacks;
    }
    let mut merged: Vec<StackReport> = Vec::with_capacity(stacks.len());
    let mut index: HashMap<Signature, usize> = HashMap::new();
    for stack in stacks {
        let key = signature(&stack);
        match index.get(&key).filter(|_| !stack.frames.is_empty() && !stack.holders.is_empty()) {
            Some(&i) => {
                let into = &mut merged[i];
                into.bytes += stack.bytes;
                into.count += stack.count;
                into.oldest_age_ms = into.oldest_age_ms.max(stack.oldest_age_ms);
                into.allocations.extend(stack.allocations);
                into.holders.extend(stack.holders);
            }
            None => {
                index.insert(key, merged.len());
                merged.push(stack);
            }
        }
    }
    for stack in &mut merged {
        stack.holders.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pid.cmp(&b.pid)));
    }
    // Summing can reorder by bytes; the other orders are applied on top, as in `rank`.
    merged.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    model::order_by(&mut merged, sort, |s| s);
    merged
}

/// `--by process`: the stacks of each process together, processes in pid order, each one's
/// stacks in report order.
fn by_process(mut stacks: Vec<StackReport>) -> Vec<StackReport> {
    stacks.sort_by_key(|s| s.holders.first().map_or(0, |h| h.pid));
    stacks
}

#[cfg(test)]
mod tests {
    use leaktrace_common::AllocInfo;

    use super::*;
    use crate::model::{Filters, Sample, StackEnding};

    const MS: u64 = 1_000_000;

    fn alloc(address: u64, size: u64, timestamp_ns: u64, stack_id: u64) -> Outstanding {
        Outstanding { address, info: AllocInfo { size, timestamp_ns, stack_id, tgid: 7, heap: 0 } }
    }

    fn frame(address: u64, module: &str, symbol: &str) -> Frame {
        Frame { address, module: Some(module.into()), symbol: Some(symbol.into()), offset: Some(4), ..Frame::default() }
    }

    fn context(counters: [u64; Counter::LEN as usize], probe_misses: u64) -> Context {
        Context {
            target: TargetInfo { pid: 7, command: "app".into(), exe: "/bin/app".into() },
            allocator: "/lib/libc.so.6".into(),
            stamp: Stamp::default(),
            exited: true,
            filters: Filters { top: 10, ..Filters::default() },
            counters,
            probe_misses,
            unwind: None,
            probes: Vec::new(),
            sampling: None,
            build_ids: [("/bin/app".to_string(), "ab".to_string()), ("/lib/other.so".to_string(), "cd".to_string())]
                .into_iter()
                .collect(),
            allocators: Vec::new(),
            not_attached: Vec::new(),
            exec_dropped: (0, 0),
            php_heap_released: (0, 0),
            processes: Vec::new(),
            by_process: false,
        }
    }

    /// Two stacks (300 and 200 bytes), a young block and a block without a stack.
    fn report(counters: [u64; Counter::LEN as usize], probe_misses: u64) -> Report {
        let outstanding = [
            alloc(0x10, 100, 0, 1),
            alloc(0x20, 200, 0, 1),
            alloc(0x30, 200, 0, 2),
            alloc(0x40, 50, 10 * MS, 1),
            alloc(0x50, 70, 0, 0),
        ];
        let series = SeriesBook::new(Sample::default());
        let snapshot = Snapshot { now_ns: 10 * MS, min_age_ns: 5 * MS, ..snapshot(&outstanding, &series) };
        let ranked = rank(&snapshot);
        assert_eq!(ranked.stack_ids().collect::<Vec<_>>(), [1, 2]);
        let mut named = NamedStacks::default();
        named.stacks.insert(1, (vec![0x1000, 0x2000], StackEnd::Complete));
        // Stack 2's second address is in no mapping: the stack is shown up to it.
        named.stacks.insert(2, (vec![0x1000, 0x9999], StackEnd::DepthLimit));
        named.frames.insert((7, 0x1000), vec![frame(0x1000, "/bin/app", "leak")]);
        named.frames.insert((7, 0x2000), vec![frame(0x2000, "/bin/app", "main")]);
        named.frames.insert((7, 0x9999), vec![Frame { address: 0x9999, ..Frame::default() }]);
        build_report(ranked, &named, context(counters, probe_misses))
    }

    fn held(pid: u32, bytes: u64, symbol: &str, address: u64) -> StackReport {
        StackReport {
            bytes,
            count: 1,
            frames: vec![frame(address, "/bin/app", symbol)],
            holders: vec![Holder { pid, comm: "app".into(), bytes, count: 1 }],
            ..StackReport::default()
        }
    }

    /// The same functions in two processes (at other addresses) are one stack with both as
    /// holders; another function stays apart; `--by process` keeps each process's own.
    #[test]
    fn the_same_stack_in_several_processes_is_one_with_its_holders() {
        let stacks = vec![held(11, 100, "leak", 0x1000), held(12, 300, "leak", 0x7000), held(11, 200, "other", 0x2000)];
        let merged = merge_holders(stacks.clone(), SortBy::Bytes);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].bytes, merged[0].count), (400, 2));
        let holders: Vec<(u32, u64)> = merged[0].holders.iter().map(|h| (h.pid, h.bytes)).collect();
        assert_eq!(holders, [(12, 300), (11, 100)], "most bytes first");
        assert_eq!(merged[1].bytes, 200);
        let apart = by_process(stacks);
        let pids: Vec<u32> = apart.iter().map(|s| s.holders[0].pid).collect();
        assert_eq!(pids, [11, 11, 12]);
        // One process traced: no holders, nothing merged.
        let single = vec![StackReport { holders: Vec::new(), ..held(11, 5, "leak", 1) }; 2];
        assert_eq!(merge_holders(single, SortBy::Bytes).len(), 2);
    }

    #[test]
    fn figures_stacks_and_frames_come_out_exactly() {
        let report = report([0; Counter::LEN as usize], 0);
        assert_eq!(report.totals, model::Totals { bytes: 620, count: 5 });
        assert_eq!(report.too_young, model::Totals { bytes: 50, count: 1 });
        assert_eq!(report.without_stack, model::Totals { bytes: 70, count: 1 });
        let figures: Vec<(u64, u64)> = report.stacks.iter().map(|s| (s.bytes, s.count)).collect();
        assert_eq!(figures, [(300, 2), (200, 1)]);
        let names: Vec<Vec<&str>> =
            report.stacks.iter().map(|s| s.frames.iter().map(|f| f.symbol.as_deref().unwrap()).collect()).collect();
        assert_eq!(names, [vec!["leak", "main"], vec!["leak"]]);
        assert_eq!(report.stacks[0].cut_short, None);
        assert_eq!(report.stacks[1].cut_short, Some(StackEnding::FrameLimit));
        assert_eq!(report.activity.stacks_cut_short, 1);
        // Only modules that appear in a stack keep their build-id.
        assert_eq!(report.build_ids.keys().collect::<Vec<_>>(), ["/bin/app"]);
        assert_eq!(report.target.pid, 7);
        assert!(report.user().is_some());
    }

    #[test]
    fn every_counter_lands_in_its_own_field() {
        let mut counters = [0; Counter::LEN as usize];
        for (i, value) in counters.iter_mut().enumerate() {
            *value = 100 + i as u64;
        }
        let report = report(counters, 2);
        let at = |c: Counter| 100 + c as u64;
        let lost = &report.lost;
        assert_eq!(
            [lost.allocs_map_full, lost.stack_lost, lost.stack_collision, lost.return_without_entry],
            [
                at(Counter::AllocsMapFull),
                at(Counter::StackLost),
                at(Counter::StackCollision),
                at(Counter::ReturnWithoutEntry)
            ]
        );
        assert_eq!(
            [lost.pending_map_full, lost.pending_stale, lost.out_pointer_unreadable, lost.probe_misses],
            [at(Counter::PendingMapFull), at(Counter::PendingStale), at(Counter::OutPointerUnreadable), 2]
        );
        let a = &report.activity;
        assert_eq!(
            [a.alloc_calls, a.free_calls, a.free_unknown, a.nested_calls, a.failed_allocs],
            [
                at(Counter::AllocCalls),
                at(Counter::FreeCalls),
                at(Counter::FreeUnknown),
                at(Counter::NestedCalls),
                at(Counter::FailedAllocs)
            ]
        );
        assert!(report.incomplete);
        assert!(!self::report([0; Counter::LEN as usize], 0).incomplete);
        // A skipped probe hit alone makes the figures incomplete.
        assert!(self::report([0; Counter::LEN as usize], 1).incomplete);
    }

    /// A snapshot of `outstanding` at time 0, by bytes, with nothing left out.
    fn snapshot<'a>(outstanding: &'a [Outstanding], series: &'a SeriesBook<u64>) -> Snapshot<'a> {
        Snapshot {
            outstanding,
            now_ns: 0,
            min_age_ns: 0,
            show_allocs: false,
            sampler: None,
            series,
            sort: SortBy::Bytes,
            top: None,
            holders: None,
            tag_heaps: false,
        }
    }

    #[test]
    fn each_stack_names_its_heap_when_php_heap_is_traced() {
        let mut outstanding = vec![alloc(0x10, 100, 0, 1), alloc(0x20, 40, 0, 2)];
        outstanding[1].info.heap = leaktrace_common::Heap::Php as u32;
        let series = SeriesBook::new(Sample::default());
        let heaps_of = |tag_heaps: bool| {
            let snapshot = Snapshot { tag_heaps, ..snapshot(&outstanding, &series) };
            rank(&snapshot).stacks.iter().map(|(id, r)| (*id, r.heap)).collect::<Vec<_>>()
        };
        assert_eq!(heaps_of(true), [(1, Some(model::Heap::Malloc)), (2, Some(model::Heap::Php))]);
        // A trace of the C heap alone keeps its reports as they were.
        assert_eq!(heaps_of(false), [(1, None), (2, None)]);
    }
}
