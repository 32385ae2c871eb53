//! Processes: the workload's line protocol, tracer children, /proc readings and rusage.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{channel, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// Lines read from a child's stream, each with the time it arrived.
pub struct Lines {
    rx: Receiver<(Instant, String)>,
    /// Every line seen so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `stream` on a thread.
    pub fn spawn(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self { rx, seen: Vec::new() }
    }

    /// Waits for a line satisfying `wanted`; None at EOF or after `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return Some((at, line));
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Reads everything until EOF (or `timeout`) and returns all lines seen.
    pub fn drain(&mut self, timeout: Duration) -> &[String] {
        let _ = self.wait_for(timeout, |_| false);
        &self.seen
    }
}

/// A workload started with `--wait`: it printed `ready PID` and waits for a line on stdin.
pub struct Waiting {
    /// The child (the workload, or the tool that runs it).
    pub child: Child,
    /// The workload's own pid, as it printed it.
    pub pid: u32,
    stdin: Option<ChildStdin>,
    /// Its standard output.
    pub out: Lines,
}

impl Waiting {
    /// Spawns `command` (whose last arguments run the workload with `--wait`) and waits for
    /// `ready PID`.
    pub fn spawn(command: &mut Command, timeout: Duration) -> Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdin = child.stdin.take();
        let mut out = Lines::spawn(child.stdout.take().expect("piped"));
        let Some((_, line)) = out.wait_for(timeout, |l| l.starts_with("ready ")) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} never printed `ready`; output: {:?}", out.seen);
        };
        let pid = line["ready ".len()..].trim().parse().context("reading the workload's pid")?;
        Ok(Self { child, pid, stdin, out })
    }

    /// Lets it run.
    pub fn go(&mut self) -> Result<Instant> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin already closed"))?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(Instant::now())
    }

    /// Waits for `done` and returns every line printed so far.
    pub fn wait_done(&mut self, timeout: Duration) -> Result<Vec<String>> {
        if self.out.wait_for(timeout, |l| l == "done").is_none() {
            bail!("the workload did not finish in {timeout:?}; output: {:?}", self.out.seen);
        }
        Ok(self.out.seen.clone())
    }

    /// Closes its stdin so it exits; waits for it (and the tool around it) to end.
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<String>> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the workload did not exit after its stdin was closed");
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.out.drain(Duration::from_secs(10));
        Ok(self.out.seen)
    }
}

/// A tracer child (leaktrace, bpftrace) with both output streams read on threads.
pub struct TracerProcess {
    /// The child.
    pub child: Child,
    /// Its stdout.
    pub out: Lines,
    /// Its stderr.
    pub err: Lines,
}

impl TracerProcess {
    /// Spawns `command` with stdout and stderr piped.
    pub fn spawn(command: &mut Command) -> Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let out = Lines::spawn(child.stdout.take().expect("piped"));
        let err = Lines::spawn(child.stderr.take().expect("piped"));
        Ok(Self { child, out, err })
    }

    /// Waits until a line on stdout or stderr satisfies `wanted`.
    pub fn wait_for_either(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((at, _)) = self.err.wait_for(Duration::from_millis(20), &wanted) {
                return Ok(at);
            }
            if let Some((at, _)) = self.out.wait_for(Duration::from_millis(20), &wanted) {
                return Ok(at);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.err.drain(Duration::from_secs(1));
                bail!("the tracer exited ({status}) before it was ready; stderr: {:?}", self.err.seen);
            }
        }
        bail!("the tracer was not ready after {timeout:?}; stderr: {:?}", self.err.seen)
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Sends `signal` until it exits (every few seconds: a signal that arrives while a
    /// tracer is still setting up may be lost), then waits as [`Self::wait`] does.
    pub fn stop(self, signal: i32, timeout: Duration) -> Result<(i32, Usage, Vec<String>, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        loop {
            self.signal(signal);
            let resend = Instant::now() + Duration::from_secs(5);
            while Instant::now() < resend {
                // SAFETY: siginfo_t is plain data, for which all-zero bytes are a valid value.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: waitid writes one siginfo_t into `info`; with WNOWAIT it only looks,
                // and the child is reaped by `wait` below.
                let ret = unsafe {
                    libc::waitid(libc::P_PID, self.child.id(), &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
                };
                // SAFETY: si_pid is valid for a child state change reported by waitid.
                if ret == 0 && unsafe { info.si_pid() } != 0 {
                    return self.wait(timeout);
                }
                thread::sleep(Duration::from_millis(5));
            }
            if Instant::now() > deadline {
                return self.wait(Duration::ZERO);
            }
        }
    }

    /// Waits for it to exit (killing it after `timeout`) and returns its own resource usage.
    pub fn wait(mut self, timeout: Duration) -> Result<(i32, Usage, Vec<String>, Vec<String>)> {
        let pid = self.child.id() as i32;
        let deadline = Instant::now() + timeout;
        let mut status = 0;
        // SAFETY: rusage is plain data, filled by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: reaps our own child; std's Child is not waited on afterwards.
            let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if ret == pid {
                break;
            }
            if ret < 0 {
                bail!("wait4: {}", std::io::Error::last_os_error());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                // SAFETY: as above.
                unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
                bail!("the tracer did not exit in {timeout:?}; stderr: {:?}", self.err.drain(Duration::from_secs(1)));
            }
            thread::sleep(Duration::from_millis(2));
        }
        let out = self.out.drain(Duration::from_secs(10)).to_vec();
        let err = self.err.drain(Duration::from_secs(10)).to_vec();
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
        Ok((code, Usage::from(&usage), out, err))
    }
}

/// A process's own resource usage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set, MiB.
    pub max_rss_mib: f64,
}

impl From<&libc::rusage> for Usage {
    fn from(u: &libc::rusage) -> Self {
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Self { cpu_s: secs(u.ru_utime) + secs(u.ru_stime), max_rss_mib: u.ru_maxrss as f64 / 1024.0 }
    }
}

/// utime + stime of a process in clock ticks, from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A value from /proc/PID/status in kB (VmRSS, VmHWM).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// The eBPF program ids and the summed map `memlock` bytes behind a process's descriptors.
pub fn bpf_fds(pid: u32) -> (Vec<u32>, u64) {
    let mut progs = Vec::new();
    let mut map_bytes = 0;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return (progs, map_bytes) };
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
        let field =
            |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok());
        if let Some(id) = field("prog_id") {
            if !progs.contains(&(id as u32)) {
                progs.push(id as u32);
            }
        } else if field("map_id").is_some() {
            map_bytes += field("memlock").unwrap_or(0);
        }
    }
    (progs, map_bytes)
}

/// Number of perf event descriptors a process holds (bpftrace holds one per attached probe).
pub fn perf_event_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    dir.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[perf_event]"))
        .count()
}

/// Pids whose command name (comm) is `comm`.
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

/// Runs a command to completion, capturing stdout; fails on a non-zero exit.
pub fn output(command: &mut Command) -> Result<String> {
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes a sysctl under /proc/sys, returning the old value.
pub fn set_sysctl(path: &Path, value: &str) -> Result<String> {
    let old = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::write(path, value).with_context(|| format!("writing {}", path.display()))?;
    Ok(old.trim().to_string())
}
