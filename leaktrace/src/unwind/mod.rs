//! DWARF unwinding of user stacks in the eBPF programs: the unwind rows of every module
//! mapped by a traced process, compiled here and loaded into BPF maps.
//!
//! Rows are compiled once per file (by device and inode) and appended to one shared row
//! table ([`RowStore`]), so every process mapping the same library shares its rows. Each
//! traced process ([`ProcessUnwind`]) gets a sorted list of its executable mappings, written
//! into the spare one of its two slots and then switched to, so the programs never see a
//! half-written list.

pub mod table;

use std::collections::{BTreeMap, HashMap};

use leaktrace_common::{
    unwind::{MAX_UNWIND_MAPPINGS, UNWIND_SLOTS},
    MappingUnwinder, StackEnd, UnwindMapping, UnwindRow,
};

use crate::{
    bpf::Tracer,
    error::Result,
    mappings::{ExecMapping, Module},
    model::{StackEnding, UnwindMode, UnwindModule, UnwindSection, Unwinder},
};

/// How one module's frames are unwound, and why.
#[derive(Clone, Debug)]
struct ModuleTable {
    name: String,
    unwinder: MappingUnwinder,
    reason: &'static str,
    first_row: u32,
    row_count: u32,
    /// ELF address of row pc 0.
    base: u64,
    /// PT_LOAD segments: (file offset, address, file size, memory size).
    segments: Vec<(u64, u64, u64, u64)>,
}

impl ModuleTable {
    /// The address of file offset `offset` (for a mapping's load bias).
    fn vaddr_of_file_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(file_offset, _, file_size, _)| offset >= file_offset && offset < file_offset + file_size.max(1))
            .map(|&(file_offset, vaddr, _, _)| vaddr + (offset - file_offset))
    }
}

/// The unwind rows of every file any traced process maps, compiled once per file (by device
/// and inode) into the one row table the eBPF unwinder reads.
pub struct RowStore {
    mode: UnwindMode,
    capacity: u32,
    next_row: u32,
    /// By (device, inode).
    files: HashMap<(u64, u64), ModuleTable>,
}

/// One traced process's view of the row table: the sorted list of its executable mappings,
/// each pointing at its file's rows, in one of the process's two slots.
pub struct ProcessUnwind {
    tgid: u32,
    /// The mapping list last installed, to skip rewriting an unchanged one.
    installed: Vec<UnwindMapping>,
    /// Which of the process's two slots holds `installed` (0 or 1).
    slot: u32,
    /// Its two slots are `2 * pair` and `2 * pair + 1`.
    pair: u32,
    /// Executable mappings left out because the process had more than a slot holds.
    mappings_dropped: u64,
    updates: u64,
}

impl RowStore {
    /// A store with room for `capacity` rows in all.
    pub fn new(mode: UnwindMode, capacity: u32) -> Self {
        Self { mode, capacity, next_row: 0, files: HashMap::new() }
    }

    /// The table of `module`, compiled and loaded the first time any process maps it.
    fn table_of(&mut self, tracer: &mut Tracer, module: &Module) -> Result<&ModuleTable> {
        if !self.files.contains_key(&module.file) {
            let table = self.compile(&module.name, &module.open_path, tracer)?;
            self.files.insert(module.file, table);
        }
        Ok(&self.files[&module.file])
    }

    fn compile(&mut self, name: &str, path: &std::path::Path, tracer: &mut Tracer) -> Result<ModuleTable> {
        let mut module = ModuleTable {
            name: name.to_string(),
            unwinder: MappingUnwinder::FramePointer,
            reason: "",
            first_row: 0,
            row_count: 0,
            base: 0,
            segments: Vec::new(),
        };
        let compiled = match table::compile(path) {
            Ok(compiled) => compiled,
            Err(table::TableError::NoUnwindInfo(..)) => {
                module.reason = "no unwind information";
                return Ok(module);
            }
            Err(e) => {
                log::warn!("{e}; its frames are unwound with frame pointers");
                module.reason = "unwind information unreadable";
                return Ok(module);
            }
        };
        if self.mode == UnwindMode::Auto && compiled.has_frame_pointers() {
            module.reason = "built with frame pointers";
            return Ok(module);
        }
        let rows: &[UnwindRow] = &compiled.rows;
        if u64::from(self.next_row) + rows.len() as u64 > u64::from(self.capacity) {
            module.reason = "unwind table full (raise --unwind-rows)";
            return Ok(module);
        }
        tracer.write_unwind_rows(self.next_row, rows)?;
        module.unwinder = MappingUnwinder::Dwarf;
        module.reason = if self.mode == UnwindMode::Auto { "built without frame pointers" } else { "--unwind dwarf" };
        module.first_row = self.next_row;
        module.row_count = rows.len() as u32;
        module.base = compiled.base;
        module.segments = compiled.segments;
        self.next_row += rows.len() as u32;
        Ok(module)
    }

