//! Checking up front that this process may load eBPF programs, so the user gets one clear
//! line instead of a verifier or permission error from deep inside the loader.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether the effective capability set (`CapEff` in /proc/self/status) allows loading and
/// attaching tracing programs: CAP_SYS_ADMIN, or CAP_BPF together with CAP_PERFMON.
pub fn can_trace() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    allows_tracing(effective)
}

fn allows_tracing(effective: u64) -> bool {
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(allows_tracing(u64::MAX));
        assert!(allows_tracing(1 << CAP_SYS_ADMIN));
        assert!(allows_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!allows_tracing(1 << CAP_BPF));
        assert!(!allows_tracing(0));
    }
}
