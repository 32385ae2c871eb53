//! Which allocator functions are probed, and where they live in the target.
//!
//! The probe tables are data: adding a function is one row. Each row names the eBPF entry
//! program that reads its arguments; every allocating function shares one return program.
//! The C API rows are looked for in the object that provides the process's `malloc`; each
//! allocator family adds its own entry points (jemalloc's `mallocx`, tcmalloc's `tc_*`,
//! mimalloc's `mi_*`), and C++'s `operator new`/`delete` are looked for in every allocator
//! object and in the C++ runtime. Calls between probed functions (`new` calling `malloc`,
//! `delete` jumping to `free`) are nested calls for the eBPF side: a block is counted once,
//! by the outermost call, at its caller's stack.

use std::path::{Path, PathBuf};

use leaktrace_common::{names, Heap};
use object::{Object, ObjectSection};

use crate::{
    error::{Cause, Error, Result},
    probe_site::{self, Handling, Needs, Site},
    symbols::{self, SymbolIndex},
};

/// One allocator entry point and how it is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocatorFn {
    /// Symbol name without prefix.
    pub name: &'static str,
    /// eBPF program attached at entry.
    pub entry_program: &'static str,
    /// Whether the shared return program is attached too (false for free).
    pub returns_block: bool,
    /// Tracing is refused without it.
    pub required: bool,
    /// Argument registers the entry program reads (rdi, rsi, rdx in order): the probe can
    /// only move past instructions that leave them alone.
    pub args: u8,
    /// It may call another probed function (glibc's reallocarray tail-calls realloc, C++'s
    /// `new` calls `malloc`). With sampling such a function keeps its return probe even when
    /// unsampled: the state that marks the inner call as nested lives until that return, and
    /// without it the inner call would get a second, independent chance to be sampled.
    pub calls_allocator: bool,
    /// The probe's attach cookie: its heap in the upper half, in the lower half the size of a
    /// function whose size is in its name ([`Heap::cookie`]).
    pub cookie: u64,
}

impl AllocatorFn {
    /// What the programs attached to this function need at its probe site.
    pub fn needs(&self) -> Needs {
        Needs { args: self.args, return_probe: self.returns_block }
    }
}

const fn hook(name: &'static str, entry_program: &'static str, required: bool, args: u8) -> AllocatorFn {
    AllocatorFn { name, entry_program, returns_block: true, required, args, calls_allocator: false, cookie: 0 }
}

/// A function that takes the block in its first argument and returns nothing to record.
const fn free_like(name: &'static str) -> AllocatorFn {
    AllocatorFn {
        name,
        entry_program: names::PROG_FREE,
        returns_block: false,
        required: false,
        args: 1,
        calls_allocator: false,
        cookie: 0,
    }
}

/// An allocating function that may be served by another probed one (new over malloc).
const fn outer(name: &'static str, entry_program: &'static str, args: u8) -> AllocatorFn {
    AllocatorFn { calls_allocator: true, ..hook(name, entry_program, false, args) }
}

/// Every function leaktrace hooks in a C allocator.
pub const ALLOCATOR_FUNCTIONS: &[AllocatorFn] = &[
    hook("malloc", names::PROG_SIZE_ARG0, true, 1),
    hook("calloc", names::PROG_CALLOC, true, 2),
    hook("realloc", names::PROG_REALLOC, true, 2),
    AllocatorFn { required: true, ..free_like("free") },
    outer("reallocarray", names::PROG_REALLOCARRAY, 3),
    hook("posix_memalign", names::PROG_POSIX_MEMALIGN, false, 3),
    hook("aligned_alloc", names::PROG_SIZE_ARG1, false, 2),
    hook("memalign", names::PROG_SIZE_ARG1, false, 2),
    hook("valloc", names::PROG_SIZE_ARG0, false, 1),
    hook("pvalloc", names::PROG_SIZE_ARG0, false, 1),
];

/// jemalloc's non-standard API. `nallocx` allocates nothing; `xallocx` resizes a block in
/// place (it keeps its stack and takes its new size).
pub const JEMALLOC_FUNCTIONS: &[AllocatorFn] = &[
    hook("mallocx", names::PROG_SIZE_ARG0, false, 1),
    hook("rallocx", names::PROG_REALLOC, false, 2),
    hook("xallocx", names::PROG_RESIZE, false, 3),
    free_like("sdallocx"),
    free_like("dallocx"),
];

