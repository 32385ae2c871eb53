//! `cargo xtask package [--debug] [--out DIR]`: a Debian package of leaktrace,
//! target/package/leaktrace_<version>_amd64.deb.
//!
//! The package is staged here and built with `dpkg-deb --build`, not with cargo-deb: dpkg-deb,
//! dpkg-shlibdeps and strip come with the machine's dpkg, dpkg-dev and binutils (already there
//! for the C compiler), so packaging installs and pins no tool of its own, and every file the
//! package holds is named in this module. Contents:
//!
//! - /usr/bin/leaktrace, stripped (the eBPF programs are data inside it and stay whole);
//! - /usr/share/man/man1/leaktrace.1.gz and a page per subcommand, and the bash, zsh and fish
//!   completions, generated from the clap definition by `leaktrace-packaging` (packaging/);
//! - /usr/share/doc/leaktrace: copyright (packaging/debian/copyright), changelog.gz,
//!   README.md.gz, json-report.md.gz (the schema `--json` refers to) and
//!   third-party-crates.txt.
//!
//! Depends is what dpkg-shlibdeps finds the binary linked against (libc6, libgcc-s1): leaktrace
//! runs no other program but the command it is asked to trace.
//!
//! `--debug` packages the debug build instead, in target/package/debug: `cargo xtask test`
//! checks that package, which costs no release build.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{cargo, exec, setup};

const PACKAGE: &str = "leaktrace";
const MAINTAINER: &str = "leaktrace developers <dev@leaktrace.invalid>";
/// The workspace's version, which leaktrace's too.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// leaktrace runs on x86-64 only (its probe placement decodes x86 instructions).
const ARCHITECTURE: &str = "amd64";

/// Where Debian's bash-completion, zsh and fish look for a command's completions, by the file
/// name `leaktrace-packaging` writes.
const COMPLETIONS: [(&str, &str); 3] = [
    ("leaktrace.bash", "usr/share/bash-completion/completions/leaktrace"),
    ("_leaktrace", "usr/share/zsh/vendor-completions/_leaktrace"),
    ("leaktrace.fish", "usr/share/fish/vendor_completions.d/leaktrace.fish"),
];

/// Which build of leaktrace goes into the package.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn target_dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }

    /// dpkg-deb's compression: xz (its default, the smallest) for a release; gzip for the test's
    /// package, which takes 1 s here where xz takes 11.
    fn compression(self) -> &'static str {
        match self {
            Profile::Release => "-Zxz",
            Profile::Debug => "-Zgzip",
        }
    }

    /// Where the package goes unless `--out` says otherwise.
    pub fn default_out_dir(self, root: &Path) -> PathBuf {
        match self {
            Profile::Release => root.join("target/package"),
            Profile::Debug => root.join("target/package/debug"),
        }
    }
}

