//! Every map and load-time global of the programs, in one place.
//!
//! Capacities here are defaults: the loader resizes ALLOCS and STACKS from the command line.
//!
//! # Per-CPU values
//!
//! The programs write `STACK_SCRATCH`, `STACK_STATS`, `COUNTERS` and `UNWIND_CACHE` through
//! plain references. A per-CPU lookup returns the running CPU's copy, and the kernel runs a
//! program with migration disabled, so the copy stays this CPU's until the program returns.
//! No other program run writes it meanwhile: the kernel does not nest tracepoint programs on
//! a CPU (a nested run is skipped and counted in the program's `recursion_misses`), and a
//! uprobe program runs in the probed task, which the kernel does not switch away from inside
//! the program unless it preempts kernel code (`preempt=full`, PREEMPT_RT). On such a kernel
//! a preempted program's copy can be written by another task's program on the same CPU; the
//! verifier still bounds every access and the values are plain integers, so that costs a
//! wrong stack or a lost count, never an access outside the value. User space only reads
//! these maps, through the bpf system call, which copies them.

use core::cell::UnsafeCell;

use aya_ebpf::{
    bindings::{
        bpf_map_def, bpf_map_type::BPF_MAP_TYPE_STACK_TRACE, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_F_STACK_BUILD_ID,
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    Global,
};
use leaktrace_common::{
    kernel::{BuildIdFrame, SlabPages, EXEC_PATH_LEN, MAX_BUILD_ID_FRAMES},
    names::{
        DEFAULT_MAX_ALLOCS, DEFAULT_MAX_KERNEL_ALLOCS, DEFAULT_STACK_STORAGE, MAX_EXECUTABLES, MAX_LINEAGE,
        MAX_PENDING, MAX_PHP_PROCESSES, MAX_TARGETS,
    },
    sampling::{sample_probability, weighted_bytes, weighted_count, SAMPLE_TABLE_LEN},
    unwind::{UnwindCacheEntry, DEFAULT_UNWIND_ROWS, MAX_UNWIND_MAPPINGS, UNWIND_CACHE_SIZE, UNWIND_SLOTS},
    AllocInfo, AllocKey, Counter, KernelAlloc, KernelKey, Lineage, PendingCall, PhpProcess, PhpStack, ProcessSlot,
    ReuseKey, StackRecord, StackStats, UnwindMapping, UnwindRow,
};

/// Outstanding allocations. Not preallocated: a million-entry preallocated hash would pin
/// ~100 MiB of kernel memory on the traced machine before the first allocation.
#[map]
pub static ALLOCS: HashMap<AllocKey, AllocInfo> = HashMap::with_max_entries(DEFAULT_MAX_ALLOCS, BPF_F_NO_PREALLOC);

/// In-flight allocator calls by thread id.
#[map]
pub static PENDING: HashMap<u32, PendingCall> = HashMap::with_max_entries(MAX_PENDING, 0);

/// The block each thread last freed, and the stack pointer at that free.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct LastFree {
    /// The block.
    pub addr: u64,
    /// Stack pointer at the free-like function's probe.
    pub sp: u64,
}

/// Thread id → the last block it freed. One free often passes through several probed
/// functions (C++'s sized `delete` jumps to `delete`, which jumps to `free`); the later ones
/// see the same block from the same or a deeper stack and are nested calls, not frees of an
/// untracked block. LRU: threads that exit leave their entry, which ages out.
#[map]
pub static LAST_FREE: LruHashMap<u32, LastFree> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// User stacks of allocations by hash. Our own map rather than a kernel stack map: that one
/// keeps a single stack per hash bucket and drops every other stack that lands there.
/// Not preallocated: only stacks actually seen take memory.
#[map]
pub static USTACKS: HashMap<u64, StackRecord> = HashMap::with_max_entries(DEFAULT_STACK_STORAGE, BPF_F_NO_PREALLOC);

/// Where a stack is captured before it is hashed (too big for the BPF stack).
#[map]
pub static STACK_SCRATCH: PerCpuArray<StackRecord> = PerCpuArray::with_max_entries(1, 0);

/// Kernel mode with --user-stacks: the allocating tasks' user stacks, each frame as the
/// build-id of the file it is in and its offset there (`BPF_F_STACK_BUILD_ID`), so that a
/// stack can be named after its process has exited and its mappings are gone (a status
/// script's children). A frame whose build-id the kernel could not read keeps its address.
/// No BPF_F_REUSE_STACKID: a reused id could later point at a different stack than the one
/// an older allocation recorded. aya-ebpf's `StackTrace` has room for 127 addresses, not a
/// whole number of build-id frames, hence the definition by hand.
#[unsafe(link_section = "maps")]
#[unsafe(export_name = "STACKS")]
pub static STACKS: BuildIdStacks = BuildIdStacks(UnsafeCell::new(bpf_map_def {
    type_: BPF_MAP_TYPE_STACK_TRACE,
    key_size: core::mem::size_of::<u32>() as u32,
    value_size: core::mem::size_of::<[BuildIdFrame; MAX_BUILD_ID_FRAMES]>() as u32,
    max_entries: DEFAULT_STACK_STORAGE,
    map_flags: BPF_F_STACK_BUILD_ID,
    id: 0,
    pinning: 0,
}));

