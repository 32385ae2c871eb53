use which::which;

/// Rebuilds the eBPF object when bpf-linker changes: cargo does not track the linker as an
/// input, so an upgraded linker would otherwise keep a stale object. This is imperfect (a
/// linker reinstalled with the same mtime is missed) but is what aya's template does.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
