//! `--sample-bytes N`: estimates of outstanding memory from the allocations the eBPF
//! programs sampled (see `leaktrace_common::sampling` for the decision).
//!
//! Each tracked block of `size` bytes was kept with probability `p = 1 − exp(−size/N)` and
//! stands for `size / p` bytes and `1 / p` blocks (Horvitz–Thompson: unbiased whatever the
//! sizes). Blocks are kept independently, so the variance of a stack's estimate is estimated
//! by `Σ size² (1 − p) / p²` over its tracked blocks, which gives the 95 % interval shown.

pub use crate::model::Estimate;
use leaktrace_common::sampling::{sample_probability, CERTAIN, SAMPLE_TABLE_LEN, SAMPLE_TABLE_STEPS};

/// The default period of `--sample-bytes` given without a value: 512 KiB, as tcmalloc's.
pub const DEFAULT_PERIOD: u64 = 512 * 1024;

/// `1 − exp(−i/STEPS)` × 2^32 for every table point, saturated below 2^32.
pub fn table() -> Vec<u32> {
    (0..SAMPLE_TABLE_LEN)
        .map(|i| {
            let p = -(-(f64::from(i)) / SAMPLE_TABLE_STEPS as f64).exp_m1();
            (p * CERTAIN as f64).round().min(f64::from(u32::MAX)) as u32
        })
        .collect()
}

/// The sampler's probabilities, as the programs compute them.
#[derive(Clone, Debug)]
pub struct Sampler {
    period: u64,
    table: Vec<u32>,
}

impl Sampler {
    /// A sampler with mean period `period` bytes.
    pub fn new(period: u64) -> Self {
        Self { period, table: table() }
    }

    /// The mean period in bytes.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The table the programs read.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// Probability that an allocation of `size` bytes is tracked (the programs' own figure).
    pub fn probability(&self, size: u64) -> f64 {
        sample_probability(size, self.period, |i| self.table.get(i as usize).copied()) as f64 / CERTAIN as f64
    }
}

/// A running estimate of outstanding bytes and blocks from tracked blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimator {
    /// Estimated bytes.
    pub bytes: f64,
    /// Estimated blocks.
    pub count: f64,
    /// Estimated variance of `bytes`.
    pub variance: f64,
    /// Blocks actually tracked.
    pub samples: u64,
}

impl Estimator {
    /// Adds one tracked block of `size` bytes kept with probability `p` (> 0).
    pub fn add(&mut self, size: u64, p: f64) {
        let size = size as f64;
        self.bytes += size / p;
        self.count += 1.0 / p;
        self.variance += size * size * (1.0 - p) / (p * p);
        self.samples += 1;
    }

    /// The summary a report carries.
    pub fn summary(&self) -> Estimate {
        let half = 1.96 * self.variance.sqrt();
        Estimate {
            samples: self.samples,
            bytes_low: (self.bytes - half).max(0.0).floor() as u64,
            bytes_high: (self.bytes + half).ceil() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_one_minus_exp() {
        let t = table();
        assert_eq!(t.len(), SAMPLE_TABLE_LEN as usize);
        assert_eq!(t[0], 0);
        assert!((f64::from(t[256]) / CERTAIN as f64 - (1.0 - (-1.0f64).exp())).abs() < 1e-9);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn probabilities_follow_the_formula_within_the_interpolation_error() {
        let sampler = Sampler::new(DEFAULT_PERIOD);
        for size in [1u64, 16, 100, 4096, 100_000, 524_288, 3_000_000, 8_000_000] {
            let exact = 1.0 - (-(size as f64) / DEFAULT_PERIOD as f64).exp();
            let p = sampler.probability(size);
            assert!((p - exact).abs() <= 2e-6 + exact * 1e-6, "size {size}: {p} vs {exact}");
        }
        assert_eq!(sampler.probability(0), 0.0);
        assert_eq!(sampler.probability(16 * DEFAULT_PERIOD), 1.0);
    }

    /// A deterministic generator (SplitMix64), so that the test needs no crate and repeats.
    fn uniform(state: &mut u64) -> f64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sampling a known set of blocks with the programs' probabilities, over many seeds: the
    /// mean estimate is the truth (within its own standard error) and the 95 % interval holds
    /// the truth about 95 % of the time.
    #[test]
    fn the_estimate_is_unbiased_and_its_interval_covers_the_truth() {
        let sampler = Sampler::new(64 * 1024);
        // 2,000 blocks of 16 B .. 200 KiB: 40 % of the bytes in blocks below the period.
        let sizes: Vec<u64> = (0..2000u64).map(|i| 16 + (i * 7919) % (200 * 1024)).collect();
        let truth: f64 = sizes.iter().sum::<u64>() as f64;
        let true_count = sizes.len() as f64;
        let (runs, mut sum, mut sum_count, mut covered) = (2000, 0.0, 0.0, 0);
        let mut state = 42u64;
        for _ in 0..runs {
            let mut estimate = Estimator::default();
            for &size in &sizes {
                let p = sampler.probability(size);
                if uniform(&mut state) < p {
                    estimate.add(size, p);
                }
            }
            sum += estimate.bytes;
            sum_count += estimate.count;
            let s = estimate.summary();
            covered += usize::from((s.bytes_low as f64) <= truth && truth <= s.bytes_high as f64);
        }
        let mean = sum / runs as f64;
        // Standard error of the mean from the exact variance of the estimator.
        let variance: f64 = sizes
            .iter()
            .map(|&s| {
                let p = sampler.probability(s);
                (s as f64).powi(2) * (1.0 - p) / p
            })
            .sum();
        let standard_error = (variance / runs as f64).sqrt();
        assert!((mean - truth).abs() < 4.0 * standard_error, "mean {mean} vs truth {truth} (se {standard_error})");
        assert!((sum_count / runs as f64 - true_count).abs() / true_count < 0.02);
        let coverage = covered as f64 / runs as f64;
        assert!((0.92..=0.98).contains(&coverage), "95 % interval covered the truth in {coverage}");
    }
}
