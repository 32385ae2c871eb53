//! The kernel tracepoints leaktrace attaches to, as data: which program, which event, which
//! fields it reads (and under which global the offset goes).

use std::path::Path;

use leaktrace_common::{kernel::offsets, names};

use super::tracefs::EventFormat;
use crate::error::{Error, Result};

/// The `struct kmem_cache` members the raw tracepoint programs read, from the kernel's BTF:
/// (global, member). Empty when the BTF lacks one: the classic tracepoints are used then.
pub fn kmem_cache_offsets(btf: &super::btf::Btf) -> Vec<(&'static str, u32)> {
    let members = ["size", "object_size", "name"];
    offsets::KMEM_CACHE
        .iter()
        .zip(members)
        .map(|(global, member)| btf.member_offset("kmem_cache", member).map(|offset| (*global, offset)))
        .collect::<Result<_>>()
        .unwrap_or_else(|e| {
            log::warn!("{e}; the slab events are traced through their classic tracepoints");
            Vec::new()
        })
}

/// A tracepoint and the fields its program reads.
#[derive(Clone, Copy, Debug)]
pub struct EventSpec {
    /// eBPF program.
    pub program: &'static str,
    /// tracefs category.
    pub category: &'static str,
    /// Event name.
    pub event: &'static str,
    /// (field, size in bytes, global that receives its offset).
    pub fields: &'static [(&'static str, u32, &'static str)],
    /// The same event's raw BTF tracepoint program, preferred where the kernel has it.
    pub btf_program: Option<&'static str>,
}

const KMALLOC: EventSpec = EventSpec {
    program: names::PROG_KMALLOC,
    category: "kmem",
    event: "kmalloc",
    fields: &[
        ("ptr", 8, offsets::KMALLOC[0]),
        ("bytes_req", 8, offsets::KMALLOC[1]),
        ("bytes_alloc", 8, offsets::KMALLOC[2]),
        ("gfp_flags", 8, offsets::KMALLOC[3]),
    ],
    btf_program: Some(names::PROG_KMALLOC_BTF),
};
const KMEM_CACHE_ALLOC: EventSpec = EventSpec {
    program: names::PROG_KMEM_CACHE_ALLOC,
    category: "kmem",
    event: "kmem_cache_alloc",
    fields: &[
        ("ptr", 8, offsets::KMEM_CACHE_ALLOC[0]),
        ("bytes_req", 8, offsets::KMEM_CACHE_ALLOC[1]),
        ("bytes_alloc", 8, offsets::KMEM_CACHE_ALLOC[2]),
        ("gfp_flags", 8, offsets::KMEM_CACHE_ALLOC[3]),
        ("name", 4, offsets::KMEM_CACHE_ALLOC[4]),
    ],
    btf_program: Some(names::PROG_KMEM_CACHE_ALLOC_BTF),
};

/// Slab events, always traced. Kernels before 6.1 also have `kmalloc_node` and
/// `kmem_cache_alloc_node`, attached to the same programs when their layout matches.
pub const SLAB: &[EventSpec] = &[
    KMALLOC,
    KMEM_CACHE_ALLOC,
    EventSpec {
        program: names::PROG_KFREE,
        category: "kmem",
        event: "kfree",
        fields: &[("ptr", 8, offsets::KFREE_PTR)],
        btf_program: Some(names::PROG_KFREE_BTF),
    },
    EventSpec {
        program: names::PROG_KMEM_CACHE_FREE,
        category: "kmem",
        event: "kmem_cache_free",
        fields: &[("ptr", 8, offsets::KMEM_CACHE_FREE_PTR)],
        btf_program: Some(names::PROG_KMEM_CACHE_FREE_BTF),
    },
];

/// Older kernels' `_node` variants: (variant, the event whose program and layout it shares).
pub const NODE_VARIANTS: &[(&str, EventSpec)] =
    &[("kmalloc_node", KMALLOC), ("kmem_cache_alloc_node", KMEM_CACHE_ALLOC)];

/// `--pages`.
pub const PAGES: &[EventSpec] = &[
    EventSpec {
        program: names::PROG_PAGE_ALLOC,
        category: "kmem",
        event: "mm_page_alloc",
        fields: &[
            ("pfn", 8, offsets::PAGE_ALLOC[0]),
            ("order", 4, offsets::PAGE_ALLOC[1]),
            ("gfp_flags", 8, offsets::PAGE_ALLOC[2]),
        ],
        btf_program: None,
    },
    EventSpec {
        program: names::PROG_PAGE_FREE,
        category: "kmem",
        event: "mm_page_free",
        fields: &[("pfn", 8, offsets::PAGE_FREE_PFN)],
        btf_program: None,
    },
    EventSpec {
        program: names::PROG_PAGE_FREE_BATCHED,
        category: "kmem",
        event: "mm_page_free_batched",
        fields: &[("pfn", 8, offsets::PAGE_FREE_BATCHED_PFN)],
        btf_program: None,
    },
];

/// `--percpu`.
pub const PERCPU: &[EventSpec] = &[
    EventSpec {
        program: names::PROG_PERCPU_ALLOC,
        category: "percpu",
        event: "percpu_alloc_percpu",
        fields: &[
            ("ptr", 8, offsets::PERCPU_ALLOC[0]),
            ("bytes_alloc", 8, offsets::PERCPU_ALLOC[1]),
            ("gfp_flags", 8, offsets::PERCPU_ALLOC[2]),
        ],
        btf_program: None,
    },
    EventSpec {
        program: names::PROG_PERCPU_FREE,
        category: "percpu",
        event: "percpu_free_percpu",
        fields: &[("ptr", 8, offsets::PERCPU_FREE_PTR)],
        btf_program: None,
    },
];

/// Records each process's parent (fork) and new name (exec), and follows forks of traced
/// processes (for -p and --run).
pub const LINEAGE: &[EventSpec] = &[
    EventSpec {
        program: names::PROG_FORK,
        category: "sched",
        event: "sched_process_fork",
        fields: &[("child_pid", 4, offsets::FORK_CHILD_PID)],
        btf_program: None,
    },
    EventSpec {
        program: names::PROG_EXEC_LINEAGE,
        category: "sched",
        event: "sched_process_exec",
        fields: &[("filename", 4, offsets::EXEC_FILENAME)],
        btf_program: None,
    },
];

/// User mode: a traced process created a task (`--follow`, `--comm`).
pub const NEW_TASK: EventSpec = EventSpec {
    program: names::PROG_NEW_TASK,
    category: "task",
    event: "task_newtask",
    fields: &[("pid", 4, offsets::NEW_TASK[0]), ("clone_flags", 8, offsets::NEW_TASK[1])],
    btf_program: None,
};

/// User mode: a process ran a new program (reads no field).
pub const EXEC: EventSpec = EventSpec {
    program: names::PROG_EXEC,
    category: "sched",
    event: "sched_process_exec",
    fields: &[],
    btf_program: None,
};

/// Reads the offsets of `spec`'s fields from tracefs.
pub fn offsets_of(tracefs: &Path, spec: &EventSpec) -> Result<Vec<(&'static str, u32)>> {
    let name = format!("{}:{}", spec.category, spec.event);
    let format = EventFormat::read(tracefs, spec.category, spec.event)
        .ok_or_else(|| Error::UnsupportedKernel(format!("tracepoint {name} does not exist on this kernel")))?;
    spec.fields.iter().map(|&(field, size, global)| format.offset(&name, field, size).map(|o| (global, o))).collect()
}
