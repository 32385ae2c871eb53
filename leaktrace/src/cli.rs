//! Command-line parsing: a clap definition turned into a validated [`Config`].

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use leaktrace_common::{
    names::{DEFAULT_MAX_ALLOCS, DEFAULT_STACK_STORAGE},
    unwind::DEFAULT_UNWIND_ROWS,
};

use crate::{
    allocator::FnKind,
    config::{
        Action, Config, Export, Format, GroupBy, KernelOptions, RunSpec, SortBy, Target, TextOptions, UnwindMode,
    },
    error::{Error, Result},
};

const EXAMPLES: &str = "\
Examples:
  sudo leaktrace -p 1234                 top stacks every 5 s until Ctrl-C, then a final report
  sudo leaktrace -p 1234 10 6            every 10 s, six times
  sudo leaktrace -p 1234 --duration 60 --json leaks.json
  sudo leaktrace -- ./server --port 8080 trace a command from its first allocation
  sudo leaktrace -p 1234 --unwind fp     frame pointers only: cheaper, for programs built with them
  sudo leaktrace -p 1234 -O /usr/lib/libjemalloc.so.2 --symbols-prefix je_
  sudo leaktrace -p 1234 --duration 60 --svg leaks.svg --pprof leaks.pb.gz
  sudo leaktrace -p 1234 2 --duration 60 --plot growth.svg  outstanding bytes of the top stacks over time
  sudo leaktrace --kernel-slab 10                  kernel objects outstanding, by kernel stack
  sudo leaktrace --kernel-slab --by cache --user-stacks --run 'service --status-all' --repeat 20
  leaktrace report leaks.json --format svg -o leaks.svg
  leaktrace diff before.json after.json --fail-if-growth 1048576 --svg change.svg";

/// Find memory leaks in a running process with eBPF: outstanding allocations by call stack.
#[derive(Debug, Parser)]
#[command(
    name = "leaktrace",
    // The commit (set by build.rs) tells which sources a bug report's binary came from.
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LEAKTRACE_GIT_COMMIT"), ")"),
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render a report saved with --json, without tracing again.
    Report {
        /// The saved JSON report.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Write to FILE instead of stdout.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Text: list the stacks that churn memory and hold none.
        #[arg(long)]
        show_churn: bool,
        /// Text: name every module in the unwinding summary.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Compare two saved JSON reports: per stack, the change in outstanding bytes and count.
    Diff {
        /// The earlier report.
        before: PathBuf,
        /// The later report.
        after: PathBuf,
        /// Also write the diff as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also write a differential flame graph to FILE (width: bytes after; red grew, blue shrank).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Exit with status 3 when any stack grew by more than BYTES.
        #[arg(long, value_name = "BYTES")]
        fail_if_growth: Option<u64>,
        /// Show this many stacks.
        #[arg(short = 'T', long = "top", value_name = "N", default_value_t = 10)]
        top: usize,
    },
}

/// Options of a tracing run.
#[derive(Debug, Args)]
struct TraceArgs {
    /// Trace these running processes (repeat -p or separate pids with commas).
    #[arg(short = 'p', long = "pid", value_name = "PID[,PID...]", value_delimiter = ',', conflicts_with = "command")]
    pub pid: Vec<u32>,

    /// Trace the children of the traced processes too, forked or exec'd, as they start
    /// (the default for a launched command).
    #[arg(long, overrides_with = "no_follow")]
    pub follow: bool,

    /// Trace a launched command alone, not its children.
    #[arg(long)]
    pub no_follow: bool,

    /// Seconds between reports.
    #[arg(value_name = "INTERVAL")]
    pub interval: Option<f64>,

    /// Number of reports before exiting.
    #[arg(value_name = "COUNT")]
    pub count: Option<u64>,

    /// Stop tracing after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Show this many stacks per report.
    #[arg(short = 'T', long = "top", value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Order of stacks: auto ranks by growth once enough intervals have passed, by bytes before.
    #[arg(long, value_enum, default_value = "auto")]
    pub sort: SortBy,

    /// While the target runs, only report allocations older than this many milliseconds.
    #[arg(short = 'o', long = "older", value_name = "MS", default_value_t = 500)]
    pub older_ms: u64,

