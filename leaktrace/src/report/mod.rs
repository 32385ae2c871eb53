//! The report model: one value per report, rendered as text or JSON. The JSON form is the
//! same structure (documented in docs/json-report.md), so a saved report can be rendered again.

pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod names;
pub mod output;
pub mod pprof;
pub mod text;

use serde::{Deserialize, Serialize};

pub use crate::aggregate::Totals;
use crate::{config::Format, error::Result, target::TargetInfo};

/// Renders `report` in `format` as the bytes of a file.
pub fn render(report: &Report, format: Format) -> Result<Vec<u8>> {
    Ok(match format {
        Format::Text => text::render(report).into_bytes(),
        Format::Json => json::to_string(report).into_bytes(),
        Format::Folded => folded::render(report, folded::Weight::Bytes).into_bytes(),
        Format::FoldedCount => folded::render(report, folded::Weight::Count).into_bytes(),
        Format::Svg => flamegraph::render_svg(report)?,
        Format::Pprof => pprof::render(report),
    })
}

impl Format {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "JSON",
            Format::Folded => "folded",
            Format::FoldedCount => "folded (counts)",
            Format::Svg => "SVG flame graph",
            Format::Pprof => "pprof",
        }
    }
}

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A report of outstanding allocations at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Layout version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `"user"` for allocator tracing.
    pub mode: String,
    /// The traced process.
    pub target: TargetInfo,
    /// The library or executable whose allocator was probed.
    pub allocator: String,
    /// When tracing started (RFC 3339, local time zone).
    pub started_at: String,
    /// When this report was taken (RFC 3339, local time zone).
    pub generated_at: String,
    /// Seconds from the start of tracing to this report.
    pub duration_s: f64,
    /// `uname -r`.
    pub kernel_release: String,
    /// True when the target had exited: every block still outstanding is reported then,
    /// whatever its age, since nothing can free it any more.
    pub target_exited: bool,
    /// Filters in force.
    pub filters: Filters,
    /// Every outstanding allocation tracked, before the age filter.
    pub totals: Totals,
    /// Outstanding allocations left out for being younger than `filters.older_than_ms`.
    pub too_young: Totals,
    /// Outstanding allocations whose stack could not be captured (counted in `totals`, not in
    /// `stacks`).
    pub without_stack: Totals,
    /// Events the tracer lost; any non-zero value makes `incomplete` true.
    pub lost: Lost,
    /// Informational activity counters.
    pub activity: Activity,
    /// True when something was lost, so the figures may be incomplete.
    pub incomplete: bool,
    /// Stacks holding outstanding memory, most bytes first (all of them, not only the top N).
    /// In kernel mode grouped by `kernel.group_by`.
    pub stacks: Vec<StackReport>,
    /// GNU build-id (hex) of each module that appears in `stacks`, by path.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub build_ids: std::collections::BTreeMap<String, String>,
    /// Kernel mode (`mode: "kernel"`) only: slab accounting and run attribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelSection>,
    /// User mode: how stacks were unwound (absent with `--unwind fp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::unwind::UnwindSection>,
    /// User mode: where each allocator function is probed and how the kernel runs the probed
    /// instruction (emulated: one trap per call; single-stepped: two).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeReport>,
    /// With `--sample-bytes`: the figures are estimates (see `stacks[].estimate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::sampling::SamplingSection>,
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
    pub handling: crate::probe_site::Handling,
    /// Whether a return probe shares the site.
    pub return_probe: bool,
}

