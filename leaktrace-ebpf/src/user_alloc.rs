//! Uprobes on the C allocator: the bookkeeping state machine.
//!
//! Entry programs store the request in `PENDING` under the thread id; the shared return
//! program turns it into an `ALLOCS` entry with the stack captured at return. The stack is
//! taken at return, not at entry, because glibc's malloc does not set up a frame pointer:
//! at entry the unwinder would start from the caller's caller and drop the direct caller.
//! At return the instruction pointer is already inside the caller.

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_func_ip, bpf_get_prandom_u32, bpf_get_stack,
        bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use leaktrace_common::{
    alloc::ARG_REGISTERS_SHIFT, AllocInfo, AllocKey, Counter, Heap, HoldReason, PendingCall, PendingKind,
    ProcessEventKind, StackEnd, StackRecord, UnwindEvent, UnwindEventKind, MAX_STACK_DEPTH,
};

use crate::{
    maps::{
        count, sample_probability_of, stack_turnover, LastFree, ALLOCS, FREEZE_AT_EXIT, HELD, LAST_FREE, MAX_SIZE,
        MIN_SIZE, PENDING, SAMPLE_PERIOD, SELF_TGID, STACK_SCRATCH, TABLE_STALE, TARGETS, UNWIND_EVENTS,
        UNWIND_PROCESSES, UNWIND_TABLES, USTACKS,
    },
    php, stacks,
    unwind::unwind_user_stack,
    user_procs,
};

const SIGSTOP: u32 = 19;
const SIGCONT: u32 = 18;

/// Captures the user stack at this return, stores it under its hash, and returns the hash
/// (0 when it could not be stored; the cause is counted).
#[inline(always)]
fn store_stack(ctx: &RetProbeContext, tgid: u32, heap: u32) -> u64 {
    let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: a uprobe program's context is the probed task's `pt_regs`, saved by the kernel
    // and left unchanged while the program runs; the verifier checks each field read.
    let regs = unsafe { &*(ctx.as_ptr() as *const pt_regs) };
    let unwound = UNWIND_TABLES.load() != 0 && unwind_user_stack(regs, tgid, scratch);
    // SAFETY: the lookup returned a valid pointer to this CPU's scratch record, which nothing
    // else writes while this program runs (see "Per-CPU values" in maps.rs); the unwinder,
    // the only other user of `scratch`, has returned.
    let record: &mut StackRecord = unsafe { &mut *scratch };
    if !unwound {
        let size = core::mem::size_of_val(&record.ips) as u32;
        // SAFETY: the helper writes at most `size` bytes, the size of `record.ips`, from its
        // start, and reads the registers from this program's own context.
        let bytes =
            unsafe { bpf_get_stack(ctx.as_ptr(), record.ips.as_mut_ptr().cast(), size, BPF_F_USER_STACK as u64) };
        if bytes <= 0 {
            count(Counter::StackLost);
            return 0;
        }
        record.depth = ((bytes as usize) / 8).min(MAX_STACK_DEPTH) as u32;
        record.end = if UNWIND_TABLES.load() != 0 { StackEnd::NoTable } else { StackEnd::FramePointerWalk } as u32;
    } else if record.end == StackEnd::TableNotReady as u32 {
        count(Counter::UnwindTableNotReady);
    }
    let (php_hash, php_frames) = php::capture(tgid);
    // The heap is part of the key: a call site reached through a function pointer that is
    // malloc in one call and emalloc in another makes one stack per heap. The C heap's salt
    // is 0, so its keys are those of a trace without PHP's heap.
    let heap_salt = u64::from(heap).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let key = stacks::store(&USTACKS, record, &stacks::USER, tgid, php_hash ^ heap_salt);
    if let Some(frames) = php_frames {
        php::store(key, frames);
    }
    key
}

/// The calling thread's (tgid, tid) if its process is traced.
#[inline(always)]
fn traced_thread() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tgid == SELF_TGID.load() {
        return None;
    }
    // SAFETY: the reference is dropped unread: only whether the key exists is used.
    if unsafe { TARGETS.get(tgid) }.is_none() && !user_procs::take_from_cgroup(tgid) {
        return None;
    }
    Some((tgid, tid))
}

#[inline(always)]
fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: a uprobe program's context is the probed task's `pt_regs`, saved by the kernel;
    // the verifier checks the read of this field.
    unsafe { (*(ctx.as_ptr() as *const pt_regs)).rsp }
}

