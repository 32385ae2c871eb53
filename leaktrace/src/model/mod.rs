//! The report model: what a trace found, as plain data. Every mode builds one [`Report`];
//! every renderer (text, JSON, folded, SVG, pprof, diff) reads one. The JSON form is this
//! structure serialized as-is (documented in docs/json-report.md), so a saved report can be
//! rendered again.
//!
//! This module is the bottom of the house: it uses serde and clap's `ValueEnum` derive and
//! nothing else of leaktrace, so that any module can depend on it.

mod kernel;
mod trend;
mod user;

use serde::{Deserialize, Serialize};

pub use kernel::{
    Ancestor, CacheAccount, GroupBy, KernelGroup, KernelSection, KmallocCacheNames, PerRun, Runs, Share, SlabMeminfo,
};
pub use trend::{Class, Sample, Trend, MIN_INTERVALS};
pub use user::{
    Estimate, FamilyReport, Handling, Heap, NotAttached, ProbeReport, ProcessSummary, SamplingSection, StackEnding,
    UnwindMode, UnwindModule, UnwindSection, Unwinder, UserSection,
};

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A report of outstanding allocations at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Layout version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What was traced, and what only that mode reports. On the wire: `mode` (`"user"` or
    /// `"kernel"`) beside the mode's own fields (`unwind`, `probes`, `sampling`; `kernel`).
    #[serde(flatten)]
    pub section: Section,
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
}

impl Report {
    /// The one place a report is put together, for every mode: `incomplete` follows from
    /// `lost`.
    pub fn assemble(section: Section, target: TargetInfo, allocator: String, stamp: Stamp, figures: Figures) -> Report {
        let Stamp { started_at, generated_at, duration_s, kernel_release } = stamp;
        let Figures { target_exited, filters, totals, too_young, without_stack, lost, activity, stacks, build_ids } =
            figures;
        Report {
            schema_version: SCHEMA_VERSION,
            section,
            target,
            allocator,
            started_at,
            generated_at,
            duration_s,
            kernel_release,
            target_exited,
            filters,
            totals,
            too_young,
            without_stack,
            incomplete: lost.total() > 0,
            lost,
            activity,
            stacks,
            build_ids,
        }
    }

    /// The kernel-mode section, in kernel mode.
    pub fn kernel(&self) -> Option<&KernelSection> {
        match &self.section {
            Section::Kernel { kernel } => Some(kernel),
            Section::User(_) => None,
        }
    }

    /// The user-mode section, in user mode.
    pub fn user(&self) -> Option<&UserSection> {
        match &self.section {
            Section::User(user) => Some(user),
            Section::Kernel { .. } => None,
        }
    }

    /// True when the figures are estimates from sampled allocations.
    pub fn is_sampled(&self) -> bool {
        self.user().is_some_and(|u| u.sampling.is_some())
    }
}

/// When a report was taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stamp {
    /// When tracing started (RFC 3339, local time zone).
    pub started_at: String,
    /// When this report was taken (RFC 3339, local time zone).
    pub generated_at: String,
    /// Seconds from the start of tracing to this report.
    pub duration_s: f64,
    /// `uname -r`.
    pub kernel_release: String,
}

/// What a mode measured: the body of a report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// See [`Report::target_exited`].
    pub target_exited: bool,
    /// See [`Report::filters`].
    pub filters: Filters,
    /// See [`Report::totals`].
    pub totals: Totals,
    /// See [`Report::too_young`].
    pub too_young: Totals,
    /// See [`Report::without_stack`].
    pub without_stack: Totals,
    /// See [`Report::lost`].
    pub lost: Lost,
    /// See [`Report::activity`].
    pub activity: Activity,
    /// See [`Report::stacks`].
    pub stacks: Vec<StackReport>,
    /// See [`Report::build_ids`].
    pub build_ids: std::collections::BTreeMap<String, String>,
}

/// The part of a report only one mode has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Section {
    /// Allocator tracing of a process.
    User(UserSection),
    /// `--kernel-slab`.
    Kernel {
        /// Slab accounting and run attribution.
        kernel: KernelSection,
    },
}

/// What the report says about the traced process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Process id.
    pub pid: u32,
    /// Command line, space-joined.
    pub command: String,
    /// Executable path.
    pub exe: String,
}

/// Bytes and allocation count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Bytes requested.
    pub bytes: u64,
    /// Number of allocations.
    pub count: u64,
}

impl Totals {
    /// Counts one more allocation of `size` bytes.
    pub fn add(&mut self, size: u64) {
        self.bytes += size;
        self.count += 1;
    }
}

/// Order of the stacks in a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// By growth once enough intervals have passed to judge it, by bytes before.
    #[default]
    Auto,
    /// Outstanding bytes.
    Bytes,
    /// Growing stacks first, by recent growth rate.
    Growth,
    /// Outstanding allocations.
    Count,
}

