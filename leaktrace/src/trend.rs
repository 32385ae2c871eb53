//! Growth over time per stack, and the call it supports: leak, bounded cache, or churn.
//!
//! memleak's test ("outstanding and older than 500 ms") cannot tell a leak from a cache or a
//! per-request buffer. What separates them is how the outstanding bytes move over time:
//!
//! - `growing`: the recent half of the series keeps rising, with little ever given back;
//! - `plateau`: it rose, but over the recent half it stays within bounds;
//! - `churn`: far more was allocated (and freed) than is ever outstanding at once;
//! - `unclear`: too few intervals to say.
//!
//! The rules are deliberately simple and documented (docs/json-report.md) so a user can
//! check a verdict against the series, which the JSON report carries.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

pub use crate::model::{Class, Sample, Trend, MIN_INTERVALS};

/// Samples kept per stack; older ones are thinned (every other one dropped) beyond this.
pub const MAX_SAMPLES: usize = 240;
/// churn: bytes allocated over the trace at least this many times the peak outstanding.
pub const CHURN_TURNOVER: f64 = 20.0;
/// growing: of the recent half's movement, at most this share may be decreases.
pub const MAX_GIVE_BACK: f64 = 0.25;

/// Least-squares slope (per second) and r² of bytes over time.
fn fit(samples: &[Sample]) -> (f64, f64) {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return (0.0, 0.0);
    }
    let mean_t = samples.iter().map(|s| s.t_s).sum::<f64>() / n;
    let mean_b = samples.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
    let (mut stt, mut stb, mut sbb) = (0.0, 0.0, 0.0);
    for s in samples {
        let (dt, db) = (s.t_s - mean_t, s.bytes as f64 - mean_b);
        stt += dt * dt;
        stb += dt * db;
        sbb += db * db;
    }
    if stt == 0.0 {
        return (0.0, 0.0);
    }
    let slope = stb / stt;
    let r_squared = if sbb == 0.0 { 1.0 } else { (stb * stb) / (stt * sbb) };
    (slope, r_squared)
}

/// Classifies a series (oldest first; the first sample is the start of tracing).
pub fn classify(series: &[Sample]) -> Trend {
    let intervals = series.len().saturating_sub(1);
    let deltas: Vec<i128> = series.windows(2).map(|w| i128::from(w[1].bytes) - i128::from(w[0].bytes)).collect();
    let intervals_grown = deltas.iter().filter(|&&d| d > 0).count();
    let recent = &series[series.len().saturating_sub(series.len() / 2 + 1)..];
    let (slope, r_squared) = fit(recent);
    let span_min = series.last().map_or(0.0, |s| s.t_s) - series.first().map_or(0.0, |s| s.t_s);
    let allocated = series.last().and_then(|s| s.allocated_bytes);
    let allocated_per_min = allocated.filter(|_| span_min > 0.0).map(|a| a as f64 / span_min * 60.0);
    let peak = series.iter().map(|s| s.bytes).max().unwrap_or(0);
    let recent_deltas = &deltas[deltas.len().saturating_sub(recent.len().saturating_sub(1))..];
    let up: i128 = recent_deltas.iter().filter(|&&d| d > 0).sum();
    let down: i128 = -recent_deltas.iter().filter(|&&d| d < 0).sum::<i128>();
    // A leak reaches new heights: a stack that only climbs back to where it was before the
    // last half (a held few caught with one in flight or one short) is not growing.
    let earlier_peak = series[..series.len() - recent.len()].iter().map(|s| s.bytes).max().unwrap_or(0);
    let new_height = series.last().is_some_and(|s| s.bytes > earlier_peak);
    let class = if intervals < MIN_INTERVALS {
        Class::Unclear
    } else if new_height && up > 0 && (down as f64) <= MAX_GIVE_BACK * up as f64 && up - down > 0 {
        Class::Growing
    } else if allocated.is_some_and(|a| a as f64 >= CHURN_TURNOVER * peak.max(1) as f64) {
        Class::Churn
    } else {
        Class::Plateau
    };
    Trend {
        class,
        bytes_per_min: slope * 60.0,
        r_squared,
        intervals_grown,
        intervals,
        allocated_per_min,
        series: series.to_vec(),
    }
}

/// Appends `sample`, thinning the series when it grows beyond [`MAX_SAMPLES`] (the first
/// sample, the start of tracing, is always kept).
pub fn push_sample(series: &mut Vec<Sample>, sample: Sample) {
    series.push(sample);
    if series.len() > MAX_SAMPLES {
        let first = series[0];
        // Every other sample, counted back from the newest so that it is kept.
        let mut kept: Vec<Sample> = series[1..].iter().rev().step_by(2).copied().collect();
        kept.reverse();
        series.clear();
        series.push(first);
        series.extend(kept);
    }
}

/// The series of every stack (or group) of a trace, sampled once per interval report.
#[derive(Debug)]
pub struct SeriesBook<K> {
    series: HashMap<K, Vec<Sample>>,
    /// The start value of a series, with the figures a new series starts from.
    zero: Sample,
    last_t: Option<f64>,
    samples: usize,
}

impl<K: Hash + Eq + Clone> SeriesBook<K> {
    /// An empty book whose series start from `zero` (its `t_s` is ignored).
    pub fn new(zero: Sample) -> Self {
        Self { series: HashMap::new(), zero, last_t: None, samples: 0 }
    }