/// Argument `n` of the probed call, from the register the probe's site finds it in (see
/// `ARG_REGISTERS_SHIFT`: a probe moved to an emulated instruction may see it copied away from
/// its own register, which the instructions before then reused).
#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    // SAFETY: the helper reads the cookie of the link that ran this program (0 when none).
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let code = (cookie >> (ARG_REGISTERS_SHIFT + 4 * n as u64)) & 0xf;
    if code == 0 {
        return ctx.arg(n).unwrap_or(0);
    }
    let regs = ctx.as_ptr() as *const pt_regs;
    // Each register is read at its own constant offset: the verifier refuses a read of the
    // context at a computed one, which the compiler would make of a `match` of field reads.
    // SAFETY: as in `stack_pointer`: reads of fields of the saved `pt_regs`.
    let held = unsafe {
        [
            read_volatile(&(*regs).rdi),
            read_volatile(&(*regs).rsi),
            read_volatile(&(*regs).rdx),
            read_volatile(&(*regs).rcx),
            read_volatile(&(*regs).r8),
            read_volatile(&(*regs).r9),
            read_volatile(&(*regs).rax),
        ]
    };
    // The order of `ARG_REGISTERS`.
    let mut value = 0;
    for (i, v) in held.into_iter().enumerate() {
        if code == i as u64 + 1 {
            value = v;
        }
    }
    value
}