    /// What the report says about unwinding, over every process in `processes`.
    pub fn section<'a>(
        &self,
        processes: impl IntoIterator<Item = &'a ProcessUnwind>,
        stacks_by_end: BTreeMap<StackEnding, u64>,
        (library_events_lost, table_not_ready): (u64, u64),
    ) -> UnwindSection {
        let mut modules: Vec<UnwindModule> = self
            .files
            .values()
            .map(|m| UnwindModule {
                module: m.name.clone(),
                unwinder: match m.unwinder {
                    MappingUnwinder::Dwarf => Unwinder::Dwarf,
                    MappingUnwinder::FramePointer => Unwinder::FramePointer,
                },
                reason: m.reason.to_string(),
                rows: u64::from(m.row_count),
            })
            .collect();
        modules.sort_by(|a, b| a.module.cmp(&b.module));
        let (mut mappings_dropped, mut table_updates) = (0, 0);
        for process in processes {
            mappings_dropped += process.mappings_dropped;
            table_updates += process.updates;
        }
        UnwindSection {
            mode: self.mode,
            rows_used: u64::from(self.next_row),
            rows_capacity: u64::from(self.capacity),
            table_bytes: u64::from(self.capacity) * std::mem::size_of::<UnwindRow>() as u64,
            mappings_dropped,
            table_updates,
            library_events_lost,
            table_not_ready,
            modules,
            stacks_by_end,
        }
    }
}

impl ProcessUnwind {
    /// Processes that can have a table of their own at once: each takes two slots.
    pub const PAIRS: u32 = UNWIND_SLOTS / 2;

    /// No table yet for process `tgid`, which will use slot pair `pair` (below [`Self::PAIRS`]).
    pub fn new(tgid: u32, pair: u32) -> Self {
        Self { tgid, installed: Vec::new(), slot: 1, pair, mappings_dropped: 0, updates: 0 }
    }

    /// Brings the process's mapping list in line with `mappings` (its latest snapshot, which
    /// holds each mapped file open): compiles the rows of files not seen before and installs
    /// the list if it changed.
    pub fn sync<'a>(
        &mut self,
        rows: &mut RowStore,
        tracer: &mut Tracer,
        mappings: impl Iterator<Item = ExecMapping<'a>>,
    ) -> Result<()> {
        let mut installed = Vec::new();
        for map in mappings {
            let module = rows.table_of(tracer, map.module)?;
            let mut mapping = UnwindMapping { start: map.start, end: map.end, ..UnwindMapping::default() };
            if module.unwinder == MappingUnwinder::Dwarf {
                if let Some(vaddr) = module.vaddr_of_file_offset(map.file_offset) {
                    // pc - bias = pc's ELF address - base, the row pc.
                    mapping.bias = map.start.wrapping_sub(vaddr).wrapping_add(module.base);
                    mapping.first_row = module.first_row;
                    mapping.row_count = module.row_count;
                    mapping.unwinder = MappingUnwinder::Dwarf as u32;
                }
            }
            installed.push(mapping);
        }
        // The snapshot is sorted by address already.
        if installed.len() > MAX_UNWIND_MAPPINGS as usize {
            self.mappings_dropped = (installed.len() - MAX_UNWIND_MAPPINGS as usize) as u64;
            installed.truncate(MAX_UNWIND_MAPPINGS as usize);
        }
        if installed != self.installed {
            let slot = 1 - self.slot;
            tracer.set_process_mappings(self.tgid, 2 * self.pair + slot, &installed)?;
            self.slot = slot;
            self.installed = installed;
            self.updates += 1;
        }
        Ok(())
    }
}

/// The report's name for how a stack ended.
pub fn ending(end: StackEnd) -> StackEnding {
    match end {
        StackEnd::FramePointerWalk => StackEnding::FramePointerWalk,
        StackEnd::Complete => StackEnding::Complete,
        StackEnd::DepthLimit => StackEnding::FrameLimit,
        StackEnd::UnknownMapping => StackEnding::UnknownMapping,
        StackEnd::Unsupported => StackEnding::UnsupportedUnwindInfo,
        StackEnd::SignalFrame => StackEnding::SignalFrame,
        StackEnd::ReadFailed => StackEnding::StackUnreadable,
        StackEnd::NoTable => StackEnding::NoTableYet,
        StackEnd::FramePointerLost => StackEnding::FramePointerLost,
        StackEnd::TableNotReady => StackEnding::LibraryNotInTableYet,
    }
}
