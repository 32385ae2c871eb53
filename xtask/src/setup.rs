//! Idempotent installation of what building and running leaktrace needs.
//!
//! - rust-src for the nightly toolchain (`-Z build-std=core` for the BPF target);
//! - bpf-linker 0.13, built against the nightly toolchain's own libLLVM 22 (the default
//!   `cargo install bpf-linker` wants LLVM 23, which this toolchain does not ship);
//! - tracefs mounted at /sys/kernel/tracing;
//! - a C compiler, for the test fixtures and the demo.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::exec;

const BPF_LINKER_VERSION: &str = "0.13.0";

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"))
}

/// PATH with cargo's bin directory first, where bpf-linker is installed.
pub fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).expect("PATH entries contain no separator")
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(PathBuf::from)
        .context("no nightly Rust toolchain: the eBPF programs are built with nightly (install it with `rustup toolchain install nightly`)")
}

fn ensure_rust_src(root: &Path, sysroot: &Path) -> Result<()> {
    let library = sysroot.join("lib/rustlib/src/rust/library");
    if library.join("core").is_dir() {
        return Ok(());
    }
    println!("setup: installing rust-src for the nightly toolchain");
    if exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"])).is_ok()
        && library.join("core").is_dir()
    {
        return Ok(());
    }
    // Offline fallback: the component archive of exactly this nightly, when shared beside the repo.
    let version = output(Command::new("rustc").args(["+nightly", "--version"])).unwrap_or_default();
    let date = version.split_whitespace().last().unwrap_or("").trim_end_matches(')');
    let archive = root.join(format!("../shared/toolchain/rust-src-1.97.0-nightly-{date}.tar.xz"));
    if archive.is_file() && version.starts_with("rustc 1.97.0-nightly") {
        println!("setup: rustup could not fetch rust-src; unpacking {}", archive.display());
        exec(Command::new("tar").arg("-xJf").arg(&archive).arg("-C").arg(sysroot.join("lib/rustlib")))?;
        if library.join("core").is_dir() {
            return Ok(());
        }
    }
    bail!("rust-src for the nightly toolchain could not be installed (rustup component add rust-src --toolchain nightly failed)")
}

fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    let linker = cargo_home().join("bin/bpf-linker");
    if output(Command::new(&linker).arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly toolchain's LLVM (about a minute)");
    let llvm = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .context("the nightly toolchain ships no libLLVM.so.*")?;
    let major = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split('.').next())
        .context("cannot read the LLVM version from the library name")?
        .to_string();
    // bpf-linker's build looks for <prefix>/lib/libLLVM.so; the binary keeps <prefix>/lib as
    // its library path, so the prefix must outlive the build (not under /tmp).
    let prefix = cargo_home().join("leaktrace-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so".to_string(), llvm.file_name().unwrap().to_string_lossy().into_owned()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    exec(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(cargo_home())
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker failed")
}

fn ensure_tracefs() -> Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").is_dir() {
        return Ok(());
    }
    println!("setup: mounting tracefs at /sys/kernel/tracing");
    exec(Command::new("mount").args(["-t", "tracefs", "nodev"]).arg(tracing))
        .context("tracefs is not mounted and could not be mounted (are you root?)")
}

fn ensure_c_compiler() -> Result<()> {
    if output(Command::new("cc").arg("--version")).is_some() {
        return Ok(());
    }
    bail!("no C compiler (cc): the test fixtures and the demo are C programs; install gcc")
}

/// True when `command` is on PATH.
fn on_path(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs, from Debian, each of `tools` (package, command it provides) whose command is
/// missing, with one `apt-get update` first; `purpose` says what for.
pub fn ensure_debian_tools(tools: &[(&str, &str)], purpose: &str) -> Result<()> {
    let missing: Vec<&str> =
        tools.iter().filter(|(_, command)| !on_path(command)).map(|(package, _)| *package).collect();
    apt_install(&missing, purpose)
}

/// Installs Debian's `missing` packages (none: nothing to do), with one `apt-get update` first.
fn apt_install(missing: &[&str], purpose: &str) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian's {} {purpose}", missing.join(", "));
    exec(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update failed")?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("installing {} failed", missing.join(", ")))
}

/// True when Debian's `package` is installed.
fn debian_package_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "--showformat=${Status}", package]))
        .is_some_and(|s| s.ends_with(" installed") && !s.contains("not-installed"))
}

