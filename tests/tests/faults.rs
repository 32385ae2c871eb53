//! Root tests of what happens around a trace when things go wrong: leaktrace killed at random
//! moments, a target stopped by its user or killed, signals, a closed or stalled stdout, a
//! full disk, a full allocation map. Each case checks what the faults fixture
//! (`tests/fixtures/faults_main.c`) says it did, and that nothing is left behind: no
//! stopped target, no probe of ours.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use leaktrace_integration_tests::*;
use serde_json::Value;

/// The fixture program and the library it loads in a loop.
fn fixture() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let flags = ["-O1", "-g", "-fno-omit-frame-pointer"];
        let plugin =
            build_fixture("faults_plugin.c", "faults_plugin.so", &[&flags[..], &["-shared", "-fPIC"]].concat());
        (build_fixture("faults_main.c", "faults_main", &flags), plugin)
    })
}

fn main_program() -> &'static str {
    fixture().0.to_str().unwrap()
}

fn plugin() -> &'static str {
    fixture().1.to_str().unwrap()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid as i32, signal) };
}

/// The process state letter of `pid` (R, S, T, Z…), None once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits up to `within` for `check`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Cycles the fixture has written to its progress file.
fn progress(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// True when the fixture's progress moves on within a few seconds: it is doing its work.
fn keeps_working(path: &Path) -> bool {
    let before = progress(path);
    eventually(Duration::from_secs(3), || progress(path) > before)
}

/// The children of `pid`, with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            out.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    out
}

/// The BPF links `pid` holds open (each uprobe or uprobe session of ours is one).
fn link_ids(pid: u32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("anon_inode:bpf_link")))
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()));
            info.ok()?.lines().find_map(|l| l.strip_prefix("link_id:").and_then(|id| id.trim().parse().ok()))
        })
        .collect()
}

/// True while the kernel still has the BPF link `id`.
fn link_exists(id: u32) -> bool {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: BPF_LINK_GET_FD_BY_ID reads `link_id` (and zero flags) from the attribute.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_GET_FD_BY_ID, attr.as_mut_ptr(), 16 as libc::c_long) };
    if fd >= 0 {
        // SAFETY: the descriptor was just returned to us.
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

/// A small xorshift generator, seeded from the clock and printed, so a failing run can be
/// replayed with FAULTS_SEED.
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("FAULTS_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, max_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % max_ms)
    }
}

/// Stops leaktrace where it stands, notes its links, lets the target run into its next
/// library load (where a launched one is stopped by a probe, with no leaktrace to resume it),
/// and kills leaktrace (SIGKILL). Returns the links it held, and whether `target` was
/// stopped just before the kill.
fn freeze_and_kill(leaktrace: &mut Child, target: Option<u32>) -> (Vec<u32>, bool) {
    let pid = leaktrace.id();
    signal(pid, libc::SIGSTOP);
    eventually(Duration::from_secs(2), || matches!(state(pid), Some('T') | Some('Z') | None));
    let links = link_ids(pid);
    // The fixture loads its library every 2-3 ms.
    std::thread::sleep(Duration::from_millis(30));
    let stopped = target.and_then(state) == Some('T');
    signal(pid, libc::SIGKILL);
    leaktrace.wait().unwrap();
    (links, stopped)
}

fn assert_links_released(links: &[u32], moment: Duration) {
    assert!(
        eventually(Duration::from_secs(3), || links.iter().all(|&id| !link_exists(id))),
        "uprobe links {links:?} outlived leaktrace killed at {moment:?}"
    );
}

