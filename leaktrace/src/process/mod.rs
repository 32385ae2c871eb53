//! The traced process: validating a pid, launching a command, and finding its allocator.

pub mod cgroup;
pub mod launch;

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use procfs::process::Process;

use crate::{
    allocator::{self, AllocatorFn, AllocatorObject},
    error::{Error, Result},
    mappings,
};

/// `PF_KTHREAD` from include/linux/sched.h: set in /proc/PID/stat flags for kernel threads.
const PF_KTHREAD: u32 = 0x0020_0000;

pub use crate::model::TargetInfo;

fn open(pid: u32) -> Result<Process> {
    let pid_i32 = i32::try_from(pid).map_err(|_| Error::NoSuchProcess { pid })?;
    let process = Process::new(pid_i32).map_err(|_| Error::NoSuchProcess { pid })?;
    // A zombie or a vanished process has no stat we can use either.
    process.stat().map_err(|_| Error::NoSuchProcess { pid })?;
    Ok(process)
}

/// Checks that `pid` is a user process other than leaktrace and describes it.
pub fn inspect_pid(pid: u32) -> Result<TargetInfo> {
    if pid == std::process::id() {
        return Err(Error::SelfTarget { pid });
    }
    let process = open(pid)?;
    let stat = process.stat().map_err(|_| Error::NoSuchProcess { pid })?;
    if stat.flags & PF_KTHREAD != 0 {
        return Err(Error::KernelThread { pid, comm: stat.comm });
    }
    if stat.state == 'Z' {
        return Err(Error::NoSuchProcess { pid });
    }
    Ok(describe(pid, &process, &stat.comm))
}

/// Describes a live process for the report.
pub fn describe(pid: u32, process: &Process, comm: &str) -> TargetInfo {
    let command = process.cmdline().ok().filter(|c| !c.is_empty()).map_or_else(|| comm.to_string(), |c| c.join(" "));
    let exe = process.exe().map(|p| p.display().to_string()).unwrap_or_default();
    TargetInfo { pid, command, exe }
}

/// Describes a process by pid, if it exists.
pub fn describe_pid(pid: u32) -> Option<TargetInfo> {
    let process = open(pid).ok()?;
    let comm = process.stat().ok()?.comm;
    Some(describe(pid, &process, &comm))
}

/// The process's name (`comm`), if it exists.
pub fn comm_of(pid: u32) -> Option<String> {
    Process::new(pid as i32).and_then(|p| p.stat()).ok().map(|s| s.comm)
}

/// Every user process named `comm` but leaktrace itself (for `--comm`).
pub fn pids_named(comm: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.filter_map(|p| p.ok())
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.comm == comm && s.flags & PF_KTHREAD == 0 && s.state != 'Z' && s.pid as u32 != me)
        .map(|s| s.pid as u32)
        .collect()
}

/// The user processes whose parent is `pid` (for `--follow` at attach: children that already
/// run are traced like the ones forked later).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.filter_map(|p| p.ok())
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.ppid as u32 == pid && s.flags & PF_KTHREAD == 0 && s.state != 'Z')
        .map(|s| s.pid as u32)
        .collect()
}

/// True when the process is stopped (state T), as our exit probe leaves a launched command.
pub fn is_stopped(pid: u32) -> bool {
    Process::new(pid as i32).and_then(|p| p.stat()).is_ok_and(|s| s.state == 'T')
}

/// True while the process exists and has not become a zombie.
pub fn is_alive(pid: u32) -> bool {
    Process::new(pid as i32).and_then(|p| p.stat()).is_ok_and(|s| s.state != 'Z' && s.state != 'X')
}

/// A file a process maps: the path it mapped it by (what reports show), and the path
/// leaktrace opens to read it and place probes on it.
#[derive(Clone, Debug)]
struct Mapped {
    name: PathBuf,
    open: PathBuf,
}