/// Builds leaktrace and its package; returns the .deb's path.
pub fn build(root: &Path, profile: Profile, out_dir: &Path) -> Result<PathBuf> {
    // The tools below run in other directories.
    let out_dir = &std::path::absolute(out_dir).with_context(|| format!("resolving {}", out_dir.display()))?;
    setup::ensure_debian_tools(&[("dpkg-dev", "dpkg-shlibdeps"), ("binutils", "strip")], "to build the package")?;
    let host = output(Command::new("dpkg").arg("--print-architecture"))?;
    ensure!(host == ARCHITECTURE, "leaktrace is packaged for {ARCHITECTURE} only; this machine is {host}");

    let mut build = cargo(root);
    build.args(["build", "--package", "leaktrace", "--package", "leaktrace-packaging"]);
    if profile == Profile::Release {
        build.arg("--release");
    }
    exec(&mut build)?;
    let binaries = root.join("target").join(profile.target_dir());

    // The debhelper layout: dpkg-shlibdeps expects the binary under debian/<package>/ and reads
    // debian/control beside it.
    let work = out_dir.join("build");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let staged = work.join("debian").join(PACKAGE);
    stage_binary(&binaries.join("leaktrace"), &staged)?;
    // The stripped binary must still run; its version line names the commit for the changelog.
    let version_line = output(Command::new(staged.join("usr/bin/leaktrace")).arg("--version"))?;
    let generated = work.join("generated");
    exec(Command::new(binaries.join("leaktrace-packaging")).arg(&generated))?;
    stage_man_pages(&generated.join("man"), &staged)?;
    for (name, destination) in COMPLETIONS {
        install_file(&generated.join("completions").join(name), &staged.join(destination), 0o644)?;
    }
    stage_docs(root, &staged)?;
    write_changelog(root, &work, &staged, &version_line)?;

    // dpkg-shlibdeps finds the package's root by its DEBIAN directory.
    create_dirs(&staged.join("DEBIAN"))?;
    let depends = shared_library_depends(&work)?;
    write_control(root, &staged, &depends)?;
    let deb = out_dir.join(format!("{PACKAGE}_{VERSION}_{ARCHITECTURE}.deb"));
    exec(
        Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .arg(profile.compression())
            .arg("--build")
            .arg(&staged)
            .arg(&deb),
    )?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// Runs `command`; its standard output, trimmed, when it succeeds.
fn output(command: &mut Command) -> Result<String> {
    let out = command.stderr(Stdio::inherit()).output().with_context(|| format!("failed to start {command:?}"))?;
    ensure!(out.status.success(), "{command:?} failed ({})", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Copies `source` to `destination` with `mode`, creating its directories.
fn install_file(source: &Path, destination: &Path, mode: u32) -> Result<()> {
    create_dirs(destination.parent().expect("a staged file is inside the staging tree"))?;
    fs::copy(source, destination)
        .with_context(|| format!("copying {} to {}", source.display(), destination.display()))?;
    fs::set_permissions(destination, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", destination.display()))
}

/// `gzip -9n` of `source` into `destination` (0644): Debian compresses man pages and larger
/// docs, without a timestamp or name inside so that the package is reproducible.
fn install_gzipped(source: &Path, destination: &Path) -> Result<()> {
    create_dirs(destination.parent().expect("a staged file is inside the staging tree"))?;
    let file = fs::File::create(destination).with_context(|| format!("creating {}", destination.display()))?;
    exec(Command::new("gzip").args(["-9n", "--stdout"]).arg(source).stdout(file))?;
    fs::set_permissions(destination, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", destination.display()))
}

fn create_dirs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// /usr/bin/leaktrace without symbols or debug info (Debian ships those apart): the debug
/// build's binary shrinks from about 100 MB to 17.
fn stage_binary(binary: &Path, staged: &Path) -> Result<()> {
    let destination = staged.join("usr/bin/leaktrace");
    install_file(binary, &destination, 0o755)?;
    // The options dh_strip uses for executables.
    exec(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note"])
            .arg(&destination),
    )
}

fn stage_man_pages(generated: &Path, staged: &Path) -> Result<()> {
    let mut pages = 0;
    for entry in fs::read_dir(generated).with_context(|| format!("reading {}", generated.display()))? {
        let page = entry?.path();
        let name = page.file_name().expect("a directory entry has a name").to_string_lossy().into_owned();
        ensure!(name.ends_with(".1"), "unexpected file {} among the generated man pages", page.display());
        install_gzipped(&page, &staged.join("usr/share/man/man1").join(format!("{name}.gz")))?;
        pages += 1;
    }
    ensure!(pages > 0, "no man page was generated in {}", generated.display());
    Ok(())
}

fn stage_docs(root: &Path, staged: &Path) -> Result<()> {
    let docs = staged.join("usr/share/doc").join(PACKAGE);
    install_file(&root.join("packaging/debian/copyright"), &docs.join("copyright"), 0o644)?;
    fs::write(docs.join("third-party-crates.txt"), third_party_crates(root)?)?;
    fs::set_permissions(docs.join("third-party-crates.txt"), fs::Permissions::from_mode(0o644))?;
    install_gzipped(&root.join("README.md"), &docs.join("README.md.gz"))?;
    install_gzipped(&root.join("docs/json-report.md"), &docs.join("json-report.md.gz"))
}

/// /usr/share/doc/leaktrace/changelog.gz, which Debian requires of every package: one entry for
/// this version, naming the build (`leaktrace --version`), dated by the commit it was built from.
fn write_changelog(root: &Path, work: &Path, staged: &Path, version_line: &str) -> Result<()> {
    let commit_time = output(Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(root));
    // Outside a git checkout, the time of packaging.
    let date = match commit_time {
        Ok(seconds) => output(Command::new("date").arg("--rfc-email").arg(format!("--date=@{seconds}")))?,
        Err(_) => output(Command::new("date").arg("--rfc-email"))?,
    };
    let changelog = work.join("changelog");
    fs::write(
        &changelog,
        format!(
            "{PACKAGE} ({VERSION}) unstable; urgency=medium\n\n  * Packaged {version_line}.\n\n -- {MAINTAINER}  {date}\n"
        ),
    )?;
    install_gzipped(&changelog, &staged.join("usr/share/doc").join(PACKAGE).join("changelog.gz"))
}

/// The crates compiled into the binary (normal dependencies of leaktrace for this machine, and of
/// the eBPF programs for the BPF target; not build tools or proc macros), one per line with its
/// license, for the copyright file to point to.
fn third_party_crates(root: &Path) -> Result<String> {
    let mut crates = Vec::new();
    for (package, target) in [("leaktrace", "x86_64-unknown-linux-gnu"), ("leaktrace-ebpf", "bpfel-unknown-none")] {
        let tree = output(cargo(root).args(["tree", "--package", package, "--target", target]).args([
            "--edges",
            "normal,no-proc-macro",
            "--prefix",
            "none",
            "--format",
            "{p}: {l}",
        ]))?;
        // A path in the package id marks this workspace's own crates; "(*)" a crate listed before.
        crates.extend(
            tree.lines().filter(|line| !line.contains(" (/")).map(|line| line.trim_end_matches(" (*)").to_string()),
        );
    }
    crates.sort();
    crates.dedup();
    ensure!(!crates.is_empty(), "cargo tree listed no dependency of leaktrace");
    Ok(format!(
        "Rust crates compiled into /usr/bin/leaktrace, with the license each declares (SPDX).\n\
         Their license texts are in each crate's source, at crates.io.\n\n{}\n",
        crates.join("\n")
    ))
}

/// The Depends field for the libraries the staged binary is linked against, from dpkg-shlibdeps
/// (versions from the shlibs/symbols files of the packages that provide them here).
fn shared_library_depends(work: &Path) -> Result<String> {
    fs::write(
        work.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: {ARCHITECTURE}\n"),
    )?;
    let binary = Path::new("debian").join(PACKAGE).join("usr/bin/leaktrace");
    let substvars = output(Command::new("dpkg-shlibdeps").arg("-O").arg(&binary).current_dir(work))?;
    let depends = substvars
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .filter(|depends| depends.contains("libc6"))
        .with_context(|| format!("dpkg-shlibdeps found no libc6 dependency: {substvars:?}"))?;
    Ok(depends.to_string())
}

/// DEBIAN/control from packaging/debian/control, and DEBIAN/md5sums.
fn write_control(root: &Path, staged: &Path, depends: &str) -> Result<()> {
    let files = files_under(staged)?;
    // In KiB, each file rounded up to whole blocks as dpkg-gencontrol counts them.
    let installed_size: u64 =
        files.iter().map(|f| f.metadata().map(|m| m.len().div_ceil(1024))).sum::<Result<_, _>>()?;
    let template = root.join("packaging/debian/control");
    let control = fs::read_to_string(&template)
        .with_context(|| format!("reading {}", template.display()))?
        .replace("{version}", VERSION)
        .replace("{maintainer}", MAINTAINER)
        .replace("{architecture}", ARCHITECTURE)
        .replace("{installed_size}", &installed_size.to_string())
        .replace("{depends}", depends);
    if let Some(left) = control.lines().find(|line| line.contains('{')) {
        bail!("{} has a placeholder this task does not fill: {left}", template.display());
    }
    let debian = staged.join("DEBIAN");
    fs::write(debian.join("control"), control)?;

    let relative: Vec<&Path> = files.iter().map(|f| f.strip_prefix(staged).expect("found under staged")).collect();
    let md5sums = output(Command::new("md5sum").args(&relative).current_dir(staged))?;
    fs::write(debian.join("md5sums"), md5sums + "\n")?;
    for name in ["control", "md5sums"] {
        fs::set_permissions(debian.join(name), fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Every file under `root`, sorted; sets every directory on the way to 0755, where the package
/// would otherwise carry whatever modes the build's umask gave them.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
