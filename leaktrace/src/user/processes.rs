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
    /// True once it has exited (or, with `--comm`, left the traced set).
    pub exited: bool,
    /// The traced process it was forked from, when followed.
    pub parent: Option<u32>,
    /// Its name (`comm`) as last seen.
    pub comm: String,
    /// False until its allocator was chosen among the libraries its current program maps:
    /// a launched command's and an exec'd program's are mapped only after they start.
    pub allocator_settled: bool,
    /// Its PHP, if it runs one; none with `--no-php-frames`.
    pub php: Option<PhpState>,
    /// /proc/PID/exe when first read: a different one later means an exec.
    first_exe: Option<std::path::PathBuf>,
}

impl TracedProcess {
    /// A process about to be traced, with its mappings not yet read. `unwind_pair` is its
    /// pair of unwind-table slots (none with `--unwind fp`, or when every pair is taken: a
    /// forked child then keeps unwinding with its parent's table). `php_frames`: look for a
    /// PHP VM in it.
    pub fn new(info: TargetInfo, allocator: AllocatorObject, unwind_pair: Option<u32>, php_frames: bool) -> Self {
        let pid = info.pid;
        Self {
            php: php_frames.then(PhpState::default),
            modules: ProcessModules::new(pid),
            unwind: unwind_pair.map(|pair| ProcessUnwind::new(pid, pair)),
            comm: process::comm_of(pid).unwrap_or_default(),
            info,
            allocator,
            child: None,
            exec_generation: 0,
            exited: false,
            parent: None,
            allocator_settled: true,
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
                self.describe_again();
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

    /// It ran a new program: describe it again, and choose its allocator again once the
    /// program's libraries are mapped.
    pub fn exec_seen(&mut self) {
        self.exec_generation += 1;
        self.allocator_settled = false;
        self.first_exe = std::fs::read_link(format!("/proc/{}/exe", self.pid())).ok();
        self.describe_again();
    }

    /// A new program: describe it again; what was known of the old one's PHP no longer holds.
    fn describe_again(&mut self) {
        if let Some(php) = self.php.as_mut() {
            *php = PhpState::default();
        }
        if let Some(now) = process::describe_pid(self.pid()) {
            self.info = now;
        }
        if let Some(comm) = process::comm_of(self.pid()) {
            self.comm = comm;
        }
    }

    /// Resumes it (SIGCONT) if one of our probes stopped it (a launched command, at exit or
    /// at a library load), clearing the probe's mark first. A stop that is not ours (the
    /// user's Ctrl-Z or SIGSTOP) is left alone.
    pub fn resume(&self, tracer: &mut Tracer) {
        resume_held(tracer, self.pid());
    }
}

/// Resumes process `tgid` (SIGCONT) if one of our probes marked it stopped, clearing the
/// mark first; a stop that is not ours is left alone.
pub fn resume_held(tracer: &mut Tracer, tgid: u32) {
    // Should the mark be unreadable, resuming is the safer guess.
    if tracer.release_hold(tgid).unwrap_or(true) {
        let pid = nix::unistd::Pid::from_raw(tgid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Every traced process, by tgid.
#[derive(Default)]
pub struct ProcessTable {
    by_tgid: BTreeMap<u32, TracedProcess>,
    /// The first one added.
    first: Option<u32>,
    /// Unwind-table slot pairs handed out so far.
    pairs_used: u32,
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

    /// The process with this tgid, if traced.
    pub fn get(&self, tgid: u32) -> Option<&TracedProcess> {
        self.by_tgid.get(&tgid)
    }

    /// Whether this tgid is traced (or was).
    pub fn contains(&self, tgid: u32) -> bool {
        self.by_tgid.contains_key(&tgid)
    }

    /// How many processes are (or were) traced.
    pub fn len(&self) -> usize {
        self.by_tgid.len()
    }

    /// True before the first process is added.
    pub fn is_empty(&self) -> bool {
        self.by_tgid.is_empty()
    }

    /// The next free pair of unwind-table slots, with DWARF unwinding; none when every pair
    /// is taken (counted by the caller as processes unwound without a table of their own).
    pub fn unwind_pair(&mut self, dwarf_unwinding: bool) -> Option<u32> {
        if !dwarf_unwinding || self.pairs_used >= ProcessUnwind::PAIRS {
            return None;
        }
        self.pairs_used += 1;
        Some(self.pairs_used - 1)
    }

    /// The mappings to name `tgid`'s frames with: its own, or while it has none (a child that
    /// exited before its mappings were read), those of the process it was forked from, which
    /// it shared.
    pub fn modules_of(&self, tgid: u32) -> Option<&ProcessModules> {
        let mut process = self.by_tgid.get(&tgid)?;
        while process.modules.snapshots() == 0 {
            match process.parent.and_then(|p| self.by_tgid.get(&p)) {
                Some(parent) => process = parent,
                None => break,
            }
        }
        Some(&process.modules)
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
