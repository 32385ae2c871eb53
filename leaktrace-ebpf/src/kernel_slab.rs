//! Tracepoints on the kernel's allocators (`--kernel-slab`): slab objects, and optionally
//! pages and percpu memory. Each allocation is recorded with its kernel stack and the task
//! in whose context it happened; each free removes it. Frees are always processed, whatever
//! the filters, since any task (or an RCU callback) may free an object.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_stack, bpf_get_stackid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{tracing::StackIdContext, BtfTracePointContext, TracePointContext},
    EbpfContext, Global,
};
use leaktrace_common::{
    kernel::{SlabPages, KMALLOC_MAX_CACHE_SIZE, PROBE_BYTES, PROBE_ORDER},
    Counter, KernelAlloc, KernelKey, KernelSpace, Lineage, ReuseKey, StackEnd, StackRecord, MAX_STACK_DEPTH,
};

use crate::{
    maps::{
        count, stack_turnover, KernelScratch, EXECUTABLES, EXEC_SCRATCH, FILTER_TARGETS, FOLLOW_FORKS, KALLOCS,
        KERNEL_SCRATCH, KSTACKS, LINEAGE, REUSED, SELF_TGID, SLAB_PAGES, STACKS, TARGETS, USER_STACKS,
    },
    stacks,
};

const PAGE_SHIFT: u32 = 12;

macro_rules! offsets {
    ($($name:ident),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            static $name: Global<u32> = Global::new(0);
        )*
    };
}

offsets!(
    OFF_KMALLOC_PTR,
    OFF_KMALLOC_BYTES_REQ,
    OFF_KMALLOC_BYTES_ALLOC,
    OFF_KMALLOC_GFP,
    OFF_KCA_PTR,
    OFF_KCA_BYTES_REQ,
    OFF_KCA_BYTES_ALLOC,
    OFF_KCA_GFP,
    OFF_KCA_NAME,
    OFF_KFREE_PTR,
    OFF_KCF_PTR,
    OFF_PAGE_ALLOC_PFN,
    OFF_PAGE_ALLOC_ORDER,
    OFF_PAGE_ALLOC_GFP,
    OFF_PAGE_FREE_PFN,
    OFF_PAGE_FREE_BATCHED_PFN,
    OFF_PCPU_ALLOC_PTR,
    OFF_PCPU_ALLOC_BYTES,
    OFF_PCPU_ALLOC_GFP,
    OFF_PCPU_FREE_PTR,
    OFF_FORK_CHILD_PID,
    OFF_EXEC_FILENAME,
    OFF_KMEM_CACHE_SIZE,
    OFF_KMEM_CACHE_OBJECT_SIZE,
    OFF_KMEM_CACHE_NAME,
    OFF_PAGE_COMPOUND_HEAD,
    OFF_SLAB_CACHE,
    PAGE_STRUCT_SIZE,
);

/// The field at `offset` in the event's record, or zero when it cannot be read. `T` is one of
/// the integer types the format files give the fields.
#[inline(always)]
pub(crate) fn field<T: Default>(ctx: &TracePointContext, offset: &Global<u32>) -> T {
    // SAFETY: `read_at` copies `size_of::<T>()` bytes at `offset` in the event's record
    // through `bpf_probe_read_kernel`, which reports a bad address instead of faulting. The
    // offsets come from the event's own format file, and any bytes are a valid integer.
    unsafe { ctx.read_at::<T>(offset.load() as usize) }.unwrap_or_default()
}

/// Size and request of one allocation event.
struct Request {
    /// The capturing program's stack slot.
    scratch: KernelScratch,
    /// Return address into the allocator's caller, when the event gives it (0 otherwise).
    call_site: u64,
    key: KernelKey,
    bytes_alloc: u64,
    bytes_req: u64,
    gfp_flags: u32,
    order: u32,
}

#[inline(always)]
fn key(addr: u64, space: KernelSpace) -> KernelKey {
    KernelKey { addr, space: space as u32, _pad: 0 }
}

