//! `cargo xtask bench [--quick | --soak MINUTES] [--out DIR] [--only fleet]`: installs the
//! tools the benchmark compares leaktrace with (Debian's bpftrace, heaptrack, valgrind and
//! bcc's memleak from bpfcc-tools, with kernel headers for bcc), the real program it runs (jq),
//! the C++ compiler and the allocator libraries of its allocator-family runs, builds leaktrace
//! and the harness (bench/) in release mode and runs the harness. Results go to target/bench/
//! (bench.json, bench.md); see docs/benchmarks.md.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::{cargo, exec};

/// Debian packages and the command each provides.
const TOOLS: &[(&str, &str)] = &[
    ("bpftrace", "bpftrace"),
    ("heaptrack", "heaptrack"),
    ("valgrind", "valgrind"),
    ("bpfcc-tools", "memleak-bpfcc"),
    ("jq", "jq"),
    ("g++", "c++"),
];

/// Debian's allocator libraries the benchmark preloads into its workload (the allocator
/// family section): jemalloc, gperftools' tcmalloc (minimal) and mimalloc.
const LIBRARIES: &[&str] = &["libjemalloc2", "libtcmalloc-minimal4", "libmimalloc2.0"];

/// Runs the benchmark; `args` are passed to the harness (`--quick`, `--out DIR`, `--only fleet`).
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    crate::setup::ensure_debian_tools(TOOLS, "for the benchmark")?;
    crate::setup::ensure_debian_libraries(LIBRARIES, "for the benchmark's allocator families")?;
    crate::setup::ensure_bcc_kernel_headers()?;
    // Two builds: in one, cargo would unify features and build the leaktrace binary with the
    // harness's `bench` feature (the floor object inside); this way it is the shipped one.
    exec(cargo(root).args(["build", "--release", "--package", "leaktrace"]))?;
    exec(cargo(root).args(["build", "--release", "--package", "leaktrace-bench"]))?;
    exec(
        Command::new(root.join("target/release/leaktrace-bench"))
            .arg("--leaktrace")
            .arg(root.join("target/release/leaktrace"))
            .args(args)
            .current_dir(root),
    )
}
