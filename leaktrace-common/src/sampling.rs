//! Sampling by bytes (`--sample-bytes N`): each allocation is tracked with probability
//! `1 − exp(−size/N)`, as if a Poisson process with one point every N bytes on average ran
//! over the allocated bytes (jemalloc's, tcmalloc's and Go's heap profilers sample so).
//!
//! The probability is computed in integers from a table user space fills with
//! `1 − exp(−i/STEPS)`, interpolated linearly between points. The eBPF programs decide with
//! it and user space weighs each tracked block with the very same function, so the estimate
//! divides by exactly the probability the decision used: unbiased, whatever the table's
//! rounding.

/// Table points per period.
pub const SAMPLE_TABLE_STEPS: u64 = 256;
/// Periods the table covers; larger requests are always tracked (their probability would
/// differ from 1 by less than 1.2e-7).
pub const SAMPLE_TABLE_PERIODS: u64 = 16;
/// Entries of the `SAMPLE_TABLE` map.
pub const SAMPLE_TABLE_LEN: u32 = (SAMPLE_TABLE_STEPS * SAMPLE_TABLE_PERIODS + 1) as u32;
/// Probability 1 in the fixed-point scale (probabilities are multiples of 2^-32).
pub const CERTAIN: u64 = 1 << 32;
/// Largest period accepted (128 MiB): below 16 periods `size << 32` still fits in 64 bits.
pub const MAX_SAMPLE_PERIOD: u64 = 1 << 27;

/// Probability × 2^32 that an allocation of `size` bytes is tracked with mean period
/// `period` bytes (`0 < period <= MAX_SAMPLE_PERIOD`); `point(i)` reads table entry `i`.
/// A table that cannot be read makes every allocation tracked (probability 1).
#[inline(always)]
pub fn sample_probability(size: u64, period: u64, point: impl Fn(u32) -> Option<u32>) -> u64 {
    if period == 0 || size >= period * SAMPLE_TABLE_PERIODS {
        return CERTAIN;
    }
    let scaled = size * SAMPLE_TABLE_STEPS;
    let index = (scaled / period) as u32;
    let fraction = scaled % period;
    let (Some(low), Some(high)) = (point(index), point(index + 1)) else { return CERTAIN };
    let (low, high) = (u64::from(low), u64::from(high));
    low + high.saturating_sub(low) * fraction / period
}

/// Bytes one tracked allocation of `size` bytes stands for, given its probability × 2^32
/// (the Horvitz–Thompson weight `size / p`), rounded down; `size` itself when certain.
#[inline(always)]
pub fn weighted_bytes(size: u64, probability: u64) -> u64 {
    if probability >= CERTAIN || probability == 0 {
        return size;
    }
    // size < 16 periods <= 2^31 here, so the shift cannot overflow.
    (size << 32) / probability
}

/// Allocations one tracked allocation stands for (`1 / p`), rounded to the nearest.
#[inline(always)]
pub fn weighted_count(probability: u64) -> u64 {
    if probability >= CERTAIN || probability == 0 {
        return 1;
    }
    (CERTAIN + probability / 2) / probability
}
