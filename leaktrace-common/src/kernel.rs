//! Kernel-mode (`--kernel-slab`) shared types.

indexed_enum! {
    /// Which allocator an outstanding kernel object came from; also keeps the key spaces apart
    /// (slab addresses, page frame numbers and percpu pointers can coincide numerically).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum KernelSpace {
        /// kmalloc / kmem_cache_alloc objects, keyed by address.
        Slab = 0,
        /// Page allocator, keyed by page frame number.
        Page = 1,
        /// Percpu allocator, keyed by percpu pointer.
        Percpu = 2,
    }
}

/// Key of `KALLOCS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct KernelKey {
    /// Address, pfn or percpu pointer.
    pub addr: u64,
    /// A `KernelSpace` value.
    pub space: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// An outstanding kernel allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct KernelAlloc {
    /// `bpf_ktime_get_ns()` at allocation.
    pub timestamp_ns: u64,
    /// Bytes the allocator reserved (`bytes_alloc`; `PAGE_SIZE << order` for pages).
    pub bytes_alloc: u64,
    /// Bytes the caller asked for (`bytes_req`; equal to `bytes_alloc` for pages and percpu).
    pub bytes_req: u64,
    /// Key of the kernel stack in `USTACKS` (a hash of its addresses, as for user stacks);
    /// 0 when it could not be stored (counted).
    pub kernel_stack: u64,
    /// gfp flags of the request.
    pub gfp_flags: u32,
    /// Page order for page allocations, else 0.
    pub order: u32,
    /// The allocating task's user stack id in `STACKS` (with --user-stacks), or a negative
    /// errno / -1 when not taken.
    pub user_stack_id: i32,
    /// Thread id of the task in whose context the allocation happened.
    pub pid: u32,
    /// Its process id.
    pub tgid: u32,
    /// A `KernelSpace` value.
    pub space: u32,
    /// Its command name (NUL-padded).
    pub comm: [u8; 16],
    /// Slab cache name for kmem_cache_alloc (NUL-padded, truncated); empty for kmalloc,
    /// whose cache user space derives from the size and flags.
    pub cache: [u8; 32],
}

/// The cache of an object whose address was allocated again while it was still outstanding:
/// proof that it was freed without a traced free (bulk frees, per-CPU sheaves). Named as the
/// object is (`cache`, else from size and flags), and counted in `REUSED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct ReuseKey {
    /// `KernelAlloc::cache` of the earlier object.
    pub cache: [u8; 32],
    /// Its `bytes_alloc`.
    pub bytes_alloc: u64,
    /// Its `gfp_flags`.
    pub gfp_flags: u32,
    /// Its `space`.
    pub space: u32,
}

/// A process's parent and name, recorded at fork and exec (`LINEAGE`), so that the chain of
/// processes behind an allocation can be told after they have exited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Lineage {
    /// Process id (tgid) of the process that forked it; 0 when it was not seen forking.
    pub parent: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Its command name after its last exec (NUL-padded); the parent's before any.
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ReuseKey>() == 48);
const _: () = assert!(core::mem::size_of::<Lineage>() == 24);
const _: () = assert!(core::mem::size_of::<KernelKey>() == 16);
const _: () = assert!(core::mem::size_of::<KernelAlloc>() == 104);

indexed_enum! {
    /// Slots of `SLAB_PAGES`. The `struct page` of a kernel address is at
    /// `Base + (address >> 12) * sizeof(struct page)` (the direct map and the page array are
    /// both linear in the page frame number), where `Base` folds together the two bases that
    /// memory randomization moves at boot and that the kernel publishes nowhere a process can
    /// read. User space learns it from one allocation of its own: the `struct page` that
    /// mm_page_alloc reports and the address that kmalloc returns for it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SlabPages {
        /// Thread id whose probe allocation is being watched (0 when none).
        TriggerThread = 0,
        /// The `struct page` the probe allocation got.
        ProbePage = 1,
        /// The address kmalloc returned for it.
        ProbeAddress = 2,
        /// The learnt base; 0 until learnt (kmalloc objects keep size-derived names then).
        Base = 3,
    }
}

/// A frame of a user stack captured with its file's build-id (the kernel's
/// `struct bpf_stack_build_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BuildIdFrame {
    /// `BUILD_ID_VALID` (`build_id` and `offset_or_ip` as a file offset), `BUILD_ID_IP`
    /// (only an address), or 0 (empty: the stack ended).
    pub status: i32,
    /// GNU build-id of the mapped file, zero-padded.
    pub build_id: [u8; 20],
    /// Offset in the file, or the address when the build-id could not be read.
    pub offset_or_ip: u64,
}

const _: () = assert!(core::mem::size_of::<BuildIdFrame>() == 32);

