//! Which processes a user-space trace covers, as they come and go: the targets given at the
//! start (pids, a name, a launched command), the children the programs add as they fork,
//! the programs they exec, and the allocator chosen for each once its libraries are mapped.

use std::{os::unix::fs::MetadataExt, path::Path};

use leaktrace_common::ProcessEventKind;

use super::{attach::Attach, processes::TracedProcess, UserTrace};
use crate::{
    allocator::AllocatorObject,
    error::{Error, Result},
    guardian::Guardian,
    model::TargetInfo,
    process::{self, launch},
};

/// A file's identity (device, inode): the same library reached by two paths (one through
/// /proc/PID/root) is probed once.
fn file_id(path: &Path) -> (u64, u64) {
    std::fs::metadata(path).map_or((0, 0), |m| (m.dev(), m.ino()))
}

impl UserTrace {
    /// Puts the allocator's probes, and the library-load hook of `linker`, on process `pid`;
    /// with `everywhere`, on every process mapping the files, once per file.
    pub(super) fn probe(&mut self, pid: u32, allocator: &mut AllocatorObject, linker: Option<&Path>) -> Result<()> {
        allocator.keep_heaps(&self.config.heaps);
        if self.config.heaps == [crate::model::Heap::Php] && !allocator.has_php_heap() && pid != 0 {
            return Err(Error::NoAllocator {
                target: format!("pid {pid}"),
                detail: "--heap php: it maps no PHP binary (no _emalloc in its executable or a libphp)".to_string(),
            });
        }
        let attach = Attach { pid: if self.everywhere { 0 } else { pid }, sessions: self.config.sessions };
        if !self.everywhere || self.probed.insert(file_id(&allocator.path)) {
            let sessions = attach.allocator(&mut self.tracer, allocator, self.sampling.is_some())?;
            // The first object probed decides (a later one is probed the same way).
            self.sessions = if self.probed.len() > 1 { self.sessions } else { sessions };
            if self.freeze_at_exit {
                attach.exit_hooks(&mut self.tracer, allocator)?;
            }
        }
        if self.everywhere {
            self.companions.extend(allocator.functions.iter().map(|f| file_id(&f.object)));
        }
        match linker {
            Some(linker) => self.hook_linker(pid, linker),
            None => Ok(()),
        }
    }

    /// Puts the library-load hook on `linker` for process `pid` (on every process mapping it,
    /// with `everywhere`), once per file and scope.
    fn hook_linker(&mut self, pid: u32, linker: &Path) -> Result<()> {
        let attach = Attach { pid: if self.everywhere { 0 } else { pid }, sessions: self.config.sessions };
        if self.rows.is_none() || !self.hooked.insert((attach.pid, file_id(linker))) {
            return Ok(());
        }
        attach.library_hook(&mut self.tracer, linker)
    }

    /// Attaches to running processes: `pids`, with `comm` every process of that name, and
    /// with `--follow` their running children. Each one's unwind table is built before its
    /// first allocation is recorded.
    pub(super) fn attach_running(&mut self, pids: &[u32], comm: Option<&str>) -> Result<()> {
        // (pid, the traced parent it was found under).
        let mut all: Vec<(u32, Option<u32>)> = pids.iter().map(|&p| (p, None)).collect();
        if let Some(comm) = comm {
            all.extend(process::pids_named(comm).into_iter().filter(|p| !pids.contains(p)).map(|p| (p, None)));
        }
        if let Some(cgroup) = &self.cgroup {
            let me = std::process::id();
            let members = cgroup.pids().into_iter().filter(|&p| p != me && !all.iter().any(|&(q, _)| q == p));
            all.extend(members.collect::<Vec<_>>().into_iter().map(|p| (p, None)));
        }
        if comm.is_some() || self.cgroup.is_some() {
            // Processes started later are first probed in the C library leaktrace runs on
            // (they usually share it), so that their first allocations count.
            let mut own = process::own_allocator(&self.config.symbol_prefix)?;
            let linker = process::dynamic_linker_of_program(Path::new("/proc/self/exe"))?;
            self.probe(0, &mut own, linker.as_deref())?;
            match (comm, &self.cgroup) {
                _ if !all.is_empty() => {}
                (Some(comm), _) => crate::say!("leaktrace: no process is named {comm} yet: waiting for one"),
                (None, Some(cgroup)) => {
                    crate::say!("leaktrace: no process is in cgroup {} yet: waiting for one", cgroup.path.display())
                }
                (None, None) => {}
            }
        }
        // With --follow, the children already running are traced too, and theirs.
        let mut next = 0;
        while next < all.len() {
            let (pid, parent) = all[next];
            next += 1;
            // `-p 7,7` probes process 7 once.
            if self.processes.contains(pid) {
                continue;
            }
            let strict = comm.is_none() && parent.is_none() && pids.contains(&pid);
            if !self.add_running(pid, strict, parent)? {
                self.cgroup_skipped.insert(pid);
            }
            if self.config.follow && self.processes.contains(pid) {
                all.extend(process::children_of(pid).into_iter().map(|child| (child, Some(pid))));
            }
        }
        Ok(())
    }

