//! How a frame is named in exports that only carry names (folded stacks, flame graphs,
//! pprof functions without symbols, diff keys).

use super::{Frame, StackReport};

/// `symbol`, else `module+0xoffset`, else `[unknown]`. Semicolons are replaced because the
/// folded format uses them as separators (Rust names like `[u8; 4]` contain one).
pub fn frame_name(frame: &Frame) -> String {
    let name = match (&frame.symbol, &frame.module) {
        (Some(symbol), _) => symbol.clone(),
        (None, Some(module)) => {
            format!("{}+{:#x}", module.rsplit('/').next().unwrap_or(module), frame.offset.unwrap_or(0))
        }
        (None, None) => "[unknown]".to_string(),
    };
    name.replace(';', ":")
}

/// The stack as `root;…;leaf` (outermost frame first, as flame graphs draw it).
pub fn folded_path(stack: &StackReport) -> String {
    stack.frames.iter().rev().map(frame_name).collect::<Vec<_>>().join(";")
}
