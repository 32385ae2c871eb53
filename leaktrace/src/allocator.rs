//! Which allocator functions are probed, and where they live in the target.
//!
//! The probe table is data: adding a function is one row. Each row names the eBPF entry
//! program that reads its arguments; every allocating function shares one return program.

use std::path::{Path, PathBuf};

use leaktrace_common::names;
use object::{Object, ObjectSection, ObjectSymbol};

use crate::error::{Error, Result};

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
}

const fn hook(name: &'static str, entry_program: &'static str, required: bool) -> AllocatorFn {
    AllocatorFn { name, entry_program, returns_block: true, required }
}

/// Every function leaktrace hooks in a C allocator.
pub const ALLOCATOR_FUNCTIONS: &[AllocatorFn] = &[
    hook("malloc", names::PROG_SIZE_ARG0, true),
    hook("calloc", names::PROG_CALLOC, true),
    hook("realloc", names::PROG_REALLOC, true),
    AllocatorFn { name: "free", entry_program: names::PROG_FREE, returns_block: false, required: true },
    hook("reallocarray", names::PROG_REALLOCARRAY, false),
    hook("posix_memalign", names::PROG_POSIX_MEMALIGN, false),
    hook("aligned_alloc", names::PROG_SIZE_ARG1, false),
    hook("memalign", names::PROG_SIZE_ARG1, false),
    hook("valloc", names::PROG_SIZE_ARG0, false),
    hook("pvalloc", names::PROG_SIZE_ARG0, false),
];

/// A function found in the allocator object, ready to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFn {
    /// The table row.
    pub function: AllocatorFn,
    /// Full symbol name (with prefix).
    pub symbol: String,
    /// File offset of its first instruction.
    pub file_offset: u64,
}

/// The allocator object and the functions found in it.
#[derive(Clone, Debug)]
pub struct AllocatorObject {
    /// Path the kernel opens to place probes (may go through /proc/PID/root).
    pub path: PathBuf,
    /// Functions to probe.
    pub functions: Vec<ResolvedFn>,
    /// Optional functions the object does not define.
    pub absent: Vec<String>,
}

/// What an ELF file says about allocators.
#[derive(Debug)]
pub struct ElfFacts {
    /// Defined allocator functions with their file offsets.
    pub defined: Vec<ResolvedFn>,
    /// True when the file asks for a dynamic loader (it links libc at run time).
    pub dynamic: bool,
}

/// File offset of the function `symbol` defined in `file` (uprobes want file offsets: the
/// symbol's virtual address is translated through the section that holds it).
fn defined_offset(file: &object::File<'_>, symbol: &str) -> Option<u64> {
    let sym = file.dynamic_symbols().chain(file.symbols()).find(|s| s.is_definition() && s.name() == Ok(symbol))?;
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let (file_start, _) = section.file_range()?;
    Some(sym.address() - section.address() + file_start)
}

fn parse<T>(path: &Path, then: impl FnOnce(&object::File<'_>) -> T) -> Result<T> {
    let bad = |reason: String| Error::BadElf { path: path.to_path_buf(), reason };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let file = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
    Ok(then(&file))
}

/// Reads `path` and finds the allocator functions it defines under `prefix`.
pub fn inspect(path: &Path, prefix: &str) -> Result<ElfFacts> {
    parse(path, |file| {
        let dynamic = file.sections().any(|s| s.name() == Ok(".interp"));
        let defined = ALLOCATOR_FUNCTIONS
            .iter()
            .filter_map(|function| {
                let symbol = format!("{prefix}{}", function.name);
                defined_offset(file, &symbol).map(|file_offset| ResolvedFn { function: *function, symbol, file_offset })
            })
            .collect();
        ElfFacts { defined, dynamic }
    })
}

/// File offsets of the process-exit functions (`exit`, `_exit`) that `path` defines.
pub fn exit_functions(path: &Path) -> Result<Vec<(&'static str, u64)>> {
    parse(path, |file| {
        ["exit", "_exit"].into_iter().filter_map(|name| defined_offset(file, name).map(|offset| (name, offset))).collect()
    })
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

/// File offset of `_dl_debug_state` in a dynamic linker: it is called after every change to
/// the loaded libraries (the hook debuggers use to see dlopen).
pub fn library_change_hook(path: &Path) -> Result<Option<u64>> {
    parse(path, |file| defined_offset(file, "_dl_debug_state"))
}

/// Checks that `facts` cover every required function and builds the probe plan.
pub fn plan(path: &Path, facts: ElfFacts, prefix: &str) -> Result<AllocatorObject> {
    let missing: Vec<String> = ALLOCATOR_FUNCTIONS
        .iter()
        .filter(|f| f.required && !facts.defined.iter().any(|d| d.function.name == f.name))
        .map(|f| format!("{prefix}{}", f.name))
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingSymbols { path: path.to_path_buf(), missing: missing.join(", ") });
    }
    let absent = ALLOCATOR_FUNCTIONS
        .iter()
        .filter(|f| !facts.defined.iter().any(|d| d.function.name == f.name))
        .map(|f| format!("{prefix}{}", f.name))
        .collect();
    Ok(AllocatorObject { path: path.to_path_buf(), functions: facts.defined, absent })
}

/// True for file names of the C library or of a malloc replacement that exports `malloc`.
pub fn looks_like_allocator_library(file_name: &str) -> bool {
    const NAMES: &[&str] = &["libc.so", "libc-", "ld-musl-", "libjemalloc", "libtcmalloc", "libmimalloc"];
    NAMES.iter().any(|n| file_name.starts_with(n))
}

/// Replacement allocators come before libc: when loaded they interpose its malloc.
pub fn allocator_rank(file_name: &str) -> u8 {
    if file_name.starts_with("libc.so") || file_name.starts_with("libc-") || file_name.starts_with("ld-musl-") {
        1
    } else {
        0
    }
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

    #[test]
    fn finds_malloc_in_this_systems_libc() {
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("glibc present on this machine");
        let facts = inspect(libc, "").unwrap();
        let plan = plan(libc, facts, "").unwrap();
        let names: Vec<_> = plan.functions.iter().map(|f| f.function.name).collect();
        for name in ["malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc"] {
            assert!(names.contains(&name), "{name} not found in {names:?}");
        }
        assert!(plan.functions.iter().all(|f| f.file_offset > 0));
    }

    #[test]
    fn a_prefix_that_matches_nothing_names_the_missing_symbols() {
        let exe = std::env::current_exe().unwrap();
        let facts = inspect(&exe, "je_").unwrap();
        let err = plan(&exe, facts, "je_").unwrap_err().to_string();
        assert!(err.contains("je_malloc") && err.contains("je_free"), "{err}");
    }

    #[test]
    fn garbage_is_a_bad_elf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.so");
        std::fs::write(&path, b"not an elf at all").unwrap();
        assert!(matches!(inspect(&path, ""), Err(Error::BadElf { .. })));
    }
}
