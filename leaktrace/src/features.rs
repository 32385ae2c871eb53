//! What leaktrace needs from the kernel, by release, and what it does on one that lacks it:
//! stop with one line naming the feature and the release that has it, or fall back to a
//! documented lesser mode. The decision is pure (the release is passed in), so it is tested
//! for kernels this machine does not run.

use crate::error::{Error, Result};

/// A kernel release as major.minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32);

impl Release {
    /// Parses `uname -r` (`6.18.0-1-amd64` → 6.18).
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Release(major, minor))
    }

    /// The running kernel's release, if it can be read.
    pub fn running() -> Option<Self> {
        Self::parse(std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?.trim())
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// One kernel feature leaktrace uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// What it is.
    pub name: &'static str,
    /// The first release that has it.
    pub since: Release,
    /// What leaktrace uses it for.
    pub used_for: &'static str,
    /// What leaktrace does without it; none when it cannot run without it.
    pub fallback: Option<&'static str>,
}

/// Every feature, oldest first (the README's kernel-support table lists the same).
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "BPF global variables",
        since: Release(5, 2),
        used_for: "settings of the eBPF programs",
        fallback: None,
    },
    Feature {
        name: "bpf_probe_read_user",
        since: Release(5, 5),
        used_for: "reading posix_memalign results and user stacks",
        fallback: None,
    },
    Feature { name: "BPF ring buffer", since: Release(5, 8), used_for: "library-load events", fallback: None },
    Feature {
        name: "bpf_loop",
        since: Release(5, 17),
        used_for: "DWARF unwinding of code built without frame pointers",
        fallback: Some(
            "stacks are walked by frame pointers (--unwind fp): through code built without them they end early",
        ),
    },
    Feature {
        name: "uprobe sessions",
        since: Release(6, 13),
        used_for: "one probe per call for entry and return, skipped returns when sampling",
        fallback: Some("a uprobe and a uretprobe per function (as --no-sessions)"),
    },
];

/// What a kernel lacks that leaktrace can do without, with what it does instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Support {
    /// Features missing, each with its fallback.
    pub fallbacks: Vec<&'static Feature>,
}

impl Support {
    /// Whether `name` is missing (and its fallback applies).
    pub fn lacks(&self, name: &str) -> bool {
        self.fallbacks.iter().any(|f| f.name == name)
    }
}

/// Decides, for a kernel of `release`, whether leaktrace can run and with which fallbacks.
/// An unknown release is taken to have everything (the load itself then says what failed).
pub fn assess(release: Option<Release>) -> Result<Support> {
    let Some(release) = release else { return Ok(Support { fallbacks: Vec::new() }) };
    let mut fallbacks = Vec::new();
    for feature in FEATURES.iter().filter(|f| release < f.since) {
        match feature.fallback {
            Some(_) => fallbacks.push(feature),
            None => {
                return Err(Error::UnsupportedKernel(format!(
                    "leaktrace needs {} ({}), which Linux {} added; this is Linux {release}",
                    feature.name, feature.used_for, feature.since
                )))
            }
        }
    }
    Ok(Support { fallbacks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_from_uname() {
        assert_eq!(Release::parse("6.18.0-1-amd64"), Some(Release(6, 18)));
        assert_eq!(Release::parse("5.10.0"), Some(Release(5, 10)));
        assert_eq!(Release::parse("garbage"), None);
    }

    #[test]
    fn each_kernel_gets_its_verdict() {
        assert!(assess(Some(Release(6, 18))).unwrap().fallbacks.is_empty());
        let on_6_6 = assess(Some(Release(6, 6))).unwrap();
        assert!(on_6_6.lacks("uprobe sessions") && !on_6_6.lacks("bpf_loop"));
        let on_5_15 = assess(Some(Release(5, 15))).unwrap();
        assert!(on_5_15.lacks("bpf_loop") && on_5_15.lacks("uprobe sessions"));
        let too_old = assess(Some(Release(5, 6))).unwrap_err().to_string();
        assert!(too_old.contains("BPF ring buffer") && too_old.contains("5.8") && too_old.contains("5.6"), "{too_old}");
        let older = assess(Some(Release(5, 4))).unwrap_err().to_string();
        assert!(older.contains("bpf_probe_read_user"), "{older}");
        assert!(assess(None).unwrap().fallbacks.is_empty());
    }
}