impl SortBy {
    /// What `auto` means after `samples` interval samples.
    pub fn resolve(self, samples: usize) -> SortBy {
        match self {
            SortBy::Auto if samples >= trend::MIN_INTERVALS => SortBy::Growth,
            SortBy::Auto => SortBy::Bytes,
            other => other,
        }
    }
}

/// Puts items holding stack reports (already in bytes order) in the order `sort` asks for
/// (`Auto` must be resolved by the caller); the sort is stable, so ties keep the bytes order.
pub fn order_by<T>(items: &mut [T], sort: SortBy, stack: impl Fn(&T) -> &StackReport) {
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
    pub sort: SortBy,
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
    /// Allocator functions left untraced because the kernel refused their probe (listed in
    /// the user section's `not_attached`).
    #[serde(default)]
    pub probes_not_attached: u64,
    /// User mode: process events (forks, execs, processes of the wanted name) the tracer
    /// could not pass on: a child may be untraced or an exec's old blocks kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub process_events_lost: u64,
    /// PHP processes: allocations whose PHP frames were not stored (the PHP frame map was
    /// full); their stacks show the native frames only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub php_frames_lost: u64,
    /// PHP processes: PHP frame chains cut at the frame limit (outermost PHP frames missing).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub php_frames_truncated: u64,
    /// PHP processes: PHP frames whose names could not be read any more (shown as `[php] ?`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub php_names_unreadable: u64,
}

impl Lost {
    /// Sum of every loss that can make the figures wrong (`user_stack_lost` and the PHP
    /// frame losses lose no object, only names).
    pub fn total(&self) -> u64 {
        self.allocs_map_full
            + self.stack_lost
            + self.stack_collision
            + self.return_without_entry
            + self.pending_map_full
            + self.pending_stale
            + self.out_pointer_unreadable
            + self.probe_misses
            + self.probes_not_attached
            + self.process_events_lost
    }
}

/// Counters that explain the figures but are not losses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Allocations recorded.
    pub alloc_calls: u64,
    /// free() calls with a non-NULL pointer.
    pub free_calls: u64,
    /// Frees of blocks not being tracked: allocated before tracing, not sampled, or freed
    /// again by glibc from an exiting thread's cache. Not a loss.
    pub free_unknown: u64,
    /// Allocator calls made inside another traced call (accounted to the outer call).
    pub nested_calls: u64,
    /// Allocation calls that returned NULL.
    pub failed_allocs: u64,
    /// Stacks in the report cut at the first address outside every executable mapping (what a
    /// frame-pointer walk through code built without frame pointers produces).
    #[serde(default)]
    pub stacks_cut_short: u64,
    /// Blocks still outstanding when their process ran a new program (exec): gone with the
    /// old image, so dropped from the figures.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exec_dropped_blocks: u64,
    /// Their bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exec_dropped_bytes: u64,
    /// Blocks of PHP's heap still held when PHP reset the heap (`zend_mm_shutdown`, at the
    /// end of each request and of the script): released with its chunks, never freed one by
    /// one, so dropped from the figures.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub php_heap_released_blocks: u64,
    /// Their bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub php_heap_released_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    pub trend: Option<Trend>,
    /// Index in `frames` of the first frame of the program's own code (past the C library,
    /// allocators and language runtimes; in kernel mode, past the kernel's allocators): the
    /// frame to look at first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus_frame: Option<usize>,
    /// Why the unwinder stopped before the outermost frame, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<StackEnding>,
    /// User mode with several processes: each process holding memory from this stack,
    /// most bytes first (`bytes` and `count` are their sums).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Holder>,
    /// With `--sample-bytes`: `bytes` and `count` are estimates; how many blocks were tracked
    /// and the 95 % interval of the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// User mode, when more than the C heap was traced (PHP's): the heap its blocks are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap: Option<Heap>,
}

/// A process holding memory from a stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Its name (`comm`).
    pub comm: String,
    /// Bytes outstanding.
    pub bytes: u64,
    /// Allocations outstanding.
    pub count: u64,
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
    /// Offset from the function's start (from `part`'s start when there is one), or from the
    /// module's start when there is no symbol; absent when it cannot be known.
    pub offset: Option<u64>,
    /// The part of a function the compiler split (`foo.cold`) that holds the address, when it
    /// is not the function's entry part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// Source file, with debug info.
    pub file: Option<String>,
    /// Source line, with debug info.
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
    /// True for a kernel frame.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel: bool,
    /// What runs the frame when it is not native code: `"php"` for a PHP function's frame
    /// (its `symbol` is `Class::method`, `function` or `{main}`, `file:line` the PHP source;
    /// no `module`). Absent for native frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FrameKind>,
}

/// Frames that are not native code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// A PHP function's frame in the PHP VM.
    Php,
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