impl ProbeReport {
    /// The probes of an allocator's functions.
    pub fn of(allocator: &crate::allocator::AllocatorObject) -> Vec<Self> {
        allocator
            .functions
            .iter()
            .map(|f| ProbeReport {
                function: f.symbol.clone(),
                aliases: f.aliases.clone(),
                offset: f.site.offset,
                handling: f.site.handling,
                return_probe: f.function.returns_block,
            })
            .collect()
    }

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

/// Kernel-mode part of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelSection {
    /// How `stacks` are grouped.
    pub group_by: crate::config::GroupBy,
    /// Tracepoints traced (`category:event`).
    pub events: Vec<String>,
    /// Whether kernel addresses could be symbolized (false when kptr_restrict hides them).
    pub symbols_visible: bool,
    /// Slab lines of /proc/meminfo when tracing started.
    pub meminfo_start: SlabMeminfo,
    /// Slab lines of /proc/meminfo when this report was taken.
    pub meminfo_now: SlabMeminfo,
    /// Per cache: traced outstanding objects beside the cache's /proc/slabinfo change.
    pub caches: Vec<CacheAccount>,
    /// Traced outstanding bytes in caches that do not count as reclaimable.
    pub traced_unreclaimable_bytes: u64,
    /// With --run: the command and how many runs completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Runs>,
}

/// One slab cache's traced and kernel-reported figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheAccount {
    /// Cache name as in /proc/slabinfo.
    pub name: String,
    /// Whether the cache is reclaimable (`SReclaimable`); null when unknown.
    pub reclaimable: Option<bool>,
    /// Traced outstanding objects (bytes as allocated, i.e. object size).
    pub traced: Totals,
    /// Change of active objects in /proc/slabinfo since tracing started; null when unknown.
    pub slabinfo_objects_delta: Option<i64>,
    /// The same change in bytes (objects × object size).
    pub slabinfo_bytes_delta: Option<i64>,
}

/// `--run` progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runs {
    /// The shell command.
    pub command: String,
    /// Runs asked for.
    pub repeat: u32,
    /// Runs completed.
    pub completed: u32,
    /// Exit status of each completed run.
    pub exit_codes: Vec<i32>,
}

pub use crate::kernel::slab::SlabMeminfo;

/// Kernel-mode detail of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelGroup {
    /// The group: a cache name or a command name (with --by cache / comm); empty by stack.
    pub key: String,
    /// Bytes requested by the callers (the `bytes` of the group are as allocated).
    pub requested_bytes: u64,
    /// Caches of the group's objects, most bytes first.
    pub caches: Vec<Share>,
    /// Allocating tasks (comm and pid), most bytes first.
    pub comms: Vec<Share>,
    /// The allocating task's user stack (with --user-stacks; the first object's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_frames: Vec<Frame>,
    /// With --run: objects and bytes added per run (outstanding divided by completed runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_run: Option<PerRun>,
}

/// Part of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Cache name, or `comm[pid]`.
    pub name: String,
    /// Bytes as allocated.
    pub bytes: u64,
    /// Objects.
    pub count: u64,
}

/// Growth per `--run` iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerRun {
    /// Bytes per run.
    pub bytes: f64,
    /// Objects per run.
    pub count: f64,
}

/// Filters in force when the report was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    /// Minimum age of a reported allocation in milliseconds (0 once the target has exited).
    pub older_than_ms: u64,
    /// Smallest recorded request.
    pub min_size: u64,
    /// Largest recorded request; absent when unlimited.
    pub max_size: Option<u64>,
    /// Stacks shown in the text report.
    pub top: usize,
    /// Order of `stacks`: `"bytes"`, `"growth"` or `"count"` (what `auto` resolved to).
    #[serde(default)]
    pub sort: crate::config::SortBy,
}

/// Everything the tracer could not see, by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// Allocations not recorded: the allocation map was full (raise --max-allocs).
    pub allocs_map_full: u64,
    /// Allocations recorded without a stack: the stack map was full or the walk failed.
    pub stack_lost: u64,
    /// Allocations recorded without a stack: hash collision in the stack map.
    pub stack_collision: u64,
    /// Allocation returns without a recorded entry: calls already running at attach, or
    /// entries lost. Their blocks are not tracked.
    pub return_without_entry: u64,
    /// Allocation entries not recorded because too many threads were inside the allocator.
    pub pending_map_full: u64,
    /// Calls that never returned (longjmp out of an allocator, thread killed).
    pub pending_stale: u64,
    /// posix_memalign results that could not be read back.
    pub out_pointer_unreadable: u64,
    /// Probe hits the kernel skipped (another BPF program was running on that CPU).
    pub probe_misses: u64,
    /// Kernel mode with --user-stacks: user stacks not captured (kernel threads, interrupts).
    #[serde(default)]
    pub user_stack_lost: u64,
}

