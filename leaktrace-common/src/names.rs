//! Names of maps, programs and load-time globals, shared so that the loader and the
//! eBPF object cannot drift apart.

/// `AllocKey` (address, process) → `AllocInfo` for every outstanding allocation.
pub const ALLOCS: &str = "ALLOCS";
/// Thread id → `PendingCall` between an allocator's entry and return.
pub const PENDING: &str = "PENDING";
/// Thread id → the block it freed last (one free seen by several probed functions).
pub const LAST_FREE: &str = "LAST_FREE";
/// User stacks of allocations, stack hash → `StackRecord`.
pub const USTACKS: &str = "USTACKS";
/// Per-CPU scratch `StackRecord` where a stack is captured before it is hashed.
pub const STACK_SCRATCH: &str = "STACK_SCRATCH";
/// Kernel mode with --user-stacks: `BPF_MAP_TYPE_STACK_TRACE` of the allocating tasks' user stacks.
pub const STACKS: &str = "STACKS";
/// Per-CPU `u64` counters indexed by `Counter`.
pub const COUNTERS: &str = "COUNTERS";
/// Per-CPU stack id → `StackStats`.
pub const STACK_STATS: &str = "STACK_STATS";
/// Process ids (tgid) being traced.
pub const TARGETS: &str = "TARGETS";
/// PHP processes: tgid → `PhpProcess`, where their VM's frame chain starts.
pub const PHP_PROCESSES: &str = "PHP_PROCESSES";
/// PHP frames of allocations, under the key of their native stack in `USTACKS` → `PhpStack`.
pub const PHP_STACKS: &str = "PHP_STACKS";
/// Per-CPU scratch `PhpStack` where PHP frames are read before they are hashed.
pub const PHP_SCRATCH: &str = "PHP_SCRATCH";
/// Capacity of `PHP_PROCESSES`.
pub const MAX_PHP_PROCESSES: u32 = 1024;

/// Global: leaktrace's own tgid, never traced.
pub const GLOBAL_SELF_TGID: &str = "SELF_TGID";
/// Global: smallest request size recorded.
pub const GLOBAL_MIN_SIZE: &str = "MIN_SIZE";
/// Global: largest request size recorded.
pub const GLOBAL_MAX_SIZE: &str = "MAX_SIZE";

/// Default capacity of `ALLOCS`.
pub const DEFAULT_MAX_ALLOCS: u32 = 1 << 20;
/// Default capacity of `USTACKS` and `STACKS` in user mode.
pub const DEFAULT_STACK_STORAGE: u32 = 16384;
/// Capacity of `PENDING`: threads that can be inside an allocator at once.
pub const MAX_PENDING: u32 = 16384;
/// Capacity of `TARGETS`.
pub const MAX_TARGETS: u32 = 1024;

/// Entry program: size in argument 0 (malloc, valloc, pvalloc).
pub const PROG_SIZE_ARG0: &str = "size_arg0_enter";
/// Entry program: calloc(nmemb, size).
pub const PROG_CALLOC: &str = "calloc_enter";
/// Entry program: realloc(ptr, size).
pub const PROG_REALLOC: &str = "realloc_enter";
/// Entry program: reallocarray(ptr, nmemb, size).
pub const PROG_REALLOCARRAY: &str = "reallocarray_enter";
/// Entry program: size in argument 1 (aligned_alloc, memalign).
pub const PROG_SIZE_ARG1: &str = "size_arg1_enter";
/// Entry program: a function whose size is in its name (Zend's `_emalloc_64`), taken from
/// the lower half of the probe's attach cookie.
pub const PROG_FIXED_SIZE: &str = "fixed_size_enter";
/// Entry program: posix_memalign(memptr, alignment, size).
pub const PROG_POSIX_MEMALIGN: &str = "posix_memalign_enter";
/// Entry program: xallocx(ptr, size, extra, flags), a resize in place.
pub const PROG_RESIZE: &str = "resize_enter";
/// Return program shared by every allocation function.
pub const PROG_ALLOC_RETURN: &str = "alloc_return";
/// Entry program on exit/_exit: stops a launched command so its mappings can be read.
pub const PROG_EXIT: &str = "exit_enter";
/// Entry program on PHP's `zend_mm_shutdown`: tells user space the process's PHP heap was
/// released whole.
pub const PROG_HEAP_RESET: &str = "heap_reset_enter";
/// Global: 1 for a command leaktrace launched, which the probes may stop (SIGSTOP) at exit
/// and at library loads; 0 for a process attached with -p, which is never stopped.
pub const GLOBAL_FREEZE_AT_EXIT: &str = "FREEZE_AT_EXIT";
/// Tgid → `HoldReason` of each process a probe stopped and leaktrace has not resumed yet,
/// written before the stop: what the guardian resumes if leaktrace dies.
pub const HELD: &str = "HELD";
/// Tgid → the `ProcessSlot::generation` of an attached process's table when its dynamic
/// linker last reported a library change: while the table is still that one, a return
/// address in no known mapping is in a library the table has not taken in yet.
pub const TABLE_STALE: &str = "TABLE_STALE";
/// Entry program: free(ptr).
pub const PROG_FREE: &str = "free_enter";

