//! Kernel addresses → function names, from /proc/kallsyms (modules included), through
//! blazesym. When kptr_restrict hides the addresses, frames stay bare addresses and the
//! report says why, instead of resolving everything against address zero.

use std::collections::HashMap;

use blazesym::symbolize::{
    source::{Kernel, Source},
    Input, Symbolized, Symbolizer as Blazesym,
};

use crate::model::Frame;

/// Symbolizes kernel stack addresses, caching by address.
pub struct KernelSymbolizer {
    blazesym: Blazesym,
    visible: bool,
    cache: HashMap<u64, Frame>,
}

/// True when /proc/kallsyms shows real addresses to this process.
pub fn kallsyms_visible() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .ok()
        .and_then(|text| text.lines().next().map(|l| !l.starts_with("0000000000000000")))
        .unwrap_or(false)
}

impl Default for KernelSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelSymbolizer {
    /// A symbolizer for the running kernel.
    pub fn new() -> Self {
        Self { blazesym: Blazesym::new(), visible: kallsyms_visible(), cache: HashMap::new() }
    }

    /// Whether names can be resolved at all.
    pub fn visible(&self) -> bool {
        self.visible
    }

    /// One frame per address (kernel frames carry no line information from kallsyms).
    pub fn symbolize(&mut self, addresses: &[u64]) -> HashMap<u64, Frame> {
        let missing: Vec<u64> = addresses.iter().copied().filter(|a| !self.cache.contains_key(a)).collect();
        if !missing.is_empty() {
            // Return addresses: look up the call instruction before each.
            let lookups: Vec<u64> = missing.iter().map(|a| a.saturating_sub(1)).collect();
            // kallsyms only: a vmlinux found on disk may not match the running kernel.
            let kernel = Kernel { vmlinux: blazesym::MaybeDefault::None, ..Kernel::default() };
            let results = if self.visible {
                self.blazesym.symbolize(&Source::Kernel(kernel), Input::AbsAddr(&lookups)).ok()
            } else {
                None
            };
            for (i, &address) in missing.iter().enumerate() {
                let mut frame = Frame { address, kernel: true, module: Some("kernel".into()), ..Frame::default() };
                if let Some(Symbolized::Sym(sym)) = results.as_ref().and_then(|r| r.get(i)) {
                    frame.symbol = Some(sym.name.to_string());
                    frame.offset = Some(sym.offset as u64 + 1);
                    if let Some(module) = &sym.module {
                        let module = module.to_string_lossy();
                        if !module.contains("kallsyms") && !module.is_empty() {
                            frame.module = Some(module.trim_matches(|c| c == '[' || c == ']').to_string());
                        }
                    }
                }
                self.cache.insert(address, frame);
            }
        }
        addresses.iter().filter_map(|a| self.cache.get(a).map(|f| (*a, f.clone()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_kernel_function_from_kallsyms() {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        if !kallsyms_visible() {
            panic!("kallsyms hides addresses on this machine; the kernel-mode tests need them");
        }
        let address = text
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, _, name) = (f.next()?, f.next()?, f.next()?);
                (name == "__kmalloc_noprof" || name == "kfree").then(|| u64::from_str_radix(addr, 16).ok()).flatten()
            })
            .expect("kfree is in kallsyms");
        let mut symbolizer = KernelSymbolizer::new();
        let frames = symbolizer.symbolize(&[address + 8]);
        let frame = &frames[&(address + 8)];
        assert!(matches!(frame.symbol.as_deref(), Some("kfree") | Some("__kmalloc_noprof")), "{frame:?}");
        assert_eq!(frame.offset, Some(8));
        assert!(frame.kernel);
    }
}
