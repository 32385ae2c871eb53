//! Member offsets of kernel structures, from the running kernel's BTF
//! (/sys/kernel/btf/vmlinux), for programs that read kernel memory (e.g. `struct kmem_cache`
//! fields from a raw tracepoint's arguments).
//!
//! A reader of its own: aya-obj parses BTF but keeps struct members private, and the one
//! other Rust BTF library is LGPL. Only what member lookup needs is read; the format is
//! the kernel's Documentation/bpf/btf.rst.

use std::collections::HashMap;

use crate::error::{Error, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// One type's place in the type section.
#[derive(Clone, Copy)]
struct TypeEntry {
    offset: usize,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
}

/// A parsed BTF blob: types by id, and structs by name.
pub struct Btf {
    data: Vec<u8>,
    strings: usize,
    types: Vec<TypeEntry>,
    structs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> Error {
    Error::UnsupportedKernel(format!("the kernel's BTF is unreadable: {what}"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> Result<Self> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|e| Error::io("reading the kernel's BTF (/sys/kernel/btf/vmlinux)", e))?;
        Self::parse(data)
    }

    /// Parses a BTF blob (little-endian, as on x86-64).
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(bad("no BTF header"));
        }
        let field = |at| u32_at(&data, at).map(|v| v as usize).ok_or_else(|| bad("short header"));
        let header_len = field(4)?;
        let (type_off, type_len, str_off) = (field(8)?, field(12)?, field(16)?);
        let (first, end) = (header_len + type_off, header_len + type_off + type_len);
        let mut btf =
            Self { strings: header_len + str_off, types: Vec::new(), structs: HashMap::new(), data: Vec::new() };
        let mut at = first;
        // Type ids start at 1; id 0 is void.
        btf.types.push(TypeEntry { offset: 0, name_off: 0, kind: 0, vlen: 0, kind_flag: false });
        while at < end {
            let (name_off, info) =
                (u32_at(&data, at).ok_or_else(|| bad("short type"))?, u32_at(&data, at + 4).unwrap_or(0));
            let entry = TypeEntry {
                offset: at,
                name_off,
                kind: (info >> 24) & 0x1f,
                vlen: (info & 0xffff) as usize,
                kind_flag: info >> 31 == 1,
            };
            at += 12 + trailing_bytes(entry.kind, entry.vlen).ok_or_else(|| bad("unknown type kind"))?;
            btf.types.push(entry);
        }
        btf.data = data;
        for (id, entry) in btf.types.iter().enumerate().skip(1) {
            if entry.kind == KIND_STRUCT && entry.name_off != 0 {
                btf.structs.entry(btf.string(entry.name_off).to_string()).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let start = self.strings + offset as usize;
        let tail = self.data.get(start..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or_default()
    }

    /// Byte offset of member `member` of `struct name`, looking into anonymous structs and
    /// unions as C does.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = *self.structs.get(name).ok_or_else(|| bad(&format!("no struct {name}")))?;
        self.find_member(id, member, 0, 0).ok_or_else(|| bad(&format!("struct {name} has no member {member}")))
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        let id = *self.structs.get(name).ok_or_else(|| bad(&format!("no struct {name}")))?;
        let entry = self.types.get(id as usize).ok_or_else(|| bad(&format!("struct {name}")))?;
        u32_at(&self.data, entry.offset + 8).ok_or_else(|| bad(&format!("struct {name}")))
    }

    /// Anonymous members nested deeper than this are not searched: the kernel nests a few
    /// levels, and a corrupt blob could make a struct contain itself.
    const MAX_NESTING: u32 = 16;

    fn find_member(&self, id: u32, member: &str, base_bits: u32, depth: u32) -> Option<u32> {
        if depth > Self::MAX_NESTING {
            return None;
        }
        let entry = *self.types.get(id as usize)?;
        for i in 0..entry.vlen {
            let at = entry.offset + 12 + 12 * i;
            let (name_off, type_id, raw) =
                (u32_at(&self.data, at)?, u32_at(&self.data, at + 4)?, u32_at(&self.data, at + 8)?);
            // With kind_flag, the top 8 bits hold a bitfield's size.
            // An offset past 4 Gbit is corrupt: no such member.
            let bits = base_bits.checked_add(if entry.kind_flag { raw & 0x00ff_ffff } else { raw })?;
            if name_off == 0 {
                let inner = self.resolve(type_id)?;
                if matches!(self.types[inner as usize].kind, KIND_STRUCT | KIND_UNION) {
                    if let Some(found) = self.find_member(inner, member, bits, depth + 1) {
                        return Some(found);
                    }
                }
            } else if self.string(name_off) == member {
                return Some(bits / 8);
            }
        }
        None
    }

    /// The struct or union behind typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let entry = self.types.get(id as usize)?;
            match entry.kind {
                // typedef, volatile, const, restrict, type tag: follow `type`.
                8..=11 | 18 => id = u32_at(&self.data, entry.offset + 8)?,
                _ => return Some(id),
            }
        }
        None
    }
}

/// Bytes after the 12-byte common part of a type of `kind` with `vlen` entries.
fn trailing_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // int, var, decl tag
        1 | 14 | 17 => 4,
        // array
        3 => 12,
        // struct, union, datasec, enum64
        4 | 5 | 15 | 19 => 12 * vlen,
        // enum, func proto
        6 | 13 => 8 * vlen,
        // ptr, fwd, typedef, volatile, const, restrict, func, float, type tag
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_slab_fields_in_the_running_kernel() {
        let btf = Btf::from_kernel().expect("this kernel has BTF");
        let size = btf.member_offset("kmem_cache", "size").unwrap();
        let object_size = btf.member_offset("kmem_cache", "object_size").unwrap();
        // Declared one after the other, both unsigned int.
        assert_eq!(object_size, size + 4);
        assert!(btf.member_offset("kmem_cache", "name").unwrap() > object_size);
        // In an anonymous union of struct page: the offset of the word after `flags`.
        assert_eq!(btf.member_offset("page", "compound_head").unwrap(), 8);
        assert_eq!(btf.struct_size("page").unwrap(), 64);
        // struct slab overlays struct page; its cache pointer follows the flags word.
        assert!(btf.member_offset("slab", "slab_cache").unwrap() < 64);
        assert!(btf.member_offset("kmem_cache", "no_such_member").is_err());
        assert!(btf.member_offset("no_such_struct", "x").is_err());
    }
}
