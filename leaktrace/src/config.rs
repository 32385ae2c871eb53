//! The validated, clap-free description of one tracing run.

use std::{path::PathBuf, time::Duration};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Processes that are already running: these pids, and with `comm` every process of that
    /// name, running now or started later.
    Processes {
        /// Process ids.
        pids: Vec<u32>,
        /// `--comm NAME`.
        comm: Option<String>,
        /// `--cgroup PATH`: every process in that cgroup v2, running now or joining later.
        cgroup: Option<PathBuf>,
    },
    /// A command started by leaktrace, traced from its first allocation.
    Launch {
        /// Program name or path (searched in PATH like a shell would).
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// The kernel's allocators (`--kernel-slab`).
    Kernel(KernelOptions),
}

pub use crate::model::{GroupBy, SortBy, UnwindMode};

/// `--kernel-slab` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelOptions {
    /// Only allocations made in the context of these processes (-p).
    pub pids: Vec<u32>,
    /// Only allocations made by tasks with this command name.
    pub comm: Option<String>,
    /// Only objects of this cache.
    pub cache: Option<String>,
    /// Also trace the page allocator.
    pub pages: bool,
    /// Also trace the percpu allocator.
    pub percpu: bool,
    /// Capture the allocating task's user stack.
    pub user_stacks: bool,
    /// Grouping of the report.
    pub group_by: GroupBy,
    /// Run this shell command `repeat` times while tracing, attributing to its process tree.
    pub run: Option<RunSpec>,
}

/// `--run CMD --repeat N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    /// Shell command line, run with `sh -c`.
    pub command: String,
    /// Number of runs.
    pub repeat: u32,
}

/// One tracing run.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to trace.
    pub target: Target,
    /// Print a report every interval (none: only the final report; the CLI defaults to 5 s).
    pub interval: Option<Duration>,
    /// Stop after this many interval reports.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stacks shown in text reports.
    pub top: usize,
    /// Order of the stacks in reports.
    pub sort: SortBy,
    /// Only allocations at least this old are reported while the target runs.
    pub older_than: Duration,
    /// Smallest request size recorded.
    pub min_size: u64,
    /// Largest request size recorded.
    pub max_size: u64,
    /// List each outstanding allocation under its stack.
    pub show_allocs: bool,
    /// How the text report reads.
    pub text: TextOptions,
    /// Files the final report is written to.
    pub exports: Vec<Export>,
    /// The library or executable holding the allocator (default: found in the target).
    pub object: Option<PathBuf>,
    /// Prefix of the allocator's symbols (`je_` for a prefixed jemalloc).
    pub symbol_prefix: String,
    /// Functions added with `--alloc-fn`.
    pub alloc_fns: Vec<crate::allocator::AllocatorFn>,
    /// Capacity of the outstanding-allocation map.
    pub max_allocs: u32,
    /// Capacity of the stack map.
    pub stack_storage: u32,
    /// How user stacks are unwound.
    pub unwind: UnwindMode,
    /// Capacity of the unwind-row table (8 bytes a row).
    pub unwind_rows: u32,
    /// `--sample-bytes`: mean sampling period; none tracks every allocation.
    pub sample_bytes: Option<u64>,
    /// Trace the children of the traced processes as they start (`--follow`; the default for
    /// a launched command, off with `--no-follow`).
    pub follow: bool,
    /// `--by process`: each process's stacks apart instead of one stack for every process
    /// holding it.
    pub by_process: bool,
    /// Use uprobe session programs where the kernel has them (off: `--no-sessions`).
    pub sessions: bool,
    /// Show the PHP frames of PHP processes (off: `--no-php-frames`).
    pub php_frames: bool,
    /// `--heap`: the heaps to trace; empty for the default (the C heap, and PHP's where a
    /// process maps a PHP binary).
    pub heaps: Vec<crate::model::Heap>,
}

/// How the text report reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Every module in the unwinding line, not only the first few.
    pub verbose: bool,
    /// List the stacks that churn memory and hold none, not only their summary.
    pub show_churn: bool,
    /// Terminal colours (stdout is a terminal and `NO_COLOR` is not set).
    pub color: bool,
}

impl TextOptions {
    /// Colours when stdout is a terminal and the user did not opt out with `NO_COLOR`
    /// (no-color.org: set to anything non-empty).
    pub fn color_for_stdout() -> bool {
        use std::io::IsTerminal as _;
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }
}

/// One file the final report is written to (checked writable before tracing starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// Its format.
    pub format: Format,
    /// Its path.
    pub path: PathBuf,
}

/// Formats a saved report can be rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The text report, as printed at the end of tracing.
    Text,
    /// Folded stacks weighted by bytes.
    Folded,
    /// Folded stacks weighted by allocation counts.
    FoldedCount,
    /// SVG flame graph.
    Svg,
    /// Gzipped pprof profile.
    Pprof,
    /// The JSON report itself.
    Json,
    /// SVG plot of outstanding bytes over time for the top stacks.
    Plot,
}

/// What one invocation of leaktrace does.
#[derive(Clone, Debug)]
pub enum Action {
    /// Trace a process.
    Trace(Box<Config>),
    /// Render a saved report.
    Render {
        /// The saved JSON report.
        report: PathBuf,
        /// Output format.
        format: Format,
        /// Output file (stdout when absent).
        output: Option<PathBuf>,
        /// How a text rendering reads.
        text: TextOptions,
    },
    /// Compare two saved reports.
    Diff {
        /// The earlier report.
        before: PathBuf,
        /// The later report.
        after: PathBuf,
        /// Write the diff as JSON here.
        json: Option<PathBuf>,
        /// Write a differential flame graph here.
        svg: Option<PathBuf>,
        /// Fail when any stack grew by more bytes than this.
        fail_if_growth: Option<u64>,
        /// Stacks shown in the text.
        top: usize,
    },
}
