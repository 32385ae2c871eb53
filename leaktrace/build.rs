//! Builds the eBPF programs (`leaktrace-ebpf`) for the BPF target with the nightly toolchain
//! and bpf-linker, so that a plain `cargo build` produces a binary with its programs inside.
//! `cargo xtask setup` installs the prerequisites. `AYA_BUILD_SKIP=1` skips this step.
//!
//! With the `bench` feature it also builds the benchmark's floor object (`leaktrace-floor`,
//! the eBPF crate's `floor` feature); without it that object is not even built.

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "leaktrace-ebpf")
        .ok_or_else(|| anyhow!("leaktrace-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("leaktrace-ebpf manifest has no parent directory"))?;
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BENCH").is_some() { &["floor"] } else { &[] };
    let package = Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), features, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default())
}