/// gperftools' tcmalloc: its `tc_*` API (malloc and the C++ operators are aliases of it).
pub const TCMALLOC_FUNCTIONS: &[AllocatorFn] = &[
    hook("tc_malloc", names::PROG_SIZE_ARG0, false, 1),
    hook("tc_malloc_skip_new_handler", names::PROG_SIZE_ARG0, false, 1),
    hook("tc_calloc", names::PROG_CALLOC, false, 2),
    hook("tc_realloc", names::PROG_REALLOC, false, 2),
    hook("tc_memalign", names::PROG_SIZE_ARG1, false, 2),
    hook("tc_posix_memalign", names::PROG_POSIX_MEMALIGN, false, 3),
    hook("tc_valloc", names::PROG_SIZE_ARG0, false, 1),
    hook("tc_pvalloc", names::PROG_SIZE_ARG0, false, 1),
    outer("tc_new", names::PROG_SIZE_ARG0, 1),
    outer("tc_newarray", names::PROG_SIZE_ARG0, 1),
    outer("tc_new_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("tc_newarray_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("tc_new_aligned", names::PROG_SIZE_ARG0, 1),
    outer("tc_newarray_aligned", names::PROG_SIZE_ARG0, 1),
    outer("tc_new_aligned_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("tc_newarray_aligned_nothrow", names::PROG_SIZE_ARG0, 1),
    free_like("tc_free"),
    free_like("tc_cfree"),
    free_like("tc_free_sized"),
    free_like("tc_delete"),
    free_like("tc_deletearray"),
    free_like("tc_delete_nothrow"),
    free_like("tc_deletearray_nothrow"),
    free_like("tc_delete_sized"),
    free_like("tc_deletearray_sized"),
    free_like("tc_delete_aligned"),
    free_like("tc_deletearray_aligned"),
    free_like("tc_delete_sized_aligned"),
    free_like("tc_deletearray_sized_aligned"),
    free_like("tc_delete_aligned_nothrow"),
    free_like("tc_deletearray_aligned_nothrow"),
];

/// Google's tcmalloc (not gperftools'): malloc, the rest of the C API and C++'s operators
/// are aliases of its `TCMallocInternal*` functions (its libc_override.h), so each probe is
/// placed once, under the C or C++ name, with the internal name as an alias; the internal
/// names are looked for too, for a build that does not override the C names. Its
/// size-returning `new` extensions return the block first (in rax), like `new`. The
/// spellings of the aligned nothrow operators changed between releases: both are listed.
pub const GOOGLE_TCMALLOC_FUNCTIONS: &[AllocatorFn] = &[
    hook("TCMallocInternalMalloc", names::PROG_SIZE_ARG0, false, 1),
    hook("TCMallocInternalMalloc_aligned", names::PROG_SIZE_ARG0, false, 1),
    hook("TCMallocInternalCalloc", names::PROG_CALLOC, false, 2),
    hook("TCMallocInternalRealloc", names::PROG_REALLOC, false, 2),
    outer("TCMallocInternalReallocArray", names::PROG_REALLOCARRAY, 3),
    hook("TCMallocInternalMemalign", names::PROG_SIZE_ARG1, false, 2),
    hook("TCMallocInternalAlignedAlloc", names::PROG_SIZE_ARG1, false, 2),
    hook("TCMallocInternalPosixMemalign", names::PROG_POSIX_MEMALIGN, false, 3),
    hook("TCMallocInternalValloc", names::PROG_SIZE_ARG0, false, 1),
    hook("TCMallocInternalPvalloc", names::PROG_SIZE_ARG0, false, 1),
    outer("TCMallocInternalNew", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewArray", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewNothrow", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewArrayNothrow", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewAligned", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewAligned_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewAlignedNothrow", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewArrayAligned", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewArrayAligned_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("TCMallocInternalNewArrayAlignedNothrow", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_hot_cold", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_hot_cold_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_aligned", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_aligned_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_aligned_hot_cold", names::PROG_SIZE_ARG0, 1),
    outer("tcmalloc_size_returning_operator_new_aligned_hot_cold_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("__size_returning_new", names::PROG_SIZE_ARG0, 1),
    outer("__size_returning_new_aligned", names::PROG_SIZE_ARG0, 1),
    outer("__size_returning_new_hot_cold", names::PROG_SIZE_ARG0, 1),
    outer("__size_returning_new_aligned_hot_cold", names::PROG_SIZE_ARG0, 1),
    free_like("TCMallocInternalFree"),
    free_like("TCMallocInternalCfree"),
    free_like("TCMallocInternalFreeSized"),
    free_like("TCMallocInternalFreeAlignedSized"),
    free_like("TCMallocInternalSdallocx"),
    free_like("TCMallocInternalDelete"),
    free_like("TCMallocInternalDeleteSized"),
    free_like("TCMallocInternalDeleteArray"),
    free_like("TCMallocInternalDeleteArraySized"),
    free_like("TCMallocInternalDeleteNothrow"),
    free_like("TCMallocInternalDeleteArrayNothrow"),
    free_like("TCMallocInternalDeleteAligned"),
    free_like("TCMallocInternalDeleteAligned_nothrow"),
    free_like("TCMallocInternalDeleteAlignedNothrow"),
    free_like("TCMallocInternalDeleteSizedAligned"),
    free_like("TCMallocInternalDeleteArrayAligned"),
    free_like("TCMallocInternalDeleteArrayAligned_nothrow"),
    free_like("TCMallocInternalDeleteArrayAlignedNothrow"),
    free_like("TCMallocInternalDeleteArraySizedAligned"),
];

/// mimalloc's `mi_*` API. `mi_strdup`/`mi_strndup` and `mi_expand` are not traced (the size
/// is not an argument; `mi_expand` resizes in place).
pub const MIMALLOC_FUNCTIONS: &[AllocatorFn] = &[
    hook("mi_malloc", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_malloc_small", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_zalloc", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_zalloc_small", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_calloc", names::PROG_CALLOC, false, 2),
    hook("mi_mallocn", names::PROG_CALLOC, false, 2),
    hook("mi_realloc", names::PROG_REALLOC, false, 2),
    hook("mi_reallocf", names::PROG_REALLOC, false, 2),
    outer("mi_reallocn", names::PROG_REALLOCARRAY, 3),
    hook("mi_malloc_aligned", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_malloc_aligned_at", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_zalloc_aligned", names::PROG_SIZE_ARG0, false, 1),
    hook("mi_calloc_aligned", names::PROG_CALLOC, false, 2),
    hook("mi_realloc_aligned", names::PROG_REALLOC, false, 2),
    outer("mi_new", names::PROG_SIZE_ARG0, 1),
    outer("mi_new_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("mi_new_aligned", names::PROG_SIZE_ARG0, 1),
    outer("mi_new_aligned_nothrow", names::PROG_SIZE_ARG0, 1),
    outer("mi_new_n", names::PROG_CALLOC, 2),
    outer("mi_new_realloc", names::PROG_REALLOC, 2),
    outer("mi_new_reallocn", names::PROG_REALLOCARRAY, 3),
    free_like("mi_free"),
    free_like("mi_cfree"),
    free_like("mi_free_size"),
    free_like("mi_free_aligned"),
    free_like("mi_free_size_aligned"),
];

/// C++'s replaceable allocation functions (Itanium ABI names, 64-bit `size_t`): plain,
/// array, nothrow and aligned `new`; plain, sized, aligned and nothrow `delete`. libstdc++'s
/// `new` calls `malloc` (or `aligned_alloc`) and its `delete` jumps to `free`: the eBPF side
/// counts the inner call as nested, so each block is recorded once, at `new`'s caller.
pub const CXX_FUNCTIONS: &[AllocatorFn] = &[
    outer("_Znwm", names::PROG_SIZE_ARG0, 1),
    outer("_Znam", names::PROG_SIZE_ARG0, 1),
    outer("_ZnwmRKSt9nothrow_t", names::PROG_SIZE_ARG0, 1),
    outer("_ZnamRKSt9nothrow_t", names::PROG_SIZE_ARG0, 1),
    outer("_ZnwmSt11align_val_t", names::PROG_SIZE_ARG0, 1),
    outer("_ZnamSt11align_val_t", names::PROG_SIZE_ARG0, 1),
    outer("_ZnwmSt11align_val_tRKSt9nothrow_t", names::PROG_SIZE_ARG0, 1),
    outer("_ZnamSt11align_val_tRKSt9nothrow_t", names::PROG_SIZE_ARG0, 1),
    free_like("_ZdlPv"),
    free_like("_ZdaPv"),
    free_like("_ZdlPvm"),
    free_like("_ZdaPvm"),
    free_like("_ZdlPvRKSt9nothrow_t"),
    free_like("_ZdaPvRKSt9nothrow_t"),
    free_like("_ZdlPvSt11align_val_t"),
    free_like("_ZdaPvSt11align_val_t"),
    free_like("_ZdlPvmSt11align_val_t"),
    free_like("_ZdaPvmSt11align_val_t"),
    free_like("_ZdlPvSt11align_val_tRKSt9nothrow_t"),
    free_like("_ZdaPvSt11align_val_tRKSt9nothrow_t"),
];

/// A Zend entry point: its blocks are on PHP's heap.
const fn zend(name: &'static str, entry_program: &'static str, args: u8) -> AllocatorFn {
    AllocatorFn { cookie: Heap::Php.cookie(0), ..hook(name, entry_program, false, args) }
}

/// A Zend entry point that takes no size: it serves one bin, whose size is in its name.
const fn zend_bin(name: &'static str, size: u32) -> AllocatorFn {
    AllocatorFn { cookie: Heap::Php.cookie(size), ..hook(name, names::PROG_FIXED_SIZE, false, 0) }
}

/// A Zend free: on PHP's heap too, so that `--heap malloc` leaves it out with the rest.
const fn zend_free(name: &'static str) -> AllocatorFn {
    AllocatorFn { cookie: Heap::Php.cookie(0), ..free_like(name) }
}

/// PHP's Zend memory manager (PHP 7.4–8.4 export the same names). Its blocks come from its
/// own mmap'ed chunks, not from malloc, so they are a second heap beside the C one. With
/// `USE_ZEND_ALLOC=0` it hands every request to malloc instead: `_emalloc` is then the outer
/// call and the inner malloc is nested, so a block is still counted once, on PHP's heap.
///
/// `_ecalloc` calls `_emalloc` (nested: counted once, at `_ecalloc`'s caller). `_estrdup`,
/// `_estrndup` and `_safe_emalloc` are not probed: each computes its size and calls (or
/// jumps to) `_emalloc`, whose probe counts the exact size without a second trap per call;
/// their blocks' innermost frame is the wrapper itself. The `_efree_*` variants take the
/// block first (the large and huge ones a size after it, which the block's record already
/// holds).
pub const ZEND_FUNCTIONS: &[AllocatorFn] = &[
    zend("_emalloc", names::PROG_SIZE_ARG0, 1),
    zend_bin("_emalloc_8", 8),
    zend_bin("_emalloc_16", 16),
    zend_bin("_emalloc_24", 24),
    zend_bin("_emalloc_32", 32),
    zend_bin("_emalloc_40", 40),
    zend_bin("_emalloc_48", 48),
    zend_bin("_emalloc_56", 56),
    zend_bin("_emalloc_64", 64),
    zend_bin("_emalloc_80", 80),
    zend_bin("_emalloc_96", 96),
    zend_bin("_emalloc_112", 112),
    zend_bin("_emalloc_128", 128),
    zend_bin("_emalloc_160", 160),
    zend_bin("_emalloc_192", 192),
    zend_bin("_emalloc_224", 224),
    zend_bin("_emalloc_256", 256),
    zend_bin("_emalloc_320", 320),
    zend_bin("_emalloc_384", 384),
    zend_bin("_emalloc_448", 448),
    zend_bin("_emalloc_512", 512),
    zend_bin("_emalloc_640", 640),
    zend_bin("_emalloc_768", 768),
    zend_bin("_emalloc_896", 896),
    zend_bin("_emalloc_1024", 1024),
    zend_bin("_emalloc_1280", 1280),
    zend_bin("_emalloc_1536", 1536),
    zend_bin("_emalloc_1792", 1792),
    zend_bin("_emalloc_2048", 2048),
    zend_bin("_emalloc_2560", 2560),
    zend_bin("_emalloc_3072", 3072),
    zend("_emalloc_large", names::PROG_SIZE_ARG0, 1),
    zend("_emalloc_huge", names::PROG_SIZE_ARG0, 1),
    AllocatorFn { calls_allocator: true, ..zend("_ecalloc", names::PROG_CALLOC, 2) },
    AllocatorFn { calls_allocator: true, ..zend("_erealloc", names::PROG_REALLOC, 2) },
    AllocatorFn { calls_allocator: true, ..zend("_erealloc2", names::PROG_REALLOC, 2) },
    zend_free("_efree"),
    zend_free("_efree_8"),
    zend_free("_efree_16"),
    zend_free("_efree_24"),
    zend_free("_efree_32"),
    zend_free("_efree_40"),
    zend_free("_efree_48"),
    zend_free("_efree_56"),
    zend_free("_efree_64"),
    zend_free("_efree_80"),
    zend_free("_efree_96"),
    zend_free("_efree_112"),
    zend_free("_efree_128"),
    zend_free("_efree_160"),
    zend_free("_efree_192"),
    zend_free("_efree_224"),
    zend_free("_efree_256"),
    zend_free("_efree_320"),
    zend_free("_efree_384"),
    zend_free("_efree_448"),
    zend_free("_efree_512"),
    zend_free("_efree_640"),
    zend_free("_efree_768"),
    zend_free("_efree_896"),
    zend_free("_efree_1024"),
    zend_free("_efree_1280"),
    zend_free("_efree_1536"),
    zend_free("_efree_1792"),
    zend_free("_efree_2048"),
    zend_free("_efree_2560"),
    zend_free("_efree_3072"),
    zend_free("_efree_large"),
    zend_free("_efree_huge"),
];

/// The family name of the Zend memory manager, wherever its functions are found.
pub const ZEND_FAMILY: &str = "zend";

impl AllocatorFn {
    /// The heap its blocks are on.
    pub fn heap(&self) -> Heap {
        Heap::from_u32(Heap::of_cookie(self.cookie)).unwrap_or(Heap::Malloc)
    }
}

/// The report's name of a heap the programs number.
pub fn model_heap(heap: Heap) -> crate::model::Heap {
    match heap {
        Heap::Malloc => crate::model::Heap::Malloc,
        Heap::Php => crate::model::Heap::Php,
    }
}

/// What a function added with `--alloc-fn NAME:KIND` does with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FnKind {
    /// `void *f(size_t size)`.
    MallocLike,
    /// `void *f(size_t count, size_t size)`.
    CallocLike,
    /// `void *f(void *old, size_t size)`.
    ReallocLike,
    /// `void f(void *block)`.
    FreeLike,
    /// `void f(void *block, size_t size)`.
    SizeFreeLike,
}

impl FnKind {
    /// The table row of a function `name` of this kind. The name is leaked: rows hold
    /// `'static` names, and these come once from the command line.
    pub fn row(self, name: &str) -> AllocatorFn {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        match self {
            Self::MallocLike => outer(name, names::PROG_SIZE_ARG0, 1),
            Self::CallocLike => outer(name, names::PROG_CALLOC, 2),
            Self::ReallocLike => outer(name, names::PROG_REALLOC, 2),
            Self::FreeLike | Self::SizeFreeLike => free_like(name),
        }
    }
}

/// Programs on `exit`/`_exit` and `_dl_debug_state` read no argument and have no return probe.
const HOOK_NEEDS: Needs = Needs { args: 0, return_probe: false };

/// A function found in an allocator object, ready to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFn {
    /// The table row.
    pub function: AllocatorFn,
    /// Full symbol name (with prefix).
    pub symbol: String,
    /// File offset of its first instruction.
    pub file_offset: u64,
    /// Where in the function its probes go.
    pub site: Site,
    /// Other names of the same code (glibc's aligned_alloc is memalign), probed once under
    /// this one: two probes on one instruction would run the programs twice per call.
    pub aliases: Vec<String>,
    /// The object that holds it (the path the kernel opens to place probes).
    pub object: PathBuf,
    /// The allocator family whose table row it is (`c` for the C API of an object of no
    /// known family).
    pub family: &'static str,
}

impl ResolvedFn {
    /// Whether this probe covers the table row `name` (itself or an alias).
    pub fn covers(&self, name: &str, prefix: &str) -> bool {
        self.function.name == name || self.aliases.iter().any(|a| a.strip_prefix(prefix) == Some(name))
    }

    /// File offset the probes are attached at.
    pub fn probe_offset(&self) -> u64 {
        self.file_offset + self.site.offset
    }
}

/// A function probed by one of the hooks (`exit`, `_dl_debug_state`), placed like the
/// allocator functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSite {
    /// Symbol name.
    pub symbol: &'static str,
    /// File offset of its first instruction.
    pub file_offset: u64,
    /// Where in the function its probe goes.
    pub site: Site,
}

impl HookSite {
    /// File offset the probe is attached at.
    pub fn probe_offset(&self) -> u64 {
        self.file_offset + self.site.offset
    }
}

/// The allocator objects of a process and the functions found in them.
#[derive(Clone, Debug)]
pub struct AllocatorObject {
    /// The object that provides `malloc` (may go through /proc/PID/root).
    pub path: PathBuf,
    /// Functions to probe, in this object and the others (each names its own).
    pub functions: Vec<ResolvedFn>,
    /// Optional C functions the object does not define.
    pub absent: Vec<String>,
    /// Probes the kernel refused (filled when attaching).
    pub not_attached: Vec<crate::model::NotAttached>,
}

impl AllocatorObject {
    /// Adds the functions found in another object.
    pub fn add(&mut self, facts: ElfFacts) {
        self.functions.extend(facts.defined);
    }

    /// Keeps the functions of the heaps asked for (`--heap`; empty: every heap found).
    pub fn keep_heaps(&mut self, heaps: &[crate::model::Heap]) {
        if !heaps.is_empty() {
            self.functions.retain(|f| heaps.contains(&model_heap(f.function.heap())));
        }
    }

    /// Whether PHP's heap is probed.
    pub fn has_php_heap(&self) -> bool {
        self.functions.iter().any(|f| f.function.heap() == Heap::Php)
    }

    /// Which family was found in which object, with its functions, in probing order.
    pub fn families(&self) -> Vec<crate::model::FamilyReport> {
        let mut out: Vec<crate::model::FamilyReport> = Vec::new();
        for f in &self.functions {
            let object = f.object.display().to_string();
            match out.iter_mut().find(|r| r.family == f.family && r.object == object) {
                Some(report) => report.functions.push(f.symbol.clone()),
                None => out.push(crate::model::FamilyReport {
                    family: f.family.to_string(),
                    object,
                    functions: vec![f.symbol.clone()],
                }),
            }
        }
        out
    }
}

/// What an ELF file says about allocators.
#[derive(Debug)]
pub struct ElfFacts {
    /// Defined allocator functions with their file offsets.
    pub defined: Vec<ResolvedFn>,
    /// True when the file asks for a dynamic loader (it links libc at run time).
    pub dynamic: bool,
    /// Where its symbols were looked for (for an error naming what is missing).
    pub searched: String,
}

/// A function defined in an ELF file.
struct Defined {
    /// Its first instruction's virtual address.
    address: u64,
    /// Its first instruction's file offset (uprobes want file offsets).
    file_offset: u64,
    /// The section holding it.
    section: object::SectionIndex,
}

/// Where `symbol`'s code is in `file`. The section is found by address in the object itself,
/// so that a symbol read from its MiniDebugInfo or debug file (where `.text` holds no
/// bytes) is placed in the object's real code.
fn defined(file: &object::File<'_>, symbols: &SymbolIndex, symbol: &str) -> Option<Defined> {
    let address = symbols.address(symbol)?;
    let section = file.sections().find(|s| {
        s.kind() == object::SectionKind::Text && address >= s.address() && address < s.address() + s.size()
    })?;
    let (file_start, _) = section.file_range()?;
    // A symbol outside its section is corrupt: not a function that can be probed.
    let file_offset = address.checked_sub(section.address())?.checked_add(file_start)?;
    Some(Defined { address, file_offset, section: section.index() })
}
/// Chooses the probe site of each function (see [`probe_site`]); a function whose code
/// cannot be read keeps its probe at the entry, marked as single-stepped.
fn place(file: &object::File<'_>, functions: &[(&Defined, Needs)]) -> Vec<Site> {
    let window = probe_site::WINDOW as u64;
    let windows: Vec<(u64, u64)> =
        functions.iter().map(|(d, _)| (d.address.saturating_add(1), d.address.saturating_add(window))).collect();
    let mut sections: Vec<object::SectionIndex> = functions.iter().map(|(d, _)| d.section).collect();
    sections.sort_unstable_by_key(|s| s.0);
    sections.dedup();
    // Branch targets anywhere in the sections that hold the functions (other functions'
    // tail calls or cold parts could jump into an entry block too).
    let mut targets = std::collections::BTreeSet::new();
    for index in sections {
        if let Some(data) = file.section_by_index(index).ok().and_then(|s| Some((s.address(), s.data().ok()?))) {
            targets.extend(probe_site::branch_targets(data.1, data.0, &windows));
        }
    }
    functions
        .iter()
        .map(|(d, needs)| {
            let code =
                file.section_by_index(d.section).ok().and_then(|s| Some((s.address(), s.data().ok()?))).and_then(
                    |(start, data)| {
                        let from = usize::try_from(d.address.checked_sub(start)?).ok()?;
                        data.get(from..(from + probe_site::WINDOW).min(data.len()))
                    },
                );
            match code {
                Some(code) => {
                    probe_site::choose(code, *needs, |offset| targets.contains(&d.address.wrapping_add(offset)))
                }
                None => Site { offset: 0, handling: Handling::SingleStepped, stack_delta: 0, args_in: 0 },
            }
        })
        .collect()
}

fn parse<T>(path: &Path, then: impl FnOnce(&object::File<'_>) -> T) -> Result<T> {
    let bad = |source: Cause| Error::BadElf { path: path.to_path_buf(), source };
    let data = std::fs::read(path).map_err(|e| bad(e.into()))?;
    let file = object::File::parse(&*data).map_err(|e| bad(e.into()))?;
    Ok(then(&file))
}

/// A symbol looked for in an object: its table row, full name and family.
struct Wanted {
    function: AllocatorFn,
    symbol: String,
    family: &'static str,
}

/// The family name of C++'s operators, wherever they are found.
pub const CXX_FAMILY: &str = "c++";
/// The family name of functions added with `--alloc-fn`.
pub const CUSTOM_FAMILY: &str = "custom";

/// The rows looked for in an object of `family` (None: no known family). `c_prefix`: the C
/// API under this prefix when the object provides the process's malloc; None when another
/// object does, whose plain C names interpose these (a family's prefixed C API, jemalloc's
/// `je_malloc`, is still looked for: nothing interposes it).
fn wanted(family: Option<&'static Family>, c_prefix: Option<&str>) -> Vec<Wanted> {
    let label = family.map_or("c", |f| f.name);
    let row = |function: &AllocatorFn, prefix: &str, family: &'static str| Wanted {
        function: *function,
        symbol: format!("{prefix}{}", function.name),
        family,
    };
    let mut out: Vec<Wanted> = Vec::new();
    if let Some(prefix) = c_prefix {
        out.extend(ALLOCATOR_FUNCTIONS.iter().map(|f| row(f, prefix, label)));
    }
    for family in family.into_iter() {
        for &prefix in family.prefixes {
            if family.c_api && !prefix.is_empty() && c_prefix != Some(prefix) {
                out.extend(ALLOCATOR_FUNCTIONS.iter().map(|f| row(f, prefix, label)));
            }
            out.extend(family.functions.iter().map(|f| row(f, prefix, label)));
        }
    }
    out.extend(CXX_FUNCTIONS.iter().map(|f| row(f, "", CXX_FAMILY)));
    out
}

/// The family of an object: a family known by no file name of its own when its marker is
/// defined (Google's tcmalloc ships as libtcmalloc*, gperftools' name), else by its file
/// name, else by a symbol only that family defines (an executable that links its allocator
/// statically).
fn family_of_file(path: &Path, symbols: &SymbolIndex) -> Option<&'static Family> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let marked =
        |f: &&Family| !f.marker.is_empty() && f.prefixes.iter().any(|p| symbols.defines(&format!("{p}{}", f.marker)));
    FAMILIES
        .iter()
        .filter(|f| f.libraries.is_empty())
        .find(marked)
        .or_else(|| family_of(name))
        .or_else(|| FAMILIES.iter().find(marked))
}

/// Reads `path` and finds the functions `rows` asks for, with their probe sites. Functions
/// at the same address are one probe, under the first row's name.
fn inspect_with(path: &Path, rows: impl FnOnce(Option<&'static Family>) -> Vec<Wanted>) -> Result<ElfFacts> {
    parse(path, |file| {
        let dynamic = file.sections().any(|s| s.name() == Ok(".interp"));
        let symbols = symbols::index(file);
        let found: Vec<(Wanted, Defined)> = rows(family_of_file(path, &symbols))
            .into_iter()
            .filter_map(|w| defined(file, &symbols, &w.symbol).map(|d| (w, d)))
            .collect();
        let sites = place(file, &found.iter().map(|(w, d)| (d, w.function.needs())).collect::<Vec<_>>());
        let mut defined: Vec<ResolvedFn> = Vec::new();
        for ((w, d), site) in found.into_iter().zip(sites) {
            if defined.iter().any(|f| f.symbol == w.symbol) {
                continue; // the same row under two prefixes that are one (a `je_` family asked for `je_`)
            }
            // Same code, same arguments: two probes on one instruction would run twice per call.
            match defined.iter_mut().find(|f| f.file_offset == d.file_offset) {
                Some(first) => first.aliases.push(w.symbol),
                None => defined.push(ResolvedFn {
                    function: w.function,
                    symbol: w.symbol,
                    file_offset: d.file_offset,
                    site,
                    aliases: Vec::new(),
                    object: path.to_path_buf(),
                    family: w.family,
                }),
            }
        }
        ElfFacts { defined, dynamic, searched: symbols::searched(&symbols) }
    })
}

/// Reads `path`, the object that provides the process's malloc: the C API under `prefix`,
/// its family's own functions and C++'s operators, with their probe sites.
pub fn inspect(path: &Path, prefix: &str) -> Result<ElfFacts> {
    inspect_with(path, |family| wanted(family, Some(prefix)))
}

/// Reads `path`, an allocator object beside the one that provides malloc (a C++ runtime, a
/// prefixed jemalloc, mimalloc's `mi_*` without its malloc override).
pub fn inspect_companion(path: &Path) -> Result<ElfFacts> {
    inspect_with(path, |family| wanted(family, None))
}

/// Reads `path` for the functions added by hand (`--alloc-fn`).
pub fn inspect_custom(path: &Path, rows: &[AllocatorFn]) -> Result<ElfFacts> {
    inspect_with(path, |_| {
        rows.iter().map(|f| Wanted { function: *f, symbol: f.name.to_string(), family: CUSTOM_FAMILY }).collect()
    })
}

fn hook_sites(path: &Path, names: &[&'static str]) -> Result<Vec<HookSite>> {
    parse(path, |file| {
        let symbols = symbols::index(file);
        let found: Vec<(&'static str, Defined)> =
            names.iter().filter_map(|&name| defined(file, &symbols, name).map(|d| (name, d))).collect();
        let sites = place(file, &found.iter().map(|(_, d)| (d, HOOK_NEEDS)).collect::<Vec<_>>());
        found
            .into_iter()
            .zip(sites)
            .map(|((symbol, d), site)| HookSite { symbol, file_offset: d.file_offset, site })
            .collect()
    })
}

/// The process-exit functions (`exit`, `_exit`) that `path` defines, with their probe sites.
pub fn exit_functions(path: &Path) -> Result<Vec<HookSite>> {
    hook_sites(path, &["exit", "_exit"])
}

/// `zend_mm_shutdown` in an object of PHP's, with its probe site: PHP calls it at the end of
/// each request and of the script, and it gives the heap's chunks back whole.
pub fn heap_reset_hook(path: &Path) -> Result<Option<HookSite>> {
    Ok(hook_sites(path, &["zend_mm_shutdown"])?.into_iter().next())
}

/// The dynamic linker a dynamically linked executable asks for (its `.interp`), if any.
pub fn interpreter(path: &Path) -> Result<Option<PathBuf>> {
    parse(path, |file| {
        let section = file.section_by_name(".interp")?;
        let data = section.data().ok()?;
        let text = data.split(|&b| b == 0).next()?;
        Some(PathBuf::from(std::str::from_utf8(text).ok()?))
    })
}

/// `_dl_debug_state` in a dynamic linker, with its probe site: it is called after every
/// change to the loaded libraries (the hook debuggers use to see dlopen).
pub fn library_change_hook(path: &Path) -> Result<Option<HookSite>> {
    Ok(hook_sites(path, &["_dl_debug_state"])?.into_iter().next())
}

/// Checks that `facts` cover every required function and builds the probe plan.
pub fn plan(path: &Path, facts: ElfFacts, prefix: &str) -> Result<AllocatorObject> {
    let missing: Vec<String> = ALLOCATOR_FUNCTIONS
        .iter()
        .filter(|f| f.required && !facts.defined.iter().any(|d| d.covers(f.name, prefix)))
        .map(|f| format!("{prefix}{}", f.name))
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingSymbols {
            path: path.to_path_buf(),
            missing: missing.join(", "),
            searched: facts.searched,
        });
    }
    let absent = ALLOCATOR_FUNCTIONS
        .iter()
        .filter(|f| !facts.defined.iter().any(|d| d.covers(f.name, prefix)))
        .map(|f| format!("{prefix}{}", f.name))
        .collect();
    Ok(AllocatorObject { path: path.to_path_buf(), functions: facts.defined, absent, not_attached: Vec::new() })
}

/// One allocator implementation, as the libraries it ships in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// Its name.
    pub name: &'static str,
    /// Prefixes of the file names of its libraries.
    pub libraries: &'static [&'static str],
    /// Whether it is the C library's own allocator; a replacement loaded beside it
    /// interposes its malloc, so replacements are chosen first.
    pub is_libc: bool,
    /// Whether it has the C API (malloc, free, …); C++ runtimes only add new/delete.
    pub c_api: bool,
    /// Prefixes its builds give their symbols (jemalloc's `--with-jemalloc-prefix=je_`).
    pub prefixes: &'static [&'static str],
    /// Its own entry points beyond the C API (each under each prefix).
    pub functions: &'static [AllocatorFn],
    /// A function only this family defines (under one of its prefixes): finds it linked
    /// statically into an executable. Empty for none.
    pub marker: &'static str,
}