    /// Ignore allocations smaller than this many bytes.
    #[arg(short = 'z', long = "min-size", value_name = "BYTES")]
    pub min_size: Option<u64>,

    /// Ignore allocations larger than this many bytes.
    #[arg(short = 'Z', long = "max-size", value_name = "BYTES")]
    pub max_size: Option<u64>,

    /// List every outstanding allocation (address, size, age) under its stack.
    #[arg(short = 'a', long = "show-allocs")]
    pub show_allocs: bool,

    /// List the stacks that turn memory over fast and hold none (by default one summary line).
    #[arg(long)]
    pub show_churn: bool,

    /// Name every module in the unwinding summary.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Write the final report as JSON to FILE (see docs/json-report.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the final report as folded stacks (flamegraph.pl, inferno, speedscope).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Weigh --folded stacks by allocation count instead of bytes.
    #[arg(long, requires = "folded")]
    pub folded_count: bool,

    /// Write a flame graph of outstanding bytes as SVG.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Write a gzipped pprof profile (inuse_space, inuse_objects).
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Write an SVG plot of outstanding bytes over time for the top stacks (needs at least
    /// one report interval).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Library or executable that holds the allocator (default: the target's libc, or the
    /// executable itself when it is statically linked).
    #[arg(short = 'O', long = "obj", value_name = "PATH")]
    pub object: Option<PathBuf>,

    /// Prefix of the allocator's function names, e.g. `je_` for a prefixed jemalloc.
    #[arg(long = "symbols-prefix", value_name = "PREFIX", default_value = "")]
    pub symbols_prefix: String,

    /// Also trace a function of the target's own allocator, NAME:KIND, where KIND is
    /// malloc-like, calloc-like, realloc-like, free-like or size-free-like (repeatable).
    #[arg(long = "alloc-fn", value_name = "NAME:KIND", value_parser = parse_alloc_fn)]
    pub alloc_fn: Vec<AllocFnArg>,

    /// Most outstanding allocations kept; more are counted as lost.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ALLOCS)]
    pub max_allocs: u32,

    /// Distinct stacks kept; more are counted as lost.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STACK_STORAGE)]
    pub stack_storage_size: u32,

    /// How user stacks are unwound: DWARF unwind rows (.eh_frame) where modules lack frame
    /// pointers (auto), DWARF rows wherever present (dwarf), or frame pointers only (fp).
    #[arg(long, value_enum, default_value = "auto")]
    pub unwind: UnwindMode,

    /// Track a sample of allocations, each with probability 1 − exp(−size/BYTES), and report
    /// estimates with 95 % intervals: cheap enough for production. BYTES may end in K, M or
    /// G (default when given alone: 512K).
    #[arg(long = "sample-bytes", value_name = "BYTES", num_args = 0..=1, default_missing_value = "512K", value_parser = parse_bytes)]
    pub sample_bytes: Option<u64>,

    /// Attach plain uprobes and uretprobes even where the kernel has uprobe sessions (Linux
    /// 6.13+), as on older kernels: slower to detach, and with --sample-bytes unsampled calls
    /// still pay their return probe.
    #[arg(long = "no-sessions")]
    pub no_sessions: bool,

    /// Leave PHP frames out of the stacks of PHP processes (by default the PHP functions,
    /// files and lines running at each allocation are shown among the native frames).
    #[arg(long = "no-php-frames")]
    pub no_php_frames: bool,

    /// Heaps to trace, comma-separated: `malloc` (the C allocator) and `php` (PHP's Zend
    /// memory manager). Default: the C heap, and PHP's wherever a process maps a PHP binary.
    #[arg(long = "heap", value_name = "HEAP", value_enum, value_delimiter = ',')]
    pub heap: Vec<crate::model::Heap>,

    /// Capacity of the DWARF unwind-row table shared by every module (8 bytes a row); modules
    /// that no longer fit are unwound with frame pointers, and the report says so.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UNWIND_ROWS)]
    pub unwind_rows: u32,

    /// Trace the kernel's slab allocations (kmalloc, kmem_cache_alloc) instead of a process's
    /// allocator; with -p, only those made in that process's context.
    #[arg(long = "kernel-slab")]
    pub kernel_slab: bool,

    /// With --kernel-slab: also trace page allocations (mm_page_alloc/free/free_batched).
    #[arg(long, requires = "kernel_slab")]
    pub pages: bool,

    /// With --kernel-slab: also trace percpu allocations.
    #[arg(long, requires = "kernel_slab")]
    pub percpu: bool,

    /// With --kernel-slab: capture the allocating task's user stack too.
    #[arg(long, requires = "kernel_slab")]
    pub user_stacks: bool,

    /// Group by call stack (across processes), by process; with --kernel-slab, by kernel
    /// stack, slab cache or command name.
    #[arg(long = "by", value_enum, default_value = "stack")]
    pub group_by: GroupBy,

    /// Trace every process named NAME, running now or started later; with --kernel-slab,
    /// only allocations made by tasks named NAME.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Trace every process in this cgroup v2 (a container, a systemd service) and the
    /// cgroups below it, running now or started later: a path under the cgroup v2 mount or
    /// relative to it.
    #[arg(long, value_name = "PATH", conflicts_with = "kernel_slab")]
    pub cgroup: Option<PathBuf>,

    /// With --kernel-slab: only objects of this slab cache.
    #[arg(long, value_name = "NAME", requires = "kernel_slab")]
    pub cache: Option<String>,

    /// With --kernel-slab: run this shell command while tracing and attribute to its process tree.
    #[arg(long, value_name = "CMD", requires = "kernel_slab")]
    pub run: Option<String>,

    /// With --run: how many times to run the command.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "run")]
    pub repeat: u32,

    /// Command to launch and trace from its first allocation.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::Usage(format!("{name} must be a positive number of seconds, got {value}")));
    }
    Ok(Duration::from_secs_f64(value))
}

