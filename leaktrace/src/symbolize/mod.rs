//! Turning stack addresses into frames: module, function, offset, file:line, inlined calls.
//! blazesym does the ELF and DWARF work; this module decides which file to ask about.

pub mod build_ids;
pub mod kernel;

use std::{collections::HashMap, path::Path};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer as Blazesym,
};

use crate::{mappings::ProcessModules, model::Frame};

/// Symbolizes user addresses, caching results per file (device, inode) and offset, so that
/// processes mapping the same library share its names.
pub struct Symbolizer {
    blazesym: Blazesym,
    cache: HashMap<((u64, u64), u64), Vec<Frame>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer with an empty cache.
    pub fn new() -> Self {
        let blazesym =
            Blazesym::builder().enable_code_info(true).enable_inlined_fns(true).enable_demangling(true).build();
        Self { blazesym, cache: HashMap::new() }
    }

    /// Frames for each address of a process with mappings `modules`, innermost first; an
    /// address inside inlined code yields several frames. Addresses are return addresses, so
    /// the instruction before is looked up (the call), which gives the caller's line rather
    /// than the line after the call.
    pub fn symbolize(&mut self, modules: &ProcessModules, addresses: &[u64]) -> HashMap<u64, Vec<Frame>> {
        self.symbolize_in(modules, addresses, ProcessModules::locate)
    }

    /// Like [`symbolize`](Self::symbolize), in the mappings the latest snapshot of `modules`
    /// dropped (libraries unloaded): what the addresses of stacks captured before meant.
    pub fn symbolize_retired(&mut self, modules: &ProcessModules, addresses: &[u64]) -> HashMap<u64, Vec<Frame>> {
        self.symbolize_in(modules, addresses, ProcessModules::locate_retired)
    }

    fn symbolize_in(
        &mut self,
        modules: &ProcessModules,
        addresses: &[u64],
        locate: fn(&ProcessModules, u64) -> Option<(usize, u64)>,
    ) -> HashMap<u64, Vec<Frame>> {
        let mut wanted: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut located = Vec::with_capacity(addresses.len());
        for &address in addresses {
            let spot = locate(modules, address.saturating_sub(1))
                .map(|(index, offset)| (index, modules.module(index).file, offset));
            if let Some((index, file, offset)) = spot {
                if !self.cache.contains_key(&(file, offset)) {
                    wanted.entry(index).or_default().push(offset);
                }
            }
            located.push((address, spot.map(|(_, file, offset)| (file, offset))));
        }
        for (index, mut offsets) in wanted {
            offsets.sort_unstable();
            offsets.dedup();
            let module = modules.module(index);
            for (offset, frames) in self.frames_in_file(&module.name, &module.open_path, &offsets) {
                self.cache.insert((module.file, offset), frames);
            }
        }
        located
            .into_iter()
            .map(|(address, spot)| {
                let frames = match spot {
                    Some(key) => self.cache[&key]
                        .iter()
                        .map(|f| Frame { address, offset: f.offset.map(|o| o + 1), ..f.clone() })
                        .collect(),
                    None => vec![Frame { address, ..Frame::default() }],
                };
                (address, frames)
            })
            .collect()
    }
}

impl Symbolizer {
    /// Frames for return addresses given as offsets in one file (`file`: its device and
    /// inode), innermost first; as in [`Self::symbolize`], the call before each is looked up.
    /// Each frame's `address` is its offset in the file.
    pub fn symbolize_in_file(
        &mut self,
        name: &str,
        path: &Path,
        file: (u64, u64),
        return_offsets: &[u64],
    ) -> HashMap<u64, Vec<Frame>> {
        let mut wanted: Vec<u64> = return_offsets
            .iter()
            .map(|o| o.saturating_sub(1))
            .filter(|o| !self.cache.contains_key(&(file, *o)))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for (offset, frames) in self.frames_in_file(name, path, &wanted) {
            self.cache.insert((file, offset), frames);
        }
        return_offsets
            .iter()
            .map(|&at| {
                let frames = self.cache[&(file, at.saturating_sub(1))]
                    .iter()
                    .map(|f| Frame { address: at, offset: f.offset.map(|o| o + 1), ..f.clone() })
                    .collect();
                (at, frames)
            })
            .collect()
    }

    /// The frames at each of `offsets` (sorted, distinct) in the file at `path`, named `name`.
    fn frames_in_file(&self, name: &str, path: &Path, offsets: &[u64]) -> Vec<(u64, Vec<Frame>)> {
        let results = self.blazesym.symbolize(&Source::from(Elf::new(path)), Input::FileOffset(offsets));
        let results = results.as_deref().unwrap_or_default();
        // A function the compiler split into parts (a hot part and `name.cold`, DWARF
        // `DW_AT_ranges`) comes back from the debug information without a start address;
        // its offset is then taken from the ELF symbol of the part that holds the address.
        let split: Vec<u64> = offsets
            .iter()
            .zip(results)
            .filter(|(_, r)| matches!(r, Symbolized::Sym(sym) if sym.addr == 0))
            .map(|(&offset, _)| offset)
            .collect();
        let mut parts: HashMap<u64, (String, u64)> = HashMap::new();
        if !split.is_empty() {
            let mut symtab = Elf::new(path);
            symtab.debug_syms = false;
            if let Ok(found) = self.blazesym.symbolize(&Source::from(symtab), Input::FileOffset(&split)) {
                for (&offset, part) in split.iter().zip(&found) {
                    if let Symbolized::Sym(sym) = part {
                        parts.insert(offset, (sym.name.to_string(), sym.offset as u64));
                    }
                }
            }
        }
        offsets
            .iter()
            .enumerate()
            .map(|(i, &offset)| (offset, frames_for(name, offset, results.get(i), parts.get(&offset))))
            .collect()
    }
}