/// When, in a trace of `--duration 1`, leaktrace is killed: the run's number picks the phase
/// (a quarter of the runs while it starts and attaches, half while it traces, a quarter
/// around the end: final report, exports, detach), a random draw the moment in it.
fn kill_moment(run: u32, moments: &mut Moments, leaktrace: &Child, stderr: &Lines) -> Duration {
    let spawned = Instant::now();
    if run.is_multiple_of(4) {
        std::thread::sleep(moments.below(1500));
    } else {
        let tracing = || stderr.lock().unwrap().iter().any(|l| l.starts_with("Tracing pid"));
        let started =
            eventually(Duration::from_secs(30), || tracing() || matches!(state(leaktrace.id()), None | Some('Z')));
        assert!(started, "leaktrace never started tracing");
        let after = if run % 4 == 3 { Duration::from_millis(950) + moments.below(400) } else { moments.below(900) };
        std::thread::sleep(after);
    }
    spawned.elapsed()
}

/// Lines of stderr, as they come.
type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A leaktrace run with its stderr collected line by line on a thread.
fn spawn_watched(args: &[&str]) -> (Child, Lines) {
    let mut child = Command::new(leaktrace_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("leaktrace runs");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines = Lines::default();
    let sink = lines.clone();
    std::thread::spawn(move || stderr.lines().map_while(|l| l.ok()).for_each(|l| sink.lock().unwrap().push(l)));
    (child, lines)
}

/// A leaktrace run with its stderr collected on a thread.
fn spawn_leaktrace(args: &[&str], stdout: Stdio) -> (Child, std::thread::JoinHandle<String>) {
    let mut child =
        Command::new(leaktrace_bin()).args(args).stdout(stdout).stderr(Stdio::piped()).spawn().expect("leaktrace runs");
    let mut stderr = child.stderr.take().unwrap();
    let collected = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    (child, collected)
}

/// Starts the fixture with `args`, stdin and stdout piped; returns it, the pid its "ready"
/// line names, and the rest of its stdout.
fn start_fixture(args: &[&str]) -> (Child, u32, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child =
        Command::new(main_program()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = line_starting(&mut lines, "ready ")[6..].parse().unwrap();
    (child, pid, lines)
}

/// Waits for `child` to end, at most `within`.
fn wait_for(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads lines from `lines` until one starts with `prefix`.
fn line_starting(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> String {
    for line in lines {
        let line = line.unwrap();
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("no line starting with {prefix:?}");
}

/// The truth the hold mode prints: (bytes, count).
fn hold_truth(line: &str) -> (u64, u64) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..2], ["TRUTH", "hold_blocks"], "{line}");
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// `leaktrace --json …` killed (SIGKILL) at 20 random moments while it launches, traces and
/// reports on a command that loads and unloads a library in a loop (each load stops it until
/// its unwind table is updated): the command is never left stopped, it goes on working, no
/// uprobe link of ours survives, and the guardian is gone.
#[test]
fn sigkill_of_leaktrace_never_leaves_a_launched_command_stopped() {
    require_root();
    let mut moments = Moments::new();
    let dir = tempfile::tempdir().unwrap();
    for run in 0..20 {
        let progress_file = dir.path().join(format!("progress-{run}"));
        let json = dir.path().join("report.json");
        let args = ["--duration", "1", "--json", json.to_str().unwrap(), "--", main_program(), "loop", plugin()];
        let mut args = args.to_vec();
        args.push(progress_file.to_str().unwrap());
        let (mut leaktrace, stderr) = spawn_watched(&args);
        let moment = kill_moment(run, &mut moments, &leaktrace, &stderr);
        let family = children(leaktrace.id());
        // The command once it runs its own program (before exec, the child has leaktrace's).
        let target = family.iter().find(|(_, cmd)| cmd.starts_with(main_program())).map(|(pid, _)| *pid);
        let guardian = family.iter().find(|(_, cmd)| cmd.contains("guard-stops")).map(|(pid, _)| *pid);
        let (links, stopped_at_kill) = freeze_and_kill(&mut leaktrace, target);
        if let Some(target) = target.filter(|&t| state(t).is_some_and(|s| s != 'Z')) {
            assert!(
                eventually(Duration::from_secs(2), || state(target) != Some('T')),
                "run {run}: the command stayed stopped after leaktrace was killed at {moment:?}"
            );
            // Stays running: not stopped again by a probe in flight.
            std::thread::sleep(Duration::from_millis(300));
            assert_ne!(state(target), Some('T'), "run {run}: stopped again after {moment:?}");
            // Unless the trace had ended and sent it SIGTERM, as it does to launched commands.
            assert!(
                keeps_working(&progress_file) || matches!(state(target), None | Some('Z')),
                "run {run}: the command no longer works after {moment:?}"
            );
            signal(target, libc::SIGKILL);
        }
        if let Some(guardian) = guardian {
            assert!(
                eventually(Duration::from_secs(3), || matches!(state(guardian), None | Some('Z'))),
                "run {run}: the guardian outlived leaktrace"
            );
        }
        assert_links_released(&links, moment);
        eprintln!(
            "run {run}: killed at {moment:?}, {} links, target {target:?}{}",
            links.len(),
            if stopped_at_kill { ", stopped by a probe at the kill" } else { "" }
        );
    }
}

/// A process that loads and unloads a library in a loop, traced with -p by leaktrace
/// killed (SIGKILL) at 20 random moments: it is never seen stopped, not even for an
/// instant, it goes on working, and no uprobe link of ours survives.
#[test]
fn sigkill_of_leaktrace_never_stops_an_attached_process() {
    require_root();
    let mut moments = Moments::new();
    let dir = tempfile::tempdir().unwrap();
    let progress_file = dir.path().join("progress");
    let (mut target, pid, _) = start_fixture(&["loop", plugin(), progress_file.to_str().unwrap()]);
    let pid_arg = pid.to_string();
    for run in 0..20 {
        let (mut leaktrace, stderr) = spawn_watched(&["-p", &pid_arg, "--duration", "1"]);
        // Watch the target the whole time: one sight of it stopped fails the test.
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watch = {
            let watching = watching.clone();
            std::thread::spawn(move || {
                let mut seen_stopped = 0;
                while watching.load(std::sync::atomic::Ordering::SeqCst) {
                    seen_stopped += u32::from(state(pid) == Some('T'));
                    std::thread::sleep(Duration::from_millis(1));
                }
                seen_stopped
            })
        };
        let moment = kill_moment(run, &mut moments, &leaktrace, &stderr);
        let (links, _) = freeze_and_kill(&mut leaktrace, None);
        watching.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(watch.join().unwrap(), 0, "run {run}: the target was seen stopped while traced");
        for _ in 0..25 {
            assert_ne!(state(pid), Some('T'), "run {run}: the target was stopped after leaktrace died at {moment:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(keeps_working(&progress_file), "run {run}: the target no longer works after {moment:?}");
        assert_links_released(&links, moment);
        eprintln!("run {run}: killed at {moment:?}, {} links", links.len());
    }
    target.kill().unwrap();
    target.wait().unwrap();
}

/// The shell's view: the traced process is the child of a parent that waits for it with
/// WUNTRACED, as a shell waits for its foreground job. Traced with -p through a few seconds
/// of library loads and unloads, it is never reported stopped; the loads were seen (the
/// table was updated), and allocations made by a library before its table was ready are
/// counted and end their stacks at the library, never in a wrong frame.
#[test]
fn job_control_never_sees_an_attached_process_stopped() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let progress_file = dir.path().join("progress");
    let json = dir.path().join("report.json");
    let (mut parent, child, lines) = start_fixture(&["parent", plugin(), progress_file.to_str().unwrap()]);
    let output = run_leaktrace(&[
        "-p",
        &child.to_string(),
        "--duration",
        "3",
        "--top",
        "1000",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let cycles = progress(&progress_file);
    signal(child, libc::SIGKILL);
    let said: Vec<String> = lines.map(|l| l.unwrap()).collect();
    parent.wait().unwrap();
    let stops = said.iter().filter(|l| *l == "STOPPED").count();
    assert_eq!(stops, 0, "the parent saw its child stopped {stops} times");
    assert_eq!(said.last().map(String::as_str), Some("ENDED"));
    let report = read_report(&json);
    let unwind = &report["unwind"];
    let updates = unwind["table_updates"].as_u64().unwrap();
    let not_ready = unwind["table_not_ready"].as_u64().unwrap_or(0);
    eprintln!(
        "{cycles} cycles; {updates} table updates; {not_ready} allocations before the table was ready; stacks by end {}",
        unwind["stacks_by_end"]
    );
    // Events come in batches (as many as a busy machine lets pile up): one update at least.
    assert!(updates > 0, "library loads were not seen: {unwind}");
    // The constructor of each freshly loaded library allocates within microseconds of the
    // load, long before user space can have read the event.
    assert!(not_ready > 0, "no allocation counted as made before its library's table was ready: {unwind}");
    let plugin_name = plugin();
    for stack in report["stacks"].as_array().unwrap() {
        if stack["cut_short"] == "library not in table yet" {
            let frames = stack["frames"].as_array().unwrap();
            assert!(
                frames.iter().all(|f| f["module"].as_str() == Some(plugin_name)),
                "a stack cut at a library not in the table yet has a frame elsewhere: {stack}"
            );
        }
    }
}

/// The user's own SIGSTOP of a launched command is theirs: leaktrace does not resume it
/// while it traces, and after leaktrace is killed the guardian does not either.
#[test]
fn a_users_stop_of_a_launched_command_survives_sigkill_of_leaktrace() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let progress_file = dir.path().join("progress");
    let (mut leaktrace, _stderr) =
        spawn_leaktrace(&["--", main_program(), "spin", progress_file.to_str().unwrap()], Stdio::null());
    assert!(eventually(Duration::from_secs(20), || progress(&progress_file) > 0), "the command never ran");
    let (target, _) = children(leaktrace.id()).into_iter().find(|(_, cmd)| cmd.contains(" spin ")).unwrap();
    signal(target, libc::SIGSTOP);
    assert!(eventually(Duration::from_secs(2), || state(target) == Some('T')));
    // Several of leaktrace's refreshes pass: none may resume it.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(state(target), Some('T'), "leaktrace resumed a command its user stopped");
    let (links, _) = freeze_and_kill(&mut leaktrace, None);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(state(target), Some('T'), "the guardian resumed a command its user stopped");
    signal(target, libc::SIGCONT);
    assert!(keeps_working(&progress_file));
    signal(target, libc::SIGKILL);
    assert_links_released(&links, Duration::ZERO);
}

/// Launches `hold N SECONDS` under leaktrace with `options`, reads the fixture's truth from
/// leaktrace's stdout (which the command shares), and returns the run.
struct HoldRun {
    leaktrace: Child,
    /// None once the test closed it.
    stdout: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
    stderr: std::thread::JoinHandle<String>,
    truth: (u64, u64),
    json: PathBuf,
    _dir: tempfile::TempDir,
}

impl HoldRun {
    fn start(options: &[&str], blocks: u64, seconds: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("report.json");
        let (blocks, seconds) = (blocks.to_string(), seconds.to_string());
        let mut args = options.to_vec();
        args.extend(["--json", json.to_str().unwrap(), "--", main_program(), "hold", &blocks, &seconds]);
        let (mut leaktrace, stderr) = spawn_leaktrace(&args, Stdio::piped());
        let mut stdout = BufReader::new(leaktrace.stdout.take().unwrap()).lines();
        let truth = hold_truth(&line_starting(&mut stdout, "TRUTH "));
        HoldRun { leaktrace, stdout: Some(stdout), stderr, truth, json, _dir: dir }
    }

    /// The command's pid.
    fn target(&self) -> u32 {
        children(self.leaktrace.id()).into_iter().find(|(_, cmd)| cmd.contains(" hold ")).unwrap().0
    }

    /// Waits for leaktrace to end; returns its exit status, stdout and stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String, String, Value) {
        let status = wait_for(&mut self.leaktrace, Duration::from_secs(30)).expect("leaktrace ends");
        let stdout: Vec<String> = self.stdout.into_iter().flatten().map_while(|l| l.ok()).collect();
        let stderr = self.stderr.join().unwrap();
        assert!(!stderr.contains("panicked"), "{stderr}");
        let report = read_report(&self.json);
        assert_eq!(totals_for(&report, "hold_blocks"), self.truth, "{:#}", report["stacks"]);
        (status, stdout.join("\n"), stderr, report)
    }
}

/// The command is killed (SIGKILL) mid-trace: the final report is printed and written,
/// exact, as for any exit of the target, and leaktrace exits with status 0.
#[test]
fn a_launched_command_killed_mid_trace_gets_its_final_report() {
    require_root();
    let run = HoldRun::start(&[], 300, 60);
    std::thread::sleep(Duration::from_millis(300));
    signal(run.target(), libc::SIGKILL);
    let (status, stdout, _, report) = run.finish();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains(", target exited:"), "{stdout}");
    assert_eq!(report["target_exited"], true);
}

/// An attached process exits while leaktrace produces its final report (SIGINT, then the
/// process ends at once): the report is printed and written, exact, exit status 0.
#[test]
fn a_target_exiting_during_the_final_report_gets_it() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (mut target, pid, mut lines) = start_fixture(&["hold", "400", "0"]);
    // `-o 0`: the report is taken while the target still runs, and the blocks are young.
    let args = ["-p", &pid.to_string(), "-o", "0", "--json", json.to_str().unwrap()].map(String::from);
    let (mut leaktrace, _) = start_tracing(&args);
    let mut stdin = target.stdin.take().unwrap();
    stdin.write_all(b"go").unwrap();
    let truth = hold_truth(&line_starting(&mut lines, "TRUTH "));
    std::thread::sleep(Duration::from_millis(200));
    signal(leaktrace.id(), libc::SIGINT);
    drop(stdin);
    target.wait().unwrap();
    let status = wait_for(&mut leaktrace, Duration::from_secs(30)).expect("leaktrace ends");
    let mut stdout = String::new();
    leaktrace.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("Final report"), "{stdout}");
    assert_eq!(totals_for(&read_report(&json), "hold_blocks"), truth);
}

/// `--max-allocs 1000` against 5,000 held blocks: exactly the first 1,000 are tracked, and
/// the report says exactly 4,000 were not (the fixture allocates nothing else).
#[test]
fn a_full_allocation_map_is_counted_exactly() {
    require_root();
    let run = HoldRun::start(&["--max-allocs", "1000"], 5000, 1);
    let (status, stdout, _, report) = {
        // The truth says 5,000; leaktrace could track 1,000 of them.
        let truth = run.truth;
        assert_eq!(truth, (5000 * 64, 5000));
        let mut run = run;
        run.truth = (1000 * 64, 1000);
        run.finish()
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(report["lost"]["allocs_map_full"], 4000, "{}", report["lost"]);
    assert_eq!(report["totals"]["count"], 1000);
    assert_eq!(report["activity"]["alloc_calls"], 5000);
    assert!(stdout.contains("4000 allocations not tracked (allocation map full, raise --max-allocs)"), "{stdout}");
}

/// SIGHUP (a closed terminal or SSH session) ends the trace as SIGTERM does: final report,
/// files written, the command ended, exit status 0.
#[test]
fn sighup_ends_the_trace_with_the_final_report() {
    require_root();
    let run = HoldRun::start(&["-o", "0"], 200, 60);
    let target = run.target();
    signal(run.leaktrace.id(), libc::SIGHUP);
    let (status, stdout, _, _) = run.finish();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains(", hung up:"), "{stdout}");
    assert!(eventually(Duration::from_secs(5), || matches!(state(target), None | Some('Z'))));
}

/// stdout closed by its reader (`leaktrace … | head -1`): the trace ends quietly, the JSON
/// is still written, exact, exit status 0.
#[test]
fn a_closed_stdout_ends_the_trace_with_the_files_written() {
    require_root();
    let mut run = HoldRun::start(&["0.2", "-o", "0"], 200, 60);
    // Like `head -1`: one line of the reports, then the reader is gone.
    run.stdout.as_mut().unwrap().next().unwrap().unwrap();
    drop(run.stdout.take());
    let (status, _, stderr, _) = run.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(stderr.contains("Wrote JSON report"), "{stderr}");
}

/// A JSON report that does not fit on its disk (an 8 KiB tmpfs): one clear error line, a
/// non-zero exit, and no file at all, neither a truncated report nor a temporary file.
#[test]
fn a_full_disk_leaves_no_truncated_report() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let status =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"]).arg(dir.path()).status().unwrap();
    assert!(status.success(), "mounting a tmpfs");
    let json = dir.path().join("report.json");
    // Every allocation listed: far more than 8 KiB of JSON.
    let output = run_leaktrace(&["-a", "--json", json.to_str().unwrap(), "--", main_program(), "hold", "500", "1"]);
    let listing: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let _ = Command::new("umount").arg(dir.path()).status();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("leaktrace: error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("report.json") && errors[0].contains("No space left on device"), "{stderr}");
    assert!(listing.is_empty(), "files left on the full disk: {listing:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("Final report"));
}

/// stdout is a pipe nobody reads (full after the first reports): SIGINT still ends the trace
/// and the JSON is written; leaktrace then waits to print the final report, and a second
/// SIGINT ends it at once, saying in one line what was not written.
#[test]
fn sigint_with_a_stalled_stdout_then_a_second_sigint() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args = ["0.1", "-a", "-o", "0", "--json", json.to_str().unwrap(), "--", main_program(), "hold", "5000", "60"];
    // stdout is piped and never read.
    let (mut leaktrace, stderr) = spawn_leaktrace(&args, Stdio::piped());
    // The command has its blocks once it prints its truth (write, blocked on the full pipe)
    // or sleeps (clock_nanosleep).
    let holding = || {
        let Some((target, _)) = children(leaktrace.id()).into_iter().find(|(_, cmd)| cmd.contains(" hold ")) else {
            return false;
        };
        let syscall = std::fs::read_to_string(format!("/proc/{target}/syscall")).unwrap_or_default();
        syscall.starts_with("1 ") || syscall.starts_with("230 ")
    };
    assert!(eventually(Duration::from_secs(30), holding), "the command never held its blocks");
    // Each report lists 5,000 allocations: the 64 KiB pipe is full after the first.
    std::thread::sleep(Duration::from_secs(1));
    signal(leaktrace.id(), libc::SIGINT);
    assert!(eventually(Duration::from_secs(20), || json.exists()), "SIGINT was not acted on while stdout was full");
    assert!(wait_for(&mut leaktrace, Duration::from_millis(500)).is_none(), "ended without printing its report");
    signal(leaktrace.id(), libc::SIGINT);
    let status = wait_for(&mut leaktrace, Duration::from_secs(5)).expect("a second SIGINT ends leaktrace at once");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert_eq!(last, "leaktrace: stopped during the final report; not written: the final report", "{stderr}");
    assert_eq!(totals_for(&read_report(&json), "hold_blocks"), (5000 * 64, 5000));
}

/// stderr a pipe whose reader left (`2>&1 | head` that ended, a closed SSH session): the
/// messages leaktrace writes there are lost, but the trace runs to its end, exact, with its
/// report written and a clean exit (a panic on the first message would end it with none).
#[test]
fn a_closed_stderr_loses_the_messages_and_nothing_else() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the read end is ours and closed once; the write end is handed to the child.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is an open descriptor that nothing else owns.
    let stderr = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let output = Command::new(leaktrace_bin())
        .args(["--json", json.to_str().unwrap(), "--"])
        .arg(leaky())
        .stderr(Stdio::from(stderr))
        .output()
        .expect("leaktrace runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Final report"), "{stdout}");
    assert_matches_truth(&read_report(&json), &parse_truth(&stdout), leaky());
}