/// A process name as the kernel keeps it: 1 to 15 bytes.
fn check_comm(comm: &str) -> Result<()> {
    if comm.is_empty() || comm.len() > 15 || comm.contains('\0') {
        return Err(Error::Usage(format!(
            "--comm {comm:?}: a process name is 1 to 15 bytes (the kernel keeps no more of it)"
        )));
    }
    Ok(())
}

impl Cli {
    /// Checks the combination of options and says what to do.
    pub fn into_action(self) -> Result<Action> {
        match self.command {
            Some(Command::Report { file, format, output, show_churn, verbose }) => {
                let color = output.is_none() && TextOptions::color_for_stdout();
                Ok(Action::Render { report: file, format, output, text: TextOptions { verbose, show_churn, color } })
            }
            Some(Command::Diff { before, after, json, svg, fail_if_growth, top }) => {
                Ok(Action::Diff { before, after, json, svg, fail_if_growth, top: top.max(1) })
            }
            None => self.trace.into_config().map(|c| Action::Trace(Box::new(c))),
        }
    }
}

impl TraceArgs {
    /// Checks the combination of options and produces the run's configuration.
    fn into_config(self) -> Result<Config> {
        let target = self.target()?;
        self.check_limits()?;
        let launched = matches!(target, Target::Launch { .. });
        let count = match (self.count, self.interval) {
            (Some(0), _) => return Err(Error::Usage("COUNT must be at least 1".into())),
            (Some(_), None) => unreachable!("clap fills INTERVAL before COUNT"),
            (count, _) => count,
        };
        let exports = self.exports();
        Ok(Config {
            target,
            // memleak prints every 5 s unless told otherwise; so do we.
            interval: Some(seconds("INTERVAL", self.interval.unwrap_or(5.0))?),
            count,
            duration: self.duration.map(|s| seconds("--duration", s)).transpose()?,
            top: self.top,
            sort: self.sort,
            older_than: Duration::from_millis(self.older_ms),
            min_size: self.min_size.unwrap_or(0),
            max_size: self.max_size.unwrap_or(u64::MAX),
            show_allocs: self.show_allocs,
            text: TextOptions {
                verbose: self.verbose,
                show_churn: self.show_churn,
                color: TextOptions::color_for_stdout(),
            },
            exports,
            object: self.object,
            symbol_prefix: self.symbols_prefix,
            alloc_fns: self.alloc_fn.iter().map(|a| a.kind.row(&a.name)).collect(),
            max_allocs: self.max_allocs,
            stack_storage: self.stack_storage_size,
            unwind: self.unwind,
            unwind_rows: self.unwind_rows,
            sample_bytes: self.sample_bytes,
            sessions: !self.no_sessions,
            follow: self.follow || (launched && !self.no_follow),
            by_process: self.group_by == GroupBy::Process,
            php_frames: !self.no_php_frames,
            heaps: self.heap,
        })
    }