impl Lost {
    /// Sum of every loss.
    pub fn total(&self) -> u64 {
        self.allocs_map_full
            + self.stack_lost
            + self.stack_collision
            + self.return_without_entry
            + self.pending_map_full
            + self.pending_stale
            + self.out_pointer_unreadable
            + self.probe_misses
    }
}

/// Counters that explain the figures but are not losses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Allocations recorded.
    pub alloc_calls: u64,
    /// free() calls with a non-NULL pointer.
    pub free_calls: u64,
    /// Frees of blocks not being tracked (most were allocated before tracing began).
    pub free_unknown: u64,
    /// Allocator calls made inside another traced call (accounted to the outer call).
    pub nested_calls: u64,
    /// Allocation calls that returned NULL.
    pub failed_allocs: u64,
    /// Stacks in the report cut at the first address outside every executable mapping (what a
    /// frame-pointer walk through code built without frame pointers produces).
    #[serde(default)]
    pub stacks_cut_short: u64,
}

/// Outstanding memory held by one call stack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StackReport {
    /// Bytes outstanding.
    pub bytes: u64,
    /// Allocations outstanding.
    pub count: u64,
    /// Age of the oldest in milliseconds.
    pub oldest_age_ms: u64,
    /// Frames, innermost (the allocator's caller) first.
    pub frames: Vec<Frame>,
    /// Each allocation, with --show-allocs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<Allocation>,
    /// Kernel mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelGroup>,
    /// Growth over the trace (absent before the first interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<crate::trend::Trend>,
    /// Why the unwinder stopped before the outermost frame, when it did (see
    /// `unwind::stack_end_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<String>,
    /// With `--sample-bytes`: `bytes` and `count` are estimates; how many blocks were tracked
    /// and the 95 % interval of the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::sampling::Estimate>,
}

/// Puts items holding stack reports (already in bytes order) in the order `sort` asks for
/// (`Auto` must be resolved by the caller); the sort is stable, so ties keep the bytes order.
pub fn order_by<T>(items: &mut [T], sort: crate::config::SortBy, stack: impl Fn(&T) -> &StackReport) {
    use crate::{config::SortBy, trend::Class};
    match sort {
        SortBy::Auto | SortBy::Bytes => {}
        SortBy::Count => items.sort_by_key(|item| std::cmp::Reverse(stack(item).count)),
        SortBy::Growth => {
            let key = |s: &StackReport| {
                s.trend.as_ref().map_or((false, f64::MIN), |t| (t.class == Class::Growing, t.bytes_per_min))
            };
            items.sort_by(|a, b| {
                let (ga, ra) = key(stack(a));
                let (gb, rb) = key(stack(b));
                gb.cmp(&ga).then(rb.total_cmp(&ra))
            });
        }
    }
}

/// What `auto` means after `samples` interval samples.
pub fn resolve_sort(sort: crate::config::SortBy, samples: usize) -> crate::config::SortBy {
    use crate::config::SortBy;
    match sort {
        SortBy::Auto if samples >= crate::trend::MIN_INTERVALS => SortBy::Growth,
        SortBy::Auto => SortBy::Bytes,
        other => other,
    }
}

/// One stack frame. Inlined calls at the same address come first, marked `inlined`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Return address in the process.
    pub address: u64,
    /// Mapped file (executable or shared object), when known.
    pub module: Option<String>,
    /// Function name, demangled.
    pub symbol: Option<String>,
    /// Offset from the function's start, or from the module's start when there is no symbol.
    pub offset: Option<u64>,
    /// Source file, with debug info.
    pub file: Option<String>,
    /// Source line, with debug info.
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
    /// True for a kernel frame.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel: bool,
}

/// One outstanding allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Block address.
    pub address: u64,
    /// Requested bytes.
    pub size: u64,
    /// Age in milliseconds.
    pub age_ms: u64,
}
