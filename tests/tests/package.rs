//! The Debian package (`cargo xtask package`): its control fields, that dpkg installs it into an
//! empty root with its man pages, completions and docs where man and the shells look, and that
//! the packaged binary runs. `cargo xtask test` packages the debug build and passes its path in
//! LEAKTRACE_DEB.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use leaktrace_integration_tests::*;

/// Every file the package installs, relative to the root.
const INSTALLED: &[&str] = &[
    "usr/bin/leaktrace",
    "usr/share/man/man1/leaktrace.1.gz",
    "usr/share/man/man1/leaktrace-report.1.gz",
    "usr/share/man/man1/leaktrace-diff.1.gz",
    "usr/share/bash-completion/completions/leaktrace",
    "usr/share/zsh/vendor-completions/_leaktrace",
    "usr/share/fish/vendor_completions.d/leaktrace.fish",
    "usr/share/doc/leaktrace/copyright",
    "usr/share/doc/leaktrace/changelog.gz",
    "usr/share/doc/leaktrace/README.md.gz",
    "usr/share/doc/leaktrace/json-report.md.gz",
    "usr/share/doc/leaktrace/third-party-crates.txt",
];

/// The package under test.
fn deb() -> PathBuf {
    let deb = std::env::var_os("LEAKTRACE_DEB").map(PathBuf::from).expect(
        "LEAKTRACE_DEB names the package to test (cargo xtask test sets it; else run cargo xtask package --debug)",
    );
    assert!(deb.is_file(), "LEAKTRACE_DEB: no package at {}", deb.display());
    deb
}

/// Runs `command`, panicking with its stderr unless it succeeds; its stdout.
fn run(command: &mut Command) -> String {
    let output: Output = command.output().unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn gunzip(path: &Path) -> String {
    run(Command::new("gzip").arg("-dc").arg(path))
}

/// A dpkg database with nothing installed, under a temporary root.
fn empty_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let admin = root.path().join("var/lib/dpkg");
    for dir in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    root
}

/// `dpkg --root ROOT ARGS`; dependencies are not installed in an empty root, so not checked
/// here (the control test checks them against this machine).
fn dpkg_in(root: &Path, args: &[&str]) -> String {
    run(Command::new("dpkg").arg(format!("--root={}", root.display())).arg("--force-depends").args(args))
}

#[test]
fn control_names_amd64_and_dependencies_this_machine_has() {
    let fields =
        run(Command::new("dpkg-deb").arg("--field").arg(deb()).args(["Package", "Version", "Architecture", "Depends"]));
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {fields}"))
            .to_string()
    };
    assert_eq!(field("Package"), "leaktrace");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), "amd64");
    let depends = field("Depends");
    assert!(depends.starts_with("libc6 (>= "), "Depends: {depends}");
    // apt-get install on a machine of this kind needs nothing it does not already have.
    for dependency in depends.split(", ") {
        let (package, minimum) = dependency.split_once(" (>= ").unwrap_or((dependency, ")"));
        let installed = run(Command::new("dpkg-query").args(["--show", "--showformat=${Version}", package]));
        let minimum = minimum.trim_end_matches(')');
        if !minimum.is_empty() {
            let satisfied =
                Command::new("dpkg").args(["--compare-versions", &installed, "ge", minimum]).status().unwrap();
            assert!(satisfied.success(), "{package} {installed} is older than the package's {dependency}");
        }
    }
}

