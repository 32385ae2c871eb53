//! What only the benchmark harness (`bench/`) uses, behind the `bench` feature: the floor
//! object of empty programs, loaded into a `Tracer` like the production object, and the
//! run-time statistics of every loaded eBPF program.

use std::os::fd::AsFd;

use aya::Ebpf;

use super::{load_error, prog_info, Tracer};
use crate::error::Result;

/// The floor object (`leaktrace-floor`), built by `build.rs` with the `bench` feature.
pub(super) static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leaktrace-floor"));

impl Tracer {
    /// Loads the floor object: the programs named `names::PROG_FLOOR_*`, attached with
    /// [`Tracer::attach_uprobe`] and [`Tracer::attach_tracepoint`] like leaktrace's own.
    pub fn load_floor() -> Result<Self> {
        let ebpf = Ebpf::load(FLOOR_OBJECT).map_err(|e| load_error("leaktrace-floor", e))?;
        Ok(Self::from_ebpf(ebpf))
    }
}

/// Run-time statistics of one loaded eBPF program, whoever loaded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// The kernel's program id.
    pub id: u32,
    /// The program's name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    /// Total time spent running it; 0 unless `kernel.bpf_stats_enabled` is 1.
    pub run_time_ns: u64,
    /// Times it ran; 0 unless `kernel.bpf_stats_enabled` is 1.
    pub run_cnt: u64,
    /// Times the kernel skipped it because another program was running on that CPU.
    pub recursion_misses: u64,
}

/// Statistics of every eBPF program loaded on the machine (for the benchmark's per-program
/// costs; needs root).
pub fn loaded_program_stats() -> Vec<ProgramStats> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| {
            let fd = p.fd().ok()?;
            let info = prog_info(fd.as_fd())?;
            Some(ProgramStats {
                id: p.id(),
                name: p.name_as_str().unwrap_or_default().to_string(),
                run_time_ns: info.run_time_ns,
                run_cnt: info.run_cnt,
                recursion_misses: info.recursion_misses,
            })
        })
        .collect()
}
