//! Turning stack addresses into frames: module, function, offset, file:line, inlined calls.
//! blazesym does the ELF and DWARF work; this module decides which file to ask about.

pub mod kernel;
mod modules;

use std::collections::HashMap;

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer as Blazesym,
};

pub use modules::{ExecMapping, ProcessModules};

use crate::report::Frame;

/// Symbolizes user addresses of one process, caching results per file and offset.
pub struct Symbolizer {
    modules: ProcessModules,
    blazesym: Blazesym,
    cache: HashMap<(usize, u64), Vec<Frame>>,
}

impl Symbolizer {
    /// A symbolizer for `pid`; mappings are snapshotted by [`refresh`](Self::refresh).
    pub fn new(pid: u32) -> Self {
        let blazesym = Blazesym::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self { modules: ProcessModules::new(pid), blazesym, cache: HashMap::new() }
    }

    /// Snapshots the process's mappings; false when it is gone (the last snapshot is kept).
    pub fn refresh(&mut self) -> bool {
        self.modules.refresh()
    }

    /// The executable mappings of the latest snapshot, by address.
    pub fn mappings(&self) -> impl Iterator<Item = ExecMapping<'_>> {
        self.modules.mappings()
    }

    /// Build-ids of the modules seen, by path.
    pub fn build_ids(&self) -> std::collections::BTreeMap<String, String> {
        self.modules.build_ids().map(|(m, id)| (m.to_string(), id.to_string())).collect()
    }

    /// Whether any snapshot of the mappings was ever taken.
    pub fn has_snapshot(&self) -> bool {
        self.modules.snapshots() > 0
    }

    /// Frames for each address, innermost first; an address inside inlined code yields
    /// several frames. Addresses are return addresses, so the instruction before is looked up
    /// (the call), which gives the caller's line rather than the line after the call.
    pub fn symbolize(&mut self, addresses: &[u64]) -> HashMap<u64, Vec<Frame>> {
        let mut wanted: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut located = Vec::with_capacity(addresses.len());
        for &address in addresses {
            let spot = self.modules.locate(address.saturating_sub(1));
            if let Some((module, offset)) = spot {
                if !self.cache.contains_key(&(module, offset)) {
                    wanted.entry(module).or_default().push(offset);
                }
            }
            located.push((address, spot));
        }
        for (module, mut offsets) in wanted {
            offsets.sort_unstable();
            offsets.dedup();
            let source = Source::from(Elf::new(self.modules.module(module).open_path.clone()));
            let name = self.modules.module(module).name.clone();
            let results = self.blazesym.symbolize(&source, Input::FileOffset(&offsets));
            for (i, &offset) in offsets.iter().enumerate() {
                let symbolized = results.as_ref().ok().and_then(|r| r.get(i));
                self.cache.insert((module, offset), frames_for(&name, offset, symbolized));
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
        let mut symbolizer = Symbolizer::new(std::process::id());
        assert!(symbolizer.refresh());
        // +1: addresses are treated as return addresses (the byte before is looked up).
        let own = names_frames_in_this_binary_and_in_libc as *const () as usize as u64 + 1;
        let libc_fn = libc::malloc as *const () as usize as u64 + 1;
        let frames = symbolizer.symbolize(&[own, libc_fn]);
        let own_frame = frames[&own].last().unwrap();
        assert!(own_frame.symbol.as_deref().unwrap().contains("names_frames_in_this_binary_and_in_libc"), "{own_frame:?}");
        assert!(own_frame.file.as_deref().unwrap().ends_with("mod.rs"), "{own_frame:?}");
        let libc_frame = frames[&libc_fn].last().unwrap();
        assert!(libc_frame.module.as_deref().unwrap().contains("libc.so"), "{libc_frame:?}");
        assert!(libc_frame.symbol.as_deref().is_some_and(|s| s.contains("malloc")), "{libc_frame:?}");
    }
}
