//! leaktrace's eBPF programs. Built for `bpfel-unknown-none` by `leaktrace/build.rs`.
//!
//! Everything is gated on `target_arch = "bpf"` so that a host build of the workspace
//! (`cargo clippy --workspace`) does not try to link a second panic handler.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

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