    /// Starts tracing running process `pid` (a child of `parent`, when found under it). A pid
    /// given by the user that cannot be traced is an error (`strict`); a process found by name
    /// or as a child that vanished meanwhile is skipped (returns false).
    fn add_running(&mut self, pid: u32, strict: bool, parent: Option<u32>) -> Result<bool> {
        // Everything read from the process first: one that exits meanwhile fails here.
        let found = process::inspect_pid(pid).and_then(|info| {
            let allocator = process::find_allocator(
                pid,
                self.config.object.as_deref(),
                &self.config.symbol_prefix,
                &self.config.alloc_fns,
            )?;
            let linker = if self.rows.is_some() { process::dynamic_linker_of_pid(pid)? } else { None };
            Ok((info, allocator, linker))
        });
        let (info, mut allocator, linker) = match found {
            Ok(found) => found,
            // A cgroup's kernel threads (the root cgroup has them) have no allocator to trace.
            Err(Error::KernelThread { .. }) if !strict => return Ok(false),
            Err(e) if !strict => {
                log::warn!("pid {pid} not traced: {e}");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let pair = self.processes.unwind_pair(self.rows.is_some());
        let mut traced = TracedProcess::new(info, allocator.clone(), pair, self.config.php_frames);
        traced.parent = parent;
        traced.refresh(self.rows.as_mut(), &mut self.tracer)?;
        self.tracer.add_target(pid)?;
        self.probe(pid, &mut allocator, linker.as_deref())?;
        // With what the probes found (refused ones).
        traced.allocator = allocator;
        self.processes.insert(traced);
        Ok(true)
    }

    /// `--cgroup`: starts tracing the processes in the cgroup that are not traced yet: those
    /// that joined since the last look and have not allocated since (the programs take a
    /// process in at its first allocation in the cgroup, where its allocator is probed
    /// already), and those whose allocator is a file not probed yet (a container's own libc).
    pub(super) fn scan_cgroup(&mut self) -> Result<()> {
        let Some(cgroup) = self.cgroup.as_ref() else { return Ok(()) };
        let me = std::process::id();
        let new: Vec<u32> = cgroup
            .pids()
            .into_iter()
            .filter(|&p| p != me && !self.processes.contains(p) && !self.cgroup_skipped.contains(&p))
            .collect();
        for pid in new {
            if !self.add_running(pid, false, None)? {
                self.cgroup_skipped.insert(pid);
            }
        }
        Ok(())
    }

    /// Launches `program args…` held before exec, attaches, then lets it run: its first
    /// allocation is traced. Its allocator is chosen again once its own libraries are mapped
    /// (a preloaded malloc replacement); its unwind table is filled when the dynamic linker
    /// reports the first libraries, before main runs (a static executable's at the first
    /// refresh).
    pub(super) fn launch_command(&mut self, program: &str, args: &[String]) -> Result<()> {
        let path =
            which::which(program).map_err(|e| Error::Launch { program: program.to_string(), source: e.into() })?;
        let config = &self.config;
        let mut allocator =
            process::find_allocator_for_program(&path, config.object.as_deref(), &config.symbol_prefix)?;
        // Checked before forking: every failure after `hold` must undo the fork.
        let linker = if self.rows.is_some() { process::dynamic_linker_of_program(&path)? } else { None };
        // Before any probe can stop the command.
        self.guardian = Some(Guardian::spawn(self.tracer.held_map_fd()?)?);
        let held = launch::hold(program, args)?;
        self.tracer.add_target(held.pid)?;
        // On failure `held` is dropped, which closes the gate: the command never runs.
        self.probe(held.pid, &mut allocator, linker.as_deref())?;
        let child = held.release()?;
        let command = std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        let info = TargetInfo { pid: child.id(), command, exe: path.display().to_string() };
        let pair = self.processes.unwind_pair(self.rows.is_some());
        let mut traced = TracedProcess::new(info, allocator, pair, self.config.php_frames);
        traced.child = Some(child);
        traced.allocator_settled = self.config.object.is_some();
        // The command has exec'd: its first mappings (the program and the dynamic linker).
        traced.refresh(self.rows.as_mut(), &mut self.tracer)?;
        self.processes.insert(traced);
        Ok(())
    }

    /// Probes the functions of `found` that are in objects process `tgid`'s allocator does not
    /// cover yet (the php executable a shell exec'd, whose C library was probed already), and
    /// adds them to it. With `everywhere`, an object probed for another process is not
    /// probed again.
    fn probe_new_objects(&mut self, tgid: u32, found: &AllocatorObject) -> Result<()> {
        let Some(traced) = self.processes.get(tgid) else { return Ok(()) };
        let known: Vec<(u64, u64)> = traced.allocator.functions.iter().map(|f| file_id(&f.object)).collect();
        let mut fresh = found.clone();
        fresh.functions.retain(|f| !known.contains(&file_id(&f.object)));
        fresh.keep_heaps(&self.config.heaps);
        if self.everywhere {
            fresh.functions.retain(|f| !self.companions.contains(&file_id(&f.object)));
            self.companions.extend(fresh.functions.iter().map(|f| file_id(&f.object)));
        }
        if fresh.functions.is_empty() {
            return Ok(());
        }
        let attach = Attach { pid: if self.everywhere { 0 } else { tgid }, sessions: self.config.sessions };
        attach.allocator(&mut self.tracer, &mut fresh, self.sampling.is_some())?;
        if let Some(traced) = self.processes.get_mut(tgid) {
            traced.allocator.functions.extend(fresh.functions);
            traced.allocator.not_attached.extend(fresh.not_attached);
        }
        Ok(())
    }

    /// Chooses process `tgid`'s allocator among the libraries its program maps, once they are
    /// mapped, and probes it when it is a file not probed yet (a malloc replacement).
    pub(super) fn settle_allocator(&mut self, tgid: u32) -> Result<()> {
        let Some(traced) = self.processes.get(tgid).filter(|p| !p.allocator_settled && !p.exited) else {
            return Ok(());
        };
        let current = file_id(&traced.allocator.path);
        // Fails while no C library is mapped yet (the dynamic linker is still at work): tried
        // again at the next library load or refresh.
        let found = process::find_allocator(tgid, None, &self.config.symbol_prefix, &self.config.alloc_fns);
        let Ok(mut allocator) = found else { return Ok(()) };
        // The same file keeps the path it was probed by (the report names that one).
        let changed = file_id(&allocator.path) != current;
        if changed {
            self.probe(tgid, &mut allocator, None)?;
            if self.processes.primary().is_some_and(|p| p.pid() == tgid) {
                self.probes = super::probe_reports(&allocator);
            }
        } else {
            self.probe_new_objects(tgid, &allocator)?;
        }
        if let Some(traced) = self.processes.get_mut(tgid) {
            if changed {
                traced.allocator = allocator;
            }
            traced.allocator_settled = true;
        }
        Ok(())
    }

    /// Acts on what the programs saw: children to follow, execs, processes of the wanted name.
    pub(super) fn take_process_events(&mut self) -> Result<()> {
        for event in self.tracer.process_events()? {
            match ProcessEventKind::from_u32(event.kind) {
                Some(ProcessEventKind::Forked) => self.follow_child(event.tgid, event.parent)?,
                Some(ProcessEventKind::Exec) => self.exec_seen(event.tgid, event.time_ns)?,
                Some(ProcessEventKind::Started) => self.started(event.tgid)?,
                Some(ProcessEventKind::Left) => {
                    if let Some(traced) = self.processes.get_mut(event.tgid) {
                        traced.exited = true;
                    }
                }
                // With the Zend heap off, its blocks are malloc's, which a reset leaves alone.
                Some(ProcessEventKind::HeapReset) if !process::zend_alloc_disabled(event.tgid) => {
                    let php = Some(leaktrace_common::Heap::Php as u32);
                    let (blocks, bytes) = self.tracer.drop_blocks(event.tgid, event.time_ns, php)?;
                    self.php_heap_released.0 += blocks;
                    self.php_heap_released.1 += bytes;
                }
                Some(ProcessEventKind::HeapReset | ProcessEventKind::None) | None => {}
            }
        }
        Ok(())
    }

    /// A traced process forked `child`, which the programs already trace. It starts with its
    /// parent's mappings and allocator; if it is gone before its mappings are read, its
    /// frames are named with its parent's.
    fn follow_child(&mut self, child: u32, parent: u32) -> Result<()> {
        if self.processes.contains(child) {
            return Ok(());
        }
        let Some(from) = self.processes.get(parent) else {
            // Its parent's own event was lost: it is traced, named by what /proc says.
            return self.started(child);
        };
        let allocator = from.allocator.clone();
        let info = process::describe_pid(child).unwrap_or_else(|| TargetInfo { pid: child, ..from.info.clone() });
        let comm = from.comm.clone();
        let pair = self.processes.unwind_pair(self.rows.is_some());
        let mut traced = TracedProcess::new(info, allocator, pair, self.config.php_frames);
        traced.parent = Some(parent);
        if traced.comm.is_empty() {
            traced.comm = comm;
        }
        traced.refresh(self.rows.as_mut(), &mut self.tracer)?;
        self.processes.insert(traced);
        Ok(())
    }

    /// Process `tgid` ran a new program at `time_ns`: its blocks of the old image are gone
    /// with it (dropped and counted); its mappings, table and allocator are taken again.
    fn exec_seen(&mut self, tgid: u32, time_ns: u64) -> Result<()> {
        let (blocks, bytes) = self.tracer.drop_blocks(tgid, time_ns, None)?;
        self.exec_dropped.0 += blocks;
        self.exec_dropped.1 += bytes;
        if let Some(traced) = self.processes.get_mut(tgid) {
            traced.exec_seen();
            traced.refresh(self.rows.as_mut(), &mut self.tracer)?;
        }
        // The new program may run under a dynamic linker not hooked yet (a container's own):
        // hooked now, its library loads stop a launched command before their code runs, and
        // the allocator is chosen at the first of them, among the libraries it maps.
        if let Ok(Some(linker)) = process::dynamic_linker_of_pid(tgid) {
            self.hook_linker(tgid, &linker)?;
        }
        self.settle_allocator(tgid)
    }

    /// A process took the wanted name (`--comm`), or was traced without its event being
    /// read: the programs trace it already; its allocator is chosen once its libraries are
    /// mapped.
    fn started(&mut self, tgid: u32) -> Result<()> {
        if let Some(traced) = self.processes.get_mut(tgid) {
            traced.exited = false;
            return Ok(());
        }
        let Some(info) = process::describe_pid(tgid) else { return Ok(()) };
        let allocator = match self.processes.primary() {
            Some(p) => p.allocator.clone(),
            None => process::own_allocator(&self.config.symbol_prefix)?,
        };
        let pair = self.processes.unwind_pair(self.rows.is_some());
        let mut traced = TracedProcess::new(info, allocator, pair, self.config.php_frames);
        traced.allocator_settled = false;
        traced.refresh(self.rows.as_mut(), &mut self.tracer)?;
        self.processes.insert(traced);
        self.settle_allocator(tgid)
    }
}
