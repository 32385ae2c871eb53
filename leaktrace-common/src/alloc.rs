//! Per-allocation and per-call state kept in BPF maps.

/// One outstanding allocation, keyed by its address in the `ALLOCS` map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AllocInfo {
    /// Bytes requested by the caller (not the allocator's rounded-up size).
    pub size: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the allocation returned.
    pub timestamp_ns: u64,
    /// Key of its stack in `USTACKS` (a hash of the frames); 0 when none was stored.
    pub stack_id: u64,
    /// Process that owns the block.
    pub tgid: u32,
    /// The heap it was taken from: a `Heap` value.
    pub heap: u32,
}

indexed_enum! {
    /// Which heap a block belongs to. A PHP process has two: the C allocator's and the Zend
    /// memory manager's, which serves PHP values from its own mmap'ed chunks.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Heap {
        /// The C allocator (malloc and the families that replace it, C++'s new).
        Malloc = 0,
        /// PHP's Zend memory manager (`_emalloc` and its variants).
        Php = 1,
    }
}

impl Heap {
    /// The heap of a probe's attach cookie: bits 32 to 47 (see [`Heap::cookie`]).
    #[inline(always)]
    pub const fn of_cookie(cookie: u64) -> u32 {
        ((cookie >> 32) & 0xffff) as u32
    }

    /// The attach cookie of a probe on this heap, with `size` in its lower 32 bits for a
    /// function whose size is in its name (`_emalloc_64`) rather than in an argument.
    pub const fn cookie(self, size: u32) -> u64 {
        ((self as u64) << 32) | size as u64
    }

    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malloc => "malloc",
            Self::Php => "php",
        }
    }
}

/// Key of `ALLOCS`: a block's address in the process that owns it. Traced processes reuse
/// each other's addresses (a forked worker starts with its parent's heap layout), so the
/// address alone does not name a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct AllocKey {
    /// Block address.
    pub address: u64,
    /// Process that owns the block.
    pub tgid: u32,
    /// Explicit padding (zero: keys are compared as bytes).
    pub _pad: u32,
}

impl AllocKey {
    /// The key of `address` in process `tgid`.
    #[inline(always)]
    pub const fn new(address: u64, tgid: u32) -> Self {
        Self { address, tgid, _pad: 0 }
    }
}

/// Frames kept per user stack.
pub const MAX_STACK_DEPTH: usize = 64;

/// A user stack as stored in `USTACKS`: return addresses, innermost first.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StackRecord {
    /// Number of valid entries in `ips`.
    pub depth: u32,
    /// How the stack ended: a `StackEnd` value.
    pub end: u32,
    /// Return addresses.
    pub ips: [u64; MAX_STACK_DEPTH],
}

indexed_enum! {
    /// Which allocator entry point a pending call came from; decides how its return is read.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum PendingKind {
        /// The return value is the new block (malloc, calloc, memalign, …).
        Plain = 0,
        /// realloc/reallocarray: the old block was taken out at entry and is put back on failure.
        Realloc = 1,
        /// posix_memalign: the block is written through the out-pointer; 0 means success.
        OutPointer = 2,
        /// jemalloc's xallocx: the block at `aux_ptr` is resized in place. `size` is the most
        /// it asks for (size + extra) and `old.size` the least; the return value is the
        /// block's real size, which is below the least when it could not be resized.
        Resize = 3,
    }
}

/// A traced allocator call between its entry and its return, keyed by thread id in `PENDING`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct PendingCall {
    /// Requested size.
    pub size: u64,
    /// Stack pointer at entry: a traced call made from inside this one has a lower one.
    pub entry_sp: u64,
    /// posix_memalign's out-pointer, or realloc's old block address.
    pub aux_ptr: u64,
    /// realloc's old block as it was recorded, restored if realloc fails.
    pub old: AllocInfo,
    /// How many traced calls are currently running inside this one (their returns are ignored).
    pub nested: u32,
    /// A `PendingKind` value.
    pub kind: u32,
    /// 1 when `old` holds a block that realloc's entry removed from `ALLOCS`.
    pub has_old: u32,
    /// 1 when the new block is to be tracked (always, unless `--sample-bytes` left it out).
    pub sampled: u32,
    /// The heap the block comes from: a `Heap` value, from the probe's attach cookie.
    pub heap: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Cumulative per-stack totals since tracing began, kept per CPU in `STACK_STATS`, so
/// allocation turnover is known without sending every event to user space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct StackStats {
    /// Bytes allocated from this stack.
    pub alloc_bytes: u64,
    /// Allocations from this stack.
    pub alloc_count: u64,
    /// Bytes of this stack's blocks freed.
    pub free_bytes: u64,
    /// Frees of this stack's blocks.
    pub free_count: u64,
}

const _: () = assert!(core::mem::size_of::<AllocInfo>() == 32);
const _: () = assert!(core::mem::size_of::<AllocKey>() == 16);
const _: () = assert!(core::mem::size_of::<StackRecord>() == 8 + 8 * MAX_STACK_DEPTH);
const _: () = assert!(core::mem::size_of::<StackStats>() == 32);
const _: () = assert!(core::mem::size_of::<PendingCall>() == 80);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, `#[repr(C)]`, no padding (asserted above).
unsafe impl aya::Pod for AllocInfo {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for AllocKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for StackStats {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for StackRecord {}

/// Bit of a probe's attach cookie where the argument registers start: from there, 4 bits per
/// argument (argument 0 lowest) say where the entry program finds it at the probe's site. 0 is
/// its own System V register; a code `c` is `ARG_REGISTERS[c - 1]`. A probe moved past the
/// function's first instructions to one the kernel emulates may find an argument copied to
/// another register there (`mov %rdi,%rsi` before the first branch, as in mimalloc).
pub const ARG_REGISTERS_SHIFT: u64 = 48;

/// The registers an argument may be found in, by code minus one (x86-64 `pt_regs` fields).
pub const ARG_REGISTERS: [&str; 7] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9", "rax"];
