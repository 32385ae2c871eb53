//! Which allocator functions are probed, and where they live in the target.
//!
//! The probe table is data: adding a function is one row. Each row names the eBPF entry
//! program that reads its arguments; every allocating function shares one return program.

use std::path::{Path, PathBuf};

use leaktrace_common::names;
use object::{Object, ObjectSection, ObjectSymbol};

use crate::{
    error::{Cause, Error, Result},
    probe_site::{self, Handling, Needs, Site},
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
    /// It may call another probed function (glibc's reallocarray tail-calls realloc). With
    /// sampling such a function keeps its return probe even when unsampled: the state that
    /// marks the inner call as nested lives until that return, and without it the inner call
    /// would get a second, independent chance to be sampled.
    pub calls_allocator: bool,
}

impl AllocatorFn {
    /// What the programs attached to this function need at its probe site.
    pub fn needs(&self) -> Needs {
        Needs { args: self.args, return_probe: self.returns_block }
    }
}

const fn hook(name: &'static str, entry_program: &'static str, required: bool, args: u8) -> AllocatorFn {
    AllocatorFn { name, entry_program, returns_block: true, required, args, calls_allocator: false }
}

/// Every function leaktrace hooks in a C allocator.
pub const ALLOCATOR_FUNCTIONS: &[AllocatorFn] = &[
    hook("malloc", names::PROG_SIZE_ARG0, true, 1),
    hook("calloc", names::PROG_CALLOC, true, 2),
    hook("realloc", names::PROG_REALLOC, true, 2),
    AllocatorFn {
        name: "free",
        entry_program: names::PROG_FREE,
        returns_block: false,
        required: true,
        args: 1,
        calls_allocator: false,
    },
    AllocatorFn { calls_allocator: true, ..hook("reallocarray", names::PROG_REALLOCARRAY, false, 3) },
    hook("posix_memalign", names::PROG_POSIX_MEMALIGN, false, 3),
    hook("aligned_alloc", names::PROG_SIZE_ARG1, false, 2),
    hook("memalign", names::PROG_SIZE_ARG1, false, 2),
    hook("valloc", names::PROG_SIZE_ARG0, false, 1),
    hook("pvalloc", names::PROG_SIZE_ARG0, false, 1),
];

/// Programs on `exit`/`_exit` and `_dl_debug_state` read no argument and have no return probe.
const HOOK_NEEDS: Needs = Needs { args: 0, return_probe: false };

/// A function found in the allocator object, ready to probe.
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

/// A function defined in an ELF file.
struct Defined {
    /// Its first instruction's virtual address.
    address: u64,
    /// Its first instruction's file offset (uprobes want file offsets).
    file_offset: u64,
    /// The section holding it.
    section: object::SectionIndex,
}

fn defined(file: &object::File<'_>, symbol: &str) -> Option<Defined> {
    let sym = file.dynamic_symbols().chain(file.symbols()).find(|s| s.is_definition() && s.name() == Ok(symbol))?;
    let section_index = sym.section_index()?;
    let section = file.section_by_index(section_index).ok()?;
    let (file_start, _) = section.file_range()?;
    // A symbol outside its section is corrupt: not a function that can be probed.
    let file_offset = sym.address().checked_sub(section.address())?.checked_add(file_start)?;
    Some(Defined { address: sym.address(), file_offset, section: section_index })
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
                None => Site { offset: 0, handling: Handling::SingleStepped, stack_delta: 0 },
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

/// Reads `path` and finds the allocator functions it defines under `prefix`, with their
/// probe sites.
pub fn inspect(path: &Path, prefix: &str) -> Result<ElfFacts> {
    parse(path, |file| {
        let dynamic = file.sections().any(|s| s.name() == Ok(".interp"));
        let found: Vec<(AllocatorFn, String, Defined)> = ALLOCATOR_FUNCTIONS
            .iter()
            .filter_map(|function| {
                let symbol = format!("{prefix}{}", function.name);
                defined(file, &symbol).map(|d| (*function, symbol, d))
            })
            .collect();
        let sites = place(file, &found.iter().map(|(f, _, d)| (d, f.needs())).collect::<Vec<_>>());
        let mut defined: Vec<ResolvedFn> = Vec::new();
        for ((function, symbol, d), site) in found.into_iter().zip(sites) {
            match defined
                .iter_mut()
                .find(|f| f.file_offset == d.file_offset && f.function.entry_program == function.entry_program)
            {
                Some(first) => first.aliases.push(symbol),
                None => {
                    defined.push(ResolvedFn { function, symbol, file_offset: d.file_offset, site, aliases: Vec::new() })
                }
            }
        }
        ElfFacts { defined, dynamic }
    })
}

fn hook_sites(path: &Path, symbols: &[&'static str]) -> Result<Vec<HookSite>> {
    parse(path, |file| {
        let found: Vec<(&'static str, Defined)> =
            symbols.iter().filter_map(|&name| defined(file, name).map(|d| (name, d))).collect();
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
        return Err(Error::MissingSymbols { path: path.to_path_buf(), missing: missing.join(", ") });
    }
    let absent = ALLOCATOR_FUNCTIONS
        .iter()
        .filter(|f| !facts.defined.iter().any(|d| d.covers(f.name, prefix)))
        .map(|f| format!("{prefix}{}", f.name))
        .collect();
    Ok(AllocatorObject { path: path.to_path_buf(), functions: facts.defined, absent })
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
}

/// The allocators leaktrace looks for among a process's libraries, replacements first.
pub const FAMILIES: &[Family] = &[
    Family { name: "jemalloc", libraries: &["libjemalloc"], is_libc: false },
    Family { name: "tcmalloc", libraries: &["libtcmalloc"], is_libc: false },
    Family { name: "mimalloc", libraries: &["libmimalloc"], is_libc: false },
    Family { name: "glibc", libraries: &["libc.so", "libc-"], is_libc: true },
    Family { name: "musl", libraries: &["ld-musl-"], is_libc: true },
];

/// The allocator family of a library, by its file name.
pub fn family_of(file_name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.libraries.iter().any(|prefix| file_name.starts_with(prefix)))
}

/// True for a library that holds an allocator leaktrace knows.
pub fn looks_like_allocator_library(file_name: &str) -> bool {
    family_of(file_name).is_some()
}

/// Replacement allocators come before libc: when loaded they interpose its malloc.
pub fn allocator_rank(file_name: &str) -> u8 {
    u8::from(family_of(file_name).is_some_and(|f| f.is_libc))
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
                assert_eq!(f.site, Site { offset: 0, handling: Handling::SingleStepped, stack_delta: 0 });
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
    fn garbage_is_a_bad_elf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.so");
        std::fs::write(&path, b"not an elf at all").unwrap();
        assert!(matches!(inspect(&path, ""), Err(Error::BadElf { .. })));
    }
}
