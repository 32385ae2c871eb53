//! DWARF unwinding in the eBPF programs: the compact unwind rows compiled from `.eh_frame` /
//! `.debug_frame` by user space, and the per-process table of executable mappings that says
//! which rows describe which address range.
//!
//! x86-64 only. At every row the return address is at CFA-8 (the `call` pushed it there),
//! so a row only says how to find the CFA and where the caller's rbp was saved.

/// What a row says about the code from its `pc` up to the next row's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RowKind {
    /// CFA = rsp + `cfa_offset`.
    CfaRsp = 1,
    /// CFA = rbp + `cfa_offset`.
    CfaRbp = 2,
    /// The outermost frame (`_start`, thread start): the return address is undefined.
    End = 3,
    /// No unwind information covers this address (a gap between functions).
    NoInfo = 4,
    /// The CFA needs a DWARF expression or a register we do not track.
    Unsupported = 5,
    /// A signal trampoline (`__restore_rt`): the caller's registers are in a `ucontext`.
    Signal = 6,
    /// A PLT stub: CFA = rsp + 8, + 8 more once past the stub's push (glibc's standard
    /// expression, `rsp + 8 + ((rip & 15) >= 11) * 8`).
    Plt = 7,
}

impl RowKind {
    /// The kind stored in a row's `kind` byte.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::CfaRsp,
            2 => Self::CfaRbp,
            3 => Self::End,
            4 => Self::NoInfo,
            5 => Self::Unsupported,
            6 => Self::Signal,
            7 => Self::Plt,
            _ => return None,
        })
    }
}

/// One unwind row: from `pc` (relative to its table's base) until the next row's `pc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UnwindRow {
    /// Start of the range, as an offset from the table's base address.
    pub pc: u32,
    /// Added to the CFA register.
    pub cfa_offset: u16,
    /// A `RowKind` value.
    pub kind: u8,
    /// Where the caller's rbp was saved, in 8-byte units from the CFA (negative); 0 when
    /// rbp still holds the caller's value.
    pub rbp_offset: i8,
}

indexed_enum! {
    /// How frames in one mapping are unwound.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum MappingUnwinder {
        /// Follow the rbp chain (the module keeps frame pointers, has no unwind info, or its
        /// rows did not fit).
        FramePointer = 0,
        /// Look the pc up in the module's rows.
        Dwarf = 1,
    }
}

/// One executable mapping of a traced process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UnwindMapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Subtracted from a pc in the mapping to get a row `pc` of its table.
    pub bias: u64,
    /// Index of the table's first row in `UNWIND_ROWS`.
    pub first_row: u32,
    /// Rows in the table (0 with the frame-pointer unwinder).
    pub row_count: u32,
    /// A `MappingUnwinder` value.
    pub unwinder: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Executable mappings a process can have in its unwind table.
pub const MAX_UNWIND_MAPPINGS: u32 = 255;
/// Processes that can have an unwind table at once. Each has a slot of
/// `MAX_UNWIND_MAPPINGS` entries in `UNWIND_MAPPINGS`.
pub const UNWIND_SLOTS: u32 = 16;

/// Where a traced process's mappings are in `UNWIND_MAPPINGS`, in `UNWIND_PROCESSES`.
///
/// The mappings sit in an array map rather than inside this value so that the eBPF binary
/// search reaches them through map lookups: an index into a map value would have to be
/// tracked exactly by the verifier, which then cannot prune the search's paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcessSlot {
    /// Slot number: the mappings start at `slot * MAX_UNWIND_MAPPINGS`.
    pub slot: u32,
    /// Valid mappings in the slot, sorted by start address.
    pub count: u32,
    /// Changes with every new list of mappings (never 0): `UNWIND_CACHE` entries made under
    /// another generation are stale.
    pub generation: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Entries of the per-CPU `UNWIND_CACHE`: how the last frame seen at an address was stepped,
/// so that the next walk through the same code skips both binary searches (the mapping, then
/// the row), which are most of a frame's cost.
pub const UNWIND_CACHE_SIZE: u32 = 4096;

