//! Unwinding user stacks from the probe's registers with the rows user space compiled from
//! the modules' `.eh_frame`: the only way to get whole stacks through code built without
//! frame pointers (most distribution binaries), where the kernel's rbp walk stops at the
//! first frame or wanders through stack garbage.
//!
//! Per frame: find the mapping holding the pc (binary search over the process's sorted
//! mappings), then either follow rbp (modules with frame pointers or without unwind rows) or
//! find the row covering the pc (binary search over the module's rows) and compute the
//! caller's pc, sp and rbp from it.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_loop, bpf_probe_read_user},
};
use leaktrace_common::{
    unwind::{
        CachedStep, MAPPING_SEARCH_STEPS, MAX_UNWIND_FRAMES, MAX_UNWIND_MAPPINGS, ROW_SEARCH_STEPS, UNWIND_CACHE_SIZE,
    },
    MappingUnwinder, RowKind, StackEnd, StackRecord, UnwindMapping, UnwindRow,
};

use crate::maps::{TABLE_STALE, UNWIND_CACHE, UNWIND_MAPPINGS, UNWIND_PROCESSES, UNWIND_ROWS};

/// A frame's registers: what the next step needs.
#[derive(Clone, Copy)]
struct Frame {
    pc: u64,
    sp: u64,
    bp: u64,
}

/// The unwinder's state between frames, shared with the `bpf_loop` callback.
#[repr(C)]
struct Walk {
    frame: Frame,
    record: *mut StackRecord,
    slot_base: u32,
    count: u32,
    depth: u32,
    end: u32,
    tgid: u32,
    generation: u32,
}

/// Unwinds the stack at the probe into `record` (addresses, depth and how it ended).
/// Returns false when the process has no table yet; `record` is then untouched.
///
/// One frame per `bpf_loop` iteration: the verifier checks the step once instead of 64
/// unrolled copies of it (which took it most of a second per load).
#[inline(always)]
pub fn unwind_user_stack(regs: &pt_regs, tgid: u32, record: *mut StackRecord) -> bool {
    // SAFETY: the value is copied out at once. The map is preallocated, so the element's
    // memory lasts as long as the map; user space may replace the entry meanwhile, and a copy
    // racing that is still a valid value (plain integers), which the walk bounds like any
    // other (mapping count clamped, every lookup checked).
    let Some(process) = (unsafe { UNWIND_PROCESSES.get(tgid) }).copied() else { return false };
    let mut walk = Walk {
        frame: Frame { pc: regs.rip, sp: regs.rsp, bp: regs.rbp },
        record,
        slot_base: process.slot.wrapping_mul(MAX_UNWIND_MAPPINGS),
        count: if process.count < MAX_UNWIND_MAPPINGS { process.count } else { MAX_UNWIND_MAPPINGS },
        depth: 0,
        end: StackEnd::DepthLimit as u32,
        tgid,
        generation: process.generation,
    };
    // SAFETY: bpf_loop calls `unwind_step`, whose signature is the callback type the verifier
    // checks, with the pointer to `walk`, a local that outlives the call and that nothing
    // else uses until bpf_loop returns. `record` is the caller's scratch record (valid, and
    // not referenced elsewhere while the unwinder runs: see `store_stack`).
    unsafe {
        bpf_loop(MAX_UNWIND_FRAMES as u32, unwind_step as *mut c_void, (&mut walk as *mut Walk).cast(), 0);
        (*record).depth = walk.depth;
        (*record).end = walk.end;
    }
    true
}

