//! Medians, and per-program run time from `kernel.bpf_stats_enabled`.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::Result;
use leaktrace::bpf::bench::{loaded_program_stats, ProgramStats};
use serde_json::{json, Value};

use crate::proc;

/// Median of the samples (NaN when there are none).
pub fn median(samples: &[f64]) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Rounds for the JSON and the table.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets `kernel.bpf_stats_enabled` and restores the previous value when dropped. Statistics
/// cost two clock reads per program run, so they are off while anything is timed and on only
/// while "where the time goes" is measured.
pub struct BpfStats(String);

/// The value to restore if the harness is interrupted (b'0' or b'1'; 0 while unset).
static RESTORE_ON_SIGNAL: AtomicU8 = AtomicU8::new(0);

/// SIGINT/SIGTERM handler: puts the sysctl back as the harness found it, then exits.
extern "C" fn restore_and_exit(signal: libc::c_int) {
    let value = RESTORE_ON_SIGNAL.load(Ordering::SeqCst);
    if value != 0 {
        // SAFETY: open, write, close and _exit are async-signal-safe; the path is a C string.
        unsafe {
            let fd = libc::open(c"/proc/sys/kernel/bpf_stats_enabled".as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, std::ptr::addr_of!(value).cast(), 1);
                libc::close(fd);
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(128 + signal) };
}

impl BpfStats {
    /// Sets the sysctl to `on`. The first guard also makes SIGINT and SIGTERM restore the
    /// value it found before the harness exits.
    pub fn set(on: bool) -> Result<Self> {
        let previous = proc::set_sysctl(Path::new(SYSCTL), if on { "1" } else { "0" })?;
        let byte = if previous == "1" { b'1' } else { b'0' };
        if RESTORE_ON_SIGNAL.compare_exchange(0, byte, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe {
                libc::signal(libc::SIGINT, restore_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t);
                libc::signal(libc::SIGTERM, restore_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t);
            }
        }
        Ok(Self(previous))
    }

    /// The value it had before.
    pub fn previous(&self) -> &str {
        &self.0
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

/// Statistics of the programs behind a process's descriptors.
pub fn snapshot(pid: u32) -> BTreeMap<u32, ProgramStats> {
    let (ids, _) = proc::bpf_fds(pid);
    loaded_program_stats().into_iter().filter(|p| ids.contains(&p.id)).map(|p| (p.id, p)).collect()
}

/// Per-program run counts and times between two snapshots, as JSON: per program `name`,
/// `run_cnt`, `run_time_ns`, `avg_ns`, `per_op_ns` (run time divided by `ops`); and the
/// total per operation.
pub fn delta(before: &BTreeMap<u32, ProgramStats>, after: &BTreeMap<u32, ProgramStats>, ops: u64) -> Value {
    // Programs of one name (leaktrace loads each once; bpftrace may load several) are summed.
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, a) in after {
        let (cnt0, time0) = before.get(id).map_or((0, 0), |b| (b.run_cnt, b.run_time_ns));
        let e = by_name.entry(a.name.clone()).or_default();
        e.0 += a.run_cnt.saturating_sub(cnt0);
        e.1 += a.run_time_ns.saturating_sub(time0);
    }
    let ops = ops.max(1) as f64;
    let programs: Vec<Value> = by_name
        .iter()
        .filter(|(_, (cnt, _))| *cnt > 0)
        .map(|(name, (cnt, time))| {
            json!({
                "name": name,
                "run_cnt": cnt,
                "run_time_ns": time,
                "avg_ns": round(*time as f64 / *cnt as f64, 1),
                "runs_per_op": round(*cnt as f64 / ops, 3),
                "per_op_ns": round(*time as f64 / ops, 1),
            })
        })
        .collect();
    let total: u64 = by_name.values().map(|(_, t)| t).sum();
    json!({ "programs": programs, "total_per_op_ns": round(total as f64 / ops, 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(round(1.23456, 2), 1.23);
    }

    #[test]
    fn deltas_by_name() {
        let p = |id, name: &str, cnt, time| ProgramStats {
            id,
            name: name.into(),
            run_time_ns: time,
            run_cnt: cnt,
            recursion_misses: 0,
        };
        let before: BTreeMap<u32, ProgramStats> = [(1, p(1, "a", 10, 1000))].into();
        let after: BTreeMap<u32, ProgramStats> = [(1, p(1, "a", 30, 3000)), (2, p(2, "b", 0, 0))].into();
        let d = delta(&before, &after, 10);
        assert_eq!(d["programs"].as_array().unwrap().len(), 1);
        assert_eq!(d["programs"][0]["avg_ns"], 100.0);
        assert_eq!(d["total_per_op_ns"], 200.0);
    }
}
