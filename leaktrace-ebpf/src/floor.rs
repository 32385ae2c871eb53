//! Empty programs: the floor the benchmark (`cargo xtask bench`) measures leaktrace against.
//! Attached where leaktrace's own programs go, they cost what the kernel charges for running
//! any eBPF program there (the uprobe trap and return trampoline, the tracepoint call) and
//! nothing else. Two more capture a stack and nothing else, so the benchmark can say how much
//! of leaktrace's per-event time is the stack walk.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::bpf_get_stack,
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{PerCpuArray, StackTrace},
    programs::{tracing::StackIdContext, ProbeContext, RetProbeContext, TracePointContext},
    EbpfContext,
};
use leaktrace_common::StackRecord;

/// Where `floor_stack_return` captures a stack, as leaktrace's return program does into its
/// own `STACK_SCRATCH`.
#[map]
static STACK_SCRATCH: PerCpuArray<StackRecord> = PerCpuArray::with_max_entries(1, 0);

/// `floor_kstack`'s stack map. One entry: the stack is captured and hashed, and whether it
/// is then stored does not matter to the floor.
#[map]
static KSTACKS: StackTrace = StackTrace::with_max_entries(1, 0);

#[uprobe]
pub fn floor_enter(_ctx: ProbeContext) -> u32 {
    0
}

#[uretprobe]
pub fn floor_return(_ctx: RetProbeContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_kmalloc(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_kmem_cache_alloc(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_kfree(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn floor_kmem_cache_free(_ctx: TracePointContext) -> u32 {
    0
}

/// Only the user stack walk of leaktrace's return program (into the same per-CPU buffer;
/// not hashed or stored).
#[uretprobe]
pub fn floor_stack_return(ctx: RetProbeContext) -> u32 {
    if let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) {
        // SAFETY: the lookup returned a valid pointer to this CPU's scratch record, which
        // nothing else writes while this program runs (see "Per-CPU values" in maps.rs; the
        // same holds for this object's map).
        let record = unsafe { &mut *scratch };
        let size = core::mem::size_of_val(&record.ips) as u32;
        // SAFETY: the helper writes at most `size` bytes, the size of `record.ips`, from its
        // start, and reads the registers from this program's own context.
        let _ = unsafe { bpf_get_stack(ctx.as_ptr(), record.ips.as_mut_ptr().cast(), size, BPF_F_USER_STACK as u64) };
    }
    0
}

/// Only the kernel stack capture of leaktrace's slab allocation programs.
#[tracepoint]
pub fn floor_kstack(ctx: TracePointContext) -> u32 {
    let _ = ctx.get_stackid(&KSTACKS, 0);
    0
}