/// A stack-trace map definition whose values are build-id frames.
#[repr(transparent)]
pub struct BuildIdStacks(UnsafeCell<bpf_map_def>);

// SAFETY: the definition is only read, by the loader; programs pass its address to helpers.
unsafe impl Sync for BuildIdStacks {}

impl BuildIdStacks {
    /// The map's address, for `bpf_get_stackid`.
    pub fn as_ptr(&self) -> *mut core::ffi::c_void {
        self.0.get().cast()
    }
}

/// Turnover per stack. Per CPU, so that the hot path never contends on a shared counter.
#[map]
pub static STACK_STATS: PerCpuHashMap<u64, StackStats> = PerCpuHashMap::with_max_entries(DEFAULT_STACK_STORAGE, 0);

/// `--sample-bytes`: the sampling probability table (see `leaktrace_common::sampling`).
#[map]
pub static SAMPLE_TABLE: Array<u32> = Array::with_max_entries(SAMPLE_TABLE_LEN, 0);

/// Probability × 2^32 that an allocation of `size` bytes is tracked (1 when not sampling).
#[inline(always)]
pub fn sample_probability_of(size: u64) -> u64 {
    sample_probability(size, SAMPLE_PERIOD.load(), |i| SAMPLE_TABLE.get(i).copied())
}

/// Adds one allocation (`allocated`) or one free of `size` bytes to a stack's turnover;
/// when sampling, the block counts for as many bytes and blocks as it stands for.
#[inline(always)]
pub fn stack_turnover(id: u64, size: u64, allocated: bool) {
    if id == 0 {
        return;
    }
    let (size, blocks) = if SAMPLE_PERIOD.load() == 0 {
        (size, 1)
    } else {
        let probability = sample_probability_of(size);
        (weighted_bytes(size, probability), weighted_count(probability))
    };
    if let Some(stats) = STACK_STATS.get_ptr_mut(id) {
        // SAFETY: the lookup returned a valid pointer to this CPU's copy of the stack's
        // entry, which nothing else writes while this program runs (see "Per-CPU values"
        // above); programs never delete entries and user space does not either.
        let stats = unsafe { &mut *stats };
        if allocated {
            stats.alloc_bytes += size;
            stats.alloc_count += blocks;
        } else {
            stats.free_bytes += size;
            stats.free_count += blocks;
        }
        return;
    }
    let first = if allocated {
        StackStats { alloc_bytes: size, alloc_count: blocks, free_bytes: 0, free_count: 0 }
    } else {
        StackStats { alloc_bytes: 0, alloc_count: 0, free_bytes: size, free_count: blocks }
    };
    if STACK_STATS.insert(id, first, 0).is_err() {
        count(Counter::StackStatsFull);
    }
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::LEN, 0);

/// Traced processes (tgid → unused byte).
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// PHP processes (tgid → where their VM's frame chain starts), set by user space for PHP
/// processes only.
#[map]
pub static PHP_PROCESSES: HashMap<u32, PhpProcess> = HashMap::with_max_entries(MAX_PHP_PROCESSES, 0);

/// PHP frames of allocations, under the key of their native stack in `USTACKS`. Not
/// preallocated, like `USTACKS`.
#[map]
pub static PHP_STACKS: HashMap<u64, PhpStack> = HashMap::with_max_entries(DEFAULT_STACK_STORAGE, BPF_F_NO_PREALLOC);

/// Where PHP frames are read before they are hashed (too big for the BPF stack).
#[map]
pub static PHP_SCRATCH: PerCpuArray<PhpStack> = PerCpuArray::with_max_entries(1, 0);

/// Kernel mode: outstanding kernel objects. Preallocated on purpose: a map that allocates
/// on insert would call kmalloc from inside our own kmalloc tracing, and its refills would
/// show up as allocations of whatever task they interrupted. The loader shrinks whichever of
/// the two modes' maps is unused to one entry.
#[map]
pub static KALLOCS: HashMap<KernelKey, KernelAlloc> = HashMap::with_max_entries(DEFAULT_MAX_KERNEL_ALLOCS, 0);

/// Kernel mode: kernel stacks of allocations, by the hash of their addresses (see
/// `stacks`). Preallocated, like `KALLOCS`, so that storing a stack never allocates.
#[map]
pub static KSTACKS: HashMap<u64, StackRecord> = HashMap::with_max_entries(DEFAULT_STACK_STORAGE, 0);

/// Kernel mode: per cache, objects whose address was allocated again while still
/// outstanding (freed without a traced free). Preallocated, like `KALLOCS`; a few hundred
/// caches exist.
#[map]
pub static REUSED: PerCpuHashMap<ReuseKey, u64> = PerCpuHashMap::with_max_entries(1024, 0);

