//! Builds the eBPF programs (`leaktrace-ebpf`) for the BPF target with the nightly toolchain
//! and bpf-linker, so that a plain `cargo build` produces a binary with its programs inside.
//! `cargo xtask setup` installs the prerequisites. `AYA_BUILD_SKIP=1` skips this step.
//!
//! With the `bench` feature it also builds the benchmark's floor object (`leaktrace-floor`,
//! the eBPF crate's `floor` feature); without it that object is not even built.
//!
//! It also records the git commit the binary is built from, for `leaktrace --version`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// What `--version` says instead of a commit when the sources are not a git checkout of leaktrace.
const NO_CHECKOUT: &str = "not built from a git checkout";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?);
    let commit = git_commit(&manifest_dir).unwrap_or_else(|| NO_CHECKOUT.to_string());
    println!("cargo:rustc-env=LEAKTRACE_GIT_COMMIT={commit}");
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

/// Runs git in `dir`; its trimmed output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").current_dir(dir).args(args).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The short hash of HEAD when `dir` is in a git checkout of leaktrace, and asks cargo to run this script again
/// when HEAD moves (a checkout rewrites HEAD, a commit the branch's ref, `git gc` packs refs).
fn git_commit(dir: &Path) -> Option<String> {
    // A source tree unpacked inside some other repository (a vendored copy, a distribution's packaging repo) is
    // not tracked there: that repository's commit would be a made-up answer.
    git(dir, &["ls-files", "--error-unmatch", "build.rs"])?;
    let commit = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) else { continue };
        let path = dir.join(path);
        // cargo treats a missing file as always changed, which would rerun the eBPF build on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}
