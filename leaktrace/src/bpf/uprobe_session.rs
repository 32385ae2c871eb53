//! Uprobe session programs (`BPF_TRACE_UPROBE_SESSION`, Linux 6.13+), which aya 0.14 can
//! neither load nor attach: one program runs at a function's probed instruction and, unless
//! that run returns 1, again when the function returns. With `--sample-bytes` the entry says
//! "not sampled" by returning 1, and the kernel then neither runs the program at return nor
//! plants the return trampoline: an unsampled call costs one trap instead of two.
//!
//! aya loads the object and creates every map and global as usual (the session programs sit
//! in its plain `uprobe` section, so it accepts them, and are never loaded by it). This
//! wrapper relocates the session programs against aya's maps with aya-obj, loads them with
//! the session attach type through `BPF_PROG_LOAD` and attaches them with a `uprobe_multi`
//! `BPF_LINK_CREATE`, scoped to one process. Layouts are those of the 6.18 UAPI.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::maps::Map;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// Not in aya-obj 0.3.0's bindings, which end at 55.
const BPF_TRACE_UPROBE_SESSION: u32 = 57;
/// `sizeof(union bpf_attr)` on 6.18; the kernel wants the bytes past the used arm zeroed.
const BPF_ATTR_SIZE: usize = 168;

/// The `BPF_PROG_LOAD` arm of `union bpf_attr`, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    /// Named so that the struct has no padding: padding bytes are not zeroed, and the kernel
    /// reads this one as a BTF id.
    attach_btf_id: u32,
}

/// The `BPF_BTF_LOAD` arm.
#[repr(C)]
#[derive(Default)]
struct BtfLoad {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    /// Explicit padding, zeroed (see `ProgLoad::attach_btf_id`).
    _pad: u32,
}

/// The `BPF_LINK_CREATE` arm with its `uprobe_multi` part.
#[repr(C)]
#[derive(Default)]
struct LinkCreateUprobeMulti {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    uprobe_multi_flags: u32,
    pid: u32,
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<LinkCreateUprobeMulti>() == 64);
const _: () = assert!(std::mem::size_of::<ProgLoad>() == 112 && std::mem::size_of::<ProgLoad>() <= BPF_ATTR_SIZE);
const _: () = assert!(std::mem::size_of::<BtfLoad>() == 32);

fn sys_bpf<T>(command: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    let mut buffer = [0u8; BPF_ATTR_SIZE];
    // SAFETY: T is a plain #[repr(C)] struct no larger than the buffer (asserted above).
    unsafe {
        std::ptr::copy_nonoverlapping((attr as *const T).cast::<u8>(), buffer.as_mut_ptr(), std::mem::size_of::<T>())
    };
    // SAFETY: the bpf system call reads `buffer.len()` bytes of attributes.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, command, buffer.as_ptr(), buffer.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Drop for SessionPrograms {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// One session program, relocated and ready to load.
struct Relocated {
    instructions: Vec<aya_obj::generated::bpf_insn>,
    license: CString,
    func_info: Vec<u8>,
    func_info_rec_size: u32,
    func_info_cnt: u32,
    line_info: Vec<u8>,
    line_info_rec_size: u32,
    line_info_cnt: u32,
}

/// The session programs of one loaded object, loaded on first use, and their links.
pub struct SessionPrograms {
    /// The object's BTF, which the programs' function information refers to (the verifier
    /// wants it for the unwinder's `bpf_loop` callback).
    btf: OwnedFd,
    relocated: HashMap<String, Relocated>,
    loaded: HashMap<String, OwnedFd>,
    links: Vec<OwnedFd>,
}

/// Loads the object's BTF, fixed up as aya does before loading it.
fn load_btf(parsed: &mut aya_obj::Object) -> Result<OwnedFd, String> {
    // Every feature the flags name exists on the kernels that have uprobe sessions.
    let features = aya_obj::btf::BtfFeatures::new(true, true, true, true, true, true, true, true);
    let btf =
        parsed.fixup_and_sanitize_btf(&features).map_err(|e| e.to_string())?.ok_or("the eBPF object has no BTF")?;
    let bytes = btf.to_bytes();
    let mut log = vec![0u8; 64 * 1024];
    let attr = BtfLoad {
        btf: bytes.as_ptr() as u64,
        btf_log_buf: log.as_mut_ptr() as u64,
        btf_size: bytes.len() as u32,
        btf_log_size: log.len() as u32,
        btf_log_level: 1,
        _pad: 0,
    };
    sys_bpf(BPF_BTF_LOAD, &attr).map_err(|e| format!("loading the object's BTF: {e}"))
}

fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::RingBuf(m)
        | Map::StackTraceMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m) => m,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// Loads one relocated session program (the verifier runs here, in the calling thread).
