//! Changes to the set of traced processes seen by the programs (`PROCESS_EVENTS`): a traced
//! process forked, ran a new program, or a process with the wanted name appeared.

indexed_enum! {
    /// What happened to a process (`ProcessEvent::kind`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ProcessEventKind {
        /// Not sent: keeps 0 from meaning anything.
        None = 0,
        /// A traced process forked (`--follow`, or `--comm` where the child keeps the name):
        /// `tgid` is the child, already traced, `parent` the process it was forked from.
        Forked = 1,
        /// A traced process ran a new program (exec) at `time_ns`: its blocks of the old
        /// image are gone with it.
        Exec = 2,
        /// A process ran a program whose name is the wanted one (`--comm`): it is traced now.
        Started = 3,
        /// A traced process ran a program of another name and is no longer traced (`--comm`
        /// without `--follow`).
        Left = 4,
        /// PHP's heap in a traced process was reset at `time_ns` (`zend_mm_shutdown`, at the
        /// end of each request and of the script): its blocks went with their chunks.
        HeapReset = 5,
    }
}

/// A record of `PROCESS_EVENTS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcessEvent {
    /// Process concerned.
    pub tgid: u32,
    /// A `ProcessEventKind` value.
    pub kind: u32,
    /// For `Forked`: the parent.
    pub parent: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` when it happened.
    pub time_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 24);
