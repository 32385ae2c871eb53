//! Where the addresses of an object's functions come from.
//!
//! A library's own `.symtab` and `.dynsym` come first. Distributions strip `.symtab` from
//! what they ship; exported allocator functions stay in `.dynsym`, but an executable that
//! links its allocator statically, or a library built with hidden symbols, keeps them only
//! in the debug information, which comes two ways: MiniDebugInfo (Fedora, and Debian's
//! `dh_strip --ddeb-migration` builds: a `.gnu_debugdata` section holding an xz-compressed
//! ELF whose `.symtab` lists the functions) and a separate debug file installed under
//! /usr/lib/debug/.build-id/ (Debian's `-dbgsym`, Fedora's `-debuginfo` packages). Both are
//! read only when the object has no `.symtab` of its own.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSymbol};

/// Where build-id debug files are installed.
const DEBUG_ROOT: &str = "/usr/lib/debug/.build-id";

/// One source of symbols of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The object's own `.symtab` and `.dynsym`.
    Own,
    /// Its `.gnu_debugdata` section (MiniDebugInfo).
    MiniDebugInfo,
    /// A separate debug file found by the object's build id.
    DebugFile(PathBuf),
}

/// Defined symbols of an object by name, each the virtual address of its first byte in the
/// object itself (a debug file's addresses are the same as its object's).
#[derive(Debug, Default)]
pub struct SymbolIndex {
    addresses: HashMap<String, u64>,
    /// The sources read, in order.
    pub sources: Vec<Source>,
}

impl SymbolIndex {
    /// The address of `name`, if some source defines it.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.addresses.get(name).copied()
    }

    /// True when some source defines `name`.
    pub fn defines(&self, name: &str) -> bool {
        self.addresses.contains_key(name)
    }

    fn add(&mut self, file: &object::File<'_>, source: Source) {
        for symbol in file.dynamic_symbols().chain(file.symbols()) {
            if !symbol.is_definition() || symbol.address() == 0 {
                continue;
            }
            if let Ok(name) = symbol.name() {
                // The first source wins: the object's own table is the one the loader uses.
                self.addresses.entry(name.to_string()).or_insert(symbol.address());
            }
        }
        self.sources.push(source);
    }
}

/// Every defined symbol of `file` (read from `path`), from the object and, when it has no
/// `.symtab`, from its MiniDebugInfo and its build-id debug file.
pub fn index(file: &object::File<'_>) -> SymbolIndex {
    let mut index = SymbolIndex::default();
    index.add(file, Source::Own);
    if file.section_by_name(".symtab").is_some() {
        return index;
    }
    if let Some(data) = mini_debuginfo(file) {
        match object::File::parse(&*data) {
            Ok(inner) => index.add(&inner, Source::MiniDebugInfo),
            Err(e) => log::debug!("MiniDebugInfo is not an ELF file: {e}"),
        }
    }
    if let Some(path) = debug_file(file) {
        if let Ok(data) = std::fs::read(&path) {
            if let Ok(debug) = object::File::parse(&*data) {
                index.add(&debug, Source::DebugFile(path));
            }
        }
    }
    index
}

/// The ELF file inside `.gnu_debugdata`, decompressed.
fn mini_debuginfo(file: &object::File<'_>) -> Option<Vec<u8>> {
    let compressed = file.section_by_name(".gnu_debugdata")?.data().ok()?;
    let mut out = Vec::new();
    match std::io::Read::read_to_end(&mut xz2::read::XzDecoder::new(compressed), &mut out) {
        Ok(_) => Some(out),
        Err(e) => {
            log::debug!(".gnu_debugdata is not a readable xz stream: {e}");
            None
        }
    }
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug` for the object's build id, when installed.
fn debug_file(file: &object::File<'_>) -> Option<PathBuf> {
    let id = file.build_id().ok()??;
    let (first, rest) = id.split_first()?;
    let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let path = Path::new(DEBUG_ROOT).join(format!("{first:02x}")).join(format!("{hex}.debug"));
    path.exists().then_some(path)
}

/// Where symbols were looked for, for an error message.
pub fn searched(index: &SymbolIndex) -> String {
    let mut places = vec![".symtab/.dynsym".to_string()];
    if !index.sources.contains(&Source::MiniDebugInfo) {
        places.push("no .gnu_debugdata".into());
    } else {
        places.push(".gnu_debugdata".into());
    }
    match index.sources.iter().find_map(|s| match s {
        Source::DebugFile(p) => Some(p),
        _ => None,
    }) {
        Some(path) => places.push(path.display().to_string()),
        None => places.push(format!("no debug file under {DEBUG_ROOT}")),
    }
    places.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_id_names_its_debug_file() {
        // Whatever this test binary's id, the path has the documented shape.
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let index = index(&file);
        assert_eq!(index.sources[0], Source::Own);
        assert!(index.defines("main"));
    }
}