/// Captures the kernel stack in this program's scratch slot and stores it under its hash;
/// 0 when it could not be captured or stored (counted). With the allocation's `call_site`
/// (the return address into the allocator's caller), the stack starts at the allocator's
/// own frame, as a classic tracepoint's does: a raw tracepoint's stack also holds this
/// program and the tracing code that called it.
#[inline(always)]
fn store_kernel_stack<C: EbpfContext>(ctx: &C, slot: KernelScratch, call_site: u64) -> u64 {
    let Some(scratch) = KERNEL_SCRATCH.get_ptr_mut(slot as u32) else { return 0 };
    // SAFETY: the lookup returned this CPU's slot of this program, which only this program
    // writes, and it cannot nest in itself on one CPU (see `KERNEL_SCRATCH`).
    let record: &mut StackRecord = unsafe { &mut *scratch };
    let size = core::mem::size_of_val(&record.ips) as u32;
    // SAFETY: the helper writes at most `size` bytes, the size of `record.ips`, from its start,
    // and walks the kernel stack of this program's own context.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), record.ips.as_mut_ptr().cast(), size, 0) };
    if bytes <= 0 {
        count(Counter::KernelStackLost);
        return 0;
    }
    let mut depth = ((bytes as usize) / 8).min(MAX_STACK_DEPTH);
    let skip = tracing_frames(record, depth, call_site);
    if skip > 0 {
        for i in 0..MAX_STACK_DEPTH {
            if i + skip >= depth {
                break;
            }
            record.ips[i] = record.ips[(i + skip) & (MAX_STACK_DEPTH - 1)];
        }
        depth -= skip;
    }
    record.depth = depth as u32;
    record.end = if depth == MAX_STACK_DEPTH { StackEnd::DepthLimit } else { StackEnd::Complete } as u32;
    stacks::store(&KSTACKS, record, &stacks::KERNEL, 0, 0)
}

/// Where the name of an object's cache is, when the event says.
enum CacheName {
    /// Not given (kmalloc: user space names the cache).
    Unknown,
    /// A `__data_loc` string field of a classic tracepoint's record.
    DataLoc(u32),
    /// A kernel pointer to the NUL-terminated name (`kmem_cache::name`).
    Kernel(*const u8),
}

/// Frames before the allocator's own: those before the one that returns to `call_site`,
/// less one. 0 when `call_site` is unknown (0) or not in the stack.
#[inline(always)]
fn tracing_frames(record: &StackRecord, depth: usize, call_site: u64) -> usize {
    if call_site == 0 {
        return 0;
    }
    for i in 1..MAX_STACK_DEPTH {
        if i >= depth {
            break;
        }
        if record.ips[i] == call_site {
            return i - 1;
        }
    }
    0
}

