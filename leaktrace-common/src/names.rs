//! Names of maps, programs and load-time globals, shared so that the loader and the
//! eBPF object cannot drift apart.

/// Address → `AllocInfo` for every outstanding allocation.
pub const ALLOCS: &str = "ALLOCS";
/// Thread id → `PendingCall` between an allocator's entry and return.
pub const PENDING: &str = "PENDING";
/// `BPF_MAP_TYPE_STACK_TRACE` holding user stacks.
pub const STACKS: &str = "STACKS";
/// Per-CPU `u64` counters indexed by `Counter`.
pub const COUNTERS: &str = "COUNTERS";
/// Process ids (tgid) being traced.
pub const TARGETS: &str = "TARGETS";

/// Global: leaktrace's own tgid, never traced.
pub const GLOBAL_SELF_TGID: &str = "SELF_TGID";
/// Global: smallest request size recorded.
pub const GLOBAL_MIN_SIZE: &str = "MIN_SIZE";
/// Global: largest request size recorded.
pub const GLOBAL_MAX_SIZE: &str = "MAX_SIZE";

/// Default capacity of `ALLOCS`.
pub const DEFAULT_MAX_ALLOCS: u32 = 1 << 20;
/// Default capacity of `STACKS` (each entry holds 127 frames).
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
/// Entry program: posix_memalign(memptr, alignment, size).
pub const PROG_POSIX_MEMALIGN: &str = "posix_memalign_enter";
/// Return program shared by every allocation function.
pub const PROG_ALLOC_RETURN: &str = "alloc_return";
/// Entry program: free(ptr).
pub const PROG_FREE: &str = "free_enter";
