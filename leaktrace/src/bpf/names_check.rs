//! The names the loader uses (`leaktrace_common::names`, `leaktrace_common::kernel::offsets`)
//! checked against the embedded eBPF objects, so that a misspelled or renamed program, map
//! or global fails `cargo test` (no root needed) instead of a load.

use std::collections::BTreeSet;

use leaktrace_common::{kernel::offsets, names};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Names defined by an eBPF object.
#[derive(Debug, Default)]
struct Contents {
    programs: BTreeSet<String>,
    maps: BTreeSet<String>,
    globals: BTreeSet<String>,
}

/// Programs are the global functions of the program sections (`.text` holds subprograms and
/// built-ins such as memcpy), maps the symbols of `maps`, globals those of the data sections.
fn contents(object: &[u8]) -> Contents {
    let file = object::File::parse(object).expect("the eBPF object parses");
    let mut found = Contents::default();
    for symbol in file.symbols().filter(|s| s.is_global()) {
        let Some(index) = symbol.section_index() else { continue };
        let section = file.section_by_index(index).and_then(|s| s.name().map(str::to_string)).expect("section name");
        let name = symbol.name().expect("symbol name").to_string();
        let set = match symbol.kind() {
            SymbolKind::Text if section != ".text" => &mut found.programs,
            SymbolKind::Data if section == "maps" => &mut found.maps,
            SymbolKind::Data if [".rodata", ".data", ".bss"].iter().any(|s| section.starts_with(s)) => {
                &mut found.globals
            }
            _ => continue,
        };
        set.insert(name);
    }
    found
}

/// Every program the loader takes from the production object.
fn loader_programs() -> BTreeSet<&'static str> {
    let mut programs = BTreeSet::from([
        names::PROG_SIZE_ARG0,
        names::PROG_CALLOC,
        names::PROG_REALLOC,
        names::PROG_REALLOCARRAY,
        names::PROG_SIZE_ARG1,
        names::PROG_FIXED_SIZE,
        names::PROG_POSIX_MEMALIGN,
        names::PROG_ALLOC_RETURN,
        names::PROG_EXIT,
        names::PROG_HEAP_RESET,
        names::PROG_FREE,
        names::PROG_DL_STATE,
        names::PROG_NEW_TASK,
        names::PROG_EXEC,
        names::PROG_KMALLOC,
        names::PROG_KMEM_CACHE_ALLOC,
        names::PROG_KFREE,
        names::PROG_KMEM_CACHE_FREE,
        names::PROG_PAGE_ALLOC,
        names::PROG_PAGE_FREE,
        names::PROG_PAGE_FREE_BATCHED,
        names::PROG_PERCPU_ALLOC,
        names::PROG_PERCPU_FREE,
        names::PROG_FORK,
        names::PROG_EXEC_LINEAGE,
        names::PROG_KMALLOC_BTF,
        names::PROG_KMEM_CACHE_ALLOC_BTF,
        names::PROG_KFREE_BTF,
        names::PROG_KMEM_CACHE_FREE_BTF,
        names::PROG_KMALLOC_CACHE_BTF,
        names::PROG_LEARN_PAGE_BTF,
    ]);
    for (entry, session) in names::SESSION_PROGRAMS {
        programs.extend([entry, session]);
    }
    programs
}

/// Every map the loader sizes or reads.
fn loader_maps() -> BTreeSet<&'static str> {
    BTreeSet::from([
        names::ALLOCS,
        names::PENDING,
        names::LAST_FREE,
        names::USTACKS,
        names::STACK_SCRATCH,
        names::STACKS,
        names::COUNTERS,
        names::STACK_STATS,
        names::TARGETS,
        names::PHP_PROCESSES,
        names::PHP_STACKS,
        names::PHP_SCRATCH,
        names::SAMPLE_TABLE,
        names::KALLOCS,
        names::KSTACKS,
        names::KERNEL_SCRATCH,
        names::REUSED,
        names::LINEAGE,
        names::SLAB_PAGES,
        names::EXECUTABLES,
        names::EXEC_SCRATCH,
        names::UNWIND_ROWS,
        names::UNWIND_MAPPINGS,
        names::UNWIND_PROCESSES,
        names::UNWIND_CACHE,
        names::UNWIND_EVENTS,
        names::PROCESS_EVENTS,
        names::HELD,
        names::TABLE_STALE,
    ])
}

