//! Putting the probes on a process: the allocator's functions, its exit, and the dynamic
//! linker's library hook; as uprobe session links where the kernel has them.

use std::path::Path;

use leaktrace_common::names;

use crate::{
    allocator::{self, AllocatorObject},
    bpf::Tracer,
    error::{Error, Result},
    model::NotAttached,
};

/// The reason recorded for a probe left out by [`is_conflict`].
const CONFLICT: &str = "EINVAL: another uprobe at this place has a different ref_ctr_offset";

/// True when attaching failed with EINVAL. The kernel answers EINVAL when a uprobe is already
/// registered at the same inode and offset with a different `ref_ctr_offset` (a USDT
/// semaphore: bcc's tools and others set one), which is the one way a probe leaktrace has
/// placed on a valid instruction of a readable file can be refused so (a wrong offset or a
/// missing file is ENOENT or an error before attaching).
fn is_conflict(error: &Error) -> bool {
    let Error::Attach { source, .. } = error else { return false };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(libc::EINVAL) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Where one probe goes.
#[derive(Clone, Copy, Debug)]
struct Spot<'a> {
    /// The function probed (for messages).
    symbol: &'a str,
    /// The object holding it.
    path: &'a Path,
    /// File offset of the probed instruction.
    offset: u64,
    /// The attach cookie (heap and fixed size, see `AllocatorFn::cookie`).
    cookie: u64,
}

/// How probes are attached to one process.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attach {
    /// The process.
    pub pid: u32,
    /// Use uprobe session links where the kernel has them.
    pub sessions: bool,
}

impl Attach {
    /// Attaches `entry_program` at `spot`, and the shared return program when `returns`: as
    /// one uprobe session link where the kernel has them and sessions are allowed (it detaches
    /// with a single wait, and lets an unsampled call skip its return), else as a uprobe and a
    /// uretprobe.
    fn probe(
        self,
        tracer: &mut Tracer,
        entry_program: &str,
        returns: bool,
        spot: Spot<'_>,
        session: bool,
    ) -> Result<()> {
        let Spot { symbol, path, offset, cookie } = spot;
        if session {
            match tracer.attach_session(entry_program, symbol, path, offset, self.pid, cookie) {
                Ok(()) => return Ok(()),
                Err(e) => log::debug!("{e}; using a uprobe and a uretprobe"),
            }
        }
        // The return probe first: a call entered between an entry probe and its return probe
        // would leave an entry that never returns, and with its stack pointer standing, every
        // later call from deeper in the stack would be taken as nested in it and ignored (a
        // busy process attached with -p lost every allocation that way).
        if returns {
            tracer.attach_uprobe(names::PROG_ALLOC_RETURN, symbol, path, (offset, cookie), self.pid)?;
        }
        tracer.attach_uprobe(entry_program, symbol, path, (offset, cookie), self.pid)
    }

