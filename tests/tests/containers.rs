//! Root tests: a process in a mount namespace of its own, as in a container: with its own
//! copy of libc bind-mounted over the system's and its executable on a tmpfs only that
//! namespace sees, or chrooted into an overlay of copies of the fixture, ld.so and libc. The
//! host's paths name other files (the system's libc) or nothing (the executable), and a
//! chrooted process's paths are not even relative to its root: probes, unwind tables and
//! names must come from the files the process maps.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use leaktrace_integration_tests::*;
use serde_json::Value;

/// The C library the fixtures map, by its canonical path (the one /proc/PID/maps shows).
fn system_libc() -> PathBuf {
    let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("glibc present");
    std::fs::canonicalize(libc).unwrap()
}

/// The inside of the "container": a copy of libc (another inode) and an empty directory
/// that a tmpfs covers in the namespace, where the fixture is copied to.
struct Container {
    dir: tempfile::TempDir,
}

impl Container {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(system_libc(), dir.path().join("libc-copy.so.6")).unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        Self { dir }
    }

    /// Where the fixture runs from inside the namespace (empty outside it).
    fn exe(&self) -> PathBuf {
        self.dir.path().join("app/ct_leaky")
    }

    /// `unshare --mount` running a shell that bind-mounts the libc copy over the system's,
    /// mounts the tmpfs, copies the fixture there and execs it with `args`.
    fn command(&self, args: &str) -> Command {
        let dir = self.dir.path().display();
        let script = format!(
            "set -e; mount --bind {dir}/libc-copy.so.6 {libc}; mount -t tmpfs leaktrace-ct {dir}/app; \
             cp {fixture} {exe}; exec {exe} {args}",
            libc = system_libc().display(),
            fixture = leaky().display(),
            exe = self.exe().display(),
        );
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        command
    }
}

/// What a trace gave: the JSON report, leaktrace's stdout, the fixture's truth and banner.
struct Traced {
    report: Value,
    stdout: String,
    truth: Vec<Truth>,
    banner: String,
}

/// Starts `command` (which ends in `FIXTURE --wait`), attaches with `-p` once it is ready,
/// lets it work and exit.
fn trace_attached(mut command: Command) -> (Traced, u32) {
    let (mut child, mut lines) = spawn_waiting(&mut command);
    let pid = child.id();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args: Vec<String> =
        ["-p", &pid.to_string(), "--json", json.to_str().unwrap(), "--top", "100"].map(String::from).to_vec();
    let (tracer, banner) = start_tracing(&args);
    let seen = work_until_done(&mut child, &mut lines);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    let report = read_report(&json);
    assert_text_matches_truth(&stdout, &report, &parse_truth(&seen));
    (Traced { report, stdout, truth: parse_truth(&seen), banner }, pid)
}

/// `leaktrace -- COMMAND` to the end; the fixture's truth is in leaktrace's stdout.
fn trace_launched(command: Command) -> Traced {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut argv: Vec<String> = vec!["--json".into(), json.display().to_string(), "--top".into(), "100".into()];
    argv.push("--".into());
    argv.push(command.get_program().to_string_lossy().into_owned());
    argv.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    let output = Command::new(leaktrace_bin()).args(&argv).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report = read_report(&json);
    let truth = parse_truth(&stdout);
    assert_text_matches_truth(&stdout, &report, &truth);
    Traced { report, stdout, truth, banner: String::new() }
}

/// The fixture's frames are named and its stacks reach main; the glibc probed is the copy,
/// reached through the process's root.
fn assert_container_report(traced: &Traced, container: &Container, pid: u32) {
    let report = &traced.report;
    assert_matches_truth(report, &traced.truth, &container.exe());
    for t in &traced.truth {
        let stack = report["stacks"].as_array().unwrap().iter().find(|s| stack_symbols(s).contains(&t.site.as_str()));
        assert!(stack.is_some_and(|s| stack_symbols(s).contains(&"main")), "{}: {:#}", t.site, report["stacks"]);
    }
    let glibc: Vec<&str> = report["allocators"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["family"] == "glibc")
        .filter_map(|f| f["object"].as_str())
        .collect();
    let inside = format!("/proc/{pid}/root{}", system_libc().display());
    assert_eq!(glibc, [inside.as_str()], "the copy, through the process's root: {:#}", report["allocators"]);
    assert!(!Path::new(&container.exe()).exists(), "the executable is seen in the namespace only");
}

