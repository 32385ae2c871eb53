//! Grouping outstanding allocations by stack: pure and deterministic, so it is tested
//! without a kernel and gives the same order for the same input.

use std::collections::{BTreeMap, HashMap};

use leaktrace_common::KernelAlloc;

use crate::{
    bpf::Outstanding,
    config::GroupBy,
    sampling::{Estimator, Sampler},
};

pub use crate::model::Totals;

/// Outstanding allocations that share one stack.
#[derive(Clone, Debug, PartialEq)]
pub struct StackGroup {
    /// Key of the stack in the stack map.
    pub stack_id: u64,
    /// Their sum.
    pub totals: Totals,
    /// Timestamp (monotonic ns) of the oldest.
    pub oldest_ns: u64,
    /// Each allocation (address, size, timestamp), oldest first, when asked for.
    pub allocations: Vec<(u64, u64, u64)>,
    /// With sampling: the estimate behind `totals` (which are then its rounded figures).
    pub estimate: Option<Estimator>,
}

/// The result of grouping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregate {
    /// Groups by stack, most bytes first.
    pub groups: Vec<StackGroup>,
    /// Every outstanding allocation the kernel holds, whatever its age or stack.
    pub outstanding: Totals,
    /// Allocations left out because they are younger than the age threshold.
    pub too_young: Totals,
    /// Allocations old enough to report whose stack could not be captured.
    pub without_stack: Totals,
}

/// Exact totals, or with sampling an estimate rounded into them at the end.
#[derive(Default)]
struct Sum {
    exact: Totals,
    estimate: Estimator,
}

impl Sum {
    fn add(&mut self, size: u64, sampler: Option<&Sampler>) {
        match sampler {
            None => self.exact.add(size),
            Some(sampler) => self.estimate.add(size, sampler.probability(size)),
        }
    }

    fn totals(&self, sampled: bool) -> Totals {
        if sampled {
            Totals { bytes: self.estimate.bytes.round() as u64, count: self.estimate.count.round() as u64 }
        } else {
            self.exact
        }
    }
}

/// Groups `allocations` by stack. Allocations younger than `min_age_ns` at `now_ns` are only
/// counted in `too_young`; negative stack ids (failed captures) only in `without_stack`.
/// With a `sampler` (`--sample-bytes`), every figure is an estimate from the tracked blocks.
pub fn by_stack(
    allocations: &[Outstanding],
    now_ns: u64,
    min_age_ns: u64,
    keep_allocations: bool,
    sampler: Option<&Sampler>,
) -> Aggregate {
    let sampled = sampler.is_some();
    let (mut outstanding, mut too_young, mut without_stack) = (Sum::default(), Sum::default(), Sum::default());
    let mut groups: HashMap<u64, (StackGroup, Sum)> = HashMap::new();
    for alloc in allocations {
        let info = alloc.info;
        outstanding.add(info.size, sampler);
        if now_ns.saturating_sub(info.timestamp_ns) < min_age_ns {
            too_young.add(info.size, sampler);
            continue;
        }
        let stack_id = info.stack_id;
        if stack_id == 0 {
            without_stack.add(info.size, sampler);
            continue;
        }
        let (group, sum) = groups.entry(stack_id).or_insert_with(|| {
            let group = StackGroup {
                stack_id,
                totals: Totals::default(),
                oldest_ns: u64::MAX,
                allocations: Vec::new(),
                estimate: None,
            };
            (group, Sum::default())
        });
        sum.add(info.size, sampler);
        group.oldest_ns = group.oldest_ns.min(info.timestamp_ns);
        if keep_allocations {
            group.allocations.push((alloc.address, info.size, info.timestamp_ns));
        }
    }
    let mut aggregate = Aggregate {
        outstanding: outstanding.totals(sampled),
        too_young: too_young.totals(sampled),
        without_stack: without_stack.totals(sampled),
        ..Aggregate::default()
    };
    let mut groups: Vec<StackGroup> = groups
        .into_values()
        .map(|(mut group, sum)| {
            group.totals = sum.totals(sampled);
            group.estimate = sampled.then_some(sum.estimate);
            group
        })
        .collect();
    for group in &mut groups {
        group.allocations.sort_unstable_by_key(|&(address, _, ts)| (ts, address));
    }
    groups.sort_unstable_by(|a, b| {
        b.totals.bytes.cmp(&a.totals.bytes).then(b.totals.count.cmp(&a.totals.count)).then(a.stack_id.cmp(&b.stack_id))
    });
    aggregate.groups = groups;
    aggregate
}

