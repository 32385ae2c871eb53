//! PHP function names, read from the process's memory once per `zend_function`: a worker's
//! compiled code lives as long as the process (opcache keeps it in shared memory), so a
//! name read once stays right. A name that cannot be read (the process is gone, or the
//! memory no longer holds a function) is left unknown and shown as `[php] ?`: never guessed.

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt};

use super::layout::{fixed, Layout};

/// Longest name or file name read.
const MAX_STRING: u64 = 4096;

/// What a frame's `zend_function` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionName {
    /// `Class::method`, `function`, `{closure}` or `{main}` (a script's top-level code).
    pub name: String,
    /// The PHP file of user code; none for a function written in C.
    pub file: Option<String>,
}

/// Reads names from one process's memory, caching what it read.
pub struct NameReader {
    mem: Option<File>,
    layout: &'static Layout,
    cache: HashMap<u64, FunctionName>,
    lines: HashMap<u64, u32>,
}

impl NameReader {
    /// A reader of process `pid`'s memory; reads fail once the process is gone.
    pub fn new(pid: u32, layout: &'static Layout) -> Self {
        Self { mem: File::open(format!("/proc/{pid}/mem")).ok(), layout, cache: HashMap::new(), lines: HashMap::new() }
    }

    /// The source line of the opcode at `opline`, read now if it was not yet; none when
    /// unreadable or 0. Opcodes live as long as their function, like its names.
    pub fn line(&mut self, opline: u64) -> Option<u32> {
        if opline == 0 {
            return None;
        }
        if !self.lines.contains_key(&opline) {
            let line = u32::from_le_bytes(self.bytes::<4>(opline + u64::from(fixed::OP_LINENO))?);
            self.lines.insert(opline, line);
        }
        self.lines.get(&opline).copied().filter(|&l| l != 0)
    }

    /// The names of the function at `function`, read now if they were not yet.
    pub fn name(&mut self, function: u64) -> Option<&FunctionName> {
        if !self.cache.contains_key(&function) {
            let read = self.read_function(function)?;
            self.cache.insert(function, read);
        }
        self.cache.get(&function)
    }

    fn bytes<const N: usize>(&self, address: u64) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        self.mem.as_ref()?.read_exact_at(&mut buf, address).ok()?;
        Some(buf)
    }

    fn pointer(&self, address: u64) -> Option<u64> {
        self.bytes::<8>(address).map(u64::from_le_bytes)
    }

    /// A `zend_string`'s text; none when unreadable, too long or not UTF-8 (not a name).
    fn string(&self, address: u64) -> Option<String> {
        let len = self.pointer(address + fixed::STRING_LEN)?;
        if len == 0 || len > MAX_STRING {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        self.mem.as_ref()?.read_exact_at(&mut buf, address + fixed::STRING_VAL).ok()?;
        String::from_utf8(buf).ok()
    }

    fn read_function(&self, function: u64) -> Option<FunctionName> {
        let [kind] = self.bytes::<1>(function)?;
        let name = self.pointer(function + fixed::FUNCTION_NAME)?;
        let scope = self.pointer(function + fixed::FUNCTION_SCOPE)?;
        let user = match kind {
            fixed::USER_FUNCTION | fixed::EVAL_CODE => true,
            fixed::INTERNAL_FUNCTION => false,
            // Not a function (any more): its memory was reused.
            _ => return None,
        };
        let base = match name {
            // Only a script's (or eval'd code's) top level has no name.
            0 if user => "{main}".to_string(),
            0 => return None,
            _ => self.string(name)?,
        };
        let name = match scope {
            0 => base,
            _ => format!("{}::{base}", self.string(self.pointer(scope + fixed::CLASS_NAME)?)?),
        };
        let file =
            if user { Some(self.string(self.pointer(function + self.layout.op_array_filename)?)?) } else { None };
        Some(FunctionName { name, file })
    }
}
