//! How frames are named in exports that only carry names (folded stacks, flame graphs,
//! pprof functions without symbols, diff keys), and reports and counts in their titles.

use crate::model::{Frame, FrameKind, Report, StackReport, TargetInfo};

/// `symbol`, else `module+0xoffset`, else `[unknown]` (`[php] ?` for a PHP frame); kernel frames end in `_[k]`. Semicolons are replaced because the
/// folded format uses them as separators (Rust names like `[u8; 4]` contain one).
pub fn frame_name(frame: &Frame) -> String {
    let name = match (&frame.symbol, &frame.module) {
        (None, _) if frame.kind == Some(FrameKind::Php) => "[php] ?".to_string(),
        (Some(symbol), _) => symbol.clone(),
        (None, Some(module)) => {
            format!("{}+{:#x}", module.rsplit('/').next().unwrap_or(module), frame.offset.unwrap_or(0))
        }
        (None, None) => "[unknown]".to_string(),
    };
    let name = name.replace(';', ":");
    // flamegraph.pl's convention: kernel frames carry a `_[k]` suffix (drawn in another hue).
    if frame.kernel {
        format!("{name}_[k]")
    } else {
        name
    }
}

/// Every frame of a stack for exports, innermost first: the frames themselves, then in
/// kernel mode a frame named after the group (with --by cache/comm) and the allocating
/// task's user stack (with --user-stacks), so that the kernel path sits on top of the user
/// code that caused it.
pub fn export_frames(stack: &StackReport) -> Vec<Frame> {
    let mut frames = stack.frames.clone();
    if let Some(kernel) = &stack.kernel {
        if !kernel.key.is_empty() {
            frames.push(Frame { symbol: Some(kernel.key.clone()), ..Frame::default() });
        }
        frames.extend(kernel.user_frames.iter().cloned());
    }
    frames
}

/// The stack as `root;…;leaf` (outermost frame first, as flame graphs draw it). A stack
/// that names its heap (PHP's traced beside the C one) has it as its root, `[php heap]`, so
/// that each heap is one tower of the flame graph.
pub fn folded_path(stack: &StackReport) -> String {
    let frames = export_frames(stack).iter().rev().map(frame_name).collect::<Vec<_>>().join(";");
    match stack.heap {
        Some(heap) if frames.is_empty() => format!("[{} heap]", heap.name()),
        Some(heap) => format!("[{} heap];{frames}", heap.name()),
        None => frames,
    }
}

/// Who a report is about, for titles: `pid 42 (app)`, `command `…`` (kernel mode with
/// `--run`), `system-wide` (kernel mode without a pid).
pub fn subject(report: &Report) -> String {
    let TargetInfo { pid, command, .. } = &report.target;
    match report.kernel().map(|k| k.runs.as_ref()) {
        Some(Some(runs)) => format!("command `{}`", runs.command),
        Some(None) if *pid == 0 => "system-wide".to_string(),
        _ => format!("pid {pid} ({command})"),
    }
}

/// `1 allocation`, `2 allocations`.
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
