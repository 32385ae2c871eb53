//! Every map and load-time global of the programs, in one place.
//!
//! Capacities here are defaults: the loader resizes ALLOCS and STACKS from the command line.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{HashMap, PerCpuArray, StackTrace},
    Global,
};
use leaktrace_common::{
    names::{DEFAULT_MAX_ALLOCS, DEFAULT_MAX_KERNEL_ALLOCS, DEFAULT_STACK_STORAGE, MAX_PENDING, MAX_TARGETS},
    AllocInfo, Counter, KernelAlloc, KernelKey, PendingCall,
};

/// Outstanding allocations. Not preallocated: a million-entry preallocated hash would pin
/// ~100 MiB of kernel memory on the traced machine before the first allocation.
#[map]
pub static ALLOCS: HashMap<u64, AllocInfo> =
    HashMap::with_max_entries(DEFAULT_MAX_ALLOCS, BPF_F_NO_PREALLOC);

/// In-flight allocator calls by thread id.
#[map]
pub static PENDING: HashMap<u32, PendingCall> = HashMap::with_max_entries(MAX_PENDING, 0);

/// User stacks, deduplicated by the kernel. No BPF_F_REUSE_STACKID: a reused id could later
/// point at a different stack than the one an older allocation recorded.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(DEFAULT_STACK_STORAGE, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::LEN, 0);

/// Traced processes (tgid → unused byte).
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Kernel mode: outstanding kernel objects. Preallocated on purpose: a map that allocates
/// on insert would call kmalloc from inside our own kmalloc tracing, and its refills would
/// show up as allocations of whatever task they interrupted. The loader shrinks whichever of
/// the two modes' maps is unused to one entry.
#[map]
pub static KALLOCS: HashMap<KernelKey, KernelAlloc> = HashMap::with_max_entries(DEFAULT_MAX_KERNEL_ALLOCS, 0);

/// Kernel mode: kernel stacks of allocations.
#[map]
pub static KSTACKS: StackTrace = StackTrace::with_max_entries(DEFAULT_STACK_STORAGE, 0);

#[unsafe(no_mangle)]
pub static FILTER_TARGETS: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static USER_STACKS: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FOLLOW_FORKS: Global<u8> = Global::new(0);

#[unsafe(no_mangle)]
pub static SELF_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static MIN_SIZE: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static MAX_SIZE: Global<u64> = Global::new(u64::MAX);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot, and uprobe programs do not nest on one CPU: a plain add is safe.
        unsafe { *slot += 1 };
    }
}