#[inline(always)]
fn record<C: StackIdContext>(ctx: &C, request: Request, cache_name: CacheName) {
    if request.key.addr == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == SELF_TGID.load() {
        return;
    }
    // SAFETY: the reference is dropped unread: only whether the key exists is used.
    if FILTER_TARGETS.load() != 0 && unsafe { TARGETS.get(tgid) }.is_none() {
        return;
    }
    let kernel_stack = store_kernel_stack(ctx, request.scratch, request.call_site);
    let user_stack_id = if USER_STACKS.load() != 0 {
        // SAFETY: the helper reads the current task's user stack into the map at `STACKS`,
        // a stack-trace map, and returns an id or a negative errno.
        let id = unsafe { bpf_get_stackid(ctx.as_ptr(), STACKS.as_ptr(), BPF_F_USER_STACK as u64) };
        if id < 0 {
            count(Counter::KernelUserStackLost);
        }
        id as i32
    } else {
        -1
    };
    // SAFETY: a helper without arguments, which tracepoint programs may call.
    let timestamp_ns = unsafe { bpf_ktime_get_ns() };
    let mut alloc = KernelAlloc {
        timestamp_ns,
        bytes_alloc: request.bytes_alloc,
        bytes_req: request.bytes_req,
        gfp_flags: request.gfp_flags,
        order: request.order,
        kernel_stack,
        user_stack_id,
        pid: pid_tgid as u32,
        tgid,
        space: request.key.space,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        cache: [0; 32],
    };
    let name = match cache_name {
        CacheName::Unknown => None,
        // __data_loc: low 16 bits are the string's offset in the record, high 16 its length.
        // SAFETY: the offset is the record's own __data_loc field, which the kernel sets to
        // the string's place inside the record: the result points into the same record.
        CacheName::DataLoc(loc) => Some(unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) }),
        CacheName::Kernel(name) => Some(name),
    };
    if let Some(src) = name {
        // SAFETY: the helper copies at most `alloc.cache.len()` bytes into `alloc.cache` and
        // reads the source with the kernel's fault-handling access: a bad pointer is an
        // error, not a fault.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut alloc.cache) };
    }
    count(Counter::KernelAllocs);
    note_reuse(&request.key);
    if KALLOCS.insert(request.key, alloc, 0).is_err() {
        count(Counter::KernelMapFull);
        return;
    }
    stack_turnover(kernel_stack, request.bytes_alloc, true);
}

/// An allocation at an address still outstanding: the earlier object was freed without a
/// traced free. Counted under the earlier object's cache.
#[inline(always)]
fn note_reuse(key: &KernelKey) {
    // SAFETY: the entry is copied out at once; a concurrent delete of it can at worst give
    // the fields of an object freed meanwhile, which is then miscounted, never unsafe.
    let Some(old) = (unsafe { KALLOCS.get(key) }).copied() else { return };
    let reuse = ReuseKey { cache: old.cache, bytes_alloc: old.bytes_alloc, gfp_flags: old.gfp_flags, space: old.space };
    match REUSED.get_ptr_mut(reuse) {
        // SAFETY: this CPU's value in a per-CPU map, which only programs on this CPU write;
        // a program nesting here would at worst lose one count.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = REUSED.insert(reuse, 1u64, 0);
        }
    }
}

#[inline(always)]
fn release(key: KernelKey) {
    if key.addr == 0 {
        return;
    }
    count(Counter::KernelFrees);
    // SAFETY: the two fields are copied out at once; a concurrent free of the same object
    // (a double free) could at worst count its turnover twice.
    let Some((stack, bytes)) = (unsafe { KALLOCS.get(key) }).map(|a| (a.kernel_stack, a.bytes_alloc)) else {
        count(Counter::KernelFreeUnknown);
        return;
    };
    if KALLOCS.remove(key).is_err() {
        // Freed by a concurrent program between the lookup and here: that one counted it.
        return;
    }
    stack_turnover(stack, bytes, false);
}

#[tracepoint]
pub fn kmalloc(ctx: TracePointContext) -> u32 {
    let request = Request {
        scratch: KernelScratch::Kmalloc,
        call_site: 0,
        key: key(field(&ctx, &OFF_KMALLOC_PTR), KernelSpace::Slab),
        bytes_alloc: field(&ctx, &OFF_KMALLOC_BYTES_ALLOC),
        bytes_req: field(&ctx, &OFF_KMALLOC_BYTES_REQ),
        gfp_flags: field::<u64>(&ctx, &OFF_KMALLOC_GFP) as u32,
        order: 0,
    };
    record(&ctx, request, CacheName::Unknown);
    0
}