    /// What to trace: the kernel, a pid or a command.
    fn target(&self) -> Result<Target> {
        if self.kernel_slab {
            return self.kernel_target();
        }
        if !matches!(self.group_by, GroupBy::Stack | GroupBy::Process) {
            return Err(Error::Usage("--by cache and --by comm apply to --kernel-slab".into()));
        }
        if let Some(comm) = &self.comm {
            check_comm(comm)?;
        }
        if self.pid.contains(&0) {
            return Err(Error::Usage("pid 0 is not a process".into()));
        }
        let running = !self.pid.is_empty() || self.comm.is_some() || self.cgroup.is_some();
        match (running, self.command.split_first()) {
            (true, Some(_)) => {
                Err(Error::Usage("give either -p PID / --comm NAME / --cgroup PATH or -- COMMAND, not both".into()))
            }
            (true, None) => {
                Ok(Target::Processes { pids: self.pid.clone(), comm: self.comm.clone(), cgroup: self.cgroup.clone() })
            }
            (false, Some((program, args))) => Ok(Target::Launch { program: program.clone(), args: args.to_vec() }),
            (false, None) => Err(Error::Usage(
                "nothing to trace: give -p PID, --comm NAME, --cgroup PATH, -- COMMAND [ARGS...] or --kernel-slab \
                 (see --help)"
                    .into(),
            )),
        }
    }

    /// `--kernel-slab` and the options that go with it.
    fn kernel_target(&self) -> Result<Target> {
        if !self.command.is_empty() {
            return Err(Error::Usage("--kernel-slab traces the kernel: use --run CMD instead of -- COMMAND".into()));
        }
        if self.object.is_some() || !self.symbols_prefix.is_empty() || !self.alloc_fn.is_empty() {
            return Err(Error::Usage(
                "-O, --symbols-prefix and --alloc-fn apply to user-space tracing, not --kernel-slab".into(),
            ));
        }
        if self.repeat == 0 {
            return Err(Error::Usage("--repeat must be at least 1".into()));
        }
        if self.unwind != UnwindMode::Auto {
            return Err(Error::Usage(
                "--unwind applies to user-space tracing; kernel mode's user stacks use frame pointers".into(),
            ));
        }
        if self.sample_bytes.is_some() {
            return Err(Error::Usage("--sample-bytes applies to user-space tracing".into()));
        }
        if self.follow || self.no_follow || self.group_by == GroupBy::Process {
            return Err(Error::Usage(
                "--follow, --no-follow and --by process apply to user-space tracing (--run follows its tree)".into(),
            ));
        }
        Ok(Target::Kernel(KernelOptions {
            pids: self.pid.clone(),
            comm: self.comm.clone(),
            cache: self.cache.clone(),
            pages: self.pages,
            percpu: self.percpu,
            user_stacks: self.user_stacks,
            group_by: self.group_by,
            run: self.run.clone().map(|command| RunSpec { command, repeat: self.repeat }),
        }))
    }

    /// Sizes and counts that must be positive or ordered.
    fn check_limits(&self) -> Result<()> {
        let (min_size, max_size) = (self.min_size.unwrap_or(0), self.max_size.unwrap_or(u64::MAX));
        if min_size > max_size {
            return Err(Error::Usage(format!("--min-size ({min_size}) is larger than --max-size ({max_size})")));
        }
        if self.top == 0 {
            return Err(Error::Usage("--top must be at least 1".into()));
        }
        let max_period = leaktrace_common::sampling::MAX_SAMPLE_PERIOD;
        if self.sample_bytes.is_some_and(|period| period == 0 || period > max_period) {
            return Err(Error::Usage(format!("--sample-bytes must be between 1 and {max_period} bytes")));
        }
        if self.unwind_rows == 0 {
            return Err(Error::Usage("--unwind-rows must be at least 1".into()));
        }
        if self.max_allocs == 0 || self.stack_storage_size == 0 {
            return Err(Error::Usage("--max-allocs and --stack-storage-size must be at least 1".into()));
        }
        Ok(())
    }

