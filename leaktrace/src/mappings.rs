//! The executable mappings of a traced process, kept usable after it exits: what the
//! symbolizer names frames in and what the unwinder builds its tables from.
//!
//! blazesym can symbolize a live process directly, but the final report is often written
//! after the target has exited, when /proc/PID/maps is gone. So the mappings are snapshotted
//! while the process runs, and each mapped file is held open through /proc/PID/map_files:
//! that keeps deleted, replaced or container-only files readable until the report is done.

use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
};

use procfs::{
    process::{MMPermissions, MMapPath, MemoryMaps},
    FromBufRead,
};

/// One file mapping listed in /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// The file's device, as `makedev(major, minor)`.
    pub device: u64,
    /// The file's inode.
    pub inode: u64,
    /// The path the process mapped it by.
    pub path: PathBuf,
    /// Mapped executable.
    pub executable: bool,
}

/// The file mappings in the text of a /proc/PID/maps file (anonymous, stack, heap and vdso
/// mappings are left out). Lines are read one by one, so that one line procfs cannot read
/// (a file name that is not UTF-8, which is shown lossily, or a malformed line) costs that
/// mapping only, not the whole snapshot.
pub fn parse_maps(text: &[u8]) -> Vec<FileMapping> {
    text.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| parse_maps_line(&String::from_utf8_lossy(line)))
        .collect()
}

fn parse_maps_line(line: &str) -> Option<FileMapping> {
    // procfs 0.18 panics on some lines a maps file should never hold but a hostile or
    // corrupt one could: it reads a line starting with a capital as an smaps `Key: value kB`
    // line (whose value it multiplies without a check), slices a `/SYSV` name at bytes 5..13
    // and a `[stack:…]` name at its last byte without checking either. Such lines are no file
    // mapping leaktrace could use.
    let path = line.splitn(6, ' ').nth(5).unwrap_or_default().trim();
    let sysv_too_short = path.starts_with("/SYSV") && !(path.len() >= 13 && path.is_char_boundary(13));
    if line.starts_with(|c: char| c.is_ascii_uppercase())
        || sysv_too_short
        || (path.starts_with('[') && !path.is_ascii())
    {
        return None;
    }
    let map = MemoryMaps::from_buf_read(line.as_bytes()).ok()?.into_iter().next()?;
    let MMapPath::Path(path) = map.pathname else { return None };
    Some(FileMapping {
        start: map.address.0,
        end: map.address.1,
        file_offset: map.offset,
        device: libc::makedev(map.dev.0 as u32, map.dev.1 as u32),
        inode: map.inode,
        path,
        executable: map.perms.contains(MMPermissions::EXECUTE),
    })
}

/// The file mappings of process `pid`.
pub fn read_maps(pid: u32) -> std::io::Result<Vec<FileMapping>> {
    Ok(parse_maps(&std::fs::read(format!("/proc/{pid}/maps"))?))
}

/// A file mapped executable in the process.
#[derive(Debug)]
pub struct Module {
    /// Path as the process sees it (what reports show).
    pub name: String,
    /// Path blazesym opens: the real path when it is the same file in our namespace,
    /// otherwise /proc/self/fd/N of the held handle.
    pub open_path: PathBuf,
    /// GNU build-id in hex, when the file has one.
    pub build_id: Option<String>,
    /// (device, inode): the file's identity, whatever path it was mapped by.
    pub file: (u64, u64),
    _handle: Option<File>,
}

/// An executable mapping of the latest snapshot.
#[derive(Clone, Copy, Debug)]
pub struct ExecMapping<'a> {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// The mapped file.
    pub module: &'a Module,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    start: u64,
    end: u64,
    file_offset: u64,
    module: usize,
}

/// Executable mappings of one process, refreshed while it lives.
#[derive(Debug, Default)]
pub struct ProcessModules {
    pid: u32,
    modules: Vec<Module>,
    by_file: HashMap<(u64, u64), usize>,
    mappings: Vec<Mapping>,
    /// Mappings of the previous snapshot that the latest one no longer has (libraries
    /// unloaded since): stacks captured before hold addresses only these explain.
    retired: Vec<Mapping>,
    snapshots: u64,
}

