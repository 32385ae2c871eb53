//! Types and names shared by leaktrace's eBPF programs and its user-space loader.
//!
//! Everything here is `#[repr(C)]` and crosses the kernel boundary as raw bytes, so the
//! layouts are fixed by hand and checked by size assertions at compile time. With the `user`
//! feature the types implement `aya::Pod` so the loader can read them from maps.
#![no_std]

pub mod alloc;
pub mod counters;
pub mod kernel;
pub mod names;
pub mod sampling;
pub mod unwind;

pub use alloc::{AllocInfo, PendingCall, PendingKind, StackRecord, StackStats, MAX_STACK_DEPTH};
pub use counters::Counter;
pub use kernel::{KernelAlloc, KernelKey, KernelSpace};
pub use unwind::{MappingUnwinder, ProcessSlot, RowKind, StackEnd, UnwindEvent, UnwindEventKind, UnwindMapping, UnwindRow};