    /// The files the final report goes to.
    fn exports(&self) -> Vec<Export> {
        let folded = if self.folded_count { Format::FoldedCount } else { Format::Folded };
        [
            (&self.json, Format::Json),
            (&self.folded, folded),
            (&self.svg, Format::Svg),
            (&self.pprof, Format::Pprof),
            (&self.plot, Format::Plot),
        ]
        .into_iter()
        .filter_map(|(path, format)| path.clone().map(|path| Export { format, path }))
        .collect()
    }
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("'{text}' is not a byte count (e.g. 524288, 512K, 1M)"))
}

/// One `--alloc-fn NAME:KIND`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocFnArg {
    /// The function's symbol name.
    pub name: String,
    /// What it does with its arguments.
    pub kind: FnKind,
}

fn parse_alloc_fn(value: &str) -> std::result::Result<AllocFnArg, String> {
    let kinds = "malloc-like, calloc-like, realloc-like, free-like or size-free-like";
    let (name, kind) = value.rsplit_once(':').ok_or_else(|| format!("expected NAME:KIND, where KIND is {kinds}"))?;
    if name.is_empty() {
        return Err("the function name is empty".into());
    }
    let kind = <FnKind as clap::ValueEnum>::from_str(kind, true)
        .map_err(|_| format!("unknown kind {kind:?}: expected {kinds}"))?;
    Ok(AllocFnArg { name: name.to_string(), kind })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let cli = Cli::try_parse_from(std::iter::once("leaktrace").chain(args.iter().copied()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        match cli.into_action()? {
            Action::Trace(config) => Ok(*config),
            other => panic!("expected a trace, got {other:?}"),
        }
    }

    #[test]
    fn sample_bytes_takes_suffixes_and_a_default() {
        assert_eq!(parse(&["--sample-bytes", "64K", "-p", "1"]).unwrap().sample_bytes, Some(65536));
        assert_eq!(parse(&["-p", "1", "--sample-bytes"]).unwrap().sample_bytes, Some(512 * 1024));
        assert_eq!(parse(&["-p", "1"]).unwrap().sample_bytes, None);
        assert!(parse(&["--sample-bytes", "0", "-p", "1"]).is_err());
        assert!(parse(&["--sample-bytes", "lots", "-p", "1"]).is_err());
        assert!(parse(&["--sample-bytes", "2G", "-p", "1"]).is_err());
    }

    #[test]
    fn pid_with_interval_and_count() {
        let config = parse(&["-p", "42", "2", "3"]).unwrap();
        assert_eq!(config.target, Target::Processes { pids: vec![42], comm: None, cgroup: None });
        assert_eq!(config.interval, Some(Duration::from_secs(2)));
        assert_eq!(config.count, Some(3));
    }

    #[test]
    fn several_pids_a_name_and_following() {
        let config = parse(&["-p", "4,5", "-p", "6", "--follow", "--by", "process"]).unwrap();
        assert_eq!(config.target, Target::Processes { pids: vec![4, 5, 6], comm: None, cgroup: None });
        assert!(config.follow && config.by_process);
        let config = parse(&["--comm", "php-fpm8.2"]).unwrap();
        assert_eq!(config.target, Target::Processes { pids: vec![], comm: Some("php-fpm8.2".into()), cgroup: None });
        assert!(!config.follow, "a name alone follows nothing but that name");
        // A launched command follows its children unless told not to.
        assert!(parse(&["--", "prog"]).unwrap().follow);
        assert!(!parse(&["--no-follow", "--", "prog"]).unwrap().follow);
        assert!(matches!(parse(&["--comm", "a-name-longer-than-15"]), Err(Error::Usage(_))));
        assert!(matches!(parse(&["-p", "4", "--by", "cache"]), Err(Error::Usage(_))));
        assert!(matches!(parse(&["--kernel-slab", "--by", "process"]), Err(Error::Usage(_))));
        assert!(matches!(parse(&["-p", "4,0"]), Err(Error::Usage(_))));
    }

    #[test]
    fn launch_keeps_arguments_verbatim() {
        let config = parse(&["--", "prog", "-p", "x"]).unwrap();
        assert_eq!(config.target, Target::Launch { program: "prog".into(), args: vec!["-p".into(), "x".into()] });
    }

    #[test]
    fn rejects_conflicts_and_nonsense() {
        assert!(parse(&["-p", "1", "--", "ls"]).is_err());
        assert!(parse(&[]).is_err());
        assert!(parse(&["-p", "1", "-z", "10", "-Z", "5"]).is_err());
        assert!(parse(&["-p", "1", "0"]).is_err());
        assert!(parse(&["-p", "0"]).is_err());
        assert!(parse(&["-p", "1", "--duration", "-1"]).is_err());
        assert!(parse(&["-p", "1", "--folded-count"]).is_err());
        assert!(parse(&["--kernel-slab", "--", "ls"]).is_err());
        assert!(parse(&["-p", "1", "--pages"]).is_err());
        assert!(parse(&["--kernel-slab", "--repeat", "3"]).is_err());
    }

    #[test]
    fn kernel_mode() {
        let config = parse(&["--kernel-slab", "-p", "7", "--by", "cache", "--run", "true", "--repeat", "4"]).unwrap();
        match config.target {
            Target::Kernel(k) => {
                assert_eq!(k.pids, [7]);
                assert_eq!(k.group_by, GroupBy::Cache);
                assert_eq!(k.run, Some(RunSpec { command: "true".into(), repeat: 4 }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subcommands() {
        let cli = Cli::try_parse_from(["leaktrace", "report", "r.json", "--format", "svg"]).unwrap();
        assert!(matches!(cli.into_action().unwrap(), Action::Render { format: Format::Svg, .. }));
        let cli = Cli::try_parse_from(["leaktrace", "diff", "a.json", "b.json", "--fail-if-growth", "10"]).unwrap();
        assert!(matches!(cli.into_action().unwrap(), Action::Diff { fail_if_growth: Some(10), svg: None, .. }));
        let cli = Cli::try_parse_from(["leaktrace", "diff", "a.json", "b.json", "--svg", "d.svg"]).unwrap();
        assert!(
            matches!(cli.into_action().unwrap(), Action::Diff { svg: Some(path), .. } if path == Path::new("d.svg"))
        );
        let cli = Cli::try_parse_from(["leaktrace", "report", "r.json", "--format", "plot"]).unwrap();
        assert!(matches!(cli.into_action().unwrap(), Action::Render { format: Format::Plot, .. }));
    }

    #[test]
    fn exports_are_listed_with_their_formats() {
        let config = parse(&["-p", "1", "--plot", "p.svg", "--svg", "f.svg", "--json", "r.json"]).unwrap();
        let exports: Vec<(Format, &str)> =
            config.exports.iter().map(|e| (e.format, e.path.to_str().unwrap())).collect();
        assert_eq!(exports, [(Format::Json, "r.json"), (Format::Svg, "f.svg"), (Format::Plot, "p.svg")]);
    }

    #[test]
    fn alloc_fn_takes_a_name_and_a_kind() {
        let config =
            parse(&["-p", "1", "--alloc-fn", "pool_get:malloc-like", "--alloc-fn", "ns::put:size-free-like"]).unwrap();
        let names: Vec<(&str, &str)> = config.alloc_fns.iter().map(|f| (f.name, f.entry_program)).collect();
        assert_eq!(
            names,
            [("pool_get", leaktrace_common::names::PROG_SIZE_ARG0), ("ns::put", leaktrace_common::names::PROG_FREE)]
        );
        for bad in ["pool_get", ":malloc-like", "pool_get:sideways"] {
            assert!(parse(&["-p", "1", "--alloc-fn", bad]).is_err(), "{bad}");
        }
    }
}
