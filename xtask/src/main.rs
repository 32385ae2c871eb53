//! Project tasks: `cargo xtask setup | demo | test | bench | package`.
//!
//! `setup` installs what building and testing need on a fresh machine; `demo`, `test`,
//! `bench` and `package` run it first, so each of them is one command on a new machine.

mod bench;
mod deps;
mod lint;
mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "leaktrace project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain pieces (rust-src, bpf-linker) and mount tracefs.
    Setup,
    /// Build leaktrace, run the bundled leaking demo under it, print and save the report.
    Demo,
    /// Run the unit tests and the root integration tests that load real eBPF programs and
    /// install the Debian package (of the debug build).
    Test {
        /// Only run integration tests whose name contains this.
        filter: Option<String>,
    },
    /// Print leaktrace's module import graph; fail on a cycle or an over-long function.
    Deps {
        /// Another source folder to check (default leaktrace/src).
        #[arg(long, value_name = "DIR")]
        src: Option<PathBuf>,
    },
    /// Measure leaktrace's overhead against empty eBPF programs, bpftrace, heaptrack and
    /// valgrind; writes target/bench/bench.json and bench.md.
    Bench {
        /// A few-seconds version: one repetition, small sizes (checks that the bench runs).
        #[arg(long)]
        quick: bool,
        /// Instead, the soak alone: the steady workload traced for this many minutes (30 for
        /// the published figures), a report every 10 s, each checked; soak.json and soak.md.
        #[arg(long, value_name = "MINUTES", conflicts_with = "quick")]
        soak: Option<f64>,
        /// Output directory (default target/bench).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Run one section alone: `fleet` (many processes, allocator families, the cost of
        /// launch mode's system-wide probes to other processes).
        #[arg(long, value_name = "SECTION", value_parser = ["fleet"], conflicts_with = "soak")]
        only: Option<String>,
    },
    /// Build the Debian package: target/package/leaktrace_<version>_amd64.deb with the binary,
    /// man pages, shell completions, README and copyright.
    Package {
        /// Package the debug build instead of a release build (as `test` does), in
        /// target/package/debug.
        #[arg(long)]
        debug: bool,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let root = workspace_root();
    match Args::parse().task {
        Task::Setup => setup::run(&root),
        Task::Demo => {
            setup::run(&root)?;
            demo(&root)
        }
        Task::Deps { src } => {
            deps::check(&src.unwrap_or_else(|| root.join("leaktrace/src")))?;
            deps::check_function_lengths(&root)
        }
        Task::Test { filter } => {
            setup::run(&root)?;
            setup::ensure_test_tools()?;
            test(&root, filter.as_deref())
        }
        Task::Bench { quick, soak, out, only } => {
            setup::run(&root)?;
            let mut args = Vec::new();
            if quick {
                args.push("--quick".to_string());
            }
            if let Some(minutes) = soak {
                args.extend(["--soak".to_string(), minutes.to_string()]);
            }
            if let Some(out) = out {
                args.extend(["--out".to_string(), out.display().to_string()]);
            }
            if let Some(only) = only {
                args.extend(["--only".to_string(), only]);
            }
            bench::run(&root, &args)
        }
        Task::Package { debug, out } => {
            setup::run(&root)?;
            let profile = if debug { package::Profile::Debug } else { package::Profile::Release };
            package::build(&root, profile, &out.unwrap_or_else(|| profile.default_out_dir(&root))).map(drop)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn exec(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root).env("PATH", setup::path_with_tools());
    command
}

fn demo(root: &Path) -> Result<()> {
    exec(cargo(root).args(["build", "--release", "--package", "leaktrace"]))?;
    let out = root.join("target/demo");
    std::fs::create_dir_all(&out)?;
    let program = out.join("leaky-worker");
    // Built like a distribution package: optimized, without frame pointers.
    exec(
        Command::new("cc")
            .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
            .arg(&program)
            .arg(root.join("demo/leaky-worker.c")),
    )?;
    let json = out.join("report.json");
    println!("Running the demo worker under leaktrace (reports every 2 s):\n");
    exec(
        Command::new(root.join("target/release/leaktrace"))
            .args(["--top", "3", "--json"])
            .arg(&json)
            .arg("2")
            .arg("--")
            .arg(&program)
            .arg("80"),
    )?;
    println!("\nJSON report: {}", json.display());
    Ok(())
}

fn test(root: &Path, filter: Option<&str>) -> Result<()> {
    // House rules first: they fail in seconds.
    exec(cargo(root).args(["fmt", "--all", "--check"]))?;
    exec(cargo(root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "leaktrace-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    lint::ebpf_clippy(root)?;
    deps::check(&root.join("leaktrace/src"))?;
    deps::check_function_lengths(root)?;
    // Unit tests of every host crate (the eBPF crate only builds for the BPF target).
    exec(cargo(root).args([
        "test",
        "--workspace",
        "--exclude",
        "leaktrace-ebpf",
        "--exclude",
        "leaktrace-integration-tests",
    ]))?;
    // The root tests run the real binary; build it first so they test this tree. The package
    // test checks a package of this same debug build: a release build would add minutes.
    exec(cargo(root).args(["build", "--package", "leaktrace"]))?;
    let deb = package::build(root, package::Profile::Debug, &package::Profile::Debug.default_out_dir(root))?;
    let mut integration = cargo(root);
    integration
        .args(["test", "--package", "leaktrace-integration-tests", "--"])
        // The kernel is shared state: one test at a time.
        .arg("--test-threads=1")
        .env("LEAKTRACE_BIN", root.join("target/debug/leaktrace"))
        .env("LEAKTRACE_DEB", deb);
    if let Some(filter) = filter {
        integration.arg(filter);
    }
    exec(&mut integration)
}