#[test]
fn process_in_its_own_mount_namespace_with_its_own_libc_is_traced_and_named() {
    require_root();
    let container = Container::new();
    let (traced, pid) = trace_attached(container.command("--wait"));
    assert!(traced.banner.contains(&format!("/proc/{pid}/root")), "{}", traced.banner);
    assert_container_report(&traced, &container, pid);
}

/// Launched: `leaktrace -- unshare … sh -c '…; exec FIXTURE'`. The shell is followed into the
/// namespace; at the exec the fixture's allocator is chosen again, among the files it maps,
/// before its first allocation.
#[test]
fn launched_into_its_own_mount_namespace_is_traced_exactly() {
    require_root();
    let container = Container::new();
    let traced = trace_launched(container.command(""));
    let report = &traced.report;
    assert_eq!(report["target"]["exe"], container.exe().display().to_string(), "{:#}", report["target"]);
    assert_matches_truth(report, &traced.truth, &container.exe());
    assert!(traced.stdout.contains("Final report: "));
}

/// A root of copies (the fixture, ld.so, libc) under an overlay, as container runtimes
/// mount images: the process is chrooted into it, in a mount namespace of its own.
struct Chroot {
    dir: tempfile::TempDir,
}

impl Chroot {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        for (from, to) in [
            (system_libc(), "lib/x86_64-linux-gnu/libc.so.6"),
            (std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap(), "lib64/ld-linux-x86-64.so.2"),
            (leaky().to_path_buf(), "ct_leaky"),
        ] {
            let to = lower.join(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, to).unwrap();
        }
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    fn command(&self, args: &str) -> Command {
        let dir = self.dir.path().display();
        let script = format!(
            "set -e; mount -t overlay overlay -o lowerdir={dir}/lower,upperdir={dir}/upper,workdir={dir}/work \
             {dir}/merged; exec chroot {dir}/merged /ct_leaky {args}"
        );
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        command
    }
}

/// Every site exact and named, in a report whose glibc is the copy, read and probed through
/// /proc/PID/map_files (the chrooted process's paths lead nowhere from the host).
fn assert_chroot_report(report: &Value, truth: &[Truth]) {
    // The executable as the process maps it (its path in its namespace, not its root).
    let module = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["frames"].as_array().unwrap())
        .find(|f| f["symbol"] == truth[0].site.as_str())
        .and_then(|f| f["module"].as_str())
        .unwrap_or_else(|| panic!("no frame named {}: {:#}", truth[0].site, report["stacks"]));
    assert!(module.ends_with("/ct_leaky"), "{module}");
    assert_matches_truth(report, truth, Path::new(module));
    for t in truth {
        let stack = report["stacks"].as_array().unwrap().iter().find(|s| stack_symbols(s).contains(&t.site.as_str()));
        assert!(stack.is_some_and(|s| stack_symbols(s).contains(&"main")), "{}: {:#}", t.site, report["stacks"]);
    }
    // Opened by its mapping: the paths /proc/PID/maps gives lead nowhere from here.
    let copies: Vec<&str> = report["allocators"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["family"] == "glibc")
        .filter_map(|f| f["object"].as_str())
        .filter(|o| o.contains("/map_files/"))
        .collect();
    assert!(!copies.is_empty(), "the copy of libc is probed: {:#}", report["allocators"]);
}

#[test]
fn chrooted_process_on_an_overlay_is_traced_and_named() {
    require_root();
    let (traced, pid) = trace_attached(Chroot::new().command("--wait"));
    assert_chroot_report(&traced.report, &traced.truth);
    assert!(traced.stdout.contains(&format!("glibc in /proc/{pid}/map_files/")), "{}", traced.stdout);
}

/// Launched: the shell execs `chroot`, which execs the fixture under the chroot's own ld.so,
/// a file no probe is on: the command is held at that exec until the new linker is hooked,
/// and its allocator is chosen at the linker's first library load.
#[test]
fn launched_into_a_chroot_on_an_overlay_is_traced_exactly() {
    require_root();
    let traced = trace_launched(Chroot::new().command(""));
    assert_chroot_report(&traced.report, &traced.truth);
}