/// Kernel mode: the path each process's last exec ran, so that the files in the user stacks of
/// processes that have exited can be found by build-id. Preallocated, like `LINEAGE`.
#[map]
pub static EXECUTABLES: LruHashMap<u32, [u8; EXEC_PATH_LEN]> = LruHashMap::with_max_entries(MAX_EXECUTABLES, 0);

/// Kernel mode: where the exec tracepoint program builds a path before storing it.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<[u8; EXEC_PATH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Kernel mode: where `struct page`s are, once user space has learnt it (see
/// `leaktrace_common::kernel::SlabPages`).
#[map]
pub static SLAB_PAGES: Array<u64> = Array::with_max_entries(SlabPages::LEN, 0);

/// Kernel mode: each process's parent and name as seen at fork and exec, so that the chain
/// behind an allocation can be told after the processes have exited. An LRU map is
/// preallocated, like `KALLOCS`; the oldest entries make way for new ones.
#[map]
pub static LINEAGE: LruHashMap<u32, Lineage> = LruHashMap::with_max_entries(MAX_LINEAGE, 0);

/// Kernel mode: where each allocation program captures its stack, one slot per program
/// (`KernelScratch`). Raw tracepoint programs are kept from nesting in themselves on a CPU,
/// not in each other: a kmem_cache_alloc in an interrupt can run while a kmalloc program is
/// capturing, so they must not share a slot.
#[map]
pub static KERNEL_SCRATCH: PerCpuArray<StackRecord> = PerCpuArray::with_max_entries(KernelScratch::LEN, 0);

/// The `KERNEL_SCRATCH` slot of each allocation program.
#[derive(Clone, Copy)]
pub enum KernelScratch {
    /// kmalloc.
    Kmalloc = 0,
    /// kmem_cache_alloc.
    KmemCacheAlloc = 1,
    /// mm_page_alloc.
    Page = 2,
    /// percpu_alloc_percpu.
    Percpu = 3,
}

impl KernelScratch {
    const LEN: u32 = 4;
}

/// Unwind rows of every module of the traced processes, one contiguous run per module.
/// Mmapable: user space writes a whole module's rows with one copy instead of one system
/// call per row.
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(DEFAULT_UNWIND_ROWS, BPF_F_MMAPABLE);

/// Executable mappings of traced processes, `MAX_UNWIND_MAPPINGS` per process slot.
#[map]
pub static UNWIND_MAPPINGS: Array<UnwindMapping> = Array::with_max_entries(UNWIND_SLOTS * MAX_UNWIND_MAPPINGS, 0);

/// How the last frame at an address was stepped, per CPU (see `UnwindCacheEntry`). Per CPU:
/// BPF programs do not run nested on one CPU, so an entry is never read half-written.
#[map]
pub static UNWIND_CACHE: PerCpuArray<UnwindCacheEntry> = PerCpuArray::with_max_entries(UNWIND_CACHE_SIZE, 0);

/// Traced processes with an unwind table: tgid → slot. As many as `TARGETS`: a forked child
/// shares its parent's slot until it has its own.
#[map]
pub static UNWIND_PROCESSES: HashMap<u32, ProcessSlot> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Launched commands a probe stopped (tgid → `HoldReason`), marked before the stop and
/// cleared by user space before it resumes them: a guardian process holding this map
/// resumes whatever is still marked when leaktrace dies.
#[map]
pub static HELD: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Attached processes whose dynamic linker reported a library change: tgid → the
/// `ProcessSlot::generation` of their table at that moment (see `unwind::no_mapping_end`).
#[map]
pub static TABLE_STALE: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Tells user space that a process's mappings changed (a launched command is stopped until
/// its table is updated).
#[map]
pub static UNWIND_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Tells user space that the traced set changed or a traced process ran a new program
/// (`ProcessEvent`). Large enough for a burst of forks between two reads; a full buffer is
/// counted (`Counter::ProcessEventLost`).
#[map]
pub static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// `--comm NAME`, NUL-padded to the kernel's 16-byte comm and read as two words (compared
/// without a byte loop); all zero when not given.
#[unsafe(no_mangle)]
pub static TRACE_COMM: Global<[u64; 2]> = Global::new([0; 2]);

/// `--cgroup PATH`: the cgroup's id (0 when not given) and its depth below the root, so that
/// a task in it or in any cgroup below it is recognised with one helper call (its ancestor
/// at that depth is the cgroup).
#[unsafe(no_mangle)]
pub static TRACE_CGROUP: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static TRACE_CGROUP_LEVEL: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
pub static UNWIND_TABLES: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FILTER_TARGETS: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static USER_STACKS: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FOLLOW_FORKS: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FREEZE_AT_EXIT: Global<u8> = Global::new(0);

#[unsafe(no_mangle)]
pub static SELF_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
pub static MIN_SIZE: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static MAX_SIZE: Global<u64> = Global::new(u64::MAX);
#[unsafe(no_mangle)]
pub static SAMPLE_PERIOD: Global<u64> = Global::new(0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the lookup returned a valid pointer to this CPU's counter (an array slot
        // exists as long as the map), which nothing else writes while this program runs (see
        // "Per-CPU values" above): a plain add is enough.
        unsafe { *slot += 1 };
    }
}
