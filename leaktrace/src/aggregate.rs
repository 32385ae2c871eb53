//! Grouping outstanding allocations by stack: pure and deterministic, so it is tested
//! without a kernel and gives the same order for the same input.

use std::collections::HashMap;

use crate::bpf::Outstanding;

/// Bytes and allocation count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Bytes requested.
    pub bytes: u64,
    /// Number of allocations.
    pub count: u64,
}

impl Totals {
    fn add(&mut self, size: u64) {
        self.bytes += size;
        self.count += 1;
    }
}

/// Outstanding allocations that share one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackGroup {
    /// Id in the stack map.
    pub stack_id: u32,
    /// Their sum.
    pub totals: Totals,
    /// Timestamp (monotonic ns) of the oldest.
    pub oldest_ns: u64,
    /// Each allocation (address, size, timestamp), oldest first, when asked for.
    pub allocations: Vec<(u64, u64, u64)>,
}

/// The result of grouping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// Groups `allocations` by stack. Allocations younger than `min_age_ns` at `now_ns` are only
/// counted in `too_young`; negative stack ids (failed captures) only in `without_stack`.
pub fn by_stack(allocations: &[Outstanding], now_ns: u64, min_age_ns: u64, keep_allocations: bool) -> Aggregate {
    let mut aggregate = Aggregate::default();
    let mut groups: HashMap<u32, StackGroup> = HashMap::new();
    for alloc in allocations {
        let info = alloc.info;
        aggregate.outstanding.add(info.size);
        if now_ns.saturating_sub(info.timestamp_ns) < min_age_ns {
            aggregate.too_young.add(info.size);
            continue;
        }
        let Ok(stack_id) = u32::try_from(info.stack_id) else {
            aggregate.without_stack.add(info.size);
            continue;
        };
        let group = groups.entry(stack_id).or_insert_with(|| StackGroup {
            stack_id,
            totals: Totals::default(),
            oldest_ns: u64::MAX,
            allocations: Vec::new(),
        });
        group.totals.add(info.size);
        group.oldest_ns = group.oldest_ns.min(info.timestamp_ns);
        if keep_allocations {
            group.allocations.push((alloc.address, info.size, info.timestamp_ns));
        }
    }
    let mut groups: Vec<StackGroup> = groups.into_values().collect();
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

    fn alloc(address: u64, size: u64, timestamp_ns: u64, stack_id: i32) -> Outstanding {
        Outstanding { address, info: AllocInfo { size, timestamp_ns, stack_id, tgid: 1 } }
    }

    #[test]
    fn groups_sums_and_orders_by_bytes_then_count_then_id() {
        let allocs = [
            alloc(1, 100, 10, 7),
            alloc(2, 50, 5, 7),
            alloc(3, 150, 20, 3),
            alloc(4, 75, 1, 9),
            alloc(5, 75, 2, 9),
        ];
        let agg = by_stack(&allocs, 1_000, 0, true);
        let order: Vec<_> = agg.groups.iter().map(|g| (g.stack_id, g.totals.bytes, g.totals.count)).collect();
        assert_eq!(order, [(7, 150, 2), (9, 150, 2), (3, 150, 1)]);
        assert_eq!(agg.groups[0].oldest_ns, 5);
        assert_eq!(agg.groups[0].allocations, [(2, 50, 5), (1, 100, 10)]);
        assert_eq!(agg.outstanding, Totals { bytes: 450, count: 5 });
    }

    #[test]
    fn young_and_stackless_allocations_are_counted_apart() {
        let allocs = [alloc(1, 10, 990, 1), alloc(2, 20, 100, -14), alloc(3, 30, 100, 1), alloc(4, 40, 100, -17)];
        let agg = by_stack(&allocs, 1_000, 500, false);
        assert_eq!(agg.too_young, Totals { bytes: 10, count: 1 });
        assert_eq!(agg.without_stack, Totals { bytes: 60, count: 2 });
        assert_eq!(agg.groups.len(), 1);
        assert_eq!(agg.groups[0].totals, Totals { bytes: 30, count: 1 });
        assert!(agg.groups[0].allocations.is_empty());
        assert_eq!(agg.outstanding, Totals { bytes: 100, count: 4 });
    }
}
