//! Kernel memory (`--kernel-slab`): tracepoints on the slab, page and percpu allocators,
//! slab accounting from /proc, and the trace that ties them together.

pub mod btf;
pub mod build;
pub mod events;
pub mod lineage;
pub mod slab;
mod slab_pages;
mod trace;
pub mod tracefs;

pub use trace::run;
