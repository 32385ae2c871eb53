//! The only module that calls aya: loading the eBPF object, attaching probes and reading maps.
//! Everything else in leaktrace works with plain Rust values.

#[cfg(feature = "bench")]
pub mod bench;
mod events;
mod held;
#[cfg(test)]
mod names_check;
mod uprobe_session;

pub use events::UnwindEvents;
pub use held::HeldMap;

use std::{
    collections::HashMap as StdHashMap,
    num::NonZeroU32,
    os::{
        fd::{AsFd, AsRawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        uprobe::{UProbeLink, UProbeScope},
        BtfTracePoint, TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use leaktrace_common::{
    kernel::{BuildIdFrame, SlabPages, EXEC_PATH_LEN, MAX_BUILD_ID_FRAMES},
    names,
    unwind::{MAX_UNWIND_MAPPINGS, UNWIND_SLOTS},
    AllocInfo, AllocKey, Counter, KernelAlloc, KernelKey, Lineage, PhpProcess, PhpStack, ProcessEvent, ProcessSlot,
    ReuseKey, StackEnd, StackRecord, StackStats, UnwindMapping, UnwindRow,
};

use crate::error::{is_permission_denied, Cause, Error, Result};

/// The eBPF object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leaktrace"));

/// Load-time settings of the eBPF programs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// leaktrace's own process id, never traced.
    pub self_tgid: u32,
    /// Smallest recorded request.
    pub min_size: u64,
    /// Largest recorded request.
    pub max_size: u64,
    /// Capacity of the outstanding-allocation map.
    pub max_allocs: u32,
    /// Capacity of the stack map(s).
    pub stack_storage: u32,
    /// Which side is traced, and its settings.
    pub mode: Mode,
}

/// What the loaded programs trace.
#[derive(Clone, Debug)]
pub enum Mode {
    /// A process's allocator, through uprobes.
    User {
        /// Stop the traced process at exit() so its mappings can be read (launched commands).
        freeze_at_exit: bool,
        /// Capacity of the unwind-row table; 0 to walk frame pointers in the kernel instead.
        unwind_rows: u32,
        /// `--sample-bytes`: mean sampling period in bytes, 0 to track every allocation.
        sample_period: u64,
        /// The sampling probability table (`leaktrace_common::sampling`); empty when not sampling.
        sample_table: Vec<u32>,
        /// Children of traced processes are traced too (`--follow`).
        follow: bool,
        /// `--comm NAME`: processes of that name are traced too (the name NUL-padded).
        comm: Option<[u8; 16]>,
        /// `--cgroup PATH`: its cgroup id and depth; processes in it or below are traced too.
        cgroup: Option<(u64, u32)>,
        /// Field offsets of the process tracepoints: (global name, offset).
        offsets: Vec<(&'static str, u32)>,
    },
    /// The kernel's allocators, through tracepoints.
    Kernel {
        /// Record only allocations made by tasks of traced processes.
        filter_targets: bool,
        /// Also capture the allocating task's user stack.
        user_stacks: bool,
        /// Add children of traced processes to the traced set.
        follow_forks: bool,
        /// Tracepoint field offsets: (global name, offset).
        offsets: Vec<(&'static str, u32)>,
    },
}

/// One outstanding allocation as read from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// Block address.
    pub address: u64,
    /// What the kernel recorded.
    pub info: AllocInfo,
}

/// Why a session program could not be attached.
enum SessionFailure {
    /// The kernel (or the object) cannot run session programs at all.
    Refused(String),
    /// The kernel refused the link at this one place.
    Link(std::io::Error),
}

/// Loaded programs and their maps. Dropping it detaches every probe.
pub struct Tracer {
    /// Attached uprobes, owned here so that they can be detached all at once (see `Drop`).
    links: Vec<UProbeLink>,
    /// Uprobe session programs, prepared on first use.
    sessions: Option<uprobe_session::SessionPrograms>,
    /// Why the kernel refused a session program, once it has: later probes are not tried.
    sessions_refused: Option<String>,
    /// Last `ProcessSlot::generation` handed out.
    generation: u32,
    ebpf: Ebpf,
    loaded: Vec<String>,
    /// The running kernel's BTF, read when a raw BTF tracepoint is first attached.
    btf: Option<aya::Btf>,
}

impl Drop for Tracer {
    /// Detaches every uprobe concurrently. Each detach waits for the kernel to know that no
    /// task still runs the probe. Session links wait independently, so concurrent detaches
    /// share their waits (0.6 s one after the other, under 0.1 s at once, on the benchmark
    /// workload); perf-event uprobes wait under a global lock and gain little (2.1 s against
    /// 1.7 s for twenty).
    fn drop(&mut self) {
        self.detach_probes();
    }
}

impl Tracer {
    /// Detaches every probe (see `Drop`), keeping the maps readable: no probe can stop a
    /// process after this returns.
    pub fn detach_probes(&mut self) {
        let links = std::mem::take(&mut self.links);
        let sessions = self.sessions.take();
        std::thread::scope(|scope| {
            if let Some(sessions) = sessions {
                scope.spawn(move || drop(sessions));
            }
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }
}

impl Tracer {
    /// A tracer of a loaded object, nothing attached yet.
    fn from_ebpf(ebpf: Ebpf) -> Self {
        Self {
            links: Vec::new(),
            sessions: None,
            sessions_refused: None,
            generation: 0,
            ebpf,
            loaded: Vec::new(),
            btf: None,
        }
    }

    /// Loads the eBPF object with the given settings. Programs are loaded when first attached.
    pub fn load(options: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader
            .override_global(names::GLOBAL_SELF_TGID, &options.self_tgid, true)
            .override_global(names::GLOBAL_MIN_SIZE, &options.min_size, true)
            .override_global(names::GLOBAL_MAX_SIZE, &options.max_size, true);
        // Every map of the object is created at load; the other mode's maps are shrunk to one
        // entry so they cost nothing (KALLOCS is preallocated).
        let flags: [u8; 3];
        let freeze: u8;
        let tables: u8;
        let follow: u8;
        let comm: [u64; 2];
        let (cgroup_id, cgroup_level): (u64, u32);
        match &options.mode {
            Mode::User {
                freeze_at_exit,
                unwind_rows,
                sample_period,
                follow: follow_children,
                comm: name,
                cgroup,
                offsets,
                ..
            } => {
                (cgroup_id, cgroup_level) = cgroup.unwrap_or_default();
                freeze = u8::from(*freeze_at_exit);
                tables = u8::from(*unwind_rows > 0);
                follow = u8::from(*follow_children);
                comm = name.map_or([0; 2], comm_words);
                for (name, offset) in offsets {
                    loader.override_global(name, offset, true);
                }
                loader
                    .override_global(names::GLOBAL_FOLLOW_FORKS, &follow, true)
                    .override_global(names::GLOBAL_TRACE_COMM, &comm, true)
                    .override_global(names::GLOBAL_TRACE_CGROUP, &cgroup_id, true)
                    .override_global(names::GLOBAL_TRACE_CGROUP_LEVEL, &cgroup_level, true)
                    .override_global(names::GLOBAL_SAMPLE_PERIOD, sample_period, true)
                    .override_global(names::GLOBAL_FREEZE_AT_EXIT, &freeze, true)
                    .override_global(names::GLOBAL_UNWIND_TABLES, &tables, true)
                    .map_max_entries(names::UNWIND_ROWS, (*unwind_rows).max(1))
                    .map_max_entries(
                        names::UNWIND_CACHE,
                        if *unwind_rows > 0 { leaktrace_common::unwind::UNWIND_CACHE_SIZE } else { 1 },
                    )
                    .map_max_entries(names::ALLOCS, options.max_allocs)
                    .map_max_entries(names::USTACKS, options.stack_storage)
                    .map_max_entries(names::PHP_STACKS, options.stack_storage)
                    .map_max_entries(names::STACKS, 1)
                    .map_max_entries(names::STACK_STATS, options.stack_storage)
                    .map_max_entries(names::KALLOCS, 1)
                    .map_max_entries(names::KSTACKS, 1)
                    .map_max_entries(names::KERNEL_SCRATCH, 1)
                    .map_max_entries(names::REUSED, 1)
                    .map_max_entries(names::LINEAGE, 1)
                    .map_max_entries(names::EXECUTABLES, 1);
            }
            Mode::Kernel { filter_targets, user_stacks, follow_forks, offsets } => {
                flags = [u8::from(*filter_targets), u8::from(*user_stacks), u8::from(*follow_forks)];
                loader
                    .map_max_entries(names::SAMPLE_TABLE, 1)
                    .map_max_entries(names::UNWIND_CACHE, 1)
                    .map_max_entries(names::ALLOCS, 1)
                    .map_max_entries(names::UNWIND_ROWS, 1)
                    .map_max_entries(names::PENDING, 1)
                    .map_max_entries(names::LAST_FREE, 1)
                    .map_max_entries(names::STACK_STATS, options.stack_storage)
                    .map_max_entries(names::USTACKS, 1)
                    .map_max_entries(names::PHP_STACKS, 1)
                    .map_max_entries(names::PHP_PROCESSES, 1)
                    .map_max_entries(names::STACKS, if *user_stacks { options.stack_storage } else { 1 })
                    .map_max_entries(names::KALLOCS, options.max_allocs)
                    .map_max_entries(names::KSTACKS, options.stack_storage)
                    .override_global(names::GLOBAL_FILTER_TARGETS, &flags[0], true)
                    .override_global(names::GLOBAL_USER_STACKS, &flags[1], true)
                    .override_global(names::GLOBAL_FOLLOW_FORKS, &flags[2], true);
                for (name, offset) in offsets {
                    loader.override_global(name, offset, true);
                }
            }
        }
        let ebpf = loader.load(OBJECT).map_err(|e| load_error("the object", e))?;
        let mut tracer = Self::from_ebpf(ebpf);
        if let Mode::User { sample_table, .. } = &options.mode {
            tracer.write_sample_table(sample_table)?;
        }
        Ok(tracer)
    }

    fn write_sample_table(&mut self, table: &[u32]) -> Result<()> {
        if table.is_empty() {
            return Ok(());
        }
        let name = names::SAMPLE_TABLE;
        let map = self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
        let mut array: Array<_, u32> = Array::try_from(map).map_err(|e| map_error(name, e))?;
        for (i, value) in table.iter().enumerate() {
            array.set(i as u32, value, 0).map_err(|e| map_error(name, e))?;
        }
        Ok(())
    }

    /// Attaches the uprobe session form of `entry_program` (see `names::SESSION_PROGRAMS`)
    /// at file offset `offset` of `path`, firing only in process `pid`: one program for the
    /// call's entry and its return, whose return run the entry can skip. Fails on kernels
    /// before 6.13, and at once after a first refusal.
    pub fn attach_session(
        &mut self,
        entry_program: &str,
        symbol: &str,
        path: &Path,
        offset: u64,
        pid: u32,
        cookie: u64,
    ) -> Result<()> {
        let attach_error = |reason: String| Error::Attach {
            program: entry_program.to_string(),
            symbol: symbol.to_string(),
            path: path.to_path_buf(),
            source: reason.into(),
        };
        if let Some(reason) = &self.sessions_refused {
            return Err(attach_error(reason.clone()));
        }
        match self.try_attach_session(entry_program, path, offset, pid, cookie) {
            Ok(()) => Ok(()),
            Err(SessionFailure::Refused(reason)) => {
                self.sessions_refused = Some(reason.clone());
                Err(attach_error(reason))
            }
            // This one place was refused (another tool's probe there, see `user::attach`):
            // sessions stay on for the others.
            Err(SessionFailure::Link(error)) => Err(Error::Attach {
                program: entry_program.to_string(),
                symbol: symbol.to_string(),
                path: path.to_path_buf(),
                source: Box::new(error),
            }),
        }
    }

    /// Loads the session forms of `entry_programs` at once, one thread each, before they are
    /// attached one by one (which then finds them loaded). A failure here is not reported:
    /// attaching meets it again and falls back.
    pub fn preload_sessions(&mut self, entry_programs: &[&str]) {
        let sessions: Vec<&str> = names::SESSION_PROGRAMS
            .iter()
            .filter(|(entry, _)| entry_programs.contains(entry))
            .map(|(_, session)| *session)
            .collect();
        if let Ok(prepared) = self.prepared_sessions() {
            let _ = prepared.preload(&sessions);
        }
    }

    /// Every session program, relocated against this object's maps on first use.
    fn prepared_sessions(&mut self) -> std::result::Result<&mut uprobe_session::SessionPrograms, String> {
        if self.sessions.is_none() {
            let all: Vec<&str> = names::SESSION_PROGRAMS.iter().map(|(_, s)| *s).collect();
            self.sessions = Some(uprobe_session::SessionPrograms::prepare(OBJECT, &self.ebpf, &all)?);
        }
        Ok(self.sessions.as_mut().expect("prepared above"))
    }

    /// Why the kernel refused uprobe session programs, if it did.
    pub fn sessions_refused(&self) -> Option<&str> {
        self.sessions_refused.as_deref()
    }

    fn try_attach_session(
        &mut self,
        entry_program: &str,
        path: &Path,
        offset: u64,
        pid: u32,
        cookie: u64,
    ) -> std::result::Result<(), SessionFailure> {
        let (_, session) = names::SESSION_PROGRAMS
            .iter()
            .find(|(entry, _)| *entry == entry_program)
            .ok_or_else(|| SessionFailure::Refused("no session form of this program".to_string()))?;
        let sessions = self.prepared_sessions().map_err(SessionFailure::Refused)?;
        sessions.load(session).map_err(SessionFailure::Refused)?;
        sessions.attach(session, path, offset, pid, cookie).map_err(SessionFailure::Link)
    }

    /// Adds a process to the traced set.
    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        let map = self.ebpf.map_mut(names::TARGETS).ok_or_else(|| missing_map(names::TARGETS))?;
        let mut targets: HashMap<_, u32, u8> = HashMap::try_from(map).map_err(|e| map_error(names::TARGETS, e))?;
        targets.insert(tgid, 1, 0).map_err(|e| map_error(names::TARGETS, e))
    }

    /// Takes a process out of the traced set.
    pub fn remove_target(&mut self, tgid: u32) -> Result<()> {
        let map = self.ebpf.map_mut(names::TARGETS).ok_or_else(|| missing_map(names::TARGETS))?;
        let mut targets: HashMap<_, u32, u8> = HashMap::try_from(map).map_err(|e| map_error(names::TARGETS, e))?;
        // Already gone is fine: the programs take a process out themselves (`--comm`).
        let _ = targets.remove(&tgid);
        Ok(())
    }

    /// Every process event since the last call, in order. The map stays in the object (the
    /// uprobe session programs are relocated against every map it holds); the ring's read
    /// position lives in the map, so a ring opened anew goes on where the last one stopped.
    pub fn process_events(&mut self) -> Result<Vec<ProcessEvent>> {
        let name = names::PROCESS_EVENTS;
        let map = self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
        let mut ring = RingBuf::try_from(map).map_err(|e| map_error(name, e))?;
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<ProcessEvent>() {
                // SAFETY: the programs write whole ProcessEvent values; read unaligned.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ProcessEvent>()) });
            }
        }
        Ok(events)
    }

    /// Removes the outstanding blocks of process `tgid` recorded before `before_ns`: the old
    /// image's after an exec (every heap), or those of a heap that was reset (`heap`, a
    /// `Heap` value). Returns how many blocks and bytes went.
    pub fn drop_blocks(&mut self, tgid: u32, before_ns: u64, heap: Option<u32>) -> Result<(u64, u64)> {
        let map = self.ebpf.map_mut(names::ALLOCS).ok_or_else(|| missing_map(names::ALLOCS))?;
        let mut allocs: HashMap<_, AllocKey, AllocInfo> =
            HashMap::try_from(map).map_err(|e| map_error(names::ALLOCS, e))?;
        let doomed: Vec<(AllocKey, u64)> = allocs
            .iter()
            .filter_map(|entry| entry.ok())
            .filter(|(key, info)| {
                key.tgid == tgid && info.timestamp_ns < before_ns && heap.is_none_or(|h| h == info.heap)
            })
            .map(|(key, info)| (key, info.size))
            .collect();
        let (mut count, mut bytes) = (0, 0);
        for (key, size) in doomed {
            // A walk can list a key twice (see `outstanding`): count only what was removed.
            if allocs.remove(&key).is_ok() {
                count += 1;
                bytes += size;
            }
        }
        Ok((count, bytes))
    }

    /// Attaches `program` at `place` (file offset in `path`, attach cookie), firing only in
    /// process `pid` (in every process mapping the file when `pid` is 0: the programs keep to
    /// `TARGETS`). The cookie tells the entry programs the heap and a size that is not an
    /// argument (`allocator::AllocatorFn::cookie`).
    pub fn attach_uprobe(
        &mut self,
        program: &str,
        symbol: &str,
        path: &Path,
        place: (u64, u64),
        pid: u32,
    ) -> Result<()> {
        let (offset, cookie) = place;
        let attach_error = |source: Cause| Error::Attach {
            program: program.to_string(),
            symbol: symbol.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| attach_error("program missing from the eBPF object".into()))?;
        let uprobe: &mut UProbe = prog.try_into().map_err(|e: aya::programs::ProgramError| attach_error(e.into()))?;
        if first_use(&mut self.loaded, program) {
            uprobe.load().map_err(|e| load_error(program, e))?;
        }
        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let point = aya::programs::uprobe::UProbeAttachPoint { location: offset.into(), cookie: Some(cookie) };
        let link = uprobe.attach(point, path, scope).map_err(|e| attach_error(e.into()))?;
        self.links.push(uprobe.take_link(link).map_err(|e| attach_error(e.into()))?);
        Ok(())
    }

    /// Loads `program` and attaches it to the tracepoint `category:event`.
    pub fn attach_tracepoint(&mut self, program: &str, category: &str, event: &str) -> Result<()> {
        let attach_error = |source: Cause| Error::Attach {
            program: program.to_string(),
            symbol: format!("{category}:{event}"),
            path: "tracefs".into(),
            source,
        };
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| attach_error("program missing from the eBPF object".into()))?;
        let tracepoint: &mut TracePoint =
            prog.try_into().map_err(|e: aya::programs::ProgramError| attach_error(e.into()))?;
        // One program may serve several events (kmalloc and kmalloc_node): load it once.
        if first_use(&mut self.loaded, program) {
            tracepoint.load().map_err(|e| load_error(program, e))?;
        }
        tracepoint.attach(category, event).map_err(|e| attach_error(e.into()))?;
        Ok(())
    }

    /// Loads `program` and attaches it to the raw BTF tracepoint `event` (a `tp_btf`
    /// program), resolving the event in the running kernel's BTF.
    pub fn attach_btf_tracepoint(&mut self, program: &str, event: &str) -> Result<()> {
        let attach_error = |source: Cause| Error::Attach {
            program: program.to_string(),
            symbol: format!("tp_btf:{event}"),
            path: "/sys/kernel/btf/vmlinux".into(),
            source,
        };
        if self.btf.is_none() {
            self.btf = Some(aya::Btf::from_sys_fs().map_err(|e| attach_error(e.into()))?);
        }
        let btf = self.btf.as_ref().expect("read above");
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| attach_error("program missing from the eBPF object".into()))?;
        let tracepoint: &mut BtfTracePoint =
            prog.try_into().map_err(|e: aya::programs::ProgramError| attach_error(e.into()))?;
        tracepoint.load(event, btf).map_err(|e| load_error(program, e))?;
        tracepoint.attach().map_err(|e| attach_error(e.into()))?;
        Ok(())
    }

    /// Every outstanding kernel object.
    pub fn kernel_outstanding(&self) -> Result<Vec<(KernelKey, KernelAlloc)>> {
        let map = self.ebpf.map(names::KALLOCS).ok_or_else(|| missing_map(names::KALLOCS))?;
        let allocs: HashMap<_, KernelKey, KernelAlloc> =
            HashMap::try_from(map).map_err(|e| map_error(names::KALLOCS, e))?;
        // Deduplicated as in `outstanding`.
        let mut all: Vec<(KernelKey, KernelAlloc)> = allocs.iter().filter_map(|entry| entry.ok()).collect();
        all.sort_unstable_by_key(|(k, _)| (k.addr, k.space));
        all.dedup_by_key(|(k, _)| (k.addr, k.space));
        Ok(all)
    }

    /// Kernel mode: per cache of the earlier object, allocations at an address that was still
    /// outstanding (summed over CPUs).
    pub fn reused_addresses(&self) -> Result<Vec<(ReuseKey, u64)>> {
        let map = self.ebpf.map(names::REUSED).ok_or_else(|| missing_map(names::REUSED))?;
        let reused: PerCpuHashMap<_, ReuseKey, u64> =
            PerCpuHashMap::try_from(map).map_err(|e| map_error(names::REUSED, e))?;
        Ok(reused.iter().filter_map(|entry| entry.ok()).map(|(key, per_cpu)| (key, per_cpu.iter().sum())).collect())
    }

    /// Kernel mode: every path exec'd while tracing (as far as `EXECUTABLES` keeps them).
    pub fn executables(&self) -> Result<Vec<PathBuf>> {
        let map = self.ebpf.map(names::EXECUTABLES).ok_or_else(|| missing_map(names::EXECUTABLES))?;
        let paths: HashMap<_, u32, [u8; EXEC_PATH_LEN]> =
            HashMap::try_from(map).map_err(|e| map_error(names::EXECUTABLES, e))?;
        Ok(paths
            .iter()
            .filter_map(|entry| entry.ok())
            .map(|(_, path)| {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end]))
            })
            .collect())
    }

    /// Kernel mode: a slot of `SLAB_PAGES`.
    pub fn slab_pages(&self, slot: SlabPages) -> Result<u64> {
        let map = self.ebpf.map(names::SLAB_PAGES).ok_or_else(|| missing_map(names::SLAB_PAGES))?;
        let array: Array<_, u64> = Array::try_from(map).map_err(|e| map_error(names::SLAB_PAGES, e))?;
        array.get(&(slot as u32), 0).map_err(|e| map_error(names::SLAB_PAGES, e))
    }

    /// Kernel mode: sets a slot of `SLAB_PAGES`.
    pub fn set_slab_pages(&mut self, slot: SlabPages, value: u64) -> Result<()> {
        let map = self.ebpf.map_mut(names::SLAB_PAGES).ok_or_else(|| missing_map(names::SLAB_PAGES))?;
        let mut array: Array<_, u64> = Array::try_from(map).map_err(|e| map_error(names::SLAB_PAGES, e))?;
        array.set(slot as u32, value, 0).map_err(|e| map_error(names::SLAB_PAGES, e))
    }

    /// Detaches and unloads a `tp_btf` program attached with [`Self::attach_btf_tracepoint`].
    pub fn detach_btf_tracepoint(&mut self, program: &str) -> Result<()> {
        let prog = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| Error::Load { what: program.to_string(), source: "not in the eBPF object".into() })?;
        let tracepoint: &mut BtfTracePoint = prog.try_into().map_err(|e| load_error(program, e))?;
        tracepoint.unload().map_err(|e| load_error(program, e))
    }

    /// Kernel mode: the parent and name of the given processes, where the fork or exec
    /// tracepoints saw them.
    pub fn lineage(&self, tgids: impl IntoIterator<Item = u32>) -> Result<StdHashMap<u32, Lineage>> {
        let map = self.ebpf.map(names::LINEAGE).ok_or_else(|| missing_map(names::LINEAGE))?;
        let lineage: HashMap<_, u32, Lineage> = HashMap::try_from(map).map_err(|e| map_error(names::LINEAGE, e))?;
        Ok(tgids.into_iter().filter_map(|tgid| lineage.get(&tgid, 0).ok().map(|l| (tgid, l))).collect())
    }

    /// Kernel stacks with the given keys, innermost first.
    pub fn kernel_stacks(&self, ids: impl IntoIterator<Item = u64>) -> Result<StdHashMap<u64, Vec<u64>>> {
        Ok(self.stack_records(names::KSTACKS, ids)?.into_iter().map(|(id, (ips, _))| (id, ips)).collect())
    }

    /// Every outstanding allocation. Entries freed while the map is walked are skipped.
    pub fn outstanding(&self) -> Result<Vec<Outstanding>> {
        let map = self.ebpf.map(names::ALLOCS).ok_or_else(|| missing_map(names::ALLOCS))?;
        let allocs: HashMap<_, AllocKey, AllocInfo> =
            HashMap::try_from(map).map_err(|e| map_error(names::ALLOCS, e))?;
        // A key deleted between get_next_key and lookup shows up as an error: that
        // allocation was freed meanwhile, so it is rightly absent. When the key the walk
        // stands on is deleted, the kernel restarts the walk from the first key, so while the
        // target frees, a walk can return an entry twice: deduplicate by process and address.
        // Sorted and deduplicated in place: a second map of a million entries would double
        // the peak memory of the report.
        let mut all: Vec<Outstanding> = allocs
            .iter()
            .filter_map(|entry| entry.ok())
            .map(|(key, info)| Outstanding { address: key.address, info })
            .collect();
        all.sort_unstable_by_key(|o| (o.info.tgid, o.address));
        all.dedup_by_key(|o| (o.info.tgid, o.address));
        Ok(all)
    }

    /// The user stacks of allocations with the given keys, innermost frame first, with how
    /// each one ended.
    pub fn stacks(&self, ids: impl IntoIterator<Item = u64>) -> Result<StdHashMap<u64, (Vec<u64>, StackEnd)>> {
        self.stack_records(names::USTACKS, ids)
    }

    /// The ids of every user stack recorded so far.
    pub fn stack_ids(&self) -> Result<Vec<u64>> {
        let name = names::USTACKS;
        let map = self.ebpf.map(name).ok_or_else(|| missing_map(name))?;
        let stacks: HashMap<_, u64, StackRecord> = HashMap::try_from(map).map_err(|e| map_error(name, e))?;
        Ok(stacks.keys().filter_map(|k| k.ok()).collect())
    }

    /// Stack records of the map `name` (keyed by the hash of their addresses).
    fn stack_records(
        &self,
        name: &'static str,
        ids: impl IntoIterator<Item = u64>,
    ) -> Result<StdHashMap<u64, (Vec<u64>, StackEnd)>> {
        let map = self.ebpf.map(name).ok_or_else(|| missing_map(name))?;
        let stacks: HashMap<_, u64, StackRecord> = HashMap::try_from(map).map_err(|e| map_error(name, e))?;
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let record = stacks.get(&id, 0).ok()?;
                let depth = (record.depth as usize).min(record.ips.len());
                let end = StackEnd::from_u32(record.end).unwrap_or(StackEnd::Unsupported);
                Some((id, (record.ips[..depth].to_vec(), end)))
            })
            .collect())
    }

    /// Tells the programs where process `tgid`'s PHP frame chain starts: from now on its
    /// allocations carry their PHP frames.
    pub fn set_php_process(&mut self, tgid: u32, process: &PhpProcess) -> Result<()> {
        let name = names::PHP_PROCESSES;
        let map = self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
        let mut processes: HashMap<_, u32, PhpProcess> = HashMap::try_from(map).map_err(|e| map_error(name, e))?;
        processes.insert(tgid, process, 0).map_err(|e| map_error(name, e))
    }

    /// The PHP frames stored so far, by the key of their native stack; only those not in
    /// `known` are read.
    pub fn php_stacks(&self, known: &dyn Fn(u64) -> bool) -> Result<StdHashMap<u64, PhpStack>> {
        let name = names::PHP_STACKS;
        let map = self.ebpf.map(name).ok_or_else(|| missing_map(name))?;
        let stacks: HashMap<_, u64, PhpStack> = HashMap::try_from(map).map_err(|e| map_error(name, e))?;
        // Entries are only ever inserted: a key that fails to read was not there.
        Ok(stacks
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !known(*k))
            .collect::<Vec<u64>>()
            .into_iter()
            .filter_map(|k| stacks.get(&k, 0).ok().map(|s| (k, s)))
            .collect())
    }

    /// Kernel mode with --user-stacks: the allocating tasks' user stacks, by stack map id.
    pub fn task_user_stacks(&self, ids: impl IntoIterator<Item = u32>) -> Result<StdHashMap<u32, Vec<BuildIdFrame>>> {
        let map = self.ebpf.map(names::STACKS).ok_or_else(|| missing_map(names::STACKS))?;
        let Map::StackTraceMap(data) = map else {
            return Err(map_error(names::STACKS, "not a stack-trace map"));
        };
        let fd = data.fd().as_fd().as_raw_fd();
        let mut out = StdHashMap::new();
        for id in ids {
            let mut frames = [BuildIdFrame { status: 0, build_id: [0; 20], offset_or_ip: 0 }; MAX_BUILD_ID_FRAMES];
            if lookup_raw(fd, &id, &mut frames) {
                out.insert(id, frames.into_iter().take_while(|f| f.status != 0).collect());
            }
        }
        Ok(out)
    }

    /// Turnover of every stack since tracing began, summed over CPUs.
    pub fn stack_stats(&self) -> Result<StdHashMap<u64, StackStats>> {
        let map = self.ebpf.map(names::STACK_STATS).ok_or_else(|| missing_map(names::STACK_STATS))?;
        let stats: PerCpuHashMap<_, u64, StackStats> =
            PerCpuHashMap::try_from(map).map_err(|e| map_error(names::STACK_STATS, e))?;
        Ok(stats
            .iter()
            .filter_map(|entry| entry.ok())
            .map(|(id, per_cpu)| {
                let total = per_cpu.iter().fold(StackStats::default(), |a, s| StackStats {
                    alloc_bytes: a.alloc_bytes + s.alloc_bytes,
                    alloc_count: a.alloc_count + s.alloc_count,
                    free_bytes: a.free_bytes + s.free_bytes,
                    free_count: a.free_count + s.free_count,
                });
                (id, total)
            })
            .collect())
    }

    /// The counters, summed over CPUs, in `Counter` order.
    pub fn counters(&self) -> Result<[u64; Counter::LEN as usize]> {
        let map = self.ebpf.map(names::COUNTERS).ok_or_else(|| missing_map(names::COUNTERS))?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| map_error(names::COUNTERS, e))?;
        let mut out = [0u64; Counter::LEN as usize];
        for counter in Counter::ALL {
            let values = array.get(&(counter as u32), 0).map_err(|e| map_error(names::COUNTERS, e))?;
            out[counter as usize] = values.iter().sum();
        }
        Ok(out)
    }

    /// Times the kernel skipped one of our programs because another BPF program was already
    /// running on that CPU (`recursion_misses` of each loaded program, summed).
    pub fn probe_misses(&self) -> u64 {
        let sessions = self.sessions.iter().flat_map(|s| s.program_fds()).filter_map(recursion_misses);
        self.ebpf
            .programs()
            .filter_map(|(name, prog)| Some((name, prog.fd().ok()?)))
            .filter_map(|(name, fd)| {
                let misses = recursion_misses(fd.as_fd())?;
                if misses > 0 {
                    log::debug!("{name}: {misses} runs skipped by the kernel");
                }
                Some(misses)
            })
            .chain(sessions)
            .sum::<u64>()
    }
}