/// Records a call's entry. Returns whether its return must be seen (a session program's
/// entry returns 1 otherwise, and the kernel skips the return run).
///
/// A call made from inside another traced call of the same thread (glibc's reallocarray
/// calls realloc, memalign variants share code) is counted as nested and ignored:
/// overwriting the outer call's state would lose the outer block, which is how bcc's memleak
/// loses large allocations.
///
/// With `--sample-bytes`, a call the sampler leaves out keeps no state when `session` (its
/// return never runs), unless realloc took a tracked block out and must put it back should
/// the call fail; with plain return probes it keeps its state, marked unsampled, so that its
/// return is recognized and ignored.
#[inline(always)]
fn enter(ctx: &ProbeContext, size: u64, kind: PendingKind, aux_ptr: u64, session: bool) -> bool {
    let Some((tgid, tid)) = traced_thread() else { return false };
    // SAFETY: the helper reads the cookie of the link that ran this program; every uprobe
    // link has one (0 unless set), in both its perf-event and its uprobe_multi forms.
    let heap = Heap::of_cookie(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    let sp = stack_pointer(ctx);
    if let Some(outer) = PENDING.get_ptr_mut(tid) {
        // SAFETY: the lookup returned a valid pointer to the calling thread's entry (keyed by
        // its thread id), which only this thread's programs insert, change or remove, one at
        // a time; user space never touches PENDING.
        let outer = unsafe { &mut *outer };
        // Deeper means called from inside; equal means a tail call (glibc's reallocarray
        // jumps into realloc), after which both return probes fire on the single return.
        if sp <= outer.entry_sp {
            outer.nested += 1;
            count(Counter::NestedCalls);
            return true;
        }
        // The stack is shallower than the stored call's: that call never returned.
        count(Counter::PendingStale);
        if SAMPLE_PERIOD.load() != 0 {
            // Dropped now: an unsampled call below may not overwrite it.
            let _ = PENDING.remove(tid);
        }
    }
    // SAFETY: a helper without arguments, which uprobe programs may call.
    // A resize makes no block: it always keeps its state, to update a tracked one.
    let sampled = kind == PendingKind::Resize
        || SAMPLE_PERIOD.load() == 0
        || u64::from(unsafe { bpf_get_prandom_u32() }) < sample_probability_of(size);
    let mut pending = PendingCall {
        size,
        entry_sp: sp,
        aux_ptr,
        old: AllocInfo::default(),
        nested: 0,
        kind: kind as u32,
        has_old: 0,
        sampled: u32::from(sampled),
        heap,
        _pad: 0,
    };
    if kind == PendingKind::Realloc && aux_ptr != 0 {
        // Take the old block out now: once realloc frees it inside, another thread may get the
        // same address and record it before our return runs. It is restored if realloc fails.
        let key = AllocKey::new(aux_ptr, tgid);
        // SAFETY: the value (plain integers) is copied out at once. The kernel keeps a
        // looked-up element's memory valid until the program returns, and only a store at the
        // same address changes it, which needs the allocator to hand out a block that this
        // thread is still reallocating.
        if let Some(old) = unsafe { ALLOCS.get(key) } {
            pending.old = *old;
            pending.has_old = 1;
            let _ = ALLOCS.remove(key);
            stack_turnover(pending.old.stack_id, pending.old.size, false);
        } else {
            count(Counter::FreeUnknown);
        }
    }
    if !sampled {
        count(Counter::SampledOut);
        if session && pending.has_old == 0 {
            return false;
        }
    }
    if PENDING.insert(tid, pending, 0).is_err() {
        count(Counter::PendingMapFull);
        return false;
    }
    true
}

/// The arguments each entry program reads, shared by its uprobe and its session form.
#[inline(always)]
fn size_arg0(ctx: &ProbeContext, session: bool) -> bool {
    let size = arg(ctx, 0);
    enter(ctx, size, PendingKind::Plain, 0, session)
}

#[inline(always)]
fn size_arg1(ctx: &ProbeContext, session: bool) -> bool {
    let size = arg(ctx, 1);
    enter(ctx, size, PendingKind::Plain, 0, session)
}

/// A function whose size is in its name (Zend's `_emalloc_8` … `_emalloc_3072` take no
/// argument): the size is the lower half of the probe's attach cookie.
#[inline(always)]
fn fixed_size(ctx: &ProbeContext, session: bool) -> bool {
    // SAFETY: as in `enter`.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    enter(ctx, cookie & 0xffff_ffff, PendingKind::Plain, 0, session)
}

#[inline(always)]
fn calloc(ctx: &ProbeContext, session: bool) -> bool {
    let nmemb = arg(ctx, 0);
    let size = arg(ctx, 1);
    // An overflowing product makes calloc fail (NULL), which is counted, not recorded.
    enter(ctx, nmemb.wrapping_mul(size), PendingKind::Plain, 0, session)
}

#[inline(always)]
fn realloc(ctx: &ProbeContext, session: bool) -> bool {
    let old = arg(ctx, 0);
    let size = arg(ctx, 1);
    enter(ctx, size, PendingKind::Realloc, old, session)
}

#[inline(always)]
fn reallocarray(ctx: &ProbeContext, session: bool) -> bool {
    let old = arg(ctx, 0);
    let nmemb = arg(ctx, 1);
    let size = arg(ctx, 2);
    enter(ctx, nmemb.wrapping_mul(size), PendingKind::Realloc, old, session)
}

#[inline(always)]
fn posix_memalign(ctx: &ProbeContext, session: bool) -> bool {
    let out = arg(ctx, 0);
    let size = arg(ctx, 2);
    enter(ctx, size, PendingKind::OutPointer, out, session)
}

#[inline(always)]
fn resize(ctx: &ProbeContext, session: bool) -> bool {
    let ptr = arg(ctx, 0);
    let size = arg(ctx, 1);
    let extra = arg(ctx, 2);
    if !enter(ctx, size.saturating_add(extra), PendingKind::Resize, ptr, session) {
        return false;
    }
    // The least size asked for, kept where a resize has no old block (see `PendingKind`).
    let Some((_, tid)) = traced_thread() else { return true };
    if let Some(pending) = PENDING.get_ptr_mut(tid) {
        // SAFETY: the calling thread's own entry, just inserted by `enter`; only this
        // thread's programs touch it.
        let pending = unsafe { &mut *pending };
        if pending.kind == PendingKind::Resize as u32 && pending.nested == 0 {
            pending.old.size = size;
        }
    }
    true
}

#[uprobe]
pub fn resize_enter(ctx: ProbeContext) -> u32 {
    resize(&ctx, false);
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn resize_session(ctx: *mut c_void) -> u32 {
    session(ctx, resize)
}

/// A resize in place returned: a tracked block takes its new size, at its first stack.
#[inline(always)]
fn resized(call: &PendingCall, real_size: u64, tgid: u32) {
    if real_size < call.old.size {
        return; // not resized: the block keeps its size
    }
    let size = if real_size < call.size { real_size } else { call.size };
    let Some(info) = ALLOCS.get_ptr_mut(AllocKey::new(call.aux_ptr, tgid)) else { return };
    // SAFETY: as for realloc's old block in `enter`: only a store at this address, which the
    // allocator cannot hand out while the block is live, changes the entry; the fields are
    // plain integers.
    let info = unsafe { &mut *info };
    stack_turnover(info.stack_id, info.size, false);
    stack_turnover(info.stack_id, size, true);
    info.size = size;
}

#[uprobe]
pub fn size_arg0_enter(ctx: ProbeContext) -> u32 {
    size_arg0(&ctx, false);
    0
}

#[uprobe]
pub fn size_arg1_enter(ctx: ProbeContext) -> u32 {
    size_arg1(&ctx, false);
    0
}

#[uprobe]
pub fn fixed_size_enter(ctx: ProbeContext) -> u32 {
    fixed_size(&ctx, false);
    0
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    calloc(&ctx, false);
    0
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    realloc(&ctx, false);
    0
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    reallocarray(&ctx, false);
    0
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    posix_memalign(&ctx, false);
    0
}

/// A uprobe session program: the kernel runs it at the probed instruction and, unless that
/// run returned 1, again when the function returns. The two runs are told apart without
/// kfuncs (which aya 0.14 cannot link): `bpf_get_func_ip` is the probed address in both,
/// while the saved instruction pointer is the probed address only at entry and the return
/// address at return.
#[inline(always)]
fn session(ctx: *mut c_void, entry: fn(&ProbeContext, bool) -> bool) -> u32 {
    // SAFETY: `ctx` is this program's context, the probed task's `pt_regs` as for any uprobe
    // program: the helper takes it as it is, and the verifier checks the read of `rip`.
    let at_entry = unsafe { bpf_get_func_ip(ctx) == (*(ctx as *const pt_regs)).rip };
    if at_entry {
        u32::from(!entry(&ProbeContext::new(ctx), true))
    } else {
        alloc_returned(&RetProbeContext::new(ctx));
        0
    }
}

// Session programs are written without aya's `#[uprobe]`, whose wrapper always returns 0:
// the entry's return value is what skips the return run.

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn size_arg0_session(ctx: *mut c_void) -> u32 {
    session(ctx, size_arg0)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn size_arg1_session(ctx: *mut c_void) -> u32 {
    session(ctx, size_arg1)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn fixed_size_session(ctx: *mut c_void) -> u32 {
    session(ctx, fixed_size)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn calloc_session(ctx: *mut c_void) -> u32 {
    session(ctx, calloc)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn realloc_session(ctx: *mut c_void) -> u32 {
    session(ctx, realloc)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn reallocarray_session(ctx: *mut c_void) -> u32 {
    session(ctx, reallocarray)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn posix_memalign_session(ctx: *mut c_void) -> u32 {
    session(ctx, posix_memalign)
}

#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    alloc_returned(&ctx);
    0
}

/// The block a returning call produced, 0 when it failed; none when posix_memalign's result
/// cannot be read back (counted).
#[inline(always)]
fn returned_address(call: &PendingCall, ret: u64) -> Option<u64> {
    if call.kind != PendingKind::OutPointer as u32 {
        return Some(ret);
    }
    if ret != 0 {
        return Some(0); // posix_memalign returns an error number; nothing was allocated.
    }
    // SAFETY: the helper copies 8 bytes of the traced process's memory (the pointer
    // posix_memalign stored) with the kernel's fault-handling user access: a bad address is
    // an error, not a fault.
    match unsafe { bpf_probe_read_user(call.aux_ptr as *const u64) } {
        Ok(addr) => Some(addr),
        Err(_) => {
            count(Counter::OutPointerUnreadable);
            None
        }
    }
}

/// An allocator call returned: record its block.
#[inline(always)]
fn alloc_returned(ctx: &RetProbeContext) {
    // No traced-process lookup: only a traced thread's entry leaves the pending call looked
    // up next, so a thread without one is simply not traced.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(pending) = PENDING.get_ptr_mut(tid) else {
        // Untraced threads reach here too (a vfork child shares the probed memory); only a
        // traced one's return is a call that began before its entry probe existed.
        if traced_thread().is_some() {
            count(Counter::ReturnWithoutEntry);
        }
        return;
    };
    // SAFETY: as in `enter`: the calling thread's own entry, which only its programs touch.
    // The reference is last used before the entry is removed.
    let pending = unsafe { &mut *pending };
    if pending.nested > 0 {
        pending.nested -= 1;
        return;
    }
    let call = *pending;
    let _ = PENDING.remove(tid);

    let ret: u64 = ctx.ret();
    if call.kind == PendingKind::Resize as u32 {
        resized(&call, ret, tgid);
        return;
    }
    // posix_memalign returns an error number (0 on success), the others the block.
    let failed = if call.kind == PendingKind::OutPointer as u32 { ret != 0 } else { ret == 0 };
    if call.sampled == 0 && !failed {
        // Left out by the sampler; a failure still goes below (a failed realloc's old block
        // is put back).
        return;
    }
    let Some(addr) = returned_address(&call, ret) else { return };

    if addr == 0 {
        if call.kind == PendingKind::Realloc as u32 && call.size == 0 {
            // realloc(p, 0) freed p (already taken out at entry) and returned NULL.
            return;
        }
        count(Counter::FailedAllocs);
        if call.has_old != 0 {
            // realloc failed: the old block is still valid and still outstanding.
            let _ = ALLOCS.insert(AllocKey::new(call.aux_ptr, tgid), call.old, 0);
            stack_turnover(call.old.stack_id, call.old.size, true);
        }
        return;
    }

    if call.size < MIN_SIZE.load() || call.size > MAX_SIZE.load() {
        // Filtered out by --min-size/--max-size (checked here so that realloc's entry still
        // takes the old block out).
        return;
    }
    count(Counter::AllocCalls);
    let stack_id = store_stack(ctx, tgid, call.heap);
    // SAFETY: a helper without arguments, which uprobe programs may call.
    let timestamp_ns = unsafe { bpf_ktime_get_ns() };
    let info = AllocInfo { size: call.size, timestamp_ns, stack_id, tgid, heap: call.heap };
    stack_turnover(stack_id, call.size, true);
    // Overwrite (no BPF_NOEXIST): if an entry exists at this address its free was missed, and
    // the newest allocation there is the live one.
    if ALLOCS.insert(AllocKey::new(addr, tgid), info, 0).is_err() {
        count(Counter::AllocsMapFull);
    }
}

/// On `exit`/`_exit` of a launched command: stop it (SIGSTOP) so that user space can read
/// its mappings before they vanish; leaktrace resumes it at once. Only used for commands
/// leaktrace launched itself, whose short lives would otherwise end before the first
/// snapshot of their mappings.
#[uprobe]
pub fn exit_enter(_ctx: ProbeContext) -> u32 {
    exit_called();
    0
}

#[inline(always)]
fn exit_called() {
    if FREEZE_AT_EXIT.load() == 0 {
        return;
    }
    if let Some((tgid, _)) = traced_thread() {
        stop_self(tgid, HoldReason::Exit);
    }
}

/// Stops the calling process (SIGSTOP), marked in `HELD` first: the mark is what lets the
/// guardian resume it should leaktrace die before it does, and what tells a stop of ours
/// from the user's own. Returns false when the mark could not be written; the process is
/// then not stopped, since nothing could resume it after a crash.
#[inline(always)]
fn stop_self(tgid: u32, reason: HoldReason) -> bool {
    if HELD.insert(tgid, reason as u32, 0).is_err() {
        return false;
    }
    // SAFETY: the helper takes only a signal number and signals the current process.
    unsafe { aya_ebpf::helpers::bpf_send_signal(SIGSTOP) };
    true
}

/// On PHP's `zend_mm_shutdown` (the end of each request, and of the script): the Zend heap
/// gives its chunks back whole, without freeing each block, so user space drops the
/// process's PHP-heap blocks recorded before now.
#[uprobe]
pub fn heap_reset_enter(_ctx: ProbeContext) -> u32 {
    if let Some((tgid, _)) = traced_thread() {
        user_procs::tell(tgid, ProcessEventKind::HeapReset, 0);
    }
    0
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    freed(&ctx);
    0
}

#[inline(always)]
fn freed(ctx: &ProbeContext) {
    let Some((tgid, tid)) = traced_thread() else { return };
    let addr = arg(ctx, 0);
    if addr == 0 {
        return;
    }
    let sp = stack_pointer(ctx);
    let key = AllocKey::new(addr, tgid);
    // SAFETY: as for realloc's old block in `enter`: the fields are copied out at once, and
    // only a store at this address, which the allocator cannot hand out before this free
    // returns, changes them.
    if let Some(&AllocInfo { stack_id, size, .. }) = unsafe { ALLOCS.get(key) } {
        count(Counter::FreeCalls);
        let _ = ALLOCS.remove(key);
        stack_turnover(stack_id, size, false);
        let _ = LAST_FREE.insert(tid, LastFree { addr, sp }, 0);
        return;
    }
    if passed_on(tid, addr, sp) {
        count(Counter::NestedCalls);
        return;
    }
    count(Counter::FreeCalls);
    count(Counter::FreeUnknown);
    let _ = LAST_FREE.insert(tid, LastFree { addr, sp }, 0);
}

/// Whether a free of an untracked block is the inner part of a call already seen: the same
/// block this thread freed last, from the same or a deeper stack (`delete` jumping to
/// `free`), or a free inside a traced allocation call (mimalloc's realloc frees the old
/// block, which realloc's entry took out already).
#[inline(always)]
fn passed_on(tid: u32, addr: u64, sp: u64) -> bool {
    // SAFETY: the value (two integers) is copied out at once; only this thread's programs
    // write its entry.
    if let Some(last) = unsafe { LAST_FREE.get(tid) } {
        if last.addr == addr && sp <= last.sp {
            return true;
        }
    }
    // SAFETY: as in `enter`: the calling thread's own entry, copied out at once.
    unsafe { PENDING.get(tid) }.is_some_and(|outer| sp <= outer.entry_sp)
}

/// On the dynamic linker's `_dl_debug_state`, which it calls once a library is mapped and
/// before its constructors run (and again around dlclose): tell user space, which adds the
/// new modules' unwind rows. A launched command is stopped (SIGSTOP) until then and resumed
/// by user space: without the stop, allocations made by a freshly loaded library before the
/// table update would be unwound only as far as its first frame. An attached process is
/// never stopped (a stop would outlive a killed leaktrace, and its shell would see it as a
/// stopped job): its table is marked stale instead, so that such stacks end as
/// `TableNotReady`, counted, rather than as an unexplained unknown mapping.
#[uprobe]
pub fn dl_state_enter(_ctx: ProbeContext) -> u32 {
    libraries_changed();
    0
}

#[inline(always)]
fn libraries_changed() {
    if UNWIND_TABLES.load() == 0 {
        return;
    }
    let Some((tgid, _)) = traced_thread() else { return };
    mappings_changed(tgid);
}

/// Tells user space that process `tgid`'s mappings changed, and stops it until they are read
/// when it is a launched command (see `dl_state_enter`); also called at the exec of a traced
/// launched command, whose new program may run under another dynamic linker than the one
/// hooked (a container's own): stopped before its first instruction, it is hooked in time.
#[inline(always)]
pub fn mappings_changed(tgid: u32) {
    let event = UnwindEvent { tgid, kind: UnwindEventKind::LibrariesChanged as u32 };
    // The stop is queued before user space can hear of it, so its SIGCONT can never arrive
    // first and leave the process stopped for good.
    let stopped = FREEZE_AT_EXIT.load() != 0 && stop_self(tgid, HoldReason::Libraries);
    if !stopped {
        // SAFETY: the value (plain integers) is copied out at once.
        if let Some(slot) = unsafe { UNWIND_PROCESSES.get(tgid) } {
            let _ = TABLE_STALE.insert(tgid, slot.generation, 0);
        }
    }
    if UNWIND_EVENTS.output::<UnwindEvent>(&event, 0).is_err() {
        if stopped {
            // Nobody will resume it: a SIGCONT discards the pending stop.
            let _ = HELD.remove(tgid);
            // SAFETY: the helper takes only a signal number and signals the current process.
            unsafe { aya_ebpf::helpers::bpf_send_signal(SIGCONT) };
        }
        count(Counter::UnwindEventLost);
    }
}

// Session forms of the entry-only programs: their entry returns 1, so no return run is
// planted. Used wherever the kernel has uprobe sessions, because a session link detaches
// with one wait for the probes to go quiet, where each perf-event uprobe waits on its own
// under a global lock (twenty of them kept a traced command's exit waiting two seconds).

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn free_session(ctx: *mut c_void) -> u32 {
    freed(&ProbeContext::new(ctx));
    1
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn exit_session(_ctx: *mut c_void) -> u32 {
    exit_called();
    1
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub fn dl_state_session(_ctx: *mut c_void) -> u32 {
    libraries_changed();
    1
}
