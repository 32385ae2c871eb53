//! Launching a command so that its very first allocation is traced.
//!
//! The child is forked by `std::process::Command` and held in `pre_exec` until the probes
//! are attached to its pid; only then is it let through to `exec`. The uprobes are scoped to
//! that pid and stay with it across exec, so the loader's and main's first mallocs are seen.
//! `Command::spawn` blocks until exec succeeds, so it runs on its own thread while the main
//! thread reads the child's pid from a pipe and attaches.

use std::{
    fs::File,
    io::{Read, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command},
    thread::JoinHandle,
};

use nix::{fcntl::OFlag, unistd::pipe2};

use crate::error::{Error, Result};

/// A forked child waiting at the gate before exec.
pub struct Held {
    /// Its pid.
    pub pid: u32,
    program: String,
    gate: File,
    spawner: JoinHandle<std::io::Result<Child>>,
}

/// Forks `program args…`, stopping the child just before exec.
pub fn hold(program: &str, args: &[String]) -> Result<Held> {
    let mut command = Command::new(program);
    command.args(args);
    hold_command(command)
}

/// Like [`hold`], for a command whose environment or standard streams the caller set up
/// (the benchmark reads the workload's output through a pipe).
pub fn hold_command(mut command: Command) -> Result<Held> {
    let program = command.get_program().to_string_lossy().into_owned();
    let pipe_error = |e: nix::Error| Error::io("creating a pipe", e.into());
    let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC).map_err(pipe_error)?;
    let (gate_read, gate_write) = pipe2(OFlag::O_CLOEXEC).map_err(pipe_error)?;
    let (ready_fd, gate_fd) = (ready_write.as_raw_fd(), gate_read.as_raw_fd());
    let (ready_read_fd, gate_write_fd) = (ready_read.as_raw_fd(), gate_write.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (getpid, write, close, read); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(ready_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            // The child's copies of leaktrace's ends: with its own write end of the gate open,
            // the read below would never see EOF when leaktrace gives up.
            libc::close(ready_read_fd);
            libc::close(gate_write_fd);
            let mut go = [0u8; 1];
            // EOF (0) means leaktrace gave up (attach failed): do not run the command.
            if libc::read(gate_fd, go.as_mut_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::other("leaktrace did not release the command"));
            }
            Ok(())
        });
    }
    let spawner = std::thread::spawn(move || {
        let child = command.spawn();
        // Our copies of the child's ends: closing them lets the main thread see EOF if the
        // child died before reporting its pid.
        drop(ready_write);
        drop(gate_read);
        child
    });
    let mut ready = File::from(ready_read);
    let mut pid = [0u8; 4];
    if ready.read_exact(&mut pid).is_err() {
        let source = match spawner.join() {
            Ok(Err(e)) => e.into(),
            _ => "the child exited before it could be traced".into(),
        };
        return Err(Error::Launch { program, source });
    }
    Ok(Held { pid: i32::from_ne_bytes(pid) as u32, program, gate: File::from(gate_write), spawner })
}

impl Held {
    /// Lets the child exec. Returns once exec has succeeded.
    pub fn release(mut self) -> Result<Child> {
        let launch_error = |source: crate::error::Cause| Error::Launch { program: self.program.clone(), source };
        self.gate.write_all(&[1]).map_err(|e| launch_error(e.into()))?;
        match self.spawner.join() {
            Ok(Ok(child)) => Ok(child),
            Ok(Err(e)) => Err(launch_error(e.into())),
            Err(_) => Err(launch_error("the launcher thread panicked".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Giving up on a held command (attach failed) must end the child, not leave it blocked
    /// at the gate forever holding leaktrace's stdout open.
    #[test]
    fn a_held_command_that_is_never_released_exits() {
        let held = hold("true", &[]).expect("fork");
        let pid = held.pid as i32;
        drop(held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Gone, or a zombie about to be reaped by the spawning thread.
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        };
        while !gone() {
            if std::time::Instant::now() > deadline {
                // Killed so that it does not keep the test harness's output open.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                panic!("the held child is still waiting at the gate");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