#[tracepoint]
pub fn kmem_cache_alloc(ctx: TracePointContext) -> u32 {
    let request = Request {
        scratch: KernelScratch::KmemCacheAlloc,
        call_site: 0,
        key: key(field(&ctx, &OFF_KCA_PTR), KernelSpace::Slab),
        bytes_alloc: field(&ctx, &OFF_KCA_BYTES_ALLOC),
        bytes_req: field(&ctx, &OFF_KCA_BYTES_REQ),
        gfp_flags: field::<u64>(&ctx, &OFF_KCA_GFP) as u32,
        order: 0,
    };
    let name_loc: u32 = field(&ctx, &OFF_KCA_NAME);
    record(&ctx, request, CacheName::DataLoc(name_loc));
    0
}

#[tracepoint]
pub fn kfree(ctx: TracePointContext) -> u32 {
    release(key(field(&ctx, &OFF_KFREE_PTR), KernelSpace::Slab));
    0
}

#[tracepoint]
pub fn kmem_cache_free(ctx: TracePointContext) -> u32 {
    release(key(field(&ctx, &OFF_KCF_PTR), KernelSpace::Slab));
    0
}

// The same four slab events as raw BTF tracepoints, preferred where the kernel has them: the
// kernel guards each raw tracepoint program against running inside itself on a CPU, where it
// guards all classic tracepoint programs together, so a free in an RCU callback that
// interrupts another traced program was skipped (and its object looked leaked). Arguments
// are the tracepoint's own (TP_PROTO), not a record laid out by a format file.

/// A `T` at `offset` bytes into the kernel structure at `base`, or zero when unreadable.
#[inline(always)]
fn kernel_field<T: Default>(base: u64, offset: &Global<u32>) -> T {
    // SAFETY: the helper copies `size_of::<T>()` bytes with the kernel's fault-handling
    // access: a bad address is an error (zero here), not a fault. Any bytes are a valid integer.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset.load())) as *const T) }.unwrap_or_default()
}

/// kmalloc(call_site, ptr, bytes_req, bytes_alloc, gfp_flags, node)
#[btf_tracepoint(function = "kmalloc")]
pub fn kmalloc_btf(ctx: BtfTracePointContext) -> i32 {
    let request = Request {
        scratch: KernelScratch::Kmalloc,
        call_site: ctx.arg(0),
        key: key(ctx.arg(1), KernelSpace::Slab),
        bytes_req: ctx.arg(2),
        bytes_alloc: ctx.arg(3),
        gfp_flags: ctx.arg::<u64>(4) as u32,
        order: 0,
    };
    record(&ctx, request, CacheName::Unknown);
    0
}

/// A `SLAB_PAGES` slot, 0 when unset.
#[inline(always)]
fn slab_pages(slot: SlabPages) -> u64 {
    SLAB_PAGES.get(slot as u32).copied().unwrap_or(0)
}

#[inline(always)]
fn set_slab_pages(slot: SlabPages, value: u64) {
    if let Some(entry) = SLAB_PAGES.get_ptr_mut(slot as u32) {
        // SAFETY: a valid pointer to an array slot; a plain 8-byte store.
        unsafe { *entry = value };
    }
}

/// Whether the current thread is the one whose probe allocation is watched.
#[inline(always)]
fn probing_thread() -> bool {
    let trigger = slab_pages(SlabPages::TriggerThread);
    trigger != 0 && trigger == u64::from(bpf_get_current_pid_tgid() as u32)
}