/// One frame: records the pc, then steps to the caller. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn unwind_step(index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the context given to it by `unwind_user_stack`: a pointer
    // to its `Walk`, alive and used by nothing else until bpf_loop returns.
    let walk = unsafe { &mut *context.cast::<Walk>() };
    let i = index as usize;
    // SAFETY: `walk.record` is the caller's scratch record, valid for the whole walk and
    // referenced nowhere else while it runs (see `unwind_user_stack`); `get_mut` checks `i`.
    let Some(slot) = (unsafe { (*walk.record).ips.get_mut(i) }) else { return 1 };
    let frame = walk.frame;
    *slot = frame.pc;
    walk.depth = i as u32 + 1;
    // Above the innermost frame each pc is a return address, which may be the first byte of
    // the next function when the call was a function's last instruction.
    let lookup = if i == 0 { frame.pc } else { frame.pc.wrapping_sub(1) };
    let (step, row) = step_for(walk, lookup);
    let next = match step {
        CachedStep::NoMapping => {
            walk.end = no_mapping_end(walk) as u32;
            return 1;
        }
        CachedStep::FramePointer => frame_pointer_step(frame),
        CachedStep::Row => apply_row(row, frame),
    };
    match next {
        Ok(next) if next.pc == 0 => {
            walk.end = StackEnd::Complete as u32;
            1
        }
        Ok(next) => {
            walk.frame = next;
            0
        }
        Err(reason) => {
            walk.end = reason as u32;
            1
        }
    }
}

/// Why a walk met a return address in no known mapping: a library the dynamic linker has
/// reported and the process's table does not hold yet (the table is still the one it had at
/// that report), or code no table will ever describe (JIT, anonymous memory).
#[inline(always)]
fn no_mapping_end(walk: &Walk) -> StackEnd {
    // SAFETY: the value (a plain integer) is copied out at once.
    match unsafe { TABLE_STALE.get(walk.tgid) } {
        Some(&generation) if generation == walk.generation => StackEnd::TableNotReady,
        _ => StackEnd::UnknownMapping,
    }
}

/// All ones when `a > b`, zero otherwise, for user addresses (below 2^63), computed without
/// a branch: a data-dependent branch in a binary search doubles the paths the verifier walks
/// at every step, and 64 frames of that exceed its budget. `black_box` keeps LLVM from
/// turning the mask back into a select, which the BPF backend emits as a branch.
#[inline(always)]
fn greater_mask(a: u64, b: u64) -> u64 {
    core::hint::black_box((b.wrapping_sub(a) as i64 >> 63) as u64)
}

/// Index of the last of `count` sorted keys at or below `target` (0 when none is, which the
/// caller checks), as a branch-free lower bound: the steps depend only on `count`, never on
/// the data. `key_at` fails only on a lookup outside the map.
#[inline(always)]
fn last_at_or_below(count: u32, steps: usize, target: u64, key_at: impl Fn(u32) -> Option<u64>) -> Option<u32> {
    let (mut base, mut len) = (0u32, count);
    for _ in 0..steps {
        if len <= 1 {
            break;
        }
        let half = len / 2;
        base += half & !(greater_mask(key_at(base + half)?, target) as u32);
        len -= half;
    }
    Some(base)
}

/// The mapping holding `pc`: the last one starting at or below it, if `pc` is below its end.
#[inline(always)]
fn find_mapping(slot_base: u32, count: u32, pc: u64) -> Option<UnwindMapping> {
    if count == 0 {
        return None;
    }
    let index =
        last_at_or_below(count, MAPPING_SEARCH_STEPS, pc, |i| UNWIND_MAPPINGS.get(slot_base + i).map(|m| m.start))?;
    let mapping = *UNWIND_MAPPINGS.get(slot_base + index)?;
    (mapping.start <= pc && pc < mapping.end).then_some(mapping)
}

/// The row covering table offset `pc` in `count` rows from `first`.
#[inline(always)]
fn find_row(first: u32, count: u32, pc: u64) -> Option<UnwindRow> {
    if count == 0 || pc > u64::from(u32::MAX) {
        return None;
    }
    let index = last_at_or_below(count, ROW_SEARCH_STEPS, pc, |i| UNWIND_ROWS.get(first + i).map(|r| u64::from(r.pc)))?;
    let row = *UNWIND_ROWS.get(first + index)?;
    (u64::from(row.pc) <= pc).then_some(row)
}

#[inline(always)]
fn read_word(address: u64) -> Result<u64, StackEnd> {
    // SAFETY: the helper copies from the traced process's memory with the kernel's
    // fault-handling user access: a bad address is an error, not a fault.
    unsafe { bpf_probe_read_user(address as *const u64) }.map_err(|_| StackEnd::ReadFailed)
}

/// Two adjacent words with one helper call: each call into the kernel's fault-safe copy
/// costs about as much as the rest of a frame's step.
#[inline(always)]
fn read_pair(address: u64) -> Result<[u64; 2], StackEnd> {
    // SAFETY: as in `read_word`.
    unsafe { bpf_probe_read_user(address as *const [u64; 2]) }.map_err(|_| StackEnd::ReadFailed)
}