impl ProcessModules {
    /// An empty map for `pid`; call [`refresh`](Self::refresh) to fill it.
    pub fn new(pid: u32) -> Self {
        Self { pid, ..Self::default() }
    }

    /// Number of successful snapshots so far.
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }

    /// Re-reads the mappings. Returns false (keeping the previous snapshot) when the process
    /// is gone.
    pub fn refresh(&mut self) -> bool {
        let Ok(maps) = read_maps(self.pid) else { return false };
        let mut mappings = Vec::new();
        for map in maps.into_iter().filter(|m| m.executable) {
            let (start, end) = (map.start, map.end);
            let key = (map.device, map.inode);
            let module = match self.by_file.get(&key) {
                Some(&index) => index,
                None => {
                    let module = self.open_module(&map.path, start, end, key);
                    self.modules.push(module);
                    self.by_file.insert(key, self.modules.len() - 1);
                    self.modules.len() - 1
                }
            };
            mappings.push(Mapping { start, end, file_offset: map.file_offset, module });
        }
        if mappings.is_empty() {
            // A zombie has an empty map: keep what we saw while it was alive.
            return false;
        }
        mappings.sort_by_key(|m| m.start);
        let kept = |old: &Mapping| {
            mappings
                .iter()
                .any(|m| (m.start, m.end, m.file_offset, m.module) == (old.start, old.end, old.file_offset, old.module))
        };
        self.retired = self.mappings.iter().filter(|old| !kept(old)).copied().collect();
        self.mappings = mappings;
        self.snapshots += 1;
        true
    }

    fn open_module(&self, path: &std::path::Path, start: u64, end: u64, key: (u64, u64)) -> Module {
        let name = path.display().to_string();
        let name = name.strip_suffix(" (deleted)").unwrap_or(&name).to_string();
        let same_file = std::fs::metadata(&name).is_ok_and(|m| (m.dev(), m.ino()) == key);
        let handle = File::open(format!("/proc/{}/map_files/{start:x}-{end:x}", self.pid)).ok();
        let open_path = match (&handle, same_file) {
            (_, true) => PathBuf::from(&name),
            (Some(file), false) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            (None, false) => PathBuf::from(format!("/proc/{}/root{name}", self.pid)),
        };
        let build_id = blazesym::helper::read_elf_build_id(&open_path)
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        Module { name, open_path, build_id, file: key, _handle: handle }
    }

    /// The module containing `address` and the address's offset in that file.
    pub fn locate(&self, address: u64) -> Option<(usize, u64)> {
        let index = self.mappings.partition_point(|m| m.start <= address).checked_sub(1)?;
        let m = self.mappings[index];
        (address < m.end).then(|| (m.module, address - m.start + m.file_offset))
    }

    /// True when the latest snapshot dropped mappings the one before had.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Like [`locate`](Self::locate), in the mappings the latest snapshot dropped.
    pub fn locate_retired(&self, address: u64) -> Option<(usize, u64)> {
        let m = self.retired.iter().find(|m| m.start <= address && address < m.end)?;
        Some((m.module, address - m.start + m.file_offset))
    }

    /// The executable mappings of the latest snapshot, by address.
    pub fn mappings(&self) -> impl Iterator<Item = ExecMapping<'_>> {
        self.mappings.iter().map(|m| ExecMapping {
            start: m.start,
            end: m.end,
            file_offset: m.file_offset,
            module: &self.modules[m.module],
        })
    }

    /// Every module seen, with its build-id.
    pub fn build_ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.modules.iter().filter_map(|m| m.build_id.as_deref().map(|id| (m.name.as_str(), id)))
    }

    /// A module by index.
    pub fn module(&self, index: usize) -> &Module {
        &self.modules[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_this_functions_code_in_the_test_binary() {
        let mut modules = ProcessModules::new(std::process::id());
        assert!(modules.refresh());
        let here = locates_this_functions_code_in_the_test_binary as *const () as usize as u64;
        let (index, offset) = modules.locate(here).expect("own code is mapped");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(PathBuf::from(&modules.module(index).name), exe);
        assert!(offset < std::fs::metadata(exe).unwrap().len());
        assert!(modules.locate(0x10).is_none());
    }
}