/// `--sample-bytes`: `1 − exp(−i/256)` × 2^32 for i/256 periods (`leaktrace_common::sampling`).
pub const SAMPLE_TABLE: &str = "SAMPLE_TABLE";
/// Global: mean sampling period in bytes; 0 tracks every allocation.
pub const GLOBAL_SAMPLE_PERIOD: &str = "SAMPLE_PERIOD";

/// Uprobe session programs (Linux 6.13+), used wherever the kernel has them: one program per
/// entry program, run at entry and, unless the entry declined (an unsampled call, or an
/// entry-only probe), at return. Their section is the plain `uprobe` one so that aya accepts
/// the object; the loader loads them itself with the session attach type. Pairs of (entry
/// program, session program).
pub const SESSION_PROGRAMS: [(&str, &str); 11] = [
    (PROG_SIZE_ARG0, "size_arg0_session"),
    (PROG_FIXED_SIZE, "fixed_size_session"),
    (PROG_SIZE_ARG1, "size_arg1_session"),
    (PROG_CALLOC, "calloc_session"),
    (PROG_REALLOC, "realloc_session"),
    (PROG_REALLOCARRAY, "reallocarray_session"),
    (PROG_POSIX_MEMALIGN, "posix_memalign_session"),
    (PROG_RESIZE, "resize_session"),
    (PROG_FREE, "free_session"),
    (PROG_EXIT, "exit_session"),
    (PROG_DL_STATE, "dl_state_session"),
];
/// Kernel mode: `KernelKey` → `KernelAlloc` for every outstanding kernel object.
pub const KALLOCS: &str = "KALLOCS";
/// Kernel mode: kernel stacks by the hash of their addresses (preallocated, see the map).
pub const KSTACKS: &str = "KSTACKS";
/// Kernel mode: `ReuseKey` → objects whose address was allocated again while outstanding.
pub const REUSED: &str = "REUSED";
/// Kernel mode: tgid → the path its last exec ran (NUL-padded), for finding the files of
/// exited processes' user stacks.
pub const EXECUTABLES: &str = "EXECUTABLES";
/// Kernel mode: per-CPU slot where an exec'd path is built before it goes into `EXECUTABLES`.
pub const EXEC_SCRATCH: &str = "EXEC_SCRATCH";
/// Capacity of `EXECUTABLES` (least recently used entries make way).
pub const MAX_EXECUTABLES: u32 = 4096;
/// Kernel mode: where `struct page`s are (an `Array<u64>` indexed by `kernel::SlabPages`).
pub const SLAB_PAGES: &str = "SLAB_PAGES";
/// Kernel mode: tgid → `Lineage` (parent and name) of processes seen forking or exec'ing.
pub const LINEAGE: &str = "LINEAGE";
/// Capacity of `LINEAGE` (least recently used entries make way). Threads get entries too
/// (the fork tracepoint cannot tell them apart), hence the margin.
pub const MAX_LINEAGE: u32 = 1 << 16;
/// Kernel mode: per-CPU slots where each allocation program captures its kernel stack.
pub const KERNEL_SCRATCH: &str = "KERNEL_SCRATCH";
/// Global: 1 to record only allocations made in the context of a traced process.
pub const GLOBAL_FILTER_TARGETS: &str = "FILTER_TARGETS";
/// Global: 1 to capture the allocating task's user stack too.
pub const GLOBAL_USER_STACKS: &str = "USER_STACKS";
/// Global: 1 to add children forked by traced processes to the traced set.
pub const GLOBAL_FOLLOW_FORKS: &str = "FOLLOW_FORKS";
/// Default capacity of `KALLOCS` (preallocated: see the eBPF crate's maps.rs).
pub const DEFAULT_MAX_KERNEL_ALLOCS: u32 = 1 << 18;