/// How a frame at a cached address is stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CachedStep {
    /// Along the rbp chain (a module without rows, or an address no row covers).
    FramePointer = 1,
    /// With the cached row.
    Row = 2,
    /// The address is in no executable mapping of the process.
    NoMapping = 3,
}

/// One `UNWIND_CACHE` entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UnwindCacheEntry {
    /// The looked-up address.
    pub pc: u64,
    /// Process it belongs to.
    pub tgid: u32,
    /// `ProcessSlot::generation` it was made under; 0 for an empty entry.
    pub generation: u32,
    /// A `CachedStep` value.
    pub step: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The row, for `CachedStep::Row`.
    pub row: UnwindRow,
}

const _: () = assert!(core::mem::size_of::<UnwindCacheEntry>() == 32);

/// Why user space is told about a traced process (an `UNWIND_EVENTS` record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum UnwindEventKind {
    /// The dynamic linker changed the mappings (dlopen/dlclose). A launched command was
    /// stopped (SIGSTOP) until its table is updated; an attached process runs on.
    /// After an exec the new image's dynamic linker reports its libraries the same way, so
    /// exec needs no event of its own.
    LibrariesChanged = 1,
}

/// A record of `UNWIND_EVENTS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UnwindEvent {
    /// Process concerned.
    pub tgid: u32,
    /// An `UnwindEventKind` value.
    pub kind: u32,
}

indexed_enum! {
    /// How a stored stack ended (`StackRecord::end`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum StackEnd {
        /// The kernel's frame-pointer walk took it (`--unwind fp`): it ends where the rbp chain ends.
        FramePointerWalk = 0,
        /// The unwinder reached the outermost frame.
        Complete = 1,
        /// Cut at the frame limit.
        DepthLimit = 2,
        /// A return address outside every known executable mapping (JIT or anonymous code, or a
        /// library mapped after the last table update).
        UnknownMapping = 3,
        /// Unwind information the unwinder cannot follow (a DWARF expression, an unknown register).
        Unsupported = 4,
        /// A signal handler's frame.
        SignalFrame = 5,
        /// The stack memory holding a return address or saved rbp could not be read.
        ReadFailed = 6,
        /// The process had no unwind table yet: the kernel's frame-pointer walk was used.
        NoTable = 7,
        /// A frame-pointer step found rbp outside the stack (code built without frame pointers).
        FramePointerLost = 8,
        /// A return address outside every known mapping of a process whose dynamic linker
        /// reported a library change the table has not taken in yet (attached processes run on
        /// while it is updated): most likely in the library just loaded.
        TableNotReady = 9,
    }
}

/// Why a probe stopped a launched command (a `HELD` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HoldReason {
    /// At exit, so that its mappings can still be read.
    Exit = 1,
    /// At a library load or unload, until its unwind table takes the change in.
    Libraries = 2,
}

/// Frames unwound at most per stack (the same as the stack walk's depth).
pub const MAX_UNWIND_FRAMES: usize = crate::alloc::MAX_STACK_DEPTH;

/// Steps of the binary search over a module's rows: enough for `MAX_TABLE_ROWS`.
pub const ROW_SEARCH_STEPS: usize = 21;
/// Rows one module's table may have (a larger one is unwound with frame pointers).
pub const MAX_TABLE_ROWS: usize = 1 << 20;
/// Steps of the binary search over a process's mappings (2^8 > `MAX_UNWIND_MAPPINGS`).
pub const MAPPING_SEARCH_STEPS: usize = 8;
const _: () = assert!(1 << MAPPING_SEARCH_STEPS > MAX_UNWIND_MAPPINGS as usize);

/// Default capacity of `UNWIND_ROWS` (8 bytes each).
pub const DEFAULT_UNWIND_ROWS: u32 = 1 << 20;

const _: () = assert!(core::mem::size_of::<UnwindRow>() == 8);
const _: () = assert!(core::mem::size_of::<UnwindMapping>() == 40);
const _: () = assert!(core::mem::size_of::<ProcessSlot>() == 16);
const _: () = assert!(core::mem::size_of::<UnwindEvent>() == 8);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, `#[repr(C)]`, no padding (asserted above).
unsafe impl aya::Pod for UnwindRow {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for UnwindMapping {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ProcessSlot {}
