//! The validated, clap-free description of one tracing run.

use std::{path::PathBuf, time::Duration};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A process that is already running.
    Pid(u32),
    /// A command started by leaktrace, traced from its first allocation.
    Launch {
        /// Program name or path (searched in PATH like a shell would).
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
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
    /// Only allocations at least this old are reported while the target runs.
    pub older_than: Duration,
    /// Smallest request size recorded.
    pub min_size: u64,
    /// Largest request size recorded.
    pub max_size: u64,
    /// List each outstanding allocation under its stack.
    pub show_allocs: bool,
    /// Write the final report as JSON here.
    pub json: Option<PathBuf>,
    /// The library or executable holding the allocator (default: found in the target).
    pub object: Option<PathBuf>,
    /// Prefix of the allocator's symbols (`je_` for a prefixed jemalloc).
    pub symbol_prefix: String,
    /// Capacity of the outstanding-allocation map.
    pub max_allocs: u32,
    /// Capacity of the stack map.
    pub stack_storage: u32,
}
