//! PHP frames inside allocation stacks. For a PHP process (an NTS build of a version in the
//! [layout table](layout::LAYOUTS)) the eBPF programs record, per allocation, the PHP VM's
//! frame chain as (`zend_function *`, opcode) pairs; here those become `Class::method`,
//! `function` or `{main}` frames with `file.php:line`, spliced among the native frames at
//! the `execute_ex` frames that run them ([`splice`]).

mod layout;
mod names;
mod splice;

use std::collections::HashMap;

use leaktrace_common::{PhpProcess, PhpStack};

pub use self::splice::{splice, PhpFrame};
use self::{layout::fixed, names::NameReader};
use crate::{
    bpf::Tracer,
    error::Result,
    mappings::ProcessModules,
    model::{Frame, FrameKind},
};

/// What leaktrace knows of one process's PHP.
#[derive(Default)]
pub enum PhpState {
    /// Not looked at since its mappings last changed.
    #[default]
    Unchecked,
    /// No PHP binary in it (as of the mappings snapshot counted).
    NotPhp {
        /// `ProcessModules::snapshots` when it was looked at.
        snapshot: u64,
    },
    /// A PHP it cannot read (ZTS, or a version not in the table): not traced.
    Unsupported {
        /// What the header says of it.
        notice: String,
    },
    /// A PHP whose frames are recorded.
    Traced(Box<PhpProcessFrames>),
}

/// A traced PHP process's frames and names.
pub struct PhpProcessFrames {
    /// What the header says of it.
    notice: String,
    tgid: u32,
    names: NameReader,
    /// PHP frames by the key of their native stack, as read from the map.
    stacks: HashMap<u64, PhpStack>,
}

impl PhpState {
    /// The header's line about this process's PHP, when it runs one.
    pub fn notice(&self) -> Option<&str> {
        match self {
            PhpState::Unsupported { notice } => Some(notice),
            PhpState::Traced(traced) => Some(&traced.notice),
            _ => None,
        }
    }

    /// Looks for a PHP binary in the process's mappings when they have changed, and tells
    /// the programs where its frames are.
    pub fn sync(&mut self, pid: u32, modules: &ProcessModules, tracer: &mut Tracer) -> Result<()> {
        let snapshot = modules.snapshots();
        match self {
            PhpState::Unchecked => {}
            PhpState::NotPhp { snapshot: seen } if *seen != snapshot => {}
            _ => return Ok(()),
        }
        *self = match find(modules) {
            None => PhpState::NotPhp { snapshot },
            Some((path, binary, bias)) => start(pid, &path, binary, bias, tracer)?,
        };
        Ok(())
    }

    /// Reads the PHP frames stored since the last call and the names of their functions,
    /// while the process still runs and its functions still exist.
    pub fn collect(&mut self, tracer: &Tracer) -> Result<()> {
        let PhpState::Traced(traced) = self else { return Ok(()) };
        let new = tracer.php_stacks(&|key| traced.stacks.contains_key(&key))?;
        for (key, stack) in new {
            if stack.tgid != traced.tgid {
                continue;
            }
            for frame in &stack.frames[..usize::from(stack.depth).min(stack.frames.len())] {
                if traced.names.name(frame.function).is_some_and(|n| n.file.is_some()) {
                    traced.names.line(frame.opline);
                }
            }
            traced.stacks.insert(key, stack);
        }
        Ok(())
    }

    /// The named PHP frames of the native stack `key`, innermost first; none when it has
    /// none. A frame whose function cannot be named has no `symbol` (`[php] ?`).
    pub fn frames(&mut self, key: u64) -> Option<Vec<PhpFrame>> {
        let PhpState::Traced(traced) = self else { return None };
        let stack = traced.stacks.get(&key)?;
        let depth = usize::from(stack.depth).min(stack.frames.len());
        let frames = stack.frames[..depth]
            .iter()
            .map(|raw| {
                let name = traced.names.name(raw.function).cloned();
                // A function written in C has no file, and its frame no line of its own.
                let line = name.as_ref().and_then(|n| n.file.as_ref()).and_then(|_| traced.names.line(raw.opline));
                let frame = Frame {
                    symbol: name.as_ref().map(|n| n.name.clone()),
                    file: name.and_then(|n| n.file),
                    line,
                    kind: Some(FrameKind::Php),
                    ..Frame::default()
                };
                PhpFrame { frame, top: raw.call_info & fixed::CALL_TOP != 0 }
            })
            .collect();
        Some(frames)
    }
}

/// The first mapped PHP binary: its path, what it is, and its load bias (where the file's
/// virtual address 0 is in the process).
fn find(modules: &ProcessModules) -> Option<(String, layout::Binary, u64)> {
    for mapping in modules.mappings() {
        let module = mapping.module;
        let file_name = module.name.rsplit('/').next().unwrap_or(&module.name);
        if !layout::may_be_php(file_name) {
            continue;
        }
        let Ok(data) = std::fs::read(&module.open_path) else { continue };
        let Some(binary) = layout::inspect(&data) else { continue };
        let Some(address) = layout::file_offset_to_address(&data, mapping.file_offset) else { continue };
        return Some((module.name.clone(), binary, mapping.start.wrapping_sub(address)));
    }
    None
}

fn start(pid: u32, path: &str, binary: layout::Binary, bias: u64, tracer: &mut Tracer) -> Result<PhpState> {
    let (version, executor_globals) = match binary {
        layout::Binary::Zts { version } => {
            let version = version.map(|(a, b, c)| format!(" {a}.{b}.{c}")).unwrap_or_default();
            let notice = format!("PHP{version} (ZTS) in {path}: thread-safe builds are unsupported, no PHP frames");
            return Ok(PhpState::Unsupported { notice });
        }
        layout::Binary::Nts { version, executor_globals } => (version, executor_globals),
    };
    let (major, minor, patch) = version;
    let Some(layout) = layout::layout_of(version) else {
        let notice = format!(
            "PHP {major}.{minor}.{patch} in {path}: version not in leaktrace's table (7.4, 8.0-8.4), no PHP frames"
        );
        return Ok(PhpState::Unsupported { notice });
    };
    let process = PhpProcess {
        current_execute_data: executor_globals.wrapping_add(bias) + layout.current_execute_data,
        opline: fixed::EXECUTE_DATA_OPLINE,
        func: fixed::EXECUTE_DATA_FUNC,
        call_info: fixed::EXECUTE_DATA_CALL_INFO,
        prev: fixed::EXECUTE_DATA_PREV,
    };
    tracer.set_php_process(pid, &process)?;
    Ok(PhpState::Traced(Box::new(PhpProcessFrames {
        notice: format!("PHP {major}.{minor}.{patch} (NTS) in {path}: PHP frames shown"),
        tgid: pid,
        names: NameReader::new(pid, layout),
        stacks: HashMap::new(),
    })))
}