fn load_program(name: &str, program: &Relocated, btf: &OwnedFd) -> Result<OwnedFd, String> {
    let mut log = vec![0u8; 1 << 20];
    let mut prog_name = [0u8; 16];
    let length = name.len().min(15);
    prog_name[..length].copy_from_slice(&name.as_bytes()[..length]);
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: program.instructions.len() as u32,
        insns: program.instructions.as_ptr() as u64,
        license: program.license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_TRACE_UPROBE_SESSION,
        prog_btf_fd: btf.as_raw_fd() as u32,
        func_info_rec_size: program.func_info_rec_size,
        func_info: program.func_info.as_ptr() as u64,
        func_info_cnt: program.func_info_cnt,
        line_info_rec_size: program.line_info_rec_size,
        line_info: program.line_info.as_ptr() as u64,
        line_info_cnt: program.line_info_cnt,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_PROG_LOAD, &attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let tail: String = String::from_utf8_lossy(&log[..end]).lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        format!(
            "loading {name} as a uprobe session program: {e}{}",
            if tail.is_empty() { String::new() } else { format!(" ({tail})") }
        )
    })?;
    Ok(fd)
}

impl SessionPrograms {
    /// Relocates `names` from `object` against the maps aya created for it in `ebpf`.
    pub fn prepare(object: &[u8], ebpf: &aya::Ebpf, names: &[&str]) -> Result<Self, String> {
        let mut parsed = aya_obj::Object::parse(object).map_err(|e| e.to_string())?;
        let btf = load_btf(&mut parsed)?;
        let maps = std::mem::take(&mut parsed.maps);
        let fds: Vec<(String, RawFd)> =
            ebpf.maps().filter_map(|(name, map)| map_fd(map).map(|fd| (name.to_string(), fd))).collect();
        let text_sections: HashSet<usize> = parsed.functions.keys().map(|(section, _)| *section).collect();
        parsed
            .relocate_maps(
                fds.iter().filter_map(|(name, fd)| maps.get(name).map(|m| (name.as_str(), *fd, m))),
                &text_sections,
            )
            .map_err(|e| e.to_string())?;
        parsed.relocate_calls(&text_sections).map_err(|e| e.to_string())?;
        let mut relocated = HashMap::new();
        for &name in names {
            let program = parsed.programs.get(name).ok_or_else(|| format!("{name} missing from the eBPF object"))?;
            let function =
                parsed.functions.get(&program.function_key()).ok_or_else(|| format!("{name} has no code"))?;
            relocated.insert(
                name.to_string(),
                Relocated {
                    instructions: function.instructions.clone(),
                    license: program.license.clone(),
                    func_info: function.func_info.func_info_bytes(),
                    func_info_rec_size: function.func_info_rec_size as u32,
                    func_info_cnt: function.func_info.func_info.len() as u32,
                    line_info: function.line_info.line_info_bytes(),
                    line_info_rec_size: function.line_info_rec_size as u32,
                    line_info_cnt: function.line_info.line_info.len() as u32,
                },
            );
        }
        Ok(Self { btf, relocated, loaded: HashMap::new(), links: Vec::new() })
    }

    /// Loads `name` if it is not loaded yet (the kernel refuses it when it has no sessions).
    pub fn load(&mut self, name: &str) -> Result<&OwnedFd, String> {
        if !self.loaded.contains_key(name) {
            let program = self.relocated.get(name).ok_or_else(|| format!("{name} was not prepared"))?;
            let fd = load_program(name, program, &self.btf)?;
            self.loaded.insert(name.to_string(), fd);
        }
        Ok(&self.loaded[name])
    }

    /// Loads `names` at once, one thread each: the verifier's time per program (the unwinder
    /// makes them long) would otherwise add up in leaktrace's start-up.
    pub fn preload(&mut self, names: &[&str]) -> Result<(), String> {
        let (btf, relocated) = (&self.btf, &self.relocated);
        let loaded: Vec<(String, Result<OwnedFd, String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .iter()
                .filter(|name| !self.loaded.contains_key(**name))
                .filter_map(|&name| relocated.get(name).map(|program| (name, program)))
                .map(|(name, program)| (name, scope.spawn(move || load_program(name, program, btf))))
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    (name.to_string(), h.join().unwrap_or_else(|_| Err(format!("loading {name} panicked"))))
                })
                .collect()
        });
        for (name, fd) in loaded {
            self.loaded.insert(name, fd?);
        }
        Ok(())
    }

    /// Loads `name` if needed and attaches it at file offset `offset` of `path`, firing only
    /// in process `pid`, with `cookie` for `bpf_get_attach_cookie`. The error keeps the kernel's errno (EINVAL: another probe holds the
    /// place with a different ref_ctr_offset).
    pub fn attach(&mut self, name: &str, path: &Path, offset: u64, pid: u32, cookie: u64) -> std::io::Result<()> {
        let program = self.load(name).map_err(std::io::Error::other)?.as_raw_fd();
        let path_c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
        let offsets: [u64; 1] = [offset];
        let cookies: [u64; 1] = [cookie];
        let attr = LinkCreateUprobeMulti {
            prog_fd: program as u32,
            attach_type: BPF_TRACE_UPROBE_SESSION,
            path: path_c.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cookies: cookies.as_ptr() as u64,
            cnt: 1,
            pid,
            ..Default::default()
        };
        let link = sys_bpf(BPF_LINK_CREATE, &attr)?;
        self.links.push(link);
        Ok(())
    }

    /// Detaches every link concurrently (see `Tracer`'s `Drop`).
    fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }

    /// Descriptors of the loaded session programs (for their statistics).
    pub fn program_fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.loaded.values().map(|fd| fd.as_fd())
    }
}
