//! Human-readable report in bcc memleak's wording, with losses and totals at the end.

use std::fmt::Write as _;

use super::{Frame, Report};

fn module_name(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}

/// One frame as a text line: `symbol+0xoff [module] file:line`.
pub fn frame_line(frame: &Frame) -> String {
    let mut line = match (&frame.symbol, &frame.module) {
        (Some(symbol), Some(module)) if frame.inlined => format!("{symbol} [{}] (inlined)", module_name(module)),
        (Some(symbol), Some(module)) => {
            format!("{symbol}+{:#x} [{}]", frame.offset.unwrap_or(0), module_name(module))
        }
        (None, Some(module)) => format!("{}+{:#x}", module_name(module), frame.offset.unwrap_or(0)),
        (_, None) => format!("[unknown] {:#x}", frame.address),
    };
    if let Some(file) = &frame.file {
        let _ = write!(line, " {file}");
        if let Some(n) = frame.line {
            let _ = write!(line, ":{n}");
        }
    }
    line
}

fn clock(rfc3339: &str) -> &str {
    // "2026-11-22T05:05:41.123+00:00" → "05:05:41"
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

/// Renders the report. Shows the top `report.filters.top` stacks, then totals and losses.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let shown = report.stacks.len().min(report.filters.top);
    let _ = writeln!(
        out,
        "[{}] Top {shown} stacks with outstanding allocations:",
        clock(&report.generated_at)
    );
    for stack in report.stacks.iter().take(shown) {
        let _ = writeln!(
            out,
            "\t{} bytes in {} allocations from stack (oldest {} ms)",
            stack.bytes, stack.count, stack.oldest_age_ms
        );
        for frame in &stack.frames {
            let _ = writeln!(out, "\t\t{}", frame_line(frame));
        }
        for alloc in &stack.allocations {
            let _ = writeln!(out, "\t\t\taddr = {:#x} size = {} age = {} ms", alloc.address, alloc.size, alloc.age_ms);
        }
    }
    if report.stacks.len() > shown {
        let rest = &report.stacks[shown..];
        let bytes: u64 = rest.iter().map(|s| s.bytes).sum();
        let count: u64 = rest.iter().map(|s| s.count).sum();
        let _ = writeln!(out, "\t... {} more stacks hold {bytes} bytes in {count} allocations", rest.len());
    }
    let _ = write!(
        out,
        "Outstanding: {} bytes in {} allocations",
        report.totals.bytes, report.totals.count
    );
    if report.too_young.count > 0 {
        let _ = write!(
            out,
            "; {} bytes in {} allocations younger than {} ms not shown",
            report.too_young.bytes, report.too_young.count, report.filters.older_than_ms
        );
    }
    if report.without_stack.count > 0 {
        let _ = write!(
            out,
            "; {} bytes in {} allocations have no stack",
            report.without_stack.bytes, report.without_stack.count
        );
    }
    out.push('\n');
    let lost = &report.lost;
    let causes: Vec<String> = [
        (lost.allocs_map_full, "allocations not tracked (allocation map full, raise --max-allocs)"),
        (lost.stack_lost, "stacks not captured (stack map full or unwalkable, raise --stack-storage-size)"),
        (lost.stack_collision, "stacks lost to hash collisions (raise --stack-storage-size)"),
        (lost.return_without_entry, "allocation returns without an entry (calls in flight at attach)"),
        (lost.pending_map_full, "calls not tracked (too many threads inside the allocator)"),
        (lost.pending_stale, "calls that never returned"),
        (lost.out_pointer_unreadable, "posix_memalign results unreadable"),
        (lost.probe_misses, "probe hits skipped by the kernel"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if causes.is_empty() {
        out.push_str("Lost events: none\n");
    } else {
        let _ = writeln!(out, "Lost events: {}; the figures above may be incomplete", causes.join(", "));
    }
    let a = &report.activity;
    let _ = writeln!(
        out,
        "Activity: {} allocations, {} frees ({} of blocks allocated before tracing or untracked), {} nested calls, {} failed allocations",
        a.alloc_calls, a.free_calls, a.free_unknown, a.nested_calls, a.failed_allocs
    );
    if a.unsymbolized_frames > 0 {
        let _ = writeln!(out, "{} frames could not be symbolized: their module was never seen mapped", a.unsymbolized_frames);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_like_memleak() {
        let named = Frame {
            address: 0x401136,
            module: Some("/usr/bin/app".into()),
            symbol: Some("leak".into()),
            offset: Some(0x1e),
            file: Some("app.c".into()),
            line: Some(12),
            inlined: false,
        };
        assert_eq!(frame_line(&named), "leak+0x1e [app] app.c:12");
        let stripped = Frame { symbol: None, file: None, line: None, offset: Some(0x1136), ..named.clone() };
        assert_eq!(frame_line(&stripped), "app+0x1136");
        let unknown = Frame { address: 0x7f00, ..Frame::default() };
        assert_eq!(frame_line(&unknown), "[unknown] 0x7f00");
    }
}