/// kmalloc(call_site, ptr, bytes_req, bytes_alloc, gfp_flags, node), after `kmalloc_btf`
/// recorded the object: names the cache the object really lives in, from its slab
/// (`virt_to_slab(ptr)->slab_cache->name`). The kmalloc event does not say which cache served
/// a request, and a name guessed from size and flags is wrong for dedicated kmalloc caches
/// (kmem_buckets: msg_msg-4k, not kmalloc-4k). Until user space has learnt where struct
/// pages are, it only watches leaktrace's own probe allocation.
#[btf_tracepoint(function = "kmalloc")]
pub fn kmalloc_cache_btf(ctx: BtfTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    let bytes_alloc: u64 = ctx.arg(3);
    let base = slab_pages(SlabPages::Base);
    if base == 0 {
        if bytes_alloc == PROBE_BYTES && probing_thread() {
            set_slab_pages(SlabPages::ProbeAddress, ptr);
        }
        return 0;
    }
    // Larger requests come from the page allocator, not from a cache.
    if bytes_alloc > KMALLOC_MAX_CACHE_SIZE {
        return 0;
    }
    let Some(object) = KALLOCS.get_ptr_mut(key(ptr, KernelSpace::Slab)) else { return 0 };
    let page = base.wrapping_add((ptr >> 12).wrapping_mul(u64::from(PAGE_STRUCT_SIZE.load())));
    // A slab of several pages: its tail pages point at the head page, which is the slab.
    let head: u64 = kernel_field(page, &OFF_PAGE_COMPOUND_HEAD);
    let slab = if head & 1 == 1 { head - 1 } else { page };
    let cache: u64 = kernel_field(slab, &OFF_SLAB_CACHE);
    let name: u64 = kernel_field(cache, &OFF_KMEM_CACHE_NAME);
    if name != 0 {
        // SAFETY: `object` points at the map value just looked up; the helper copies at most
        // `cache.len()` bytes into its `cache` field and reads the name with the kernel's
        // fault-handling access. A concurrent free of the object makes this write go to a
        // value no longer in the map, which the kernel keeps valid until the program ends.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*object).cache) };
    }
    0
}

/// mm_page_alloc(struct page *page, order, gfp_flags, migratetype), attached only while user
/// space learns where struct pages are: the page of leaktrace's own probe allocation.
#[btf_tracepoint(function = "mm_page_alloc")]
pub fn learn_page_btf(ctx: BtfTracePointContext) -> i32 {
    if ctx.arg::<u32>(1) == PROBE_ORDER && probing_thread() {
        set_slab_pages(SlabPages::ProbePage, ctx.arg(0));
    }
    0
}

/// kmem_cache_alloc(call_site, ptr, struct kmem_cache *s, gfp_flags, node): sizes and name
/// from the cache itself, at offsets user space took from the kernel's BTF.
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn kmem_cache_alloc_btf(ctx: BtfTracePointContext) -> i32 {
    let cache: u64 = ctx.arg(2);
    let request = Request {
        scratch: KernelScratch::KmemCacheAlloc,
        call_site: ctx.arg(0),
        key: key(ctx.arg(1), KernelSpace::Slab),
        bytes_req: u64::from(kernel_field::<u32>(cache, &OFF_KMEM_CACHE_OBJECT_SIZE)),
        bytes_alloc: u64::from(kernel_field::<u32>(cache, &OFF_KMEM_CACHE_SIZE)),
        gfp_flags: ctx.arg::<u64>(3) as u32,
        order: 0,
    };
    let name: u64 = kernel_field(cache, &OFF_KMEM_CACHE_NAME);
    record(&ctx, request, CacheName::Kernel(name as *const u8));
    0
}

/// kfree(call_site, ptr)
#[btf_tracepoint(function = "kfree")]
pub fn kfree_btf(ctx: BtfTracePointContext) -> i32 {
    release(key(ctx.arg(1), KernelSpace::Slab));
    0
}

/// kmem_cache_free(call_site, ptr, struct kmem_cache *s)
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_btf(ctx: BtfTracePointContext) -> i32 {
    release(key(ctx.arg(1), KernelSpace::Slab));
    0
}

#[tracepoint]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let order: u32 = field(&ctx, &OFF_PAGE_ALLOC_ORDER);
    let bytes = 1u64 << ((PAGE_SHIFT + order) & 63);
    let request = Request {
        scratch: KernelScratch::Page,
        call_site: 0,
        key: key(field(&ctx, &OFF_PAGE_ALLOC_PFN), KernelSpace::Page),
        bytes_alloc: bytes,
        bytes_req: bytes,
        gfp_flags: field::<u64>(&ctx, &OFF_PAGE_ALLOC_GFP) as u32,
        order,
    };
    record(&ctx, request, CacheName::Unknown);
    0
}