impl Tracer {
    /// Copies `rows` into the unwind-row table from index `first` (through a shared mapping
    /// of the map: one copy, where per-row updates would take one system call each).
    pub fn write_unwind_rows(&mut self, first: u32, rows: &[UnwindRow]) -> Result<()> {
        let name = names::UNWIND_ROWS;
        let Some(Map::Array(data)) = self.ebpf.map(name) else { return Err(missing_map(name)) };
        let capacity = data.info().map_err(|e| map_error(name, e))?.max_entries() as usize;
        let end = first as usize + rows.len();
        if end > capacity {
            return Err(map_error(name, format!("{end} rows do not fit in {capacity}")));
        }
        let row_size = std::mem::size_of::<UnwindRow>();
        let length = capacity * row_size;
        // SAFETY: maps the array's memory (created with BPF_F_MMAPABLE) shared and writable;
        // the length is the map's size, and the mapping is dropped before returning.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(map_error(name, std::io::Error::last_os_error()));
        }
        // SAFETY: `first..end` is inside the mapping (checked above); UnwindRow is plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(rows.as_ptr(), (base as *mut UnwindRow).add(first as usize), rows.len());
            libc::munmap(base, length);
        }
        Ok(())
    }

    /// A new mapping-list generation, never 0 (an empty unwind-cache entry's).
    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.generation
    }

    /// Installs `mappings` (sorted by start) as process `tgid`'s table in `slot`.
    pub fn set_process_mappings(&mut self, tgid: u32, slot: u32, mappings: &[UnwindMapping]) -> Result<()> {
        if slot >= UNWIND_SLOTS || mappings.len() > MAX_UNWIND_MAPPINGS as usize {
            return Err(map_error(names::UNWIND_MAPPINGS, "slot or mapping count out of range"));
        }
        {
            let map = self.ebpf.map_mut(names::UNWIND_MAPPINGS).ok_or_else(|| missing_map(names::UNWIND_MAPPINGS))?;
            let mut array: Array<_, UnwindMapping> =
                Array::try_from(map).map_err(|e| map_error(names::UNWIND_MAPPINGS, e))?;
            for (i, mapping) in mappings.iter().enumerate() {
                array
                    .set(slot * MAX_UNWIND_MAPPINGS + i as u32, mapping, 0)
                    .map_err(|e| map_error(names::UNWIND_MAPPINGS, e))?;
            }
        }
        let generation = self.next_generation();
        let map = self.ebpf.map_mut(names::UNWIND_PROCESSES).ok_or_else(|| missing_map(names::UNWIND_PROCESSES))?;
        let mut processes: HashMap<_, u32, ProcessSlot> =
            HashMap::try_from(map).map_err(|e| map_error(names::UNWIND_PROCESSES, e))?;
        processes
            .insert(tgid, ProcessSlot { slot, count: mappings.len() as u32, generation, _pad: 0 }, 0)
            .map_err(|e| map_error(names::UNWIND_PROCESSES, e))
    }

    /// The stream of unwind events (library loads that stopped a traced process).
    pub fn take_unwind_events(&mut self) -> Result<UnwindEvents> {
        let name = names::UNWIND_EVENTS;
        let map = self.ebpf.take_map(name).ok_or_else(|| missing_map(name))?;
        let ring = RingBuf::try_from(map).map_err(|e| map_error(name, e))?;
        // SAFETY: the ring buffer owns its map's descriptor, which stays open and the same
        // for as long as the AsyncFd holds the ring buffer.
        let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| map_error(name, e))?;
        Ok(UnwindEvents { fd })
    }
}