#[test]
fn dpkg_installs_binary_man_pages_completions_and_docs_and_removes_them() {
    require_root();
    let root = empty_root();
    let root = root.path();
    dpkg_in(root, &["--install", deb().to_str().unwrap()]);
    let listed = dpkg_in(root, &["--listfiles", "leaktrace"]);
    for file in INSTALLED {
        assert!(listed.lines().any(|l| l == format!("/{file}")), "the package does not list /{file}:\n{listed}");
        let size = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("/{file} not installed: {e}")).len();
        assert!(size > 0, "/{file} is empty");
    }

    // man finds each page by name under the root's man directory, and the main page is clap's
    // whole definition, pointing to the subcommand pages.
    let man_dir = root.join("usr/share/man");
    for page in ["leaktrace", "leaktrace-report", "leaktrace-diff"] {
        let found = run(Command::new("man").arg("-M").arg(&man_dir).args(["-w", page]));
        assert_eq!(Path::new(found.trim()), man_dir.join(format!("man1/{page}.1.gz")));
    }
    let page = gunzip(&man_dir.join("man1/leaktrace.1.gz"));
    for needle in [".TH leaktrace 1", ".SH SYNOPSIS", "\\-\\-kernel\\-slab", "leaktrace\\-report(1)", ".SH EXAMPLES"] {
        assert!(page.contains(needle), "man page lacks {needle:?}:\n{page}");
    }

    assert_bash_completes(&root.join("usr/share/bash-completion/completions/leaktrace"));
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_leaktrace")).unwrap();
    assert!(zsh.starts_with("#compdef leaktrace") && zsh.contains("--kernel-slab"), "zsh completion:\n{zsh}");
    let fish = std::fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/leaktrace.fish")).unwrap();
    assert!(fish.contains("complete -c leaktrace") && fish.contains("-l kernel-slab"), "fish completion:\n{fish}");

    let docs = root.join("usr/share/doc/leaktrace");
    let copyright = std::fs::read_to_string(docs.join("copyright")).unwrap();
    for needle in [
        "License: MIT or Apache-2.0",
        "Files: leaktrace-ebpf/*",
        "License: MIT or GPL-2",
        "Permission is hereby granted",
    ] {
        assert!(copyright.contains(needle), "copyright lacks {needle:?}");
    }
    assert!(gunzip(&docs.join("README.md.gz")).starts_with("# leaktrace"));
    let changelog = gunzip(&docs.join("changelog.gz"));
    let entry = format!("leaktrace ({}) unstable; urgency=medium", env!("CARGO_PKG_VERSION"));
    assert!(changelog.starts_with(&entry), "changelog.gz:\n{changelog}");
    let crates = std::fs::read_to_string(docs.join("third-party-crates.txt")).unwrap();
    assert!(crates.contains("\nclap v") && crates.contains("\naya-ebpf v"), "third-party-crates.txt:\n{crates}");

    dpkg_in(root, &["--remove", "leaktrace"]);
    for file in INSTALLED {
        assert!(!root.join(file).exists(), "/{file} is left after dpkg --remove");
    }
}

/// Bash loads the script and completes an option and an option's value from it.
fn assert_bash_completes(script: &Path) {
    let complete = |words: &str| {
        let program = format!(
            "source \"$1\" && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && \
             _leaktrace leaktrace \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD - 1]}}\" && \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        run(Command::new("bash").args(["-c", &program, "bash"]).arg(script))
    };
    assert_eq!(complete("leaktrace --kernel-s"), "--kernel-slab\n");
    let formats = complete("leaktrace report leaks.json --format ''");
    assert!(formats.lines().any(|l| l == "pprof"), "bash completes --format with:\n{formats}");
}

#[test]
fn packaged_binary_names_its_commit_and_traces_a_command() {
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("--extract").arg(deb()).arg(root.path()));
    let leaktrace = root.path().join("usr/bin/leaktrace");

    let commit = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
        .unwrap_or_else(|| "not built from a git checkout".to_string());
    let version = run(Command::new(&leaktrace).arg("--version"));
    assert_eq!(version.trim(), format!("leaktrace {} ({commit})", env!("CARGO_PKG_VERSION")));

    require_root();
    let output = Command::new(&leaktrace).args(["--", "/bin/true"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "leaktrace -- /bin/true: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Final report: pid ") && stdout.contains("(/bin/true)"), "no final report:\n{stdout}");
}
