//! What every eBPF object of this crate carries besides its programs: a license the kernel
//! accepts for GPL-only helpers, and the panic handler `no_std` requires.

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach this; it exists to satisfy `no_std`.
    loop {}
}

/// GPL-compatible so the kernel lets us call GPL-only helpers (bpf_probe_read_user).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
