//! Files by GNU build-id, for user stacks captured as (build-id, file offset) frames: they
//! are named after their process has exited, from the files it mapped, which are still on
//! disk. A file is found among the mapped files of processes leaktrace snapshotted, the
//! programs exec'd while it traced, and the system's library directories (searched once,
//! when a build-id is first missing).

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::mappings::ProcessModules;

/// Where shared libraries are looked for.
const LIBRARY_DIRS: &[&str] =
    &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/local/lib", "/usr/lib"];

/// A file found by its build-id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildIdFile {
    /// Path to open.
    pub path: PathBuf,
    /// (device, inode), for the symbol cache.
    pub file: (u64, u64),
}

/// Build-id (lowercase hex) → file.
#[derive(Debug, Default)]
pub struct BuildIdIndex {
    files: HashMap<String, BuildIdFile>,
    indexed: HashSet<PathBuf>,
    libraries_searched: bool,
}

/// The hex form of a build-id as the kernel reports it: 20 bytes, zero-padded when shorter.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl BuildIdIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes the file at `path` (once).
    pub fn add(&mut self, path: &Path) {
        if !self.indexed.insert(path.to_path_buf()) {
            return;
        }
        let Ok(metadata) = std::fs::metadata(path) else { return };
        if !metadata.is_file() {
            return;
        }
        if let Ok(Some(id)) = blazesym::helper::read_elf_build_id(path) {
            let file = BuildIdFile { path: path.to_path_buf(), file: (metadata.dev(), metadata.ino()) };
            self.files.entry(hex(&id)).or_insert(file);
        }
    }

    /// Indexes the files a process has mapped.
    pub fn add_modules(&mut self, modules: &ProcessModules) {
        for mapping in modules.mappings() {
            if let Some(id) = &mapping.module.build_id {
                let file = BuildIdFile { path: mapping.module.open_path.clone(), file: mapping.module.file };
                self.files.entry(id.clone()).or_insert(file);
            }
        }
    }

    /// The file with build-id `id` (as the kernel gives it: 20 bytes, zero-padded).
    pub fn find(&mut self, id: &[u8; 20]) -> Option<BuildIdFile> {
        if let Some(found) = self.lookup(id) {
            return Some(found);
        }
        if !self.libraries_searched {
            self.libraries_searched = true;
            for dir in LIBRARY_DIRS {
                let Ok(entries) = std::fs::read_dir(dir) else { continue };
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().contains(".so") {
                        self.add(&entry.path());
                    }
                }
            }
        }
        self.lookup(id)
    }

    fn lookup(&self, id: &[u8; 20]) -> Option<BuildIdFile> {
        let full = hex(id);
        // A build-id shorter than 20 bytes comes zero-padded.
        let trimmed = full.trim_end_matches("00");
        self.files.get(&full).or_else(|| self.files.get(trimmed)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_c_library_by_its_build_id() {
        let libc = LIBRARY_DIRS.iter().map(|d| Path::new(d).join("libc.so.6")).find(|p| p.exists()).unwrap();
        let id = blazesym::helper::read_elf_build_id(&libc).unwrap().unwrap();
        let mut padded = [0u8; 20];
        padded[..id.len()].copy_from_slice(&id);
        let mut index = BuildIdIndex::new();
        let found = index.find(&padded).expect("libc is in a library directory");
        assert_eq!(std::fs::read(&found.path).unwrap(), std::fs::read(&libc).unwrap());
        padded[0] ^= 0xff;
        assert_eq!(index.find(&padded), None);
    }
}
