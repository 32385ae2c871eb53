//! `cargo xtask bench [--quick] [--out DIR]`: installs the tools the benchmark compares
//! leaktrace with (Debian's bpftrace, heaptrack and valgrind), builds leaktrace and the
//! harness (bench/) in release mode and runs the harness. Results go to target/bench/
//! (bench.json, bench.md); see docs/benchmarks.md.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use crate::{cargo, exec};

/// Debian packages and the command each provides.
const TOOLS: &[(&str, &str)] = &[("bpftrace", "bpftrace"), ("heaptrack", "heaptrack"), ("valgrind", "valgrind")];

fn installed(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs whichever of the compared tools is missing (`apt-get update` once, first).
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS.iter().filter(|(_, command)| !installed(command)).map(|(package, _)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("bench: installing Debian's {}", missing.join(", "));
    exec(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update failed")?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("installing {} failed", missing.join(", ")))
}

/// Runs the benchmark; `args` are passed to the harness (`--quick`, `--out DIR`).
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    ensure_tools()?;
    exec(cargo(root).args(["build", "--release", "--package", "leaktrace", "--package", "leaktrace-bench"]))?;
    exec(
        Command::new(root.join("target/release/leaktrace-bench"))
            .arg("--leaktrace")
            .arg(root.join("target/release/leaktrace"))
            .args(args)
            .current_dir(root),
    )
}
