//! Naming each kmalloc object's real cache. kmalloc's tracepoint gives an object's size and
//! flags, not the cache that served it; on kernels with dedicated kmalloc caches
//! (`CONFIG_SLAB_BUCKETS`: msg_msg-4k, xattr-…, memdup_user-…) a name guessed from size and
//! flags is wrong. The cache is the object's slab's: `virt_to_slab(ptr)->slab_cache`, which
//! the eBPF side reads once it knows where `struct page`s are. That place is randomized at
//! boot and published nowhere a process can read, so leaktrace learns it from an allocation
//! of its own: one 16 KiB kmalloc, served straight by the page allocator, whose
//! `struct page` mm_page_alloc reports and whose address kmalloc returns.

use std::ffi::CString;

use leaktrace_common::{
    kernel::{SlabPages, PROBE_BYTES},
    names,
};

use super::btf::Btf;
use crate::{bpf::Tracer, error::Result};

/// Probe allocations tried before giving up.
const ATTEMPTS: usize = 3;

/// What the naming program reads, from the kernel's BTF.
#[derive(Clone, Debug)]
pub struct Layout {
    /// (global, value): `struct page::compound_head`, `struct slab::slab_cache`,
    /// `sizeof(struct page)`.
    pub globals: Vec<(&'static str, u32)>,
    /// `sizeof(struct page)`.
    pub page_struct_size: u64,
}

/// The layout from the kernel's BTF; None when the BTF lacks a part (kmalloc objects are
/// then named from size and flags).
pub fn layout(btf: &Btf) -> Option<Layout> {
    let fields =
        [btf.member_offset("page", "compound_head"), btf.member_offset("slab", "slab_cache"), btf.struct_size("page")];
    match fields.into_iter().collect::<Result<Vec<u32>>>() {
        Ok(values) => Some(Layout {
            page_struct_size: u64::from(values[2]),
            globals: leaktrace_common::kernel::offsets::SLAB_PAGE.into_iter().zip(values).collect(),
        }),
        Err(e) => {
            log::warn!("{e}; kmalloc objects are named from their size and flags");
            None
        }
    }
}

/// Attaches the naming program after kmalloc's recording program and learns where struct
/// pages are. Returns whether kmalloc objects get their real cache's name; on failure they
/// keep names derived from size and flags, and the reason is logged.
pub fn attach_and_learn(tracer: &mut Tracer, layout: &Layout) -> bool {
    match try_attach_and_learn(tracer, layout.page_struct_size) {
        Ok(learnt) => learnt,
        Err(e) => {
            log::warn!("{e}; kmalloc objects are named from their size and flags");
            false
        }
    }
}

fn try_attach_and_learn(tracer: &mut Tracer, page_struct_size: u64) -> Result<bool> {
    // After kmalloc's recording program, so that the object is in the map when it is named.
    tracer.attach_btf_tracepoint(names::PROG_KMALLOC_CACHE_BTF, "kmalloc")?;
    tracer.attach_btf_tracepoint(names::PROG_LEARN_PAGE_BTF, "mm_page_alloc")?;
    let learnt = learn(tracer, page_struct_size);
    tracer.detach_btf_tracepoint(names::PROG_LEARN_PAGE_BTF)?;
    let base = learnt?;
    if let Some(base) = base {
        tracer.set_slab_pages(SlabPages::Base, base)?;
    }
    Ok(base.is_some())
}

/// The base, from a probe allocation on this thread; None when no attempt gave a
/// consistent one.
fn learn(tracer: &mut Tracer, page_struct_size: u64) -> Result<Option<u64>> {
    let thread = u64::from(nix::unistd::gettid().as_raw() as u32);
    let mut found = None;
    for _ in 0..ATTEMPTS {
        tracer.set_slab_pages(SlabPages::ProbePage, 0)?;
        tracer.set_slab_pages(SlabPages::ProbeAddress, 0)?;
        tracer.set_slab_pages(SlabPages::TriggerThread, thread)?;
        probe_allocation();
        tracer.set_slab_pages(SlabPages::TriggerThread, 0)?;
        let (page, address) = (tracer.slab_pages(SlabPages::ProbePage)?, tracer.slab_pages(SlabPages::ProbeAddress)?);
        if page == 0 || address == 0 {
            continue;
        }
        let base = page.wrapping_sub((address >> 12).wrapping_mul(page_struct_size));
        // Two probes must agree: a stray page of another allocation on this thread between
        // the two events would give a wrong base once, not twice.
        if found == Some(base) {
            return Ok(found);
        }
        found = Some(base);
    }
    Ok(None)
}

/// Makes the kernel kmalloc `PROBE_BYTES` on this thread: setxattr copies the value in
/// before it looks the path up, and the path does not exist, so nothing is set.
fn probe_allocation() {
    let path = CString::new("/nonexistent/leaktrace-probe").expect("no NUL");
    let name = CString::new("user.leaktrace-probe").expect("no NUL");
    let value = vec![0u8; PROBE_BYTES as usize];
    // SAFETY: both strings are NUL-terminated and the value buffer holds `value.len()`
    // bytes; the call fails (ENOENT) without side effects.
    unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
}