/// `--comm NAME` as the programs compare it: the 16 comm bytes as two native words.
fn comm_words(comm: [u8; 16]) -> [u64; 2] {
    let (low, high) = comm.split_at(8);
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().unwrap_or_default());
    [word(low), word(high)]
}

/// Reads `recursion_misses` from `bpf_prog_info`, which aya 0.14's `ProgramInfo` does not expose.
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    prog_info(fd).map(|info| info.recursion_misses)
}

/// `bpf_prog_info` of a program, with the fields aya 0.14's `ProgramInfo` does not expose.
fn prog_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<aya_obj::generated::bpf_prog_info> {
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain data; all-zero is a valid value.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most info_len bytes into `info`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of_mut!(attr),
            std::mem::size_of::<InfoByFd>() as libc::c_long,
        )
    };
    (ret == 0).then_some(info)
}

/// Looks `key` up in the map `fd` into `value`, whose size must be the map's value size;
/// false when it is not there. For maps whose values aya reads otherwise (build-id stacks:
/// aya's stack-trace map reads addresses and stops at the first zero word).
fn lookup_raw<K, V>(fd: std::os::fd::RawFd, key: &K, value: &mut V) -> bool {
    #[repr(C)]
    struct Lookup {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = Lookup {
        map_fd: fd as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_mut(value) as u64,
        flags: 0,
    };
    // SAFETY: BPF_MAP_LOOKUP_ELEM reads the map's key size from `key` and writes its value
    // size into `value`; the callers pass the map's own key and value types.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_MAP_LOOKUP_ELEM as libc::c_long,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<Lookup>() as libc::c_long,
        )
    };
    ret == 0
}

/// Records `program` as loaded; true the first time it is seen.
fn first_use(loaded: &mut Vec<String>, program: &str) -> bool {
    if loaded.iter().any(|p| p == program) {
        return false;
    }
    loaded.push(program.to_string());
    true
}

/// A load failure; a refusal for want of privileges is told apart by its errno, when the
/// process really lacks them (the verifier also refuses a program with EACCES: then its log is
/// what the user needs, not "needs root").
fn load_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    if is_permission_denied(&e) && !crate::privileges::can_trace() {
        Error::NotPrivileged
    } else {
        Error::Load { what: what.to_string(), source: Box::new(e) }
    }
}

fn missing_map(name: &'static str) -> Error {
    Error::Map { map: name, source: "not found in the eBPF object".into() }
}

fn map_error(name: &'static str, e: impl Into<Cause>) -> Error {
    Error::Map { map: name, source: e.into() }
}
