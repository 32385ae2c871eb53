//! The library's error type. Every variant renders as one line that names the offending
//! value and, where there is one, what to do about it; `main` decides the exit code.

use std::path::PathBuf;

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong underneath a failure, with its own chain of sources (an aya, procfs,
/// object or I/O error, or a message where there is no error value).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

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

    /// The object lacks allocator symbols in every place they could be.
    #[error("{path}: missing allocator symbols {missing} (looked in {searched}; is the object stripped, or does it need --symbols-prefix?)")]
    MissingSymbols {
        /// The object searched.
        path: PathBuf,
        /// Comma-separated list of missing symbols.
        missing: String,
        /// Where they were looked for (`.symtab/.dynsym`, MiniDebugInfo, debug files).
        searched: String,
    },

    /// A function given with `--alloc-fn` is in none of the target's objects.
    #[error("--alloc-fn {name}: no object mapped by {target} defines it")]
    NoSuchFunction {
        /// The function's name.
        name: String,
        /// The process.
        target: String,
    },

    /// An ELF file could not be read or parsed.
    #[error("{path}: not a readable ELF file: {source}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Cause,
    },

    /// The program to launch could not be found or executed.
    #[error("cannot run {program}: {source}")]
    Launch {
        /// The program.
        program: String,
        /// Why.
        source: Cause,
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
    #[error("{path}: not a leaktrace JSON report: {source}")]
    BadReport {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },

    /// The kernel refused to load the eBPF object or one of its programs.
    #[error("loading the eBPF programs failed: {what}: {source}")]
    Load {
        /// The program, or "the object".
        what: String,
        /// Why.
        source: Cause,
    },

    /// This kernel lacks a tracepoint or field leaktrace reads, or lays it out differently.
    #[error("this kernel is not supported: {0}")]
    UnsupportedKernel(String),

    /// A probe could not be attached.
    #[error("attaching {program} to {symbol} in {path}: {source}")]
    Attach {
        /// The BPF program.
        program: String,
        /// The function probed.
        symbol: String,
        /// The object probed.
        path: PathBuf,
        /// Why.
        source: Cause,
    },

    /// Reading a BPF map failed.
    #[error("reading BPF map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// Why.
        source: Cause,
    },

    /// tracefs is needed and could not be found or mounted.
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(#[source] std::io::Error),

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

/// True when `error` or any of its sources is the kernel saying "not permitted" (EPERM or
/// EACCES): the process lacks a capability, whatever the library wrapped it in.
pub fn is_permission_denied(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied
                || matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            {
                return true;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_found_by_errno_through_the_chain() {
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let wrapped = Error::Load { what: "malloc_enter".into(), source: Box::new(eperm) };
        assert!(is_permission_denied(&wrapped));
        let enoent =
            Error::Load { what: "x".into(), source: Box::new(std::io::Error::from_raw_os_error(libc::ENOENT)) };
        assert!(!is_permission_denied(&enoent));
        // A message that merely mentions the words is not a permission error.
        let text = Error::Load { what: "x".into(), source: "Operation not permitted (os error 1)".into() };
        assert!(!is_permission_denied(&text));
    }
}
