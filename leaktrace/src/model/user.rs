//! What only a user-space (allocator) trace reports: unwinding, probe sites, sampling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The user-mode part of a report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserSection {
    /// How stacks were unwound (absent with `--unwind fp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<UnwindSection>,
    /// Where each allocator function is probed and how the kernel runs the probed
    /// instruction (emulated: one trap per call; single-stepped: two).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeReport>,
    /// With `--sample-bytes`: the figures are estimates (see `stacks[].estimate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSection>,
    /// Which allocator families were found in which objects of the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocators: Vec<FamilyReport>,
    /// Probes the kernel refused (their calls are not traced; counted in
    /// `lost.probes_not_attached`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_attached: Vec<NotAttached>,
    /// Every process traced, when there was more than one (`-p A,B`, `--follow`, `--comm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessSummary>,
}

/// An allocator family found in one object of the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyReport {
    /// `glibc`, `jemalloc`, `tcmalloc`, `google-tcmalloc`, `mimalloc`, `musl`, `c++`, `custom` (`--alloc-fn`),
    /// or `c` (the C API of an object of no known family).
    pub family: String,
    /// The object, as leaktrace opened it.
    pub object: String,
    /// The functions probed there (one per probe; aliases are in `probes`).
    pub functions: Vec<String>,
}

/// A probe the kernel refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotAttached {
    /// The function.
    pub function: String,
    /// The object holding it.
    pub object: String,
    /// Why, and the likely cause.
    pub reason: String,
}

/// One traced process, in a trace of several.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSummary {
    /// Process id.
    pub pid: u32,
    /// Its name (`comm`) as last seen.
    pub comm: String,
    /// Command line and executable, as last seen (after its last exec).
    pub command: String,
    /// Executable path.
    pub exe: String,
    /// The process it was forked from, when it was followed from a traced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// Programs it ran after tracing began (execs).
    #[serde(default)]
    pub execs: u32,
    /// True once it had exited (or, with `--comm`, taken another name).
    pub exited: bool,
    /// The object whose allocator was probed for it.
    pub allocator: String,
    /// Outstanding bytes and blocks it holds.
    pub totals: super::Totals,
}

/// A heap of a user process: where a stack's blocks come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Heap {
    /// The C allocator: malloc and its replacements, C++'s new.
    Malloc,
    /// PHP's Zend memory manager (`_emalloc` and its variants).
    Php,
}

impl Heap {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malloc => "malloc",
            Self::Php => "php",
        }
    }
}

/// How user stacks are unwound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnwindMode {
    /// Per module: its DWARF unwind rows when it was built without frame pointers, the rbp
    /// chain when it keeps them or has no unwind information.
    #[default]
    Auto,
    /// DWARF unwind rows for every module that has them.
    Dwarf,
    /// The kernel's frame-pointer walk only (cheapest; wrong through code without frame pointers).
    Fp,
}

impl UnwindMode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Dwarf => "dwarf",
            Self::Fp => "fp",
        }
    }
}

/// The report's account of how stacks were unwound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindSection {
    /// `--unwind`.
    pub mode: UnwindMode,
    /// Unwind rows loaded, over every module.
    pub rows_used: u64,
    /// Rows the table can hold (`--unwind-rows`).
    pub rows_capacity: u64,
    /// Kernel memory taken by the row table (it is allocated whole).
    pub table_bytes: u64,
    /// Executable mappings beyond what a process's table holds (their frames end stacks).
    pub mappings_dropped: u64,
    /// Times the process's mapping list was installed (1 + library loads and unloads seen).
    pub table_updates: u64,
    /// Library loads user space was not told of at once (event buffer full): the process was
    /// not stopped, and the new library's first stacks may end as `unknown mapping`.
    #[serde(default)]
    pub library_events_lost: u64,
    /// Allocations whose unwinding stopped in a library the process had just loaded, before
    /// its table took the library in (an attached process runs on while it is updated).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub table_not_ready: u64,
    /// Every module mapped executable, with its unwinder.
    pub modules: Vec<UnwindModule>,
    /// Distinct stacks in the report by how their unwinding ended.
    pub stacks_by_end: BTreeMap<StackEnding, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How one module's frames were unwound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindModule {
    /// Path as the process sees it.
    pub module: String,
    /// Its unwinder.
    pub unwinder: Unwinder,
    /// Why that unwinder.
    pub reason: String,
    /// Unwind rows loaded for it.
    pub rows: u64,
}

/// The unwinder of one module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unwinder {
    /// Its DWARF CFI rows, in the eBPF unwinder.
    Dwarf,
    /// The rbp chain.
    FramePointer,
}