/// How to step a frame at `lookup`: from this CPU's cache when the same address was stepped
/// under the process's current mappings, else by the two binary searches (then cached).
#[inline(always)]
fn step_for(walk: &Walk, lookup: u64) -> (CachedStep, UnwindRow) {
    // Multiplicative hashing of the address; its top bits pick the slot.
    let index = ((lookup.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32) % UNWIND_CACHE_SIZE;
    let cached = UNWIND_CACHE.get_ptr_mut(index);
    if let Some(entry) = cached {
        // SAFETY: the lookup returned a valid pointer to this CPU's copy of the entry, which
        // nothing else writes while this program runs (see "Per-CPU values" in maps.rs).
        let entry = unsafe { &*entry };
        if entry.pc == lookup && entry.tgid == walk.tgid && entry.generation == walk.generation {
            let step = match entry.step {
                1 => CachedStep::FramePointer,
                2 => CachedStep::Row,
                _ => CachedStep::NoMapping,
            };
            return (step, entry.row);
        }
    }
    let (step, row) = match find_mapping(walk.slot_base, walk.count, lookup) {
        None => (CachedStep::NoMapping, UnwindRow::default()),
        Some(mapping) if mapping.unwinder == MappingUnwinder::Dwarf as u32 => {
            match find_row(mapping.first_row, mapping.row_count, lookup.wrapping_sub(mapping.bias)) {
                Some(row) => (CachedStep::Row, row),
                // Before the module's first described function: nothing better than rbp.
                None => (CachedStep::FramePointer, UnwindRow::default()),
            }
        }
        Some(_) => (CachedStep::FramePointer, UnwindRow::default()),
    };
    if let Some(entry) = cached {
        // SAFETY: as above; the shared reference taken there is no longer used.
        let entry = unsafe { &mut *entry };
        entry.pc = lookup;
        entry.tgid = walk.tgid;
        entry.generation = walk.generation;
        entry.step = step as u32;
        entry.row = row;
    }
    (step, row)
}

/// One step with a module's unwind row.
#[inline(always)]
fn apply_row(row: UnwindRow, frame: Frame) -> Result<Frame, StackEnd> {
    let cfa = match RowKind::from_byte(row.kind) {
        Some(RowKind::CfaRsp) => frame.sp + u64::from(row.cfa_offset),
        Some(RowKind::CfaRbp) => frame.bp + u64::from(row.cfa_offset),
        // A PLT stub has pushed one more word once past its first jump (byte 11 of 16).
        Some(RowKind::Plt) => frame.sp + if frame.pc & 15 >= 11 { 16 } else { 8 },
        Some(RowKind::End) => return Err(StackEnd::Complete),
        Some(RowKind::NoInfo) => return frame_pointer_step(frame),
        Some(RowKind::Signal) => return Err(StackEnd::SignalFrame),
        Some(RowKind::Unsupported) | None => return Err(StackEnd::Unsupported),
    };
    let (pc, bp) = match row.rbp_offset {
        0 => (read_word(cfa - 8)?, frame.bp),
        // The usual frame: rbp saved just below the return address; one read for both.
        -2 => {
            let [bp, pc] = read_pair(cfa - 16)?;
            (pc, bp)
        }
        offset => (read_word(cfa - 8)?, read_word(cfa.wrapping_add((i64::from(offset) * 8) as u64))?),
    };
    Ok(Frame { pc, sp: cfa, bp })
}

/// One step along the rbp chain: [rbp] is the caller's rbp, [rbp+8] the return address.
#[inline(always)]
fn frame_pointer_step(frame: Frame) -> Result<Frame, StackEnd> {
    if frame.bp == 0 {
        // The outermost frame clears rbp (`_start`, `clone`).
        return Err(StackEnd::Complete);
    }
    if frame.bp < frame.sp {
        // A frame pointer below the stack pointer is not one: this code does not keep them.
        return Err(StackEnd::FramePointerLost);
    }
    let [bp, pc] = read_pair(frame.bp)?;
    Ok(Frame { pc, sp: frame.bp + 16, bp })
}
