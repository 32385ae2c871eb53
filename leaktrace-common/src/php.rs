//! PHP frames of an allocation: what the eBPF program reads from the PHP VM's frame chain,
//! and where in the VM's structures it reads it.

/// PHP frames kept per stack. Deeper chains are cut here (counted).
pub const MAX_PHP_FRAMES: usize = 32;

/// One frame of the PHP VM (a `zend_execute_data`), as read at allocation time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PhpFrame {
    /// The frame's `zend_function *`: user space reads its names from it.
    pub function: u64,
    /// The opcode the frame was executing (`opline`): user space reads its line from it,
    /// since a function's opcodes live as long as the function.
    pub opline: u64,
    /// The frame's call info (`This.u1.type_info`): tells the first frame that one native
    /// `execute_ex` runs (`ZEND_CALL_TOP`) from the frames it called.
    pub call_info: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// The PHP frames of one allocation, innermost first, in `PHP_STACKS` under the key of its
/// native stack in `USTACKS`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct PhpStack {
    /// The process the frames belong to (function addresses mean something only in it).
    pub tgid: u32,
    /// Number of valid entries in `frames`.
    pub depth: u16,
    /// 1 when the chain went on past `MAX_PHP_FRAMES`.
    pub truncated: u16,
    /// Frames, innermost first.
    pub frames: [PhpFrame; MAX_PHP_FRAMES],
}

/// Where to find one PHP process's frame chain, in `PHP_PROCESSES` by tgid. Only PHP
/// processes have an entry: every other process pays one failed lookup per allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PhpProcess {
    /// Address of `executor_globals.current_execute_data` in the process.
    pub current_execute_data: u64,
    /// Offset of `opline` in `zend_execute_data`.
    pub opline: u32,
    /// Offset of `func` in `zend_execute_data`.
    pub func: u32,
    /// Offset of `This.u1.type_info` in `zend_execute_data`.
    pub call_info: u32,
    /// Offset of `prev_execute_data` in `zend_execute_data`.
    pub prev: u32,
}

const _: () = assert!(core::mem::size_of::<PhpFrame>() == 24);
const _: () = assert!(core::mem::size_of::<PhpStack>() == 8 + 24 * MAX_PHP_FRAMES);
const _: () = assert!(core::mem::size_of::<PhpProcess>() == 24);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, `#[repr(C)]`, no padding (asserted above).
unsafe impl aya::Pod for PhpFrame {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PhpStack {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PhpProcess {}