/// The files process `pid` maps, each once. A file is opened through /proc/PID/root when the
/// path there is the very file mapped (same device and inode as /proc/PID/maps says), else
/// through /proc/PID/map_files: the paths in /proc/PID/maps are not relative to the
/// process's root when it is chrooted, and a path there may name another file than the one
/// mapped (an overlay, a file replaced since).
fn mapped_files(pid: u32) -> Result<Vec<Mapped>> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let maps = mappings::read_maps(pid).map_err(|e| Error::io(format!("reading /proc/{pid}/maps"), e))?;
    let mut mapped: Vec<Mapped> = Vec::new();
    for map in maps {
        if mapped.iter().any(|m| m.name == map.path) {
            continue;
        }
        let in_root = under_root(&root, &map.path);
        let same = std::fs::metadata(&in_root).is_ok_and(|m| (m.dev(), m.ino()) == (map.device, map.inode));
        let open =
            if same { in_root } else { PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", map.start, map.end)) };
        mapped.push(Mapped { name: map.path, open });
    }
    Ok(mapped)
}

/// The executable of process `pid` (as it names it) and the path to open it by.
fn executable(pid: u32, process: &Process, mapped: &[Mapped]) -> Result<(PathBuf, PathBuf)> {
    let exe = process.exe().map_err(|e| Error::io(format!("reading /proc/{pid}/exe"), std::io::Error::other(e)))?;
    let open = mapped
        .iter()
        .find(|m| m.name == exe)
        .map_or_else(|| PathBuf::from(format!("/proc/{pid}/exe")), |m| m.open.clone());
    Ok((exe, open))
}

/// Finds the allocators of a running process: the object that provides malloc (an explicit
/// `-O` object, else the executable when it defines malloc itself, static or interposing,
/// else a malloc replacement library, else libc), then every other allocator object it maps
/// (a C++ runtime's new/delete, a prefixed jemalloc, mimalloc's `mi_*`), then the functions
/// added with `--alloc-fn`. Each file is read, and probed, as the process maps it (see
/// [`mapped_files`]), so a process in a container is probed in its own files.
pub fn find_allocator(
    pid: u32,
    object: Option<&Path>,
    prefix: &str,
    custom: &[AllocatorFn],
) -> Result<AllocatorObject> {
    let process = open(pid)?;
    let mapped = mapped_files(pid)?;
    let (exe, exe_open) = executable(pid, &process, &mapped)?;
    let mut plan = match object {
        Some(object) => from_explicit_object(object, Some(&mapped), prefix)?,
        None => malloc_provider(pid, (&exe, &exe_open), &mapped, prefix)?,
    };
    let mut companions: Vec<PathBuf> = vec![exe_open.clone()];
    companions.extend(
        mapped.iter().filter(|m| allocator::looks_like_allocator_library(&file_name(&m.name))).map(|m| m.open.clone()),
    );
    for path in companions {
        if path == plan.path {
            continue;
        }
        // An object that cannot be read is skipped: the one that provides malloc was read.
        match allocator::inspect_companion(&path) {
            Ok(facts) => plan.add(facts),
            Err(e) => log::debug!("{e}"),
        }
    }
    add_custom(&mut plan, custom, std::iter::once(exe_open).chain(mapped.iter().map(|m| m.open.clone())), pid)?;
    Ok(plan)
}

