//! What only a kernel-memory (`--kernel-slab`) trace reports.

use serde::{Deserialize, Serialize};

use super::{Frame, Totals};

/// How allocations are grouped in reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By kernel call stack.
    #[default]
    Stack,
    /// By slab cache.
    Cache,
    /// By the allocating task's command name.
    Comm,
    /// By where the allocating process's chain starts: its top-most ancestor that is not a
    /// shell or a launcher (`env`, `sudo`, …), or its own name when it has none.
    Origin,
    /// User mode: by process, each process's stacks apart.
    Process,
}

impl GroupBy {
    /// What a report's groups are called.
    pub fn plural(self) -> &'static str {
        match self {
            GroupBy::Stack | GroupBy::Process => "stacks",
            GroupBy::Cache => "caches",
            GroupBy::Comm => "commands",
            GroupBy::Origin => "origins",
        }
    }
}

/// Kernel-mode part of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelSection {
    /// How `stacks` are grouped.
    pub group_by: GroupBy,
    /// Tracepoints traced (`category:event`).
    pub events: Vec<String>,
    /// How kmalloc objects' caches are named; absent in reports of versions that did not say
    /// (they named them from size and flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmalloc_caches: Option<KmallocCacheNames>,
    /// Whether kernel addresses could be symbolized (false when kptr_restrict hides them).
    pub symbols_visible: bool,
    /// Slab lines of /proc/meminfo when tracing started.
    pub meminfo_start: SlabMeminfo,
    /// Slab lines of /proc/meminfo when this report was taken.
    pub meminfo_now: SlabMeminfo,
    /// Per cache: traced outstanding objects beside the cache's /proc/slabinfo change.
    pub caches: Vec<CacheAccount>,
    /// Traced outstanding bytes in caches that do not count as reclaimable.
    pub traced_unreclaimable_bytes: u64,
    /// With --run: the command and how many runs completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Runs>,
}

/// Where the cache name of a kmalloc object comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmallocCacheNames {
    /// From the object's slab: the cache it really lives in.
    Slab,
    /// From its size and gfp flags (`kmalloc-N`, `kmalloc-cg-N`, …): right for ordinary
    /// kmalloc, wrong for dedicated kmalloc caches (`msg_msg-N` and other kmem_buckets).
    Size,
}

/// The slab lines of /proc/meminfo, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabMeminfo {
    /// `Slab`.
    pub slab: u64,
    /// `SReclaimable`.
    pub reclaimable: u64,
    /// `SUnreclaim`.
    pub unreclaimable: u64,
}

/// One slab cache's traced and kernel-reported figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheAccount {
    /// Cache name as in /proc/slabinfo.
    pub name: String,
    /// Whether the cache is reclaimable (`SReclaimable`); null when unknown.
    pub reclaimable: Option<bool>,
    /// Traced outstanding objects (bytes as allocated, i.e. object size).
    pub traced: Totals,
    /// Change of active objects in /proc/slabinfo since tracing started; null when unknown.
    pub slabinfo_objects_delta: Option<i64>,
    /// The same change in bytes (objects × object size).
    pub slabinfo_bytes_delta: Option<i64>,
    /// Allocations at an address where an object of this cache was still outstanding: that
    /// object had been freed without a traced free (bulk frees, per-CPU sheaves).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub silently_freed: u64,
    /// True when `silently_freed` proves that frees of this cache are missed: its traced
    /// objects may be freed already, so they are not counted as leaks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfirmed: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `--run` progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runs {
    /// The shell command.
    pub command: String,
    /// Runs asked for.
    pub repeat: u32,
    /// Runs completed.
    pub completed: u32,
    /// Exit status of each completed run.
    pub exit_codes: Vec<i32>,
}

/// Kernel-mode detail of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelGroup {
    /// The group: a cache name or a command name (with --by cache / comm); empty by stack.
    pub key: String,
    /// Bytes requested by the callers (the `bytes` of the group are as allocated).
    pub requested_bytes: u64,
    /// Caches of the group's objects, most bytes first.
    pub caches: Vec<Share>,
    /// Allocating tasks (comm and pid), most bytes first.
    pub comms: Vec<Share>,
    /// The allocating task's user stack (with --user-stacks; the first object's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_frames: Vec<Frame>,
    /// With --run: objects and bytes added per run (outstanding divided by completed runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_run: Option<PerRun>,
    /// Every object of the group is in an unconfirmed cache (see `CacheAccount::unconfirmed`):
    /// the group is listed apart from the leaks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfirmed: bool,
}

/// Part of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Cache name, or `comm[pid]`.
    pub name: String,
    /// Bytes as allocated.
    pub bytes: u64,
    /// Objects.
    pub count: u64,
    /// For a `comm[pid]` share: the processes that led to it, parent first, up to a session
    /// leader or init (neither included beyond the leader), as recorded at fork and exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<Ancestor>,
}

/// One process in an allocating task's ancestry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Process id.
    pub pid: u32,
    /// Its command name (after its last exec).
    pub comm: String,
}

/// Growth per `--run` iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerRun {
    /// Bytes per run.
    pub bytes: f64,
    /// Objects per run.
    pub count: f64,
}
