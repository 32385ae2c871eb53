//! leaktrace's eBPF programs. Built for `bpfel-unknown-none` by `leaktrace/build.rs`.
//! The benchmark's floor programs are another object of this crate (`floor_main.rs`).
//!
//! Everything is gated on `target_arch = "bpf"` so that a host build of the workspace
//! (`cargo clippy --workspace`) does not try to link a second panic handler. The host build
//! therefore lints nothing; lint the programs as they are built with
//! `cargo +nightly clippy -p leaktrace-ebpf --features floor --target bpfel-unknown-none -Z build-std=core -- -D warnings`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod kernel_slab;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod php;
#[cfg(target_arch = "bpf")]
mod runtime;
#[cfg(target_arch = "bpf")]
mod stacks;
#[cfg(target_arch = "bpf")]
mod unwind;
#[cfg(target_arch = "bpf")]
mod user_alloc;
#[cfg(target_arch = "bpf")]
mod user_procs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
