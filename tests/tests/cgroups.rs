//! Root tests: `--cgroup PATH` traces every process of a cgroup v2, those in it at the start
//! and one moved into it later, and none outside it; a missing cgroup and a cgroup v1
//! hierarchy are one clear error each.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command},
};

use leaktrace_integration_tests::*;
use serde_json::Value;

/// The cgroup v2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems).
fn unified_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let at = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
    });
    PathBuf::from(at.expect("a cgroup v2 hierarchy is mounted"))
}

/// A cgroup made for the test, removed at the end (its processes moved back to the root
/// first, should the test fail while they run).
struct TestCgroup {
    path: PathBuf,
    name: String,
}

impl TestCgroup {
    fn new() -> Self {
        let name = format!("leaktrace-test-{}", std::process::id());
        let path = unified_root().join(&name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path, name }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let left = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in left.lines() {
            let _ = std::fs::write(unified_root().join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

type Lines = std::io::Lines<std::io::BufReader<ChildStdout>>;

fn waiting_leaky() -> (Child, Lines) {
    spawn_waiting(Command::new(leaky()).arg("--wait"))
}

/// Per site, each holder's (bytes, count), by pid.
fn holders(report: &Value, site: &str) -> BTreeMap<u64, (u64, u64)> {
    let mut by_pid: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for stack in report["stacks"].as_array().unwrap().iter().filter(|s| stack_symbols(s).contains(&site)) {
        for h in stack["holders"].as_array().expect("several processes: stacks list their holders") {
            let entry = by_pid.entry(h["pid"].as_u64().unwrap()).or_default();
            entry.0 += h["bytes"].as_u64().unwrap();
            entry.1 += h["count"].as_u64().unwrap();
        }
    }
    by_pid
}

#[test]
fn cgroup_traces_exactly_its_processes_present_and_joining() {
    require_root();
    let cgroup = TestCgroup::new();
    let (mut a, mut a_lines) = waiting_leaky();
    let (mut b, mut b_lines) = waiting_leaky();
    let (mut outside, mut outside_lines) = waiting_leaky();
    let (mut late, mut late_lines) = waiting_leaky();
    cgroup.add(a.id());
    cgroup.add(b.id());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    // Named relative to the cgroup v2 mount.
    let args: Vec<String> = ["--cgroup", &cgroup.name, "--json", json.to_str().unwrap(), "--top", "100", "-o", "0"]
        .map(String::from)
        .to_vec();
    let (tracer, banner) = start_tracing(&args);
    assert!(banner.starts_with(&format!("Tracing pid {} ", a.id().min(b.id()))), "{banner}");
    let mut truths = BTreeMap::new();
    for (child, lines) in [(&mut a, &mut a_lines), (&mut b, &mut b_lines), (&mut outside, &mut outside_lines)] {
        truths.insert(child.id() as u64, parse_truth(&work_until_done(child, lines)));
    }
    // Moved in after the attach, before it allocates.
    cgroup.add(late.id());
    truths.insert(late.id() as u64, parse_truth(&work_until_done(&mut late, &mut late_lines)));
    for child in [&mut a, &mut b, &mut outside, &mut late] {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
    // The cgroup may get more processes: the trace ends on SIGINT.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &tracer.id().to_string()]).status();
    let output = tracer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let report = read_report(&json);
    let inside: Vec<u64> = [a.id(), b.id(), late.id()].map(u64::from).to_vec();
    let mut listed: Vec<u64> =
        report["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    listed.sort_unstable();
    let mut expected = inside.clone();
    expected.sort_unstable();
    assert_eq!(listed, expected, "exactly the processes in the cgroup: {:#}", report["processes"]);
    for t in &truths[&inside[0]] {
        let expected: BTreeMap<u64, (u64, u64)> = inside
            .iter()
            .map(|pid| {
                let own = truths[pid].iter().find(|o| o.site == t.site).unwrap();
                (*pid, (own.bytes, own.count))
            })
            .collect();
        assert_eq!(holders(&report, &t.site), expected, "site {}: {:#}", t.site, report["stacks"]);
    }
    assert_eq!(report["incomplete"], false, "losses: {}", report["lost"]);
    drop(cgroup);
    assert!(!unified_root().join(format!("leaktrace-test-{}", std::process::id())).exists());
}

/// A master in the cgroup forks its workers after the attach: each is traced from its first
/// instruction (a child starts in its parent's cgroup), exactly, with nothing asked to follow.
#[test]
fn cgroup_traces_the_children_its_processes_fork() {
    require_root();
    let cgroup = TestCgroup::new();
    let fixture = build_fixture("workers.c", "cgroup_workers", &["-O1", "-g", "-fno-omit-frame-pointer"]);
    let (mut master, mut lines) = spawn_waiting(&mut Command::new(fixture));
    cgroup.add(master.id());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args: Vec<String> = ["--cgroup", cgroup.path.to_str().unwrap(), "--json", json.to_str().unwrap(), "-o", "0"]
        .map(String::from)
        .to_vec();
    let (tracer, _) = start_tracing(&args);
    let seen = work_until_done(&mut master, &mut lines);
    drop(master.stdin.take());
    assert!(master.wait().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &tracer.id().to_string()]).status();
    let output = tracer.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let report = read_report(&json);
    // `TRUTH site pid bytes count`, one line per process.
    let mut expected: BTreeMap<String, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
    for line in seen.lines().filter_map(|l| l.strip_prefix("TRUTH ")) {
        let f: Vec<u64> = line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
        let site = line.split_whitespace().next().unwrap().to_string();
        expected.entry(site).or_default().insert(f[0], (f[1], f[2]));
    }
    assert_eq!(expected["worker_leak"].len(), 5, "four workers and a late one: {seen}");
    for (site, by_pid) in &expected {
        assert_eq!(&holders(&report, site), by_pid, "site {site}: {:#}", report["stacks"]);
    }
    assert_eq!(report["processes"].as_array().unwrap().len(), 6, "{:#}", report["processes"]);
    assert_eq!(report["incomplete"], false, "losses: {}", report["lost"]);
}

#[test]
fn a_missing_cgroup_is_one_clear_error() {
    require_root();
    let output = run_leaktrace(&["--cgroup", "leaktrace-no-such-cgroup"]);
    assert_one_line_error(&output, "--cgroup leaktrace-no-such-cgroup: no such cgroup");
}

#[test]
fn a_cgroup_v1_hierarchy_is_one_clear_error() {
    require_root();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let v1 = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup")).then(|| f[1].to_string())
    });
    // A system without cgroup v1 hierarchies has nothing to refuse here.
    let Some(v1) = v1 else { return };
    assert!(Path::new(&v1).is_dir());
    let output = run_leaktrace(&["--cgroup", &v1]);
    assert_one_line_error(&output, "is in a cgroup v1 hierarchy; --cgroup needs cgroup v2");
}