const fn c_family(
    name: &'static str,
    libraries: &'static [&'static str],
    prefixes: &'static [&'static str],
    functions: &'static [AllocatorFn],
    marker: &'static str,
) -> Family {
    Family { name, libraries, is_libc: false, c_api: true, prefixes, functions, marker }
}

/// The allocators leaktrace looks for among a process's libraries: replacements first, then
/// C libraries, then C++ runtimes (which allocate through one of the others).
pub const FAMILIES: &[Family] = &[
    c_family("jemalloc", &["libjemalloc"], &["", "je_"], JEMALLOC_FUNCTIONS, "mallocx"),
    c_family("tcmalloc", &["libtcmalloc"], &[""], TCMALLOC_FUNCTIONS, "tc_malloc"),
    // Known by its marker only: its shared builds are named libtcmalloc* like gperftools'.
    c_family("google-tcmalloc", &[], &[""], GOOGLE_TCMALLOC_FUNCTIONS, "TCMallocInternalMalloc"),
    c_family("mimalloc", &["libmimalloc"], &[""], MIMALLOC_FUNCTIONS, "mi_malloc"),
    // glibc's own name of its malloc: finds it linked statically.
    Family { is_libc: true, ..c_family("glibc", &["libc.so", "libc-"], &[""], &[], "__libc_malloc") },
    Family { is_libc: true, ..c_family("musl", &["ld-musl-"], &[""], &[], "") },
    Family { c_api: false, ..c_family("libstdc++", &["libstdc++"], &[""], &[], "") },
    Family { c_api: false, ..c_family("libc++", &["libc++.so", "libc++abi.so"], &[""], &[], "") },
    // PHP's own heap, in the php executable (CLI, FPM) or libphp (embed, Apache's module):
    // no C API, a heap of its own.
    Family { c_api: false, ..c_family(ZEND_FAMILY, &["libphp"], &[""], ZEND_FUNCTIONS, "_emalloc") },
];

