//! The benchmark's floor programs (see `floor.rs`), an eBPF object of their own
//! (`leaktrace-floor`) so that the production object does not carry them. Built only with
//! this crate's `floor` feature, which `leaktrace/build.rs` turns on for leaktrace's `bench`
//! feature; gated on `target_arch = "bpf"` like `main.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod runtime;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