    /// Appends one sample per key at `t_s`. A key seen for the first time gets zero samples
    /// at the start and at the previous sample, so its series says when it appeared. With
    /// `absent_is_zero`, keys not in `points` get a zero sample (they hold nothing now).
    pub fn record(&mut self, t_s: f64, points: impl IntoIterator<Item = (K, Sample)>, absent_is_zero: bool) {
        let previous = self.last_t;
        let zero = Sample { t_s: 0.0, ..self.zero };
        let mut seen = HashSet::new();
        for (key, sample) in points {
            let series = self.series.entry(key.clone()).or_insert_with(|| {
                let mut start = vec![zero];
                if let Some(previous) = previous {
                    start.push(Sample { t_s: previous, ..zero });
                }
                start
            });
            push_sample(series, Sample { t_s, ..sample });
            if absent_is_zero {
                seen.insert(key);
            }
        }
        if absent_is_zero {
            for (key, series) in &mut self.series {
                if !seen.contains(key) {
                    push_sample(series, Sample { t_s, ..zero });
                }
            }
        }
        self.last_t = Some(t_s);
        self.samples += 1;
    }

    /// The series of `key`.
    pub fn get(&self, key: &K) -> Option<&[Sample]> {
        self.series.get(key).map(Vec::as_slice)
    }

    /// Every series.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &[Sample])> {
        self.series.iter().map(|(k, s)| (k, s.as_slice()))
    }

    /// Samples recorded so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The series classed churn among those `holding` says hold nothing now, with their
    /// trends, in key order (the book is a hash map: equal input gives equal output).
    pub fn churning(&self, holding: impl Fn(&K) -> bool) -> Vec<(K, Trend)>
    where
        K: Ord,
    {
        let mut churn: Vec<(K, Trend)> = self
            .iter()
            .filter(|(key, _)| !holding(key))
            .map(|(key, series)| (key.clone(), classify(series)))
            .filter(|(_, trend)| trend.class == Class::Churn)
            .collect();
        churn.sort_by(|a, b| a.0.cmp(&b.0));
        churn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(u64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(bytes, allocated))| Sample {
                t_s: i as f64,
                bytes,
                count: bytes / 100,
                allocated_bytes: Some(allocated),
                freed_bytes: Some(allocated - bytes),
            })
            .collect()
    }

    #[test]
    fn a_steady_leak_is_growing_at_its_rate() {
        let points: Vec<(u64, u64)> = (0..13).map(|i| (i * 1000, i * 1000)).collect();
        let trend = classify(&series(&points));
        assert_eq!(trend.class, Class::Growing);
        assert!((trend.bytes_per_min - 60_000.0).abs() < 1e-6);
        assert!((trend.r_squared - 1.0).abs() < 1e-9);
        assert_eq!((trend.intervals_grown, trend.intervals), (12, 12));
    }

    #[test]
    fn a_capped_cache_is_a_plateau() {
        // Rises to 50 kB, then holds it while evicting and inserting.
        let points: Vec<(u64, u64)> = (0..13)
            .map(|i| if i < 4 { (i * 12_500, i * 12_500) } else { (50_000 - (i % 2) * 500, 50_000 + i * 5_000) })
            .collect();
        let trend = classify(&series(&points));
        assert_eq!(trend.class, Class::Plateau, "{trend:?}");
        assert!(trend.bytes_per_min.abs() < 5_000.0);
    }

    #[test]
    fn a_high_turnover_stack_is_churn() {
        let points: Vec<(u64, u64)> =
            (0..13).map(|i| (if i % 2 == 0 { 200 } else { 0 }, 200 + i * 1_000_000)).collect();
        assert_eq!(classify(&series(&points)).class, Class::Churn);
    }

    #[test]
    fn a_held_few_caught_one_short_then_back_is_churn_not_growing() {
        // Kernel mode, 4 eventfds held while 491,339 were opened and closed: a sample caught
        // one of the 4 in flight, and the next ones saw 4 again.
        let points: Vec<(u64, u64)> = [0, 256, 256, 192, 256, 256, 256]
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, 256 + i as u64 * 5_000_000))
            .collect();
        assert_eq!(classify(&series(&points)).class, Class::Churn);
        // The same climb to a new height is growth.
        let points: Vec<(u64, u64)> = [0, 256, 256, 192, 256, 320, 384].iter().map(|&b| (b, b)).collect();
        assert_eq!(classify(&series(&points)).class, Class::Growing);
    }

    #[test]
    fn few_intervals_are_unclear() {
        assert_eq!(classify(&series(&[(0, 0), (100, 100), (200, 200)])).class, Class::Unclear);
    }

    #[test]
    fn thinning_keeps_the_start_and_the_latest() {
        let mut s = Vec::new();
        for i in 0..=(MAX_SAMPLES as u64) {
            push_sample(&mut s, Sample { t_s: i as f64, bytes: i, ..Sample::default() });
        }
        assert!(s.len() <= MAX_SAMPLES);
        assert_eq!(s[0].t_s, 0.0);
        assert_eq!(s.last().unwrap().bytes, MAX_SAMPLES as u64);
    }

    #[test]
    fn a_book_starts_new_series_at_zero_and_fills_absent_keys() {
        let mut book = SeriesBook::new(Sample::default());
        book.record(1.0, [("a", Sample { bytes: 10, ..Sample::default() })], true);
        book.record(2.0, [("b", Sample { bytes: 5, ..Sample::default() })], true);
        let a: Vec<(f64, u64)> = book.get(&"a").unwrap().iter().map(|s| (s.t_s, s.bytes)).collect();
        assert_eq!(a, [(0.0, 0), (1.0, 10), (2.0, 0)]);
        let b: Vec<(f64, u64)> = book.get(&"b").unwrap().iter().map(|s| (s.t_s, s.bytes)).collect();
        assert_eq!(b, [(0.0, 0), (1.0, 0), (2.0, 5)]);
        assert_eq!(book.samples(), 2);
    }
}