/// Whether process `pid` runs with the Zend memory manager off: PHP reads `USE_ZEND_ALLOC`
/// with `atol`, so a value whose leading digits make 0 (or none) hands every `_emalloc` to
/// malloc. False when its environment cannot be read.
pub fn zend_alloc_disabled(pid: u32) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
    environ.split(|&b| b == 0).filter_map(|v| v.strip_prefix(b"USE_ZEND_ALLOC=")).any(|value| {
        let text = String::from_utf8_lossy(value);
        let digits: String = text.trim_start().chars().take_while(char::is_ascii_digit).collect();
        digits.trim_start_matches('0').is_empty()
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()
}

/// The object whose malloc the process calls. `exe`: the executable as named and as opened.
fn malloc_provider(pid: u32, exe: (&Path, &Path), mapped: &[Mapped], prefix: &str) -> Result<AllocatorObject> {
    let (exe, exe_open) = exe;
    let exe_facts = allocator::inspect(exe_open, prefix)?;
    if exe_facts.defined.iter().any(|f| f.covers("malloc", prefix)) {
        return allocator::plan(exe_open, exe_facts, prefix);
    }
    let mut libraries: Vec<&Mapped> = mapped
        .iter()
        .filter(|m| {
            let name = file_name(&m.name);
            allocator::looks_like_allocator_library(&name) && !allocator::is_cxx_runtime(&name)
        })
        .collect();
    libraries.sort_by_key(|m| allocator::allocator_rank(&file_name(&m.name)));
    let mut tried = Vec::new();
    for library in &libraries {
        let open = &library.open;
        match allocator::inspect(open, prefix).and_then(|facts| allocator::plan(open, facts, prefix)) {
            Ok(plan) => return Ok(plan),
            Err(e) => tried.push(e.to_string()),
        }
    }
    let detail = if libraries.is_empty() {
        format!(
            "the executable {} does not define {prefix}malloc (looked in {}) and no C library is mapped",
            exe.display(),
            exe_facts.searched
        )
    } else {
        tried.join("; ")
    };
    Err(Error::NoAllocator { target: format!("pid {pid}"), detail })
}

/// Finds each `--alloc-fn` function in the first of `objects` that defines it.
fn add_custom(
    plan: &mut AllocatorObject,
    custom: &[AllocatorFn],
    objects: impl Iterator<Item = PathBuf>,
    pid: u32,
) -> Result<()> {
    let mut left: Vec<AllocatorFn> = custom.to_vec();
    for object in objects {
        if left.is_empty() {
            break;
        }
        let Ok(facts) = allocator::inspect_custom(&object, &left) else { continue };
        left.retain(|f| !facts.defined.iter().any(|d| d.covers(f.name, "")));
        plan.add(facts);
    }
    match left.first() {
        Some(f) => Err(Error::NoSuchFunction { name: f.name.to_string(), target: format!("pid {pid}") }),
        None => Ok(()),
    }
}

/// The dynamic linker of a running process (from its executable's `.interp`), as the path
/// to open it by: the mapped file of that name (see [`mapped_files`]), else the `.interp`
/// path through /proc/PID/root. None for a static executable.
pub fn dynamic_linker_of_pid(pid: u32) -> Result<Option<PathBuf>> {
    let process = open(pid)?;
    let mapped = mapped_files(pid)?;
    let (_, exe_open) = executable(pid, &process, &mapped)?;
    let Some(interp) = allocator::interpreter(&exe_open)? else { return Ok(None) };
    // `.interp` often names a symlink (/lib64/ld-linux-x86-64.so.2) to the file mapped.
    let mapped_linker = mapped.iter().find(|m| m.name.file_name() == interp.file_name());
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    Ok(Some(mapped_linker.map_or_else(|| under_root(&root, &interp), |m| m.open.clone())))
}

/// The dynamic linker a command about to be launched will run under: its `.interp`, or for
/// a script, the one leaktrace itself runs under (the usual interpreters are dynamic).
pub fn dynamic_linker_of_program(program: &Path) -> Result<Option<PathBuf>> {
    let is_script = std::fs::read(program).map(|d| d.starts_with(b"#!")).unwrap_or(false);
    if is_script {
        let own = std::env::current_exe().map_err(|e| Error::io("finding leaktrace's own executable", e))?;
        return allocator::interpreter(&own);
    }
    let linker = allocator::interpreter(program)?;
    if let Some(linker) = linker.as_ref().filter(|l| !l.exists()) {
        return Err(Error::Launch {
            program: program.display().to_string(),
            source: format!("its dynamic linker {} does not exist", linker.display()).into(),
        });
    }
    Ok(linker)
}

/// Allocator for a command about to be launched: the executable itself when it defines malloc,
/// otherwise the C library that leaktrace itself runs on (the launched command shares
/// leaktrace's filesystem and dynamic loader configuration).
pub fn find_allocator_for_program(program: &Path, object: Option<&Path>, prefix: &str) -> Result<AllocatorObject> {
    if let Some(object) = object {
        return from_explicit_object(object, None, prefix);
    }
    let is_script = std::fs::read(program).map(|d| d.starts_with(b"#!")).unwrap_or(false);
    if !is_script {
        let facts = allocator::inspect(program, prefix)?;
        if facts.defined.iter().any(|f| f.function.name == "malloc") {
            return allocator::plan(program, facts, prefix);
        }
        if !facts.dynamic {
            return Err(Error::NoAllocator {
                target: program.display().to_string(),
                detail: format!(
                    "it is statically linked and defines no {prefix}malloc symbol (looked in {})",
                    facts.searched
                ),
            });
        }
    }
    let own_libc = own_c_library()?;
    let facts = allocator::inspect(&own_libc, prefix)?;
    let mut plan = allocator::plan(&own_libc, facts, prefix)?;
    if !is_script {
        // The program's own entry points beside the C library's (PHP's heap in the php
        // executable), probed before it runs like the rest.
        plan.add(allocator::inspect_companion(program)?);
    }
    Ok(plan)
}

/// The allocator of the C library leaktrace itself runs on: the one processes started later
/// on this system most likely use (`--comm`).
pub fn own_allocator(prefix: &str) -> Result<AllocatorObject> {
    let own_libc = own_c_library()?;
    let facts = allocator::inspect(&own_libc, prefix)?;
    allocator::plan(&own_libc, facts, prefix)
}

fn from_explicit_object(object: &Path, mapped: Option<&[Mapped]>, prefix: &str) -> Result<AllocatorObject> {
    let path = if object.exists() {
        object.to_path_buf()
    } else if let Some(mapped) = mapped.filter(|_| object.components().count() == 1) {
        // A bare name such as "libjemalloc.so.2": look for it among the target's mappings.
        let wanted = object.as_os_str().to_string_lossy();
        mapped
            .iter()
            .find(|m| {
                m.name.file_name().is_some_and(|n| n == object.as_os_str() || n.to_string_lossy().starts_with(&*wanted))
            })
            .map(|m| m.open.clone())
            .ok_or_else(|| Error::BadElf {
                path: object.to_path_buf(),
                source: "no such file, and the target maps no library of that name".into(),
            })?
    } else {
        return Err(Error::BadElf { path: object.to_path_buf(), source: "no such file".into() });
    };
    let facts = allocator::inspect(&path, prefix)?;
    allocator::plan(&path, facts, prefix)
}

fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn own_c_library() -> Result<PathBuf> {
    let maps = mappings::read_maps(std::process::id()).map_err(|e| Error::io("reading /proc/self/maps", e))?;
    maps.into_iter()
        .map(|m| m.path)
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| allocator::allocator_rank(n) == 1))
        .ok_or_else(|| Error::NoAllocator {
            target: "the launched command".into(),
            detail: "leaktrace could not find the C library it runs on".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_self_and_absent_pids() {
        assert!(matches!(inspect_pid(std::process::id()), Err(Error::SelfTarget { .. })));
        // Above the kernel's maximum pid (4194304), so it cannot exist.
        assert!(matches!(inspect_pid(4_194_305), Err(Error::NoSuchProcess { .. })));
    }

    #[test]
    fn kthreadd_is_a_kernel_thread() {
        match inspect_pid(2) {
            Err(Error::KernelThread { comm, .. }) => assert_eq!(comm, "kthreadd"),
            other => panic!("expected a kernel thread error, got {other:?}"),
        }
    }

    #[test]
    fn a_dynamic_program_uses_the_shared_libc() {
        let plan = find_allocator_for_program(Path::new("/bin/true"), None, "").unwrap();
        assert!(plan.path.to_string_lossy().contains("libc"), "{}", plan.path.display());
    }
}