/// Every global the loader sets, tracepoint field offsets included.
fn loader_globals() -> BTreeSet<&'static str> {
    let mut globals = BTreeSet::from([
        names::GLOBAL_SELF_TGID,
        names::GLOBAL_MIN_SIZE,
        names::GLOBAL_MAX_SIZE,
        names::GLOBAL_FREEZE_AT_EXIT,
        names::GLOBAL_SAMPLE_PERIOD,
        names::GLOBAL_FILTER_TARGETS,
        names::GLOBAL_USER_STACKS,
        names::GLOBAL_FOLLOW_FORKS,
        names::GLOBAL_UNWIND_TABLES,
        names::GLOBAL_TRACE_COMM,
        names::GLOBAL_TRACE_CGROUP,
        names::GLOBAL_TRACE_CGROUP_LEVEL,
        offsets::KFREE_PTR,
        offsets::KMEM_CACHE_FREE_PTR,
        offsets::PAGE_FREE_PFN,
        offsets::PAGE_FREE_BATCHED_PFN,
        offsets::PERCPU_FREE_PTR,
        offsets::FORK_CHILD_PID,
        offsets::EXEC_FILENAME,
    ]);
    globals.extend(offsets::KMALLOC);
    globals.extend(offsets::KMEM_CACHE_ALLOC);
    globals.extend(offsets::PAGE_ALLOC);
    globals.extend(offsets::PERCPU_ALLOC);
    globals.extend(offsets::KMEM_CACHE);
    globals.extend(offsets::SLAB_PAGE);
    globals.extend(offsets::NEW_TASK);
    globals
}

/// The benchmark's floor programs, which only the floor object may hold.
fn floor_programs() -> BTreeSet<&'static str> {
    let mut programs = BTreeSet::from([
        names::PROG_FLOOR_ENTER,
        names::PROG_FLOOR_RETURN,
        names::PROG_FLOOR_STACK_RETURN,
        names::PROG_FLOOR_KSTACK,
    ]);
    programs.extend(names::PROG_FLOOR_SLAB.map(|(program, _, _)| program));
    programs
}

/// The names of `wanted` that `found` lacks.
fn missing<'a>(wanted: &BTreeSet<&'a str>, found: &BTreeSet<String>) -> Vec<&'a str> {
    wanted.iter().copied().filter(|name| !found.contains(*name)).collect()
}

/// The names of `found` that `named` lacks.
fn unnamed<'a>(found: &'a BTreeSet<String>, named: &BTreeSet<&str>) -> Vec<&'a str> {
    found.iter().map(String::as_str).filter(|name| !named.contains(name)).collect()
}

#[test]
fn production_object_defines_every_name_the_loader_uses() {
    let object = contents(super::OBJECT);
    assert_eq!(missing(&loader_programs(), &object.programs), Vec::<&str>::new(), "programs missing from the object");
    assert_eq!(missing(&loader_maps(), &object.maps), Vec::<&str>::new(), "maps missing from the object");
    assert_eq!(missing(&loader_globals(), &object.globals), Vec::<&str>::new(), "globals missing from the object");
}

#[test]
fn everything_in_the_production_object_is_named_for_the_loader() {
    let object = contents(super::OBJECT);
    assert!(!object.programs.is_empty() && !object.maps.is_empty() && !object.globals.is_empty(), "{object:?}");
    assert_eq!(unnamed(&object.programs, &loader_programs()), Vec::<&str>::new(), "programs the loader does not name");
    assert_eq!(unnamed(&object.maps, &loader_maps()), Vec::<&str>::new(), "maps the loader does not name");
    assert_eq!(unnamed(&object.globals, &loader_globals()), Vec::<&str>::new(), "globals the loader does not name");
}

#[test]
fn floor_programs_are_not_in_the_production_object() {
    let object = contents(super::OBJECT);
    let floor: BTreeSet<String> = floor_programs().into_iter().map(String::from).collect();
    assert_eq!(object.programs.intersection(&floor).collect::<Vec<_>>(), Vec::<&String>::new());
}

#[cfg(feature = "bench")]
#[test]
fn floor_object_holds_the_floor_programs_and_nothing_else() {
    let object = contents(super::bench::FLOOR_OBJECT);
    assert_eq!(
        missing(&floor_programs(), &object.programs),
        Vec::<&str>::new(),
        "programs missing from the floor object"
    );
    assert_eq!(unnamed(&object.programs, &floor_programs()), Vec::<&str>::new(), "floor programs without a name");
}