#[tracepoint]
pub fn mm_page_free(ctx: TracePointContext) -> u32 {
    release(key(field(&ctx, &OFF_PAGE_FREE_PFN), KernelSpace::Page));
    0
}

/// Pages freed in batches (page cache reclaim, LRU release) take this path, not mm_page_free.
#[tracepoint]
pub fn mm_page_free_batched(ctx: TracePointContext) -> u32 {
    release(key(field(&ctx, &OFF_PAGE_FREE_BATCHED_PFN), KernelSpace::Page));
    0
}

#[tracepoint]
pub fn percpu_alloc_percpu(ctx: TracePointContext) -> u32 {
    let bytes: u64 = field(&ctx, &OFF_PCPU_ALLOC_BYTES);
    let request = Request {
        scratch: KernelScratch::Percpu,
        call_site: 0,
        key: key(field(&ctx, &OFF_PCPU_ALLOC_PTR), KernelSpace::Percpu),
        bytes_alloc: bytes,
        bytes_req: bytes,
        gfp_flags: field::<u64>(&ctx, &OFF_PCPU_ALLOC_GFP) as u32,
        order: 0,
    };
    record(&ctx, request, CacheName::Unknown);
    0
}

#[tracepoint]
pub fn percpu_free_percpu(ctx: TracePointContext) -> u32 {
    release(key(field(&ctx, &OFF_PCPU_FREE_PTR), KernelSpace::Percpu));
    0
}

/// Every new process's parent and name go into `LINEAGE` (the chain behind an allocation
/// outlives the processes in it). With -p and --run, children forked by a traced process
/// also join the traced set, so `--run` covers a shell script's whole process tree.
#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let child: i32 = field(&ctx, &OFF_FORK_CHILD_PID);
    // The child starts with the parent's name; its exec, if any, renames it.
    let lineage = Lineage { parent, _pad: 0, comm: bpf_get_current_comm().unwrap_or([0; 16]) };
    // A thread's entry (the tracepoint fires for threads too) is never looked up by tgid;
    // the LRU map lets it age out.
    let _ = LINEAGE.insert(child as u32, lineage, 0);
    if FOLLOW_FORKS.load() == 0 {
        return 0;
    }
    // SAFETY: the reference is dropped unread: only whether the key exists is used.
    if unsafe { TARGETS.get(parent) }.is_some() {
        let _ = TARGETS.insert(child as u32, 1u8, 0);
    }
    0
}

/// After an exec the process has its new program's name: the one its chain shows. Its path
/// goes into `EXECUTABLES`.
#[tracepoint]
pub fn lineage_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // __data_loc: low 16 bits are the string's offset in the record.
    let loc: u32 = field(&ctx, &OFF_EXEC_FILENAME);
    // Too big for the BPF stack: built in this CPU's scratch slot.
    if let Some(path) = EXEC_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, which only this program writes and which it cannot
        // interrupt itself to write again. The offset is the record's own __data_loc field,
        // pointing inside the record; the helper copies at most the slot's size and reports
        // a bad address as an error.
        let copied = unsafe {
            (*path).fill(0);
            bpf_probe_read_kernel_str_bytes((ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize), &mut *path)
        };
        if copied.is_ok() {
            // SAFETY: as above; the map copies the value.
            let _ = EXECUTABLES.insert(tgid, unsafe { *path }, 0);
        }
    }
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    match LINEAGE.get_ptr_mut(tgid) {
        // SAFETY: a valid pointer to the entry's value; a concurrent writer (another exec of
        // the same process cannot run at once) could at worst leave a mixed name.
        Some(entry) => unsafe { (*entry).comm = comm },
        None => {
            // Forked before tracing began: its parent is read from /proc.
            let _ = LINEAGE.insert(tgid, Lineage { parent: 0, _pad: 0, comm }, 0);
        }
    }
    0
}
