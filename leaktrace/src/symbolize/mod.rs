//! Turning stack addresses into frames: module, function, offset, file:line, inlined calls.
//! blazesym does the ELF and DWARF work; this module decides which file to ask about.

pub mod kernel;

use std::collections::HashMap;

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
        let blazesym = Blazesym::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self { blazesym, cache: HashMap::new() }
    }

    /// Frames for each address of a process with mappings `modules`, innermost first; an
    /// address inside inlined code yields several frames. Addresses are return addresses, so
    /// the instruction before is looked up (the call), which gives the caller's line rather
    /// than the line after the call.
    pub fn symbolize(&mut self, modules: &ProcessModules, addresses: &[u64]) -> HashMap<u64, Vec<Frame>> {
        let mut wanted: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut located = Vec::with_capacity(addresses.len());
        for &address in addresses {
            let spot = modules.locate(address.saturating_sub(1)).map(|(index, offset)| (index, modules.module(index).file, offset));
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
            let source = Source::from(Elf::new(module.open_path.clone()));
            let results = self.blazesym.symbolize(&source, Input::FileOffset(&offsets));
            for (i, &offset) in offsets.iter().enumerate() {
                let symbolized = results.as_ref().ok().and_then(|r| r.get(i));
                self.cache.insert((module.file, offset), frames_for(&module.name, offset, symbolized));
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

fn frames_for(module: &str, file_offset: u64, symbolized: Option<&Symbolized<'_>>) -> Vec<Frame> {
    let base = Frame { module: Some(module.to_string()), offset: Some(file_offset), ..Frame::default() };
    let Some(Symbolized::Sym(sym)) = symbolized else { return vec![base] };
    let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        info.map_or((None, None), |c| (Some(c.to_path().display().to_string()), c.line))
    };
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    // blazesym lists inlined calls outermost first; reports want the innermost first.
    for inlined in sym.inlined.iter().rev() {
        let (file, line) = location(inlined.code_info.as_ref());
        frames.push(Frame { symbol: Some(inlined.name.to_string()), offset: None, file, line, inlined: true, ..base.clone() });
    }
    let (file, line) = location(sym.code_info.as_deref());
    frames.push(Frame { symbol: Some(sym.name.to_string()), offset: Some(sym.offset as u64), file, line, ..base });
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
        assert!(own_frame.symbol.as_deref().unwrap().contains("names_frames_in_this_binary_and_in_libc"), "{own_frame:?}");
        assert!(own_frame.file.as_deref().unwrap().ends_with("mod.rs"), "{own_frame:?}");
        let libc_frame = frames[&libc_fn].last().unwrap();
        assert!(libc_frame.module.as_deref().unwrap().contains("libc.so"), "{libc_frame:?}");
        assert!(libc_frame.symbol.as_deref().is_some_and(|s| s.contains("malloc")), "{libc_frame:?}");
    }
}