    /// Attaches the allocator's probes. With `sampling`, a function that calls another probed
    /// function keeps a plain return probe: the state that marks the inner call as nested
    /// must live until the outer call returns, even when the outer call is not sampled.
    /// A probe the kernel refuses because another tool holds the same place (see
    /// [`is_conflict`]) is left out, said in one line and recorded in
    /// `allocator.not_attached`; the others go on. Returns whether every allocating function
    /// got a session (so that unsampled calls skip their return probe).
    pub fn allocator(self, tracer: &mut Tracer, allocator: &mut AllocatorObject, sampling: bool) -> Result<bool> {
        if self.sessions {
            let mut programs: Vec<&str> = allocator.functions.iter().map(|f| f.function.entry_program).collect();
            programs.extend([names::PROG_EXIT, names::PROG_DL_STATE]);
            tracer.preload_sessions(&programs);
        }
        let mut not_attached = Vec::new();
        for f in &allocator.functions {
            let session = self.sessions && !(sampling && f.function.calls_allocator);
            let spot = Spot {
                symbol: &f.symbol,
                path: &f.object,
                offset: f.probe_offset(),
                cookie: f.function.cookie | f.site.cookie_bits(),
            };
            match self.probe(tracer, f.function.entry_program, f.function.returns_block, spot, session) {
                Ok(()) => {}
                Err(e) if is_conflict(&e) => {
                    crate::say!(
                        "leaktrace: warning: {} in {} (file offset {:#x}) is not traced: the kernel refused its \
                         uprobe (EINVAL), most likely because another tool (bcc's memleak, a USDT tracer) holds a \
                         uprobe at the same place with a different ref_ctr_offset",
                        f.symbol,
                        f.object.display(),
                        f.probe_offset()
                    );
                    not_attached.push(NotAttached {
                        function: f.symbol.clone(),
                        object: f.object.display().to_string(),
                        reason: CONFLICT.to_string(),
                    });
                }
                Err(e) if !f.function.required && matches!(e, Error::Attach { .. }) => {
                    log::warn!("{e}; {} calls are not traced", f.symbol);
                }
                Err(e) => return Err(e),
            }
        }
        allocator.not_attached = not_attached;
        self.heap_reset_hooks(tracer, allocator)?;
        // The first refusal turns sessions off for every later probe (`Tracer::attach_session`).
        if let Some(reason) = tracer.sessions_refused() {
            log::debug!("uprobe sessions refused: {reason}");
            return Ok(false);
        }
        Ok(self.sessions)
    }

    /// Stops a launched command at exit(), so that a short-lived one's mappings can still be
    /// read (see `UserTrace::poll`).
    pub fn exit_hooks(self, tracer: &mut Tracer, allocator: &AllocatorObject) -> Result<()> {
        for hook in allocator::exit_functions(&allocator.path)? {
            let spot = Spot { symbol: hook.symbol, path: &allocator.path, offset: hook.probe_offset(), cookie: 0 };
            self.probe(tracer, names::PROG_EXIT, false, spot, self.sessions)?;
        }
        Ok(())
    }

    /// Puts a probe on `zend_mm_shutdown` in each object whose Zend functions are probed:
    /// blocks PHP's heap still holds when it is reset go with its chunks, never through
    /// `_efree`. Without the symbol, such blocks stay outstanding (said in the log).
    fn heap_reset_hooks(self, tracer: &mut Tracer, allocator: &AllocatorObject) -> Result<()> {
        let mut objects: Vec<&Path> = allocator
            .functions
            .iter()
            .filter(|f| f.family == allocator::ZEND_FAMILY)
            .map(|f| f.object.as_path())
            .collect();
        objects.dedup();
        for object in objects {
            match allocator::heap_reset_hook(object)? {
                Some(hook) => {
                    let spot = Spot { symbol: hook.symbol, path: object, offset: hook.probe_offset(), cookie: 0 };
                    self.probe(tracer, names::PROG_HEAP_RESET, false, spot, false)?;
                }
                None => log::warn!("{} has no zend_mm_shutdown: PHP's heap resets are not seen", object.display()),
            }
        }
        Ok(())
    }

    /// Stops the process at every library load so its unwind table can take the new library
    /// in before the library's code runs. Without the hook (a linker without the symbol), new
    /// libraries are still picked up at the next refresh, and their first stacks may end early.
    pub fn library_hook(self, tracer: &mut Tracer, linker: &Path) -> Result<()> {
        match allocator::library_change_hook(linker)? {
            Some(hook) => {
                let spot = Spot { symbol: hook.symbol, path: linker, offset: hook.probe_offset(), cookie: 0 };
                self.probe(tracer, names::PROG_DL_STATE, false, spot, self.sessions)
            }
            None => {
                log::warn!(
                    "{} has no _dl_debug_state: libraries loaded later are unwound from the next refresh",
                    linker.display()
                );
                Ok(())
            }
        }
    }
}
