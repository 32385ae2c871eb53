//! Kernel memory (`--kernel-slab`): tracepoints on the slab, page and percpu allocators,
//! slab accounting from /proc, and the session that ties them together.

pub mod events;
pub mod session;
pub mod slab;
pub mod tracefs;
