//! User mode: which processes are traced, as they fork and exec. The traced set lives in
//! `TARGETS` and is kept here, in the kernel, so that a child is traced from its first
//! instruction; user space hears of each change through `PROCESS_EVENTS` and takes the
//! process's mappings then.

use aya_ebpf::{
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
    Global,
};
use leaktrace_common::{Counter, ProcessEvent, ProcessEventKind};

use crate::{
    kernel_slab::field,
    maps::{
        count, FOLLOW_FORKS, FREEZE_AT_EXIT, PROCESS_EVENTS, SELF_TGID, TARGETS, TRACE_CGROUP, TRACE_CGROUP_LEVEL,
        TRACE_COMM, UNWIND_PROCESSES, UNWIND_TABLES,
    },
    user_alloc,
};

/// `CLONE_THREAD` from include/uapi/linux/sched.h: the new task is a thread of its parent.
const CLONE_THREAD: u64 = 0x0001_0000;

#[unsafe(no_mangle)]
static OFF_NEW_TASK_PID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static OFF_NEW_TASK_FLAGS: Global<u32> = Global::new(0);

/// True when `--comm` was given and the current task's name is that one.
#[inline(always)]
fn comm_wanted() -> bool {
    let wanted = TRACE_COMM.load();
    if wanted == [0, 0] {
        return false;
    }
    let Ok(comm) = bpf_get_current_comm() else { return false };
    let (low, high) = comm.split_at(8);
    let word = |bytes: &[u8]| bytes.try_into().map(u64::from_ne_bytes).unwrap_or_default();
    [word(low), word(high)] == wanted
}

/// True when `--cgroup` was given and the current task is in that cgroup or one below it:
/// its ancestor at the cgroup's depth is the cgroup (0 when it sits higher up the tree).
#[inline(always)]
pub fn cgroup_wanted() -> bool {
    let wanted = TRACE_CGROUP.load();
    if wanted == 0 {
        return false;
    }
    // SAFETY: a helper that reads the current task's cgroup; tracing programs may call it.
    unsafe { bpf_get_current_ancestor_cgroup_id(TRACE_CGROUP_LEVEL.load() as i32) == wanted }
}

/// Takes the current process into the traced set because it is in the `--cgroup` cgroup
/// (it joined after the start, or was not seen by the scan): user space is told, and reads
/// its mappings. Returns whether it is traced now; a full set is counted with the process
/// events user space missed (the process is not traced, as a child of a full set is not).
#[inline(always)]
pub fn take_from_cgroup(tgid: u32) -> bool {
    if !cgroup_wanted() {
        return false;
    }
    if TARGETS.insert(tgid, 1u8, 0).is_err() {
        count(Counter::ProcessEventLost);
        return false;
    }
    tell(tgid, ProcessEventKind::Started, 0);
    true
}

#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    // SAFETY: the reference is dropped unread: only whether the key exists is used.
    unsafe { TARGETS.get(tgid) }.is_some()
}

#[inline(always)]
pub fn tell(tgid: u32, kind: ProcessEventKind, parent: u32) {
    // SAFETY: a helper without arguments, which tracepoint programs may call.
    let time_ns = unsafe { bpf_ktime_get_ns() };
    let event = ProcessEvent { tgid, kind: kind as u32, parent, _pad: 0, time_ns };
    if PROCESS_EVENTS.output::<ProcessEvent>(&event, 0).is_err() {
        count(Counter::ProcessEventLost);
    }
}

/// A traced process created a process (not a thread): with `--follow`, or with `--comm`
/// (the child has its parent's name), the child is traced before it first runs. It shares
/// its parent's mappings, so it unwinds with its parent's table until it has its own.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if parent == SELF_TGID.load() || !is_traced(parent) {
        return 0;
    }
    // A child starts in its parent's cgroup.
    if FOLLOW_FORKS.load() == 0 && !comm_wanted() && !cgroup_wanted() {
        return 0;
    }
    let flags: u64 = field(&ctx, &OFF_NEW_TASK_FLAGS);
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let child: i32 = field(&ctx, &OFF_NEW_TASK_PID);
    if child <= 0 {
        return 0;
    }
    let child = child as u32;
    let _ = TARGETS.insert(child, 1u8, 0);
    // SAFETY: the value (plain integers) is copied out at once.
    if let Some(slot) = unsafe { UNWIND_PROCESSES.get(parent) }.copied() {
        let _ = UNWIND_PROCESSES.insert(child, slot, 0);
    }
    tell(child, ProcessEventKind::Forked, parent);
    0
}

/// A process ran a new program. A traced one is told of (its old image's blocks are gone,
/// its old table no longer fits); with `--comm`, one that took the wanted name is traced
/// from here, and one that dropped it is let go unless `--follow` keeps it.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == SELF_TGID.load() {
        return 0;
    }
    let by_name = TRACE_COMM.load() != [0, 0];
    let wanted = comm_wanted();
    if is_traced(tgid) {
        // The old image's mappings would unwind the new one's stacks wrongly: none until user
        // space writes the new ones (the kernel's frame-pointer walk meanwhile).
        let _ = UNWIND_PROCESSES.remove(tgid);
        if by_name && !wanted && FOLLOW_FORKS.load() == 0 {
            let _ = TARGETS.remove(tgid);
            tell(tgid, ProcessEventKind::Left, 0);
        } else {
            tell(tgid, ProcessEventKind::Exec, 0);
            // A launched command waits, stopped, until its new program's dynamic linker is
            // hooked and its allocator chosen (told after the exec, so that it is handled first).
            if FREEZE_AT_EXIT.load() != 0 && UNWIND_TABLES.load() != 0 {
                user_alloc::mappings_changed(tgid);
            }
        }
    } else if wanted {
        let _ = TARGETS.insert(tgid, 1u8, 0);
        tell(tgid, ProcessEventKind::Started, 0);
    } else {
        take_from_cgroup(tgid);
    }
    0
}