/// Tracepoint programs, as (program, category, event).
pub const PROG_KMALLOC: &str = "kmalloc";
/// kmem_cache_alloc tracepoint program.
pub const PROG_KMEM_CACHE_ALLOC: &str = "kmem_cache_alloc";
/// kfree tracepoint program.
pub const PROG_KFREE: &str = "kfree";
/// kmem_cache_free tracepoint program.
pub const PROG_KMEM_CACHE_FREE: &str = "kmem_cache_free";
/// The four slab programs as raw BTF tracepoints (`tp_btf`), preferred where the kernel has them.
pub const PROG_KMALLOC_BTF: &str = "kmalloc_btf";
/// See [`PROG_KMALLOC_BTF`].
pub const PROG_KMEM_CACHE_ALLOC_BTF: &str = "kmem_cache_alloc_btf";
/// See [`PROG_KMALLOC_BTF`].
pub const PROG_KFREE_BTF: &str = "kfree_btf";
/// See [`PROG_KMALLOC_BTF`].
pub const PROG_KMEM_CACHE_FREE_BTF: &str = "kmem_cache_free_btf";
/// A second `tp_btf` program on kmalloc, attached after the one that records the object: it
/// names the cache the object really lives in, from the object's slab (see `SLAB_PAGES`).
pub const PROG_KMALLOC_CACHE_BTF: &str = "kmalloc_cache_btf";
/// `tp_btf` program on mm_page_alloc used only while `SLAB_PAGES` is learnt: it notes the
/// `struct page` of leaktrace's own probe allocation.
pub const PROG_LEARN_PAGE_BTF: &str = "learn_page_btf";
/// mm_page_alloc tracepoint program.
pub const PROG_PAGE_ALLOC: &str = "mm_page_alloc";
/// mm_page_free tracepoint program.
pub const PROG_PAGE_FREE: &str = "mm_page_free";
/// mm_page_free_batched tracepoint program.
pub const PROG_PAGE_FREE_BATCHED: &str = "mm_page_free_batched";
/// percpu_alloc_percpu tracepoint program.
pub const PROG_PERCPU_ALLOC: &str = "percpu_alloc_percpu";
/// percpu_free_percpu tracepoint program.
pub const PROG_PERCPU_FREE: &str = "percpu_free_percpu";
/// sched_process_fork tracepoint program: records each new process's parent in `LINEAGE`
/// and, for -p and --run, follows forks of traced processes.
pub const PROG_FORK: &str = "sched_process_fork";
/// sched_process_exec tracepoint program: records a process's new name in `LINEAGE`.
pub const PROG_EXEC_LINEAGE: &str = "lineage_exec";
/// User mode: task:task_newtask program, adds the children of traced processes.
pub const PROG_NEW_TASK: &str = "task_newtask";
/// User mode: sched:sched_process_exec program, tells of execs and picks up `--comm` processes.
pub const PROG_EXEC: &str = "sched_process_exec";
/// User mode: ring buffer of `ProcessEvent`s.
pub const PROCESS_EVENTS: &str = "PROCESS_EVENTS";
/// Global: `--comm NAME` as 16 bytes, NUL-padded; all zero when not given.
pub const GLOBAL_TRACE_COMM: &str = "TRACE_COMM";
/// Global: `--cgroup PATH`'s cgroup id (the inode number of its directory); 0 when not given.
pub const GLOBAL_TRACE_CGROUP: &str = "TRACE_CGROUP";
/// Global: the depth of `--cgroup PATH` below the cgroup v2 root (the root is 0).
pub const GLOBAL_TRACE_CGROUP_LEVEL: &str = "TRACE_CGROUP_LEVEL";

// The benchmark's floor programs. They are in their own object (`leaktrace-floor`, loaded by
// `Tracer::load_floor` with leaktrace's `bench` feature), not in the production object.

/// Benchmark floor: empty uprobe, attached at allocator entries.
pub const PROG_FLOOR_ENTER: &str = "floor_enter";
/// Benchmark floor: empty uretprobe, attached at allocator returns.
pub const PROG_FLOOR_RETURN: &str = "floor_return";
/// Benchmark floor: empty programs for the slab tracepoints, as (program, category, event).
pub const PROG_FLOOR_SLAB: [(&str, &str, &str); 4] = [
    ("floor_kmalloc", "kmem", "kmalloc"),
    ("floor_kmem_cache_alloc", "kmem", "kmem_cache_alloc"),
    ("floor_kfree", "kmem", "kfree"),
    ("floor_kmem_cache_free", "kmem", "kmem_cache_free"),
];
/// Benchmark: a uretprobe that only captures the user stack, as leaktrace's return program does.
pub const PROG_FLOOR_STACK_RETURN: &str = "floor_stack_return";
/// Benchmark: a tracepoint program that only captures the kernel stack.
pub const PROG_FLOOR_KSTACK: &str = "floor_kstack";

/// DWARF unwinding: every module's unwind rows (`UnwindRow`), an mmapable array.
pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
/// DWARF unwinding: executable mappings of traced processes (`UnwindMapping`), by slot.
pub const UNWIND_MAPPINGS: &str = "UNWIND_MAPPINGS";
/// DWARF unwinding: tgid → `ProcessSlot`.
pub const UNWIND_PROCESSES: &str = "UNWIND_PROCESSES";
/// Per-CPU cache of unwind steps by address (`UnwindCacheEntry`).
pub const UNWIND_CACHE: &str = "UNWIND_CACHE";
/// DWARF unwinding: ring buffer of `UnwindEvent`s (the dynamic linker changed the mappings).
pub const UNWIND_EVENTS: &str = "UNWIND_EVENTS";
/// Global: 1 to unwind user stacks with the tables, 0 for the kernel's frame-pointer walk.
pub const GLOBAL_UNWIND_TABLES: &str = "UNWIND_TABLES";
/// Entry program on the dynamic linker's `_dl_debug_state`: tells user space that a library
/// was loaded or unloaded, and stops a launched command so that the tables can include the
/// library before any of its code runs.
pub const PROG_DL_STATE: &str = "dl_state_enter";
