//! leaktrace's eBPF programs. Built for `bpfel-unknown-none` by `leaktrace/build.rs`.
//!
//! Everything is gated on `target_arch = "bpf"` so that a host build of the workspace
//! (`cargo clippy --workspace`) does not try to link a second panic handler. The host build
//! therefore lints nothing; lint the programs as they are built with
//! `cargo +nightly clippy -p leaktrace-ebpf --target bpfel-unknown-none -Z build-std=core -- -D warnings`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod kernel_slab;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod unwind;
#[cfg(target_arch = "bpf")]
mod user_alloc;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach this; it exists to satisfy `no_std`.
    loop {}
}

/// GPL-compatible so the kernel lets us call GPL-only helpers (bpf_probe_read_user).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