#[cfg(test)]
mod tests {
    use leaktrace_common::AllocInfo;

    use super::*;

    fn alloc(address: u64, size: u64, timestamp_ns: u64, stack_id: u64) -> Outstanding {
        Outstanding { address, info: AllocInfo { size, timestamp_ns, stack_id, tgid: 1, heap: 0 } }
    }

    #[test]
    fn groups_sums_and_orders_by_bytes_then_count_then_id() {
        let allocs =
            [alloc(1, 100, 10, 7), alloc(2, 50, 5, 7), alloc(3, 150, 20, 3), alloc(4, 75, 1, 9), alloc(5, 75, 2, 9)];
        let agg = by_stack(&allocs, 1_000, 0, true, None);
        let order: Vec<_> = agg.groups.iter().map(|g| (g.stack_id, g.totals.bytes, g.totals.count)).collect();
        assert_eq!(order, [(7, 150, 2), (9, 150, 2), (3, 150, 1)]);
        assert_eq!(agg.groups[0].oldest_ns, 5);
        assert_eq!(agg.groups[0].allocations, [(2, 50, 5), (1, 100, 10)]);
        assert_eq!(agg.outstanding, Totals { bytes: 450, count: 5 });
    }

    #[test]
    fn young_and_stackless_allocations_are_counted_apart() {
        let allocs = [alloc(1, 10, 990, 1), alloc(2, 20, 100, 0), alloc(3, 30, 100, 1), alloc(4, 40, 100, 0)];
        let agg = by_stack(&allocs, 1_000, 500, false, None);
        assert_eq!(agg.too_young, Totals { bytes: 10, count: 1 });
        assert_eq!(agg.without_stack, Totals { bytes: 60, count: 2 });
        assert_eq!(agg.groups.len(), 1);
        assert_eq!(agg.groups[0].totals, Totals { bytes: 30, count: 1 });
        assert!(agg.groups[0].allocations.is_empty());
        assert_eq!(agg.outstanding, Totals { bytes: 100, count: 4 });
    }
}

/// What a kernel-mode group is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// A kernel stack's key in `KSTACKS`.
    Stack(u64),
    /// A cache or command name.
    Name(String),
}

/// Outstanding kernel objects that share a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGroupAgg {
    /// The key.
    pub key: GroupKey,
    /// Bytes as allocated, and count.
    pub totals: Totals,
    /// Bytes requested by the callers.
    pub requested_bytes: u64,
    /// Oldest allocation (monotonic ns).
    pub oldest_ns: u64,
    /// By cache name.
    pub caches: BTreeMap<String, Totals>,
    /// By (comm, tgid).
    pub comms: BTreeMap<(String, u32), Totals>,
    /// (tgid, user stack id) of the oldest object with a user stack.
    pub user_stack: Option<(u32, u32)>,
}

/// Kernel objects grouped, with the per-cache totals the slab accounting needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelAggregate {
    /// Groups, most bytes first.
    pub groups: Vec<KernelGroupAgg>,
    /// Every outstanding object that passed the filters.
    pub outstanding: Totals,
    /// Left out for being too young.
    pub too_young: Totals,
    /// Grouped by stack, objects without a kernel stack.
    pub without_stack: Totals,
    /// Every outstanding object (filters applied, age not) by cache name.
    pub by_cache: BTreeMap<String, Totals>,
}

/// An outstanding kernel object with the names user space gave it.
pub struct NamedObject<'a> {
    /// What the kernel recorded.
    pub alloc: &'a KernelAlloc,
    /// Its cache name.
    pub cache: String,
    /// Its allocating task's command name.
    pub comm: String,
    /// Where its process's chain starts (see `kernel::lineage::origin`).
    pub origin: String,
}

