//! Storing a captured stack under the hash of its addresses, for user stacks (`USTACKS`) and
//! kernel stacks (`KSTACKS`) alike. The kernel's own stack map keys by a hash bucket and
//! loses a stack whenever two share a bucket, long before it is full; 64 bits of FNV-1a make
//! two distinct stacks sharing a key unlikely, so a stack is lost only when the map is full.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::HashMap};
use leaktrace_common::{Counter, StackRecord, MAX_STACK_DEPTH};

use crate::maps::count;

const EEXIST: i64 = 17;

/// Where a kind of stack's losses are counted.
pub struct LossCounters {
    /// The map was full, or the entry vanished.
    pub lost: Counter,
    /// Another stack already holds the key.
    pub collision: Counter,
}

/// User stacks' losses.
pub const USER: LossCounters = LossCounters { lost: Counter::StackLost, collision: Counter::StackCollision };
/// Kernel stacks' losses.
pub const KERNEL: LossCounters =
    LossCounters { lost: Counter::KernelStackLost, collision: Counter::KernelStackCollision };

/// FNV-1a over `seed`, `extra` and the addresses; 0 is kept for "no stack".
#[inline(always)]
fn hash_of(record: &StackRecord, seed: u32, extra: u64) -> u64 {
    let depth = record.depth as usize;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    hash ^= u64::from(seed);
    hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    hash ^= extra;
    hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    for i in 0..MAX_STACK_DEPTH {
        if i >= depth {
            break;
        }
        hash ^= record.ips[i];
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash | 1
}

/// Stores `record` in `map` under its hash and returns the hash, or 0 when it could not be
/// stored (the cause counted in `losses`). `seed` keeps apart equal addresses that mean
/// different code: user stacks are seeded with their process (two processes can map
/// different files at the same addresses), kernel stacks with 0. `extra` keeps apart equal
/// native stacks that ran different interpreted code (the hash of a PHP process's frames;
/// 0 for none).
#[inline(always)]
pub fn store(
    map: &HashMap<u64, StackRecord>,
    record: &StackRecord,
    losses: &LossCounters,
    seed: u32,
    extra: u64,
) -> u64 {
    let hash = hash_of(record, seed, extra);
    // Most stacks have been seen before: look first, insert only a new one.
    // SAFETY: stack map entries are only ever inserted, with BPF_NOEXIST: never updated or
    // deleted, by the programs or by user space. The stored record is valid and unchanging
    // for the whole run, and it is only read.
    if let Some(stored) = unsafe { map.get(hash) } {
        return same_stack(stored, record, hash, losses);
    }
    match map.insert(hash, record, BPF_NOEXIST as u64) {
        Ok(()) => hash,
        // Another CPU stored it meanwhile.
        // SAFETY: as for the lookup above.
        Err(err) if i64::from(err) == -EEXIST => match unsafe { map.get(hash) } {
            Some(stored) => same_stack(stored, record, hash, losses),
            None => {
                count(losses.lost);
                0
            }
        },
        Err(_) => {
            count(losses.lost);
            0
        }
    }
}

/// `hash` when the stored record is the stack just captured and not another one with the
/// same hash (counted as a collision, 0).
#[inline(always)]
fn same_stack(stored: &StackRecord, record: &StackRecord, hash: u64, losses: &LossCounters) -> u64 {
    if stored.depth == record.depth && stored.ips[0] == record.ips[0] && stored.end == record.end {
        hash
    } else {
        count(losses.collision);
        0
    }
}