/// The frames at `file_offset`: inlined calls first, then the function that holds them.
/// `part` is the ELF symbol and offset of a split function's part (see `frames_in_file`).
fn frames_for(
    module: &str,
    file_offset: u64,
    symbolized: Option<&Symbolized<'_>>,
    part: Option<&(String, u64)>,
) -> Vec<Frame> {
    let base = Frame { module: Some(module.to_string()), offset: Some(file_offset), ..Frame::default() };
    let Some(Symbolized::Sym(sym)) = symbolized else { return vec![base] };
    let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        info.map_or((None, None), |c| (Some(c.to_path().display().to_string()), c.line))
    };
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    // blazesym lists inlined calls outermost first; reports want the innermost first.
    for inlined in sym.inlined.iter().rev() {
        let (file, line) = location(inlined.code_info.as_ref());
        frames.push(Frame {
            symbol: Some(inlined.name.to_string()),
            offset: None,
            file,
            line,
            inlined: true,
            ..base.clone()
        });
    }
    let (file, line) = location(sym.code_info.as_deref());
    let (offset, part) = match part {
        _ if sym.addr != 0 => (Some(sym.offset as u64), None),
        // The entry part has the function's own name; another (`foo.cold`) is named, so that
        // name and offset locate the address.
        Some((name, offset)) if *name == sym.name => (Some(*offset), None),
        Some((name, offset)) if name.starts_with(&*sym.name) => (Some(*offset), Some(name.clone())),
        // No part found: the name is right, an offset would be a guess.
        _ => (None, None),
    };
    frames.push(Frame { symbol: Some(sym.name.to_string()), offset, part, file, line, ..base });
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_frames_in_this_binary_and_in_libc() {
        let mut modules = ProcessModules::new(std::process::id());
        assert!(modules.refresh());
        let mut symbolizer = Symbolizer::new();
        // +1: addresses are treated as return addresses (the byte before is looked up).
        let own = names_frames_in_this_binary_and_in_libc as *const () as usize as u64 + 1;
        let libc_fn = libc::malloc as *const () as usize as u64 + 1;
        let frames = symbolizer.symbolize(&modules, &[own, libc_fn]);
        let own_frame = frames[&own].last().unwrap();
        assert!(
            own_frame.symbol.as_deref().unwrap().contains("names_frames_in_this_binary_and_in_libc"),
            "{own_frame:?}"
        );
        assert!(own_frame.file.as_deref().unwrap().ends_with("mod.rs"), "{own_frame:?}");
        let libc_frame = frames[&libc_fn].last().unwrap();
        assert!(libc_frame.module.as_deref().unwrap().contains("libc.so"), "{libc_frame:?}");
        assert!(libc_frame.symbol.as_deref().is_some_and(|s| s.contains("malloc")), "{libc_frame:?}");
    }
}

#[cfg(test)]
mod split_function_tests {
    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

    use super::*;

    /// File offset of ELF symbol `name` in `data`, plus `delta`.
    fn file_offset(data: &[u8], name: &str, delta: u64) -> u64 {
        let file = object::File::parse(data).unwrap();
        let symbol = file.symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("no symbol {name}"));
        let address = symbol.address() + delta;
        let segment = file
            .segments()
            .find(|s| (s.address()..s.address() + s.size()).contains(&address))
            .expect("the symbol is in a segment");
        address - segment.address() + segment.file_range().0
    }

    #[test]
    fn a_split_function_gets_offsets_from_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("cold_parts");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cold_parts.c");
        let status = std::process::Command::new("cc")
            .args(["-O2", "-g", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("a C compiler (cargo xtask setup installs one)");
        assert!(status.success());
        let data = std::fs::read(&binary).unwrap();
        let hot = file_offset(&data, "span_alloc_record", 0xd);
        let cold = file_offset(&data, "span_alloc_record.cold", 0x6);
        let symbolizer = Symbolizer::new();
        let frames: HashMap<u64, Vec<Frame>> =
            symbolizer.frames_in_file("cold_parts", &binary, &[hot.min(cold), hot.max(cold)]).into_iter().collect();
        let outer = |offset: u64| frames[&offset].last().unwrap().clone();
        let (hot_frame, cold_frame) = (outer(hot), outer(cold));
        assert_eq!(hot_frame.symbol.as_deref(), Some("span_alloc_record"));
        assert_eq!((hot_frame.offset, hot_frame.part.as_deref()), (Some(0xd), None), "{hot_frame:?}");
        assert_eq!(cold_frame.symbol.as_deref(), Some("span_alloc_record"));
        assert_eq!(
            (cold_frame.offset, cold_frame.part.as_deref()),
            (Some(0x6), Some("span_alloc_record.cold")),
            "{cold_frame:?}"
        );
        // The source line still comes from the debug information.
        assert!(cold_frame.file.as_deref().is_some_and(|f| f.ends_with("cold_parts.c")), "{cold_frame:?}");
    }
}