/// Groups kernel objects by `by`. Age is measured as in [`by_stack`].
pub fn kernel_groups(objects: &[NamedObject<'_>], now_ns: u64, min_age_ns: u64, by: GroupBy) -> KernelAggregate {
    let mut aggregate = KernelAggregate::default();
    let mut groups: HashMap<GroupKey, KernelGroupAgg> = HashMap::new();
    for object in objects {
        let alloc = object.alloc;
        let bytes = alloc.bytes_alloc;
        aggregate.outstanding.add(bytes);
        aggregate.by_cache.entry(object.cache.clone()).or_default().add(bytes);
        if now_ns.saturating_sub(alloc.timestamp_ns) < min_age_ns {
            aggregate.too_young.add(bytes);
            continue;
        }
        let key = match by {
            // Kernel mode refuses `--by process` (cli.rs): a process groups like its stacks.
            GroupBy::Stack | GroupBy::Process if alloc.kernel_stack == 0 => {
                aggregate.without_stack.add(bytes);
                continue;
            }
            GroupBy::Stack | GroupBy::Process => GroupKey::Stack(alloc.kernel_stack),
            GroupBy::Cache => GroupKey::Name(object.cache.clone()),
            GroupBy::Comm => GroupKey::Name(object.comm.clone()),
            GroupBy::Origin => GroupKey::Name(object.origin.clone()),
        };
        let group = groups.entry(key.clone()).or_insert_with(|| KernelGroupAgg {
            key,
            totals: Totals::default(),
            requested_bytes: 0,
            oldest_ns: u64::MAX,
            caches: BTreeMap::new(),
            comms: BTreeMap::new(),
            user_stack: None,
        });
        group.totals.add(bytes);
        group.requested_bytes += alloc.bytes_req;
        if alloc.timestamp_ns < group.oldest_ns || group.user_stack.is_none() {
            if let Ok(id) = u32::try_from(alloc.user_stack_id) {
                group.user_stack = Some((alloc.tgid, id));
            }
        }
        group.oldest_ns = group.oldest_ns.min(alloc.timestamp_ns);
        group.caches.entry(object.cache.clone()).or_default().add(bytes);
        group.comms.entry((object.comm.clone(), alloc.tgid)).or_default().add(bytes);
    }
    let mut groups: Vec<KernelGroupAgg> = groups.into_values().collect();
    groups.sort_unstable_by(|a, b| {
        b.totals.bytes.cmp(&a.totals.bytes).then(b.totals.count.cmp(&a.totals.count)).then(a.key.cmp(&b.key))
    });
    aggregate.groups = groups;
    aggregate
}

#[cfg(test)]
mod kernel_tests {
    use leaktrace_common::KernelAlloc;

    use super::*;

    fn object(bytes: u64, ts: u64, stack: u64, tgid: u32) -> KernelAlloc {
        KernelAlloc {
            timestamp_ns: ts,
            bytes_alloc: bytes,
            bytes_req: bytes - 1,
            gfp_flags: 0,
            order: 0,
            kernel_stack: stack,
            user_stack_id: -1,
            pid: tgid,
            tgid,
            space: 0,
            comm: [0; 16],
            cache: [0; 32],
        }
    }

    #[test]
    fn groups_by_stack_cache_and_comm() {
        let allocs = [object(64, 1, 5, 10), object(64, 2, 5, 11), object(128, 3, 6, 10), object(32, 4, 0, 10)];
        let named: Vec<NamedObject> = allocs
            .iter()
            .map(|a| NamedObject {
                alloc: a,
                cache: format!("kmalloc-{}", a.bytes_alloc),
                comm: if a.tgid == 10 { "sh".into() } else { "cat".into() },
                origin: if a.tgid == 10 { "cron".into() } else { "cat".into() },
            })
            .collect();
        let by_stack = kernel_groups(&named, 100, 0, GroupBy::Stack);
        assert_eq!(by_stack.groups.len(), 2);
        assert_eq!(by_stack.groups[0].key, GroupKey::Stack(5));
        assert_eq!(by_stack.groups[0].totals, Totals { bytes: 128, count: 2 });
        assert_eq!(by_stack.groups[0].requested_bytes, 126);
        assert_eq!(by_stack.groups[0].comms.len(), 2);
        assert_eq!(by_stack.without_stack, Totals { bytes: 32, count: 1 });
        assert_eq!(by_stack.by_cache["kmalloc-64"], Totals { bytes: 128, count: 2 });
        let by_comm = kernel_groups(&named, 100, 0, GroupBy::Comm);
        assert_eq!(by_comm.groups[0].key, GroupKey::Name("sh".into()));
        assert_eq!(by_comm.groups[0].totals, Totals { bytes: 224, count: 3 });
        let by_origin = kernel_groups(&named, 100, 0, GroupBy::Origin);
        assert_eq!(by_origin.groups[0].key, GroupKey::Name("cron".into()));
        assert_eq!(by_origin.groups[0].totals, Totals { bytes: 224, count: 3 });
        let by_cache = kernel_groups(&named, 100, 0, GroupBy::Cache);
        assert_eq!(by_cache.groups.len(), 3);
        assert_eq!(by_cache.outstanding, Totals { bytes: 288, count: 4 });
    }
}