/// `BuildIdFrame::status`: build-id and file offset.
pub const BUILD_ID_VALID: i32 = 1;
/// `BuildIdFrame::status`: only the address.
pub const BUILD_ID_IP: i32 = 2;
/// Bytes of an exec'd program's path kept (`EXECUTABLES`).
pub const EXEC_PATH_LEN: usize = 256;

/// User frames kept per stack in kernel mode.
pub const MAX_BUILD_ID_FRAMES: usize = 32;

/// Bytes of leaktrace's probe allocation: above the largest kmalloc cache, so that it comes
/// straight from the page allocator, as one order-2 block.
pub const PROBE_BYTES: u64 = 16384;
/// Page order of the probe allocation.
pub const PROBE_ORDER: u32 = 2;
/// kmalloc serves requests up to this size from slab caches; larger ones come from pages.
pub const KMALLOC_MAX_CACHE_SIZE: u64 = 8192;

/// Tracepoint field offsets, read from tracefs `format` files at load time (layouts differ
/// between events and kernel versions). One global per field, named `OFF_<EVENT>_<FIELD>`.
pub mod offsets {
    /// kmalloc: ptr, bytes_req, bytes_alloc, gfp_flags.
    pub const KMALLOC: [&str; 4] =
        ["OFF_KMALLOC_PTR", "OFF_KMALLOC_BYTES_REQ", "OFF_KMALLOC_BYTES_ALLOC", "OFF_KMALLOC_GFP"];
    /// kmem_cache_alloc: ptr, bytes_req, bytes_alloc, gfp_flags, name.
    pub const KMEM_CACHE_ALLOC: [&str; 5] =
        ["OFF_KCA_PTR", "OFF_KCA_BYTES_REQ", "OFF_KCA_BYTES_ALLOC", "OFF_KCA_GFP", "OFF_KCA_NAME"];
    /// kfree: ptr.
    pub const KFREE_PTR: &str = "OFF_KFREE_PTR";
    /// kmem_cache_free: ptr.
    pub const KMEM_CACHE_FREE_PTR: &str = "OFF_KCF_PTR";
    /// mm_page_alloc: pfn, order, gfp_flags.
    pub const PAGE_ALLOC: [&str; 3] = ["OFF_PAGE_ALLOC_PFN", "OFF_PAGE_ALLOC_ORDER", "OFF_PAGE_ALLOC_GFP"];
    /// mm_page_free: pfn.
    pub const PAGE_FREE_PFN: &str = "OFF_PAGE_FREE_PFN";
    /// mm_page_free_batched: pfn.
    pub const PAGE_FREE_BATCHED_PFN: &str = "OFF_PAGE_FREE_BATCHED_PFN";
    /// percpu_alloc_percpu: ptr, bytes_alloc, gfp_flags.
    pub const PERCPU_ALLOC: [&str; 3] = ["OFF_PCPU_ALLOC_PTR", "OFF_PCPU_ALLOC_BYTES", "OFF_PCPU_ALLOC_GFP"];
    /// percpu_free_percpu: ptr.
    pub const PERCPU_FREE_PTR: &str = "OFF_PCPU_FREE_PTR";
    /// sched_process_fork: child_pid.
    pub const FORK_CHILD_PID: &str = "OFF_FORK_CHILD_PID";
    /// sched_process_exec: filename.
    pub const EXEC_FILENAME: &str = "OFF_EXEC_FILENAME";
    /// task_newtask: pid, clone_flags (user mode's `--follow`).
    pub const NEW_TASK: [&str; 2] = ["OFF_NEW_TASK_PID", "OFF_NEW_TASK_FLAGS"];
    /// `struct kmem_cache` members read by the raw tracepoint programs (from BTF, not from a
    /// format file): size, object_size, name.
    pub const KMEM_CACHE: [&str; 3] = ["OFF_KMEM_CACHE_SIZE", "OFF_KMEM_CACHE_OBJECT_SIZE", "OFF_KMEM_CACHE_NAME"];
    /// From BTF too, for naming a kmalloc object's cache from its slab:
    /// `struct page::compound_head`, `struct slab::slab_cache`, `sizeof(struct page)`.
    pub const SLAB_PAGE: [&str; 3] = ["OFF_PAGE_COMPOUND_HEAD", "OFF_SLAB_CACHE", "PAGE_STRUCT_SIZE"];
}

#[cfg(feature = "user")]
// SAFETY: integers and byte arrays only, `#[repr(C)]`, no implicit padding (asserted above).
unsafe impl aya::Pod for KernelKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for KernelAlloc {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ReuseKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Lineage {}
#[cfg(feature = "user")]
// SAFETY: as above (4 + 20 bytes, then an aligned u64: no padding, size asserted).
unsafe impl aya::Pod for BuildIdFrame {}