/// Kernel headers for bcc's memleak-bpfcc (the benchmark), which compiles its eBPF program at
/// start against /lib/modules/$(uname -r)/build, and `source` beside it for a split tree.
///
/// Only when that `build` does not resolve (the benchmark's VMs run a 6.18 kernel Debian does
/// not package: no /lib/modules, no /sys/kernel/kheaders.tar.xz), this installs Debian's
/// linux-headers-<arch> (bookworm: linux-headers-6.1.0-N-amd64 and -common) and creates
///   /lib/modules/$(uname -r)/build  -> /usr/src/linux-headers-6.1.0-N-amd64
///   /lib/modules/$(uname -r)/source -> /usr/src/linux-headers-6.1.0-N-common
/// copying the package's own /lib/modules/6.1.0-N-amd64/{build,source} links (a dangling link
/// is replaced, an existing one kept). `build` alone is not enough: bcc then fails on
/// `./include/linux/kconfig.h`. 6.1 headers do for memleak's programs on user-space allocators,
/// which read no kernel structure.
pub fn ensure_bcc_kernel_headers() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").context("reading the kernel release")?;
    let modules = Path::new("/lib/modules").join(release.trim());
    let build = modules.join("build");
    if build.is_dir() {
        return Ok(());
    }
    let arch = output(Command::new("dpkg").arg("--print-architecture")).context("dpkg --print-architecture failed")?;
    let package = format!("linux-headers-{arch}");
    if !debian_package_installed(&package) {
        println!(
            "setup: installing Debian's {package}: bcc's memleak-bpfcc compiles against kernel headers (none for {})",
            release.trim()
        );
        exec(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update failed")?;
        exec(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", &package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| format!("installing {package} failed"))?;
    }
    // The versioned package the metapackage depends on: "linux-headers-6.1.0-57-amd64 (= …)".
    let depends =
        output(Command::new("dpkg-query").args(["-W", "--showformat=${Depends}", &package])).unwrap_or_default();
    let versioned = depends
        .split([',', ' '])
        .find_map(|d| d.strip_prefix("linux-headers-"))
        .with_context(|| format!("cannot tell which headers {package} installed (Depends: {depends:?})"))?
        .to_string();
    let packaged = Path::new("/lib/modules").join(&versioned);
    std::fs::create_dir_all(&modules).with_context(|| format!("creating {}", modules.display()))?;
    for name in ["build", "source"] {
        let link = modules.join(name);
        if link.exists() {
            continue;
        }
        let target = std::fs::read_link(packaged.join(name))
            .with_context(|| format!("{package} installed no {}", packaged.join(name).display()))?;
        if std::fs::symlink_metadata(&link).is_ok() {
            // A dangling link, e.g. to headers an upgrade removed.
            std::fs::remove_file(&link).with_context(|| format!("removing the dangling {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
        println!("setup: linked {} -> {} (Debian's {versioned} headers, for bcc)", link.display(), target.display());
    }
    Ok(())
}

/// What the tests use beside leaktrace: the Go toolchain (they read leaktrace's pprof output
/// with `go tool pprof`), gdb (its backtraces check the unwinding fixture), binutils (objcopy
/// builds the unwind-table tests' objects), man (it finds the packaged man pages by name),
/// bpftrace (a second tracer's uprobe on malloc beside leaktrace's), and Debian's PHP CLI (the
/// PHP frame tests run a PHP worker; FFI comes with it, in php-common).
pub fn ensure_test_tools() -> Result<()> {
    ensure_lint_tools()?;
    ensure_debian_tools(
        &[
            ("golang-go", "go"),
            ("gdb", "gdb"),
            ("binutils", "objcopy"),
            ("man-db", "man"),
            ("bpftrace", "bpftrace"),
            ("php-cli", "php"),
        ],
        "for the tests",
    )?;
    ensure_debian_libraries(&["libjemalloc2"], "for the tests (a preloaded malloc replacement)")
}

/// Installs, from Debian, each of the library `packages` that is not installed (a library has
/// no command to look for on PATH).
pub fn ensure_debian_libraries(packages: &[&str], purpose: &str) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !debian_package_installed(p)).collect();
    apt_install(&missing, purpose)
}

/// rustfmt and clippy for the toolchain that builds leaktrace: the tests check formatting
/// and lints first.
fn ensure_lint_tools() -> Result<()> {
    let has = |toolchain: &[&str], tool: &str| {
        Command::new("cargo").args(toolchain).args([tool, "--version"]).output().is_ok_and(|o| o.status.success())
    };
    if !(has(&[], "fmt") && has(&[], "clippy")) {
        println!("setup: installing rustfmt and clippy");
        exec(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    }
    // The eBPF crate is linted by the nightly that builds it.
    if !has(&["+nightly"], "clippy") {
        println!("setup: installing clippy for the nightly toolchain");
        exec(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// Installs whatever is missing; does nothing when everything is in place.
pub fn run(root: &Path) -> Result<()> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(root, &sysroot)?;
    ensure_bpf_linker(&sysroot)?;
    ensure_tracefs()?;
    ensure_c_compiler()?;
    Ok(())
}
