//! The frame a reader should look at first: the first frame, innermost first, that is the
//! program's own code rather than the C library, the dynamic linker, an allocator, a
//! language runtime or (in kernel mode) the kernel's allocators. Pure.

use crate::model::{Frame, FrameKind};

/// File-name prefixes of user-space modules that are runtime, not the program's own code.
const RUNTIME_MODULES: &[&str] = &[
    "libc.so",
    "libc-",
    "ld-linux",
    "ld-musl",
    "libstdc++",
    "libgcc_s",
    "libpthread",
    "libm.so",
    "libjemalloc",
    "libtcmalloc",
    "libmimalloc",
    "php",
    "python",
    "perl",
    "ruby",
    "node",
];

/// Name prefixes of kernel functions that allocate on behalf of their caller.
const KERNEL_ALLOCATORS: &[&str] = &[
    "kmalloc",
    "__kmalloc",
    "kmem_cache_alloc",
    "__kmem_cache_alloc",
    "kvmalloc",
    "__kvmalloc",
    "kzalloc",
    "krealloc",
    "slab_",
    "___slab",
    "__slab",
    "alloc_pages",
    "__alloc_pages",
    "alloc_slab",
    "new_slab",
    "allocate_slab",
    "pcpu_",
    "__alloc_percpu",
    "folio_alloc",
    "__folio_alloc",
    "get_free_pages",
    "__get_free_pages",
    "mas_",
    "kmem_",
];

fn module_file(frame: &Frame) -> &str {
    let module = frame.module.as_deref().unwrap_or_default();
    module.rsplit('/').next().unwrap_or(module)
}

/// The index in `frames` of the first frame of the program's own code, if any. A PHP
/// frame of PHP code (one with a file) is the program's own code; one of a function written
/// in C is runtime.
pub fn user_focus(frames: &[Frame]) -> Option<usize> {
    frames.iter().position(|f| match f.kind {
        Some(FrameKind::Php) => f.file.is_some(),
        None => {
            f.module.is_some() && !f.inlined && !RUNTIME_MODULES.iter().any(|prefix| module_file(f).starts_with(prefix))
        }
    })
}

/// The index in `frames` of the first kernel frame past the allocator's own functions.
pub fn kernel_focus(frames: &[Frame]) -> Option<usize> {
    frames.iter().position(|f| {
        f.symbol.as_deref().is_some_and(|s| !KERNEL_ALLOCATORS.iter().any(|prefix| s.starts_with(prefix)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(module: &str, symbol: &str) -> Frame {
        Frame { module: Some(module.into()), symbol: Some(symbol.into()), ..Frame::default() }
    }

    #[test]
    fn skips_runtime_modules_to_the_extension() {
        let frames = [
            frame("/usr/lib/x86_64-linux-gnu/libc.so.6", "malloc"),
            frame("/usr/lib/php/20220829/agentx.so", "span_alloc_record"),
            frame("/usr/bin/php8.2", "execute_ex"),
        ];
        assert_eq!(user_focus(&frames), Some(1));
        assert_eq!(user_focus(&frames[2..]), None);
    }

    #[test]
    fn skips_kernel_allocators_to_their_caller() {
        let k = |s: &str| Frame { symbol: Some(s.into()), kernel: true, ..Frame::default() };
        let frames = [k("__kmalloc_cache_noprof"), k("kmalloc_trace"), k("load_msg"), k("do_msgsnd")];
        assert_eq!(kernel_focus(&frames), Some(2));
    }
}
