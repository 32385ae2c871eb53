//! The process layer: one value per traced process, with everything leaktrace keeps for it,
//! in a table keyed by tgid. Library events and exits are routed to their process by tgid,
//! so a second traced process is one more row, not more code.

use std::{collections::BTreeMap, process::Child};

use crate::{
    allocator::AllocatorObject,
    bpf::Tracer,
    error::Result,
    mappings::ProcessModules,
    model::TargetInfo,
    php::PhpState,
    process,
    unwind::{ProcessUnwind, RowStore},
};

/// One traced process.
pub struct TracedProcess {
    /// What the report says about it.
    pub info: TargetInfo,
    /// Its executable mappings (latest snapshot; kept after it exits).
    pub modules: ProcessModules,
    /// Its view of the shared unwind rows (none with `--unwind fp`).
    pub unwind: Option<ProcessUnwind>,
    /// The allocator probed in it.
    pub allocator: AllocatorObject,
    /// The child leaktrace launched, when it did.
    pub child: Option<Child>,
    /// Times it was seen to run a new program (exec): its executable changed.
    pub exec_generation: u32,
    /// True once it has exited.
    pub exited: bool,
    /// Its PHP, if it runs one; none with `--no-php-frames`.
    pub php: Option<PhpState>,
    /// /proc/PID/exe when first read: a different one later means an exec.
    first_exe: Option<std::path::PathBuf>,
}

impl TracedProcess {
    /// A process about to be traced, with its mappings not yet read.
    pub fn new(info: TargetInfo, allocator: AllocatorObject, dwarf_unwinding: bool, php_frames: bool) -> Self {
        let pid = info.pid;
        Self {
            php: php_frames.then(PhpState::default),
            modules: ProcessModules::new(pid),
            unwind: dwarf_unwinding.then(|| ProcessUnwind::new(pid)),
            info,
            allocator,
            child: None,
            exec_generation: 0,
            exited: false,
            first_exe: None,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    /// True while it runs. A launched child is reaped here when it has exited.
    pub fn is_alive(&mut self) -> bool {
        let alive = match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => process::is_alive(self.pid()),
        };
        self.exited |= !alive;
        alive
    }

    /// Re-reads its mappings and brings its unwind table in line with them. Notices an exec
    /// (a new executable) and describes the new program.
    pub fn refresh(&mut self, rows: Option<&mut RowStore>, tracer: &mut Tracer) -> Result<()> {
        self.modules.refresh();
        if let (Some(unwind), Some(rows)) = (self.unwind.as_mut(), rows) {
            unwind.sync(rows, tracer, self.modules.mappings())?;
        }
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid())).ok();
        match (&self.first_exe, exe) {
            (None, exe) => self.first_exe = exe,
            (Some(first), Some(exe)) if *first != exe => {
                self.first_exe = Some(exe);
                self.exec_generation += 1;
                if let Some(php) = self.php.as_mut() {
                    // A new program: what was known of the old one's PHP no longer holds.
                    *php = PhpState::default();
                }
                if let Some(now) = process::describe_pid(self.pid()) {
                    self.info = now;
                }
            }
            _ => {}
        }
        let pid = self.pid();
        if let Some(php) = self.php.as_mut() {
            php.sync(pid, &self.modules, tracer)?;
            php.collect(tracer)?;
        }
        Ok(())
    }

    /// Sends SIGCONT: our probes stop it at exit (launched commands) and at library loads.
    pub fn resume(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Every traced process, by tgid.
#[derive(Default)]
pub struct ProcessTable {
    by_tgid: BTreeMap<u32, TracedProcess>,
    /// The first one added.
    first: Option<u32>,
}

impl ProcessTable {
    /// Adds a process.
    pub fn insert(&mut self, process: TracedProcess) {
        self.first.get_or_insert(process.pid());
        self.by_tgid.insert(process.pid(), process);
    }

    /// The process with this tgid, if traced.
    pub fn get_mut(&mut self, tgid: u32) -> Option<&mut TracedProcess> {
        self.by_tgid.get_mut(&tgid)
    }

    /// The first process traced (the one the report's `target` names).
    pub fn primary(&self) -> Option<&TracedProcess> {
        self.first.and_then(|tgid| self.by_tgid.get(&tgid))
    }

    /// Every process.
    pub fn iter(&self) -> impl Iterator<Item = &TracedProcess> {
        self.by_tgid.values()
    }

    /// Every process, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut TracedProcess> {
        self.by_tgid.values_mut()
    }
}
