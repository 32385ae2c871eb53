//! Slab accounting from /proc: the `Slab`/`SReclaimable`/`SUnreclaim` lines of meminfo and
//! per-cache figures from /proc/slabinfo, plus naming the kmalloc cache of an allocation.

use std::collections::BTreeMap;

pub use crate::model::SlabMeminfo;

/// Reads the slab lines of /proc/meminfo.
pub fn read_meminfo() -> SlabMeminfo {
    procfs::Current::current()
        .map(|m: procfs::Meminfo| SlabMeminfo {
            slab: m.slab,
            reclaimable: m.s_reclaimable.unwrap_or(0),
            unreclaimable: m.s_unreclaim.unwrap_or(0),
        })
        .unwrap_or_default()
}

/// One cache's line of /proc/slabinfo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Objects in use.
    pub active_objects: u64,
    /// Size of one object.
    pub object_size: u64,
}

/// Parses /proc/slabinfo (version 2.1) into name → figures.
pub fn parse_slabinfo(text: &str) -> BTreeMap<String, CacheFigures> {
    text.lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            let active_objects = f.next()?.parse().ok()?;
            let _num_objects = f.next()?;
            let object_size = f.next()?.parse().ok()?;
            Some((name, CacheFigures { active_objects, object_size }))
        })
        .collect()
}

/// Reads /proc/slabinfo (root only); empty when unreadable.
pub fn read_slabinfo() -> BTreeMap<String, CacheFigures> {
    std::fs::read_to_string("/proc/slabinfo").map(|t| parse_slabinfo(&t)).unwrap_or_default()
}

/// Whether the cache's memory counts as `SReclaimable` (SLAB_RECLAIM_ACCOUNT), from
/// /sys/kernel/slab/<name>/reclaim_account; `None` when the kernel does not say.
pub fn is_reclaimable(cache: &str) -> Option<bool> {
    std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/reclaim_account")).ok().map(|v| v.trim() == "1")
}

/// gfp bits of Linux 6.x (include/linux/gfp_types.h) that choose a kmalloc cache family.
const GFP_DMA: u32 = 1 << 0;
const GFP_RECLAIMABLE: u32 = 1 << 4;
const GFP_ACCOUNT: u32 = 1 << 22;
/// Largest size served by a kmalloc slab cache; larger requests go to the page allocator.
const KMALLOC_MAX_CACHE_SIZE: u64 = 8192;

/// The kmalloc cache an object of `bytes_alloc` with `gfp_flags` comes from, named as in
/// /proc/slabinfo: `kmalloc-64`, `kmalloc-cg-1k`, `kmalloc-rcl-256`, `dma-kmalloc-32`.
pub fn kmalloc_cache_name(bytes_alloc: u64, gfp_flags: u32) -> String {
    if bytes_alloc > KMALLOC_MAX_CACHE_SIZE {
        return "kmalloc-large (pages)".to_string();
    }
    let size = if bytes_alloc >= 1024 && bytes_alloc.is_multiple_of(1024) {
        format!("{}k", bytes_alloc / 1024)
    } else {
        bytes_alloc.to_string()
    };
    // The kernel picks one family, in this order (kmalloc_type() in include/linux/slab.h).
    if gfp_flags & GFP_DMA != 0 {
        format!("dma-kmalloc-{size}")
    } else if gfp_flags & GFP_RECLAIMABLE != 0 {
        format!("kmalloc-rcl-{size}")
    } else if gfp_flags & GFP_ACCOUNT != 0 {
        format!("kmalloc-cg-{size}")
    } else {
        format!("kmalloc-{size}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmalloc_names() {
        assert_eq!(kmalloc_cache_name(64, 0xcc0), "kmalloc-64");
        assert_eq!(kmalloc_cache_name(1024, 0xcc0 | GFP_ACCOUNT), "kmalloc-cg-1k");
        assert_eq!(kmalloc_cache_name(192, GFP_RECLAIMABLE), "kmalloc-rcl-192");
        assert_eq!(kmalloc_cache_name(16384, 0), "kmalloc-large (pages)");
    }

    #[test]
    fn slabinfo_lines() {
        let text = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n\
                    kmalloc-64  1200  1280  64  64  1 : tunables 0 0 0 : slabdata 20 20 0\n";
        let caches = parse_slabinfo(text);
        assert_eq!(caches["kmalloc-64"], CacheFigures { active_objects: 1200, object_size: 64 });
        assert_eq!(caches.len(), 1);
    }

    #[test]
    fn this_kernel_has_the_caches_we_name() {
        let caches = read_slabinfo();
        for name in ["kmalloc-64", "kmalloc-cg-128", "kmalloc-rcl-256"] {
            assert!(caches.contains_key(name), "{name} not in /proc/slabinfo");
        }
        assert!(read_meminfo().unreclaimable > 0);
    }
}
