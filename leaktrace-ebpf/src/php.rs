//! PHP frames at allocation time: the VM's frame chain, walked from
//! `executor_globals.current_execute_data` through `prev_execute_data`, one
//! (`zend_function *`, opcode) pair per frame. Names are not read here: user space reads them
//! once per function from the process's memory, where compiled code lives as long as the
//! process (or opcache's shared memory) does.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_loop, bpf_probe_read_user},
};
use leaktrace_common::{Counter, PhpFrame, PhpProcess, PhpStack, MAX_PHP_FRAMES};

use crate::maps::{count, PHP_PROCESSES, PHP_SCRATCH, PHP_STACKS};

/// Reads a `T` at `base + offset` of the traced process; none when unreadable.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: the helper copies from the traced process's memory with the kernel's
    // fault-handling user access: a bad address is an error, not a fault.
    unsafe { bpf_probe_read_user((base.wrapping_add(u64::from(offset))) as *const T) }.ok()
}

/// Walks the PHP frame chain of process `tgid` into this CPU's scratch record and returns
/// the hash of its frames, with the record; (0, none) when the process is not a PHP process
/// or runs no PHP code now.
#[inline(always)]
pub fn capture(tgid: u32) -> (u64, Option<*mut PhpStack>) {
    // SAFETY: the value (plain integers) is copied out at once; user space writes an entry
    // whole, once, before the process runs PHP code that matters to it.
    let Some(&process) = (unsafe { PHP_PROCESSES.get(tgid) }) else { return (0, None) };
    let Some(scratch) = PHP_SCRATCH.get_ptr_mut(0) else { return (0, None) };
    // SAFETY: this CPU's scratch record, which nothing else writes while this program runs
    // (see "Per-CPU values" in maps.rs).
    unsafe { (*scratch).tgid = tgid };
    let hash = walk(&process, scratch);
    if hash == 0 {
        (0, None)
    } else {
        (hash, Some(scratch))
    }
}

/// Words of a `zend_execute_data` read per frame: up to `prev_execute_data` (offset 48).
const EXECUTE_DATA_WORDS: usize = 7;

/// The walk's state between frames, shared with the `bpf_loop` callback.
#[repr(C)]
struct Walk {
    process: PhpProcess,
    stack: *mut PhpStack,
    execute_data: u64,
    depth: u32,
    hash: u64,
}

/// Fills `stack` from the chain and returns FNV-1a of its frames (0 for no frame).
///
/// One frame per `bpf_loop` iteration: the verifier checks the step once instead of an
/// unrolled copy per frame, which made the allocation return program too big to load.
#[inline(always)]
fn walk(process: &PhpProcess, stack: *mut PhpStack) -> u64 {
    let mut walk = Walk {
        process: *process,
        stack,
        execute_data: read(process.current_execute_data, 0).unwrap_or(0),
        depth: 0,
        hash: 0xcbf2_9ce4_8422_2325,
    };
    // A frame without a function (the dummy frame zend_call_function pushes) is passed over,
    // so the loop may see a few more frames than it keeps.
    // SAFETY: bpf_loop calls `walk_step`, whose signature is the callback type the verifier
    // checks, with the pointer to `walk`, a local that outlives the call and that nothing
    // else uses until bpf_loop returns. `stack` is this CPU's scratch record, referenced
    // nowhere else while the walk runs.
    unsafe {
        (*stack).truncated = 0;
        bpf_loop(MAX_PHP_FRAMES as u32 + 4, walk_step as *mut c_void, (&mut walk as *mut Walk).cast(), 0);
        // Frames left: the chain went on past the frames kept (or a frame was unreadable).
        if walk.execute_data != 0 {
            (*stack).truncated = 1;
            count(Counter::PhpStackTruncated);
        }
        (*stack).depth = walk.depth as u16;
    }
    if walk.depth == 0 {
        0
    } else {
        walk.hash | 1
    }
}

/// One frame: records its function and line, then steps to the caller. Returns 1 to stop.
#[inline(never)]
extern "C" fn walk_step(_index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the context given to it by `walk`: a pointer to its
    // `Walk`, alive and used by nothing else until bpf_loop returns.
    let walk = unsafe { &mut *context.cast::<Walk>() };
    let execute_data = walk.execute_data;
    if execute_data == 0 || walk.depth as usize >= MAX_PHP_FRAMES {
        return 1;
    }
    let process = &walk.process;
    // The frame's first words in one read rather than one read per field: every field used
    // (opline, func, This.u1.type_info, prev_execute_data) is a word-aligned word, or the
    // low half of one, within them in every PHP version in the table.
    let Some(words) = read::<[u64; EXECUTE_DATA_WORDS]>(execute_data, 0) else { return 1 };
    let word = |offset: u32| words.get((offset / 8) as usize).copied().unwrap_or(0);
    let function = word(process.func);
    if function != 0 {
        let opline = word(process.opline);
        let call_info = word(process.call_info) as u32;
        // SAFETY: `walk.stack` is the scratch record, valid for the whole walk and referenced
        // nowhere else while it runs; `get_mut` checks the index.
        let Some(frame) = (unsafe { (*walk.stack).frames.get_mut(walk.depth as usize) }) else { return 1 };
        *frame = PhpFrame { function, opline, call_info, _pad: 0 };
        // The opcode, not its line: two calls on one line are two stacks, and the line
        // costs another read.
        walk.hash = (walk.hash ^ function).wrapping_mul(0x0000_0100_0000_01b3);
        walk.hash = (walk.hash ^ opline).wrapping_mul(0x0000_0100_0000_01b3);
        walk.depth += 1;
    }
    walk.execute_data = word(process.prev);
    0
}

/// Stores the PHP frames under `key`, the key of the native stack they belong to. Counted
/// when the map is full; an existing entry is the same chain (the key hashes it).
#[inline(always)]
pub fn store(key: u64, scratch: *mut PhpStack) {
    if key == 0 {
        return;
    }
    // SAFETY: this CPU's scratch record, filled by `capture` in this same program run.
    let stack = unsafe { &*scratch };
    // SAFETY: only whether the key exists is used.
    if unsafe { PHP_STACKS.get(key) }.is_some() {
        return;
    }
    if let Err(err) = PHP_STACKS.insert(key, stack, BPF_NOEXIST as u64) {
        if err != -17 {
            count(Counter::PhpStackLost);
        }
    }
}