/// How the unwinding of a stack ended. Declared in the order of the names, so that maps
/// keyed by it list them alphabetically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StackEnding {
    /// At the outermost frame.
    #[serde(rename = "complete")]
    Complete,
    /// At the frame limit (64 frames).
    #[serde(rename = "frame limit")]
    FrameLimit,
    /// A frame-pointer step found rbp outside the stack.
    #[serde(rename = "frame pointer lost")]
    FramePointerLost,
    /// The kernel's frame-pointer walk (no DWARF unwinding asked for).
    #[serde(rename = "frame-pointer walk")]
    FramePointerWalk,
    /// A return address in a library the process had just loaded, before its unwind table
    /// took the library in.
    #[serde(rename = "library not in table yet")]
    LibraryNotInTableYet,
    /// The process had no unwind table yet, so the kernel's frame-pointer walk was used.
    #[serde(rename = "no table yet")]
    NoTableYet,
    /// At a signal frame.
    #[serde(rename = "signal frame")]
    SignalFrame,
    /// A stack word could not be read.
    #[serde(rename = "stack unreadable")]
    StackUnreadable,
    /// A return address in no known executable mapping (JIT or anonymous code).
    #[serde(rename = "unknown mapping")]
    UnknownMapping,
    /// A CFA rule leaktrace does not follow (a DWARF expression).
    #[serde(rename = "unsupported unwind info")]
    UnsupportedUnwindInfo,
}

impl StackEnding {
    /// The name in reports (the same as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::FrameLimit => "frame limit",
            Self::FramePointerLost => "frame pointer lost",
            Self::FramePointerWalk => "frame-pointer walk",
            Self::LibraryNotInTableYet => "library not in table yet",
            Self::NoTableYet => "no table yet",
            Self::SignalFrame => "signal frame",
            Self::StackUnreadable => "stack unreadable",
            Self::UnknownMapping => "unknown mapping",
            Self::UnsupportedUnwindInfo => "unsupported unwind info",
        }
    }

    /// True when a stack with this ending is known to stop before the outermost frame.
    pub fn is_cut_short(self) -> bool {
        !matches!(self, Self::Complete | Self::FramePointerWalk)
    }
}

/// How the kernel runs the instruction under a uprobe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    /// Emulated in the breakpoint handler: one trap.
    Emulated,
    /// Copied out of line and single-stepped: two traps.
    SingleStepped,
    /// The kernel refuses to probe it (a segment or lock prefix, a system instruction).
    Refused,
}

impl Handling {
    /// Word used in reports.
    pub fn describe(self) -> &'static str {
        match self {
            Handling::Emulated => "emulated",
            Handling::SingleStepped => "single-stepped",
            Handling::Refused => "refused",
        }
    }
}

/// One probed function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Symbol name.
    pub function: String,
    /// Other symbols of the same code, covered by this probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Bytes from the function's first instruction to the probed one.
    pub offset: u64,
    /// How the kernel runs the probed instruction.
    pub handling: Handling,
    /// Whether a return probe shares the site.
    pub return_probe: bool,
}

impl ProbeReport {
    /// `malloc+0 emulated, free+3 emulated, …` for a one-line summary.
    pub fn summary(probes: &[Self]) -> String {
        probes
            .iter()
            .map(|p| {
                let aliases: String = p.aliases.iter().map(|a| format!("={a}")).collect();
                format!("{}{aliases}+{} {}", p.function, p.offset, p.handling.describe())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How a sampled figure was estimated: how many blocks were really tracked, and the 95 %
/// confidence interval of the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    /// Blocks tracked behind the estimate.
    pub samples: u64,
    /// Lower end of the 95 % confidence interval of the bytes.
    pub bytes_low: u64,
    /// Upper end of the 95 % confidence interval of the bytes.
    pub bytes_high: u64,
}

/// Report section of a sampled trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplingSection {
    /// Mean sampling period in bytes (`--sample-bytes`).
    pub period_bytes: u64,
    /// True when unsampled calls skipped their return probe (uprobe session programs);
    /// false when the kernel lacks them and every call still paid its return probe.
    pub return_probes_skipped: bool,
    /// Allocation calls the sampler left out.
    pub unsampled_calls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_ending_names_are_their_json_names_in_order() {
        let all = [
            StackEnding::Complete,
            StackEnding::FrameLimit,
            StackEnding::FramePointerLost,
            StackEnding::FramePointerWalk,
            StackEnding::LibraryNotInTableYet,
            StackEnding::NoTableYet,
            StackEnding::SignalFrame,
            StackEnding::StackUnreadable,
            StackEnding::UnknownMapping,
            StackEnding::UnsupportedUnwindInfo,
        ];
        for end in all {
            assert_eq!(serde_json::to_value(end).unwrap(), serde_json::Value::from(end.name()));
        }
        assert!(all.windows(2).all(|w| w[0].name() < w[1].name()), "declared out of name order");
    }
}
