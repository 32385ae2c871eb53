//! The guardian: a small process that resumes the launched command if leaktrace dies while
//! one of its probes holds it stopped.
//!
//! A launched command is stopped (SIGSTOP) at library loads and at exit, and leaktrace
//! resumes it once its tables are updated. If leaktrace is killed in between (`kill -9`, the
//! OOM killer), nothing would resume it. So leaktrace re-executes itself as a hidden
//! command (`leaktrace guard-stops`) in its own session, ignoring the terminal's and the
//! usual stop signals, and hands it two descriptors: the read end of a pipe whose write end
//! only leaktrace holds, and the `HELD` map, in which the probes mark each process before
//! they stop it (and leaktrace clears the mark before it resumes it). When the pipe reaches end of file without the
//! "done" byte, leaktrace died: the guardian resumes every process still marked, a few times
//! over to cover a probe that was between its mark and its stop, and exits. A process
//! stopped by anyone else carries no mark and stays stopped.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{
    fcntl::OFlag,
    sys::signal::{kill, Signal},
    unistd::{pipe2, Pid},
};

use crate::{
    bpf::HeldMap,
    error::{Error, Result},
};

/// The first argument that makes leaktrace the guardian (recognized in `main`, before the
/// command line is parsed).
pub const SUBCOMMAND: &str = "guard-stops";
/// Where the guardian finds the pipe's read end.
const PIPE_FD: RawFd = 3;
/// Where the guardian finds the `HELD` map.
const MAP_FD: RawFd = 4;
/// Written by leaktrace when it ends normally, having resumed its targets itself.
const DONE: u8 = b'd';
/// Resume passes after leaktrace died, and the pause between them: a probe that marked a
/// process just before leaktrace died queues its stop a few microseconds later, and the
/// kernel removes the probes within milliseconds of leaktrace's exit.
const PASSES: u32 = 5;
const PASS_PAUSE: Duration = Duration::from_millis(50);

/// A running guardian, seen from leaktrace.
pub struct Guardian {
    pipe: Option<File>,
    child: Child,
}

impl Guardian {
    /// Starts the guardian of the processes marked in `held`.
    pub fn spawn(held: OwnedFd) -> Result<Self> {
        let spawn_error = |e: std::io::Error| Error::io("starting the guardian process", e);
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
        let (read_fd, held_fd) = (read.as_raw_fd(), held.as_raw_fd());
        let mut command = Command::new("/proc/self/exe");
        command.arg(SUBCOMMAND).stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (dup2, setsid, signal); it allocates nothing. dup2 gives the copies no
        // close-on-exec flag, so exactly these two descriptors survive the exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(read_fd, PIPE_FD) < 0 || libc::dup2(held_fd, MAP_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Its own session: the terminal's SIGINT, SIGHUP and SIGTSTP go to leaktrace's
                // process group, not to it. Ignored signals stay ignored across exec.
                libc::setsid();
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
                    libc::signal(signal, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(spawn_error)?;
        drop(read);
        Ok(Self { pipe: Some(File::from(write)), child })
    }

    /// leaktrace ends normally, its targets resumed: the guardian just exits.
    pub fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(&[DONE]);
        }
        let _ = self.child.wait();
    }
}

/// The guardian's whole life (`leaktrace guard-stops`): wait for leaktrace to end, and resume
/// what it left stopped if it died.
pub fn run() -> Result<()> {
    // SAFETY: leaktrace started this process with these two descriptors open (see `spawn`),
    // and nothing else in it uses them.
    let (mut pipe, held) = unsafe { (File::from_raw_fd(PIPE_FD), OwnedFd::from_raw_fd(MAP_FD)) };
    let held = HeldMap::from_fd(held)?;
    let mut byte = [0u8; 1];
    let done = loop {
        match pipe.read(&mut byte) {
            Ok(0) => break false,
            Ok(_) => break byte[0] == DONE,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    if done {
        return Ok(());
    }
    let mut resumed = std::collections::BTreeSet::new();
    for pass in 0..PASSES {
        if pass > 0 {
            std::thread::sleep(PASS_PAUSE);
        }
        for tgid in held.marked() {
            if kill(Pid::from_raw(tgid as i32), Signal::SIGCONT).is_ok() {
                resumed.insert(tgid);
            }
        }
    }
    for tgid in resumed {
        crate::say!("leaktrace: ended abnormally; resumed pid {tgid}, which its probe had stopped");
    }
    Ok(())
}
