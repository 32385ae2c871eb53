//! The library's error type. Every variant renders as one line that names the offending
//! value and, where there is one, what to do about it; `main` decides the exit code.

use std::path::PathBuf;

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a trace from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is inconsistent (clap catches the rest).
    #[error("{0}")]
    Usage(String),

    /// Loading BPF programs needs privileges this process does not have.
    #[error("leaktrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs; run it with sudo")]
    NotPrivileged,

    /// No process with that id.
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The pid given.
        pid: u32,
    },

    /// The pid is a kernel thread: it has no user-space allocator.
    #[error("pid {pid} ({comm}) is a kernel thread: it has no user-space allocator to trace (use --kernel-slab for kernel memory)")]
    KernelThread {
        /// The pid given.
        pid: u32,
        /// Its command name.
        comm: String,
    },

    /// Asked to trace leaktrace itself.
    #[error("pid {pid} is leaktrace itself")]
    SelfTarget {
        /// The pid given.
        pid: u32,
    },

    /// No allocator library could be found in the target.
    #[error("no allocator found in {target}: {detail}; name the library or executable that holds the allocator with -O/--obj")]
    NoAllocator {
        /// The process or program.
        target: String,
        /// What was searched and what was missing.
        detail: String,
    },

    /// The object named with -O lacks allocator symbols.
    #[error("{path}: missing allocator symbols {missing} (is the object stripped, or does it need --symbols-prefix?)")]
    MissingSymbols {
        /// The object searched.
        path: PathBuf,
        /// Comma-separated list of missing symbols.
        missing: String,
    },

    /// An ELF file could not be read or parsed.
    #[error("{path}: not a readable ELF file: {reason}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// The program to launch could not be found or executed.
    #[error("cannot run {program}: {reason}")]
    Launch {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },

    /// An output file cannot be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The output path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A saved report could not be read.
    #[error("{path}: not a leaktrace JSON report: {reason}")]
    BadReport {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// `diff --fail-if-growth`: a stack grew more than allowed.
    #[error("{stacks} stacks grew by more than {threshold} bytes (largest: {largest:+} bytes)")]
    GrowthAboveThreshold {
        /// The threshold.
        threshold: u64,
        /// How many stacks exceeded it.
        stacks: usize,
        /// The largest growth.
        largest: i64,
    },

    /// The kernel refused to load the eBPF programs.
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),

    /// A probe could not be attached.
    #[error("attaching {program} to {symbol} in {path}: {reason}")]
    Attach {
        /// The BPF program.
        program: String,
        /// The function probed.
        symbol: String,
        /// The object probed.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// Reading a BPF map failed.
    #[error("reading BPF map {map}: {reason}")]
    Map {
        /// The map.
        map: &'static str,
        /// Why.
        reason: String,
    },

    /// tracefs is needed and could not be found or mounted.
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(String),

    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
