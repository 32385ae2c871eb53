//! Lints that `cargo clippy --workspace` cannot run. The eBPF programs compile only for the
//! BPF target (on the host every item is configured out), so clippy must compile them as
//! `leaktrace/build.rs` does: nightly, `bpfel-unknown-none`, `-Z build-std=core`.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::{exec, setup};

/// Runs clippy on the eBPF crate for the BPF target, warnings denied, both objects included
/// (the production programs and, with the `floor` feature, the benchmark's floor). Needs what
/// `setup::run` installs (the nightly toolchain's rust-src); no bpf-linker, as nothing links.
/// The same command by hand, from the workspace root:
///
/// `cargo +nightly clippy -p leaktrace-ebpf --features floor --target bpfel-unknown-none -Z build-std=core -- -D warnings`
pub fn ebpf_clippy(root: &Path) -> Result<()> {
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .env("PATH", setup::path_with_tools())
        // Whatever toolchain runs xtask, the nightly's own rustc and clippy-driver do this.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args(["+nightly", "clippy", "--package", "leaktrace-ebpf", "--features", "floor"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--", "-D", "warnings"]);
    exec(&mut command)
}