/// The allocator family of a library, by its file name.
pub fn family_of(file_name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.libraries.iter().any(|prefix| file_name.starts_with(prefix)))
}

/// True for a library that holds an allocator leaktrace knows.
pub fn looks_like_allocator_library(file_name: &str) -> bool {
    family_of(file_name).is_some()
}

/// Replacement allocators come before libc (when loaded they interpose its malloc), and C++
/// runtimes, which have no malloc, last.
pub fn allocator_rank(file_name: &str) -> u8 {
    match family_of(file_name) {
        Some(f) if !f.c_api => 2,
        Some(f) if f.is_libc => 1,
        _ => 0,
    }
}

/// True for a C++ runtime: it has new/delete but no malloc of its own.
pub fn is_cxx_runtime(file_name: &str) -> bool {
    family_of(file_name).is_some_and(|f| !f.c_api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_rows_cover_the_basic_api() {
        let required: Vec<_> = ALLOCATOR_FUNCTIONS.iter().filter(|f| f.required).map(|f| f.name).collect();
        assert_eq!(required, ["malloc", "calloc", "realloc", "free"]);
        assert!(!ALLOCATOR_FUNCTIONS.iter().find(|f| f.name == "free").unwrap().returns_block);
    }

    fn this_systems_libc() -> &'static Path {
        ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("glibc present on this machine")
    }

    #[test]
    fn finds_malloc_in_this_systems_libc() {
        let libc = this_systems_libc();
        let facts = inspect(libc, "").unwrap();
        let plan = plan(libc, facts, "").unwrap();
        for name in ["malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "memalign"] {
            assert!(plan.functions.iter().any(|f| f.covers(name, "")), "{name} not found in {:?}", plan.functions);
        }
        // glibc's aligned_alloc and memalign are one function: probed once.
        let offsets: Vec<u64> = plan.functions.iter().map(|f| f.file_offset).collect();
        let mut unique = offsets.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(offsets.len(), unique.len(), "{:?}", plan.functions);
        assert!(plan.functions.iter().all(|f| f.file_offset > 0));
    }

    /// Every function glibc exports here gets a site the kernel emulates (free moves past its
    /// `test`, memalign/valloc/posix_memalign past their `cmpb`), and the bytes there agree
    /// with what the decoder decided.
    #[test]
    fn every_allocator_function_of_this_systems_libc_is_probed_where_the_kernel_emulates() {
        let libc = this_systems_libc();
        let data = std::fs::read(libc).unwrap();
        let facts = inspect(libc, "").unwrap();
        assert!(facts.defined.len() >= 8, "{:?}", facts.defined);
        for f in &facts.defined {
            let at = &data[f.probe_offset() as usize..];
            if f.function.name == "reallocarray" {
                // `mov %rsi,%rax; mul %rdx; mov %rax,%rsi; jo`: the multiply overwrites the
                // size arguments before the first emulated instruction, so the probe stays
                // at the entry, where the kernel steps it.
                assert_eq!(f.site, Site { offset: 0, handling: Handling::SingleStepped, stack_delta: 0, args_in: 0 });
                continue;
            }
            assert_eq!(f.site.handling, Handling::Emulated, "{} at +{}: {:02x?}", f.symbol, f.site.offset, &at[..8]);
            assert_eq!(probe_site::kernel_handling(at), Handling::Emulated, "{}", f.symbol);
            // A return probe's site must still have the return address at %rsp.
            if f.function.returns_block {
                assert_eq!(f.site.stack_delta, 0, "{}", f.symbol);
            }
        }
        let free = facts.defined.iter().find(|f| f.function.name == "free").unwrap();
        assert!(free.site.offset > 0, "glibc's free starts with a stepped `test`: {:?}", free.site);
    }

    #[test]
    fn a_prefix_that_matches_nothing_names_the_missing_symbols() {
        let exe = std::env::current_exe().unwrap();
        let facts = inspect(&exe, "je_").unwrap();
        let err = plan(&exe, facts, "je_").unwrap_err().to_string();
        assert!(err.contains("je_malloc") && err.contains("je_free"), "{err}");
    }

    #[test]
    fn jemalloc_rows_have_public_and_prefixed_names_and_leave_plain_c_to_the_malloc_provider() {
        let jemalloc = family_of("libjemalloc.so.2").unwrap();
        let names: Vec<String> = wanted(Some(jemalloc), None).into_iter().map(|w| w.symbol).collect();
        for name in
            ["mallocx", "je_mallocx", "rallocx", "sdallocx", "dallocx", "je_malloc", "je_free", "_Znwm", "_ZdlPvm"]
        {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        // malloc itself is interposed by whichever object provides it; nallocx allocates nothing.
        assert!(!names.iter().any(|n| n == "malloc" || n.ends_with("nallocx")), "{names:?}");
        let provider: Vec<String> = wanted(Some(jemalloc), Some("")).into_iter().map(|w| w.symbol).collect();
        assert!(provider.iter().any(|n| n == "malloc"));
    }

    #[test]
    fn google_tcmalloc_is_known_by_its_marker_not_by_gperftools_file_name() {
        let google = FAMILIES.iter().find(|f| f.name == "google-tcmalloc").unwrap();
        assert!(google.libraries.is_empty(), "its files are named like gperftools'");
        assert_eq!(family_of("libtcmalloc.so.4").map(|f| f.name), Some("tcmalloc"));
        let names: Vec<String> = wanted(Some(google), Some("")).into_iter().map(|w| w.symbol).collect();
        for name in [
            "malloc",
            "TCMallocInternalMalloc",
            "TCMallocInternalNewAligned_nothrow",
            "TCMallocInternalNewAlignedNothrow",
            "tcmalloc_size_returning_operator_new",
            "__size_returning_new_aligned_hot_cold",
            "TCMallocInternalDeleteArraySizedAligned",
            "_Znwm",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        // The C API rows come first: at an alias group's address the C name is the probe's.
        let first = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(first("malloc") < first("TCMallocInternalMalloc"));
    }

    #[test]
    fn this_systems_libstdcxx_has_every_operator_and_no_c_api() {
        let Some(libstdcxx) = ["/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            return; // no C++ runtime on this machine: nothing to check
        };
        let facts = inspect_companion(libstdcxx).unwrap();
        for f in CXX_FUNCTIONS {
            assert!(facts.defined.iter().any(|d| d.covers(f.name, "")), "{} not found", f.name);
        }
        assert!(facts.defined.iter().all(|d| d.family == CXX_FAMILY), "{:?}", facts.defined);
        // new calls malloc: with sampling its return probe stays (see `calls_allocator`).
        assert!(facts.defined.iter().filter(|d| d.function.returns_block).all(|d| d.function.calls_allocator));
    }

    /// Debian's php binary exports every Zend entry point: each is found under the `zend`
    /// family, the bins carry their size in the cookie, and everything on PHP's heap.
    #[test]
    fn this_systems_php_has_the_zend_heap() {
        let Some(php) = ["/usr/bin/php8.2", "/usr/bin/php"].into_iter().map(Path::new).find(|p| p.exists()) else {
            return; // no PHP on this machine: nothing to check
        };
        let facts = inspect_companion(php).unwrap();
        let zend: Vec<&ResolvedFn> = facts.defined.iter().filter(|d| d.family == ZEND_FAMILY).collect();
        for f in ZEND_FUNCTIONS {
            assert!(zend.iter().any(|d| d.covers(f.name, "")), "{} not found", f.name);
        }
        let bin = zend.iter().find(|d| d.symbol == "_emalloc_56").unwrap();
        assert_eq!((bin.function.entry_program, bin.function.cookie), (names::PROG_FIXED_SIZE, (1 << 32) | 56));
        assert!(zend.iter().all(|d| d.function.heap() == Heap::Php));
        let emalloc = zend.iter().find(|d| d.symbol == "_emalloc").unwrap();
        assert_eq!(emalloc.site.handling, Handling::Emulated, "{emalloc:?}");
    }

    #[test]
    fn garbage_is_a_bad_elf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.so");
        std::fs::write(&path, b"not an elf at all").unwrap();
        assert!(matches!(inspect(&path, ""), Err(Error::BadElf { .. })));
    }
}
