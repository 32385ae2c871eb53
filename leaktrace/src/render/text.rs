//! Human-readable report in bcc memleak's wording, with losses and totals at the end.

use std::fmt::Write as _;

use crate::{
    config::TextOptions,
    model::{
        Class, FamilyReport, Frame, FrameKind, Handling, Holder, KernelGroup, KernelSection, KmallocCacheNames, Lost,
        NotAttached, ProbeReport, ProcessSummary, Report, SamplingSection, Share, StackEnding, StackReport, Trend,
        UnwindSection, Unwinder,
    },
    render::names::counted,
};

fn module_name(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}

/// One frame as a text line: `symbol+0xoff [module] file:line`; a PHP frame as
/// `[php] Class::method file.php:line` (`[php] ?` when its name could not be read).
pub fn frame_line(frame: &Frame) -> String {
    let mut line = match (&frame.symbol, &frame.module) {
        _ if frame.kind == Some(FrameKind::Php) => format!("[php] {}", frame.symbol.as_deref().unwrap_or("?")),
        (Some(symbol), Some(module)) if frame.inlined => format!("{symbol} [{}] (inlined)", module_name(module)),
        (Some(symbol), Some(module)) => {
            let name = frame.part.as_deref().unwrap_or(symbol);
            match frame.offset {
                Some(offset) => format!("{name}+{offset:#x} [{}]", module_name(module)),
                None => format!("{name} [{}]", module_name(module)),
            }
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

/// Signed binary-prefixed size: `+1.2 MiB`, `-340 B`.
pub fn human_bytes(bytes: f64) -> String {
    let sign = if bytes < 0.0 { "-" } else { "+" };
    let mut value = bytes.abs();
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 || unit == "GiB" {
            return if unit == "B" { format!("{sign}{value:.0} {unit}") } else { format!("{sign}{value:.1} {unit}") };
        }
        value /= 1024.0;
    }
    unreachable!("the loop returns at GiB")
}

fn clock(rfc3339: &str) -> &str {
    // "2026-11-22T05:05:41.123+00:00" → "05:05:41.123": two reports in one second differ.
    rfc3339.get(11..23).unwrap_or(rfc3339)
}

/// Renders the report as the final report reads, with default options.
pub fn render(report: &Report) -> String {
    render_with(report, TextOptions::default(), false)
}

/// Renders the report: the top `report.filters.top` stacks that hold memory, one line on
/// those that only churn, then totals and losses. An `interval` report leaves out what the
/// start-up lines and the final report already say (unwinding, probe sites).
pub fn render_with(report: &Report, options: TextOptions, interval: bool) -> String {
    let mut out = String::new();
    let groups = report.kernel().map_or("stacks", |k| k.group_by.plural());
    // Groups whose cache's frees are missed are not leaks: they are summed up per cache below.
    let (holding, churning): (Vec<&StackReport>, Vec<&StackReport>) = report
        .stacks
        .iter()
        .filter(|s| !s.kernel.as_ref().is_some_and(|k| k.unconfirmed))
        .partition(|s| s.bytes > 0 || s.count > 0);
    let shown = holding.len().min(report.filters.top);
    let _ = writeln!(out, "[{}] Top {shown} {groups} with outstanding allocations:", clock(&report.generated_at));
    let style = Styles::new(options.color);
    for stack in &holding[..shown] {
        render_stack(&mut out, stack, style);
    }
    if holding.len() > shown {
        let rest = &holding[shown..];
        let bytes: u64 = rest.iter().map(|s| s.bytes).sum();
        let count: u64 = rest.iter().map(|s| s.count).sum();
        let _ = writeln!(out, "\t... {} more {groups} hold {bytes} bytes in {count} allocations", rest.len());
    }
    render_churn(&mut out, &churning, groups, options.show_churn, style);
    if let Some(kernel) = report.kernel() {
        render_unconfirmed(&mut out, kernel);
    }
    render_totals(&mut out, report);
    render_losses(&mut out, report);
    if let Some(kernel) = report.kernel() {
        render_slab_accounting(&mut out, report, kernel);
    }
    render_activity(&mut out, report);
    if let Some(user) = report.user() {
        if let Some(unwind) = user.unwind.as_ref().filter(|_| !interval) {
            render_unwinding(&mut out, unwind, options.verbose);
        }
        if !interval {
            render_allocators(&mut out, &user.allocators, &user.not_attached);
            render_probes(&mut out, &user.probes);
        }
        if let Some(sampling) = &user.sampling {
            render_sampling(&mut out, sampling);
        }
    }
    out
}

/// Stacks that allocate and free at a high rate and hold nothing now: one line, or each of
/// them with `--show-churn`.
fn render_churn(out: &mut String, churning: &[&StackReport], groups: &str, list: bool, style: Styles) {
    if churning.is_empty() {
        return;
    }
    let rate: f64 = churning.iter().filter_map(|s| s.trend.as_ref()?.allocated_per_min).sum();
    let (noun, verb) = if churning.len() == 1 { (groups.trim_end_matches('s'), "holds") } else { (groups, "hold") };
    let _ = writeln!(
        out,
        "\t{} {noun} churned {}/min and {verb} nothing{}",
        churning.len(),
        human_bytes(rate).trim_start_matches('+'),
        if list { ":" } else { " (--show-churn lists them)" }
    );
    if list {
        for stack in churning {
            render_stack(out, stack, style);
        }
    }
}

/// What marks the first frame of the program's own code.
const FOCUS_MARK: &str = "  <==";

/// Terminal styles; all plain without colour.
#[derive(Clone, Copy, Default)]
struct Styles {
    focus: anstyle::Style,
    growing: anstyle::Style,
}

impl Styles {
    fn new(color: bool) -> Self {
        if !color {
            return Self::default();
        }
        Self {
            focus: anstyle::Style::new().bold(),
            growing: anstyle::Style::new().bold().fg_color(Some(anstyle::AnsiColor::Red.into())),
        }
    }
}

/// One stack: its figures, trend, kernel detail, frames and allocations.
fn render_stack(out: &mut String, stack: &StackReport, style: Styles) {
    let source = match stack.kernel.as_ref().map(|k| k.key.as_str()) {
        Some(key) if !key.is_empty() => format!("from {key}"),
        _ => "from stack".to_string(),
    };
    let source = match stack.heap {
        Some(heap) => format!("{source} on the {} heap", heap.name()),
        None => source,
    };
    match &stack.estimate {
        Some(e) => {
            let _ = writeln!(
                out,
                "\t~{} bytes (95 % interval {}–{}, from {} sampled) in ~{} allocations {source} (oldest {} ms)",
                stack.bytes, e.bytes_low, e.bytes_high, e.samples, stack.count, stack.oldest_age_ms
            );
        }
        None if stack.bytes == 0 && stack.count == 0 => {
            let _ = writeln!(out, "\tnothing outstanding {source}");
        }
        None => {
            let _ = writeln!(
                out,
                "\t{} bytes in {} allocations {source} (oldest {} ms)",
                stack.bytes, stack.count, stack.oldest_age_ms
            );
        }
    }
    if let Some(trend) = &stack.trend {
        render_trend(out, trend, style);
    }
    if let Some(kernel) = &stack.kernel {
        render_kernel_group(out, kernel);
    }
    render_holders(out, &stack.holders);
    for (i, frame) in stack.frames.iter().enumerate() {
        if stack.focus_frame == Some(i) {
            let _ = writeln!(
                out,
                "\t\t{}{}{FOCUS_MARK}{}",
                style.focus.render(),
                frame_line(frame),
                style.focus.render_reset()
            );
        } else {
            let _ = writeln!(out, "\t\t{}", frame_line(frame));
        }
    }
    if let Some(reason) = &stack.cut_short {
        let _ = writeln!(out, "\t\t(stack cut short: {})", reason.name());
    }
    for alloc in &stack.allocations {
        let _ = writeln!(out, "\t\t\taddr = {:#x} size = {} age = {} ms", alloc.address, alloc.size, alloc.age_ms);
    }
}

/// Which processes hold a stack's memory (several traced): one line, the largest first.
fn render_holders(out: &mut String, holders: &[Holder]) {
    if holders.is_empty() {
        return;
    }
    let each: Vec<String> =
        holders.iter().map(|h| format!("pid {} ({}) {} bytes in {}", h.pid, h.comm, h.bytes, h.count)).collect();
    let whom = if holders.len() == 1 { "held by".to_string() } else { format!("held by {} processes:", holders.len()) };
    let _ = writeln!(out, "\t\t{whom} {}", each.join(", "));
}

/// The trend line, with the figures that mean something for its class: a rate and its fit
/// only for a growing stack.
fn render_trend(out: &mut String, trend: &Trend, style: Styles) {
    let allocated = trend.allocated_per_min.map_or(String::new(), |a| format!(", {}/min allocated", human_bytes(a)));
    let _ = match trend.class {
        Class::Unclear => writeln!(out, "\t\ttrend: unclear after {} intervals", trend.intervals),
        Class::Growing => writeln!(
            out,
            "\t\ttrend: {}{}/min, growing{}, grew in {}/{} intervals (r² {:.2}){allocated}",
            style.growing.render(),
            human_bytes(trend.bytes_per_min),
            style.growing.render_reset(),
            trend.intervals_grown,
            trend.intervals,
            trend.r_squared,
        ),
        Class::Plateau => {
            writeln!(
                out,
                "\t\ttrend: plateau, grew in {}/{} intervals{allocated}",
                trend.intervals_grown, trend.intervals
            )
        }
        Class::Churn => writeln!(out, "\t\ttrend: churn{allocated}"),
    };
}

/// One line per cache whose frees are missed, with the evidence; its objects are not in the
/// top N.
fn render_unconfirmed(out: &mut String, kernel: &KernelSection) {
    for cache in kernel.caches.iter().filter(|c| c.unconfirmed) {
        let _ = writeln!(
            out,
            "\tunconfirmed: {} holds {} traced objects ({} bytes), but frees of {} are not traced on this kernel: \
             {} allocations reused the address of an object still outstanding, slabinfo {}",
            cache.name,
            cache.traced.count,
            cache.traced.bytes,
            cache.name,
            cache.silently_freed,
            cache.slabinfo_objects_delta.map_or("?".to_string(), |d| format!("{d:+}"))
        );
    }
}

/// The `Outstanding:` line.
fn render_totals(out: &mut String, report: &Report) {
    let approx = if report.is_sampled() { "~" } else { "" };
    let _ = write!(
        out,
        "Outstanding: {approx}{} bytes in {approx}{} allocations",
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
}

/// The `Lost events:` line: every loss by cause, and what it means for the figures.
fn render_losses(out: &mut String, report: &Report) {
    let lost = &report.lost;
    let causes = nonzero([
        (lost.allocs_map_full, "allocations not tracked (allocation map full, raise --max-allocs)"),
        (lost.stack_lost, "stacks not captured (stack map full or unwalkable, raise --stack-storage-size)"),
        (lost.stack_collision, "stacks lost to hash collisions (raise --stack-storage-size)"),
        (lost.return_without_entry, "allocation returns without an entry (calls in flight at attach)"),
        (lost.pending_map_full, "calls not tracked (too many threads inside the allocator)"),
        (lost.pending_stale, "calls that never returned"),
        (lost.out_pointer_unreadable, "posix_memalign results unreadable"),
        (lost.probe_misses, "probe hits skipped by the kernel"),
        (lost.user_stack_lost, "user stacks not captured"),
        (lost.probes_not_attached, "allocator functions not traced (probe refused by the kernel, listed below)"),
        (lost.process_events_lost, "process events missed (forks or execs not followed)"),
    ]);
    if causes.is_empty() {
        out.push_str("Lost events: none\n");
    } else {
        let consequence = if report.kernel().is_some() {
            "outstanding figures may be inflated (a missed free looks like a leak) or incomplete"
        } else {
            "the figures above may be incomplete"
        };
        let _ = writeln!(out, "Lost events: {}; {consequence}", causes.join(", "));
    }
    render_php_losses(out, lost);
}

/// What PHP frames are missing: they lose names, not memory, so they do not make the figures
/// incomplete.
fn render_php_losses(out: &mut String, lost: &Lost) {
    let causes = nonzero([
        (lost.php_frames_lost, "stacks without their PHP frames (PHP frame map full, raise --stack-storage-size)"),
        (lost.php_frames_truncated, "PHP frame chains cut at 32 frames"),
        (lost.php_names_unreadable, "frames whose function could no longer be read ([php] ?)"),
    ]);
    if !causes.is_empty() {
        let _ = writeln!(out, "PHP frames missing: {}", causes.join(", "));
    }
}

/// `N what` for each count that is not zero.
fn nonzero<const K: usize>(counts: [(u64, &str); K]) -> Vec<String> {
    counts.into_iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect()
}

/// The `Activity:` line, and the count of stacks a frame-pointer walk cut short.
fn render_activity(out: &mut String, report: &Report) {
    let a = &report.activity;
    if report.kernel().is_some() {
        let _ = writeln!(
            out,
            "Activity: {} allocations, {} frees ({} of objects allocated before tracing or not traced)",
            a.alloc_calls, a.free_calls, a.free_unknown
        );
        return;
    }
    let (recorded, untracked) = if report.is_sampled() {
        (
            "sampled allocations",
            "of untracked blocks: not sampled, allocated before tracing, or freed again from a thread's cache",
        )
    } else {
        ("allocations", "of untracked blocks: allocated before tracing, or freed again from a thread's cache")
    };
    let _ = writeln!(
        out,
        "Activity: {} {recorded}, {} frees ({} {untracked}), {} nested calls, {} failed allocations",
        a.alloc_calls, a.free_calls, a.free_unknown, a.nested_calls, a.failed_allocs
    );
    if a.stacks_cut_short > 0 {
        let _ = writeln!(
            out,
            "{} stacks end early: their frame-pointer walk left mapped code (code built without frame pointers)",
            a.stacks_cut_short
        );
    }
    if a.exec_dropped_blocks > 0 {
        let _ = writeln!(
            out,
            "Exec: {} bytes in {} still outstanding when their process ran a new program were dropped with the old image",
            a.exec_dropped_bytes,
            counted(a.exec_dropped_blocks, "allocation")
        );
    }
    if a.php_heap_released_blocks > 0 {
        let _ = writeln!(
            out,
            "PHP heap resets: {} bytes in {} still held when PHP reset its heap (end of a request or of the script) \
             were released with it",
            a.php_heap_released_bytes,
            counted(a.php_heap_released_blocks, "allocation")
        );
    }
    if let Some(user) = report.user().filter(|u| !u.processes.is_empty()) {
        render_processes(out, &user.processes);
    }
}

/// One line per traced process of a trace of several.
fn render_processes(out: &mut String, processes: &[ProcessSummary]) {
    let _ = writeln!(out, "Processes: {} traced", processes.len());
    for p in processes {
        let mut notes = Vec::new();
        if let Some(parent) = p.parent {
            notes.push(format!("child of {parent}"));
        }
        if p.execs > 0 {
            notes.push(counted(u64::from(p.execs), "exec"));
        }
        if p.exited {
            notes.push("exited".to_string());
        }
        let notes = if notes.is_empty() { String::new() } else { format!(" [{}]", notes.join(", ")) };
        let _ = writeln!(
            out,
            "\tpid {} ({}): {} bytes in {}{notes}",
            p.pid,
            p.comm,
            p.totals.bytes,
            counted(p.totals.count, "allocation")
        );
    }
}

fn render_sampling(out: &mut String, sampling: &SamplingSection) {
    let _ = writeln!(
        out,
        "Sampling: one allocation per {} bytes on average; figures marked ~ are estimates; {} calls not sampled{}",
        sampling.period_bytes,
        sampling.unsampled_calls,
        if sampling.return_probes_skipped { "" } else { " (their return probes still ran: no uprobe sessions)" }
    );
}

/// One line naming each allocator family and the object it was found in, and one naming
/// the probes the kernel refused.
fn render_allocators(out: &mut String, families: &[FamilyReport], not_attached: &[NotAttached]) {
    if !families.is_empty() {
        let found: Vec<String> = families
            .iter()
            .map(|f| {
                // An object opened through /proc/PID/map_files is named by that whole path:
                // its last part is an address range.
                let name = match f.object.contains("/map_files/") {
                    true => &f.object,
                    false => f.object.rsplit('/').next().unwrap_or(&f.object),
                };
                format!("{} in {name} ({} functions)", f.family, f.functions.len())
            })
            .collect();
        let _ = writeln!(out, "Allocators: {}", found.join(", "));
    }
    if !not_attached.is_empty() {
        let refused: Vec<String> =
            not_attached.iter().map(|p| format!("{} in {} ({})", p.function, p.object, p.reason)).collect();
        let _ = writeln!(out, "Not traced: {}", refused.join("; "));
    }
}

/// One line naming the probes the kernel single-steps (each costs a second trap per call).
fn render_probes(out: &mut String, probes: &[ProbeReport]) {
    if probes.is_empty() {
        return;
    }
    let stepped: Vec<String> = probes
        .iter()
        .filter(|p| p.handling != Handling::Emulated)
        .map(|p| format!("{}+{}", p.function, p.offset))
        .collect();
    let _ = writeln!(
        out,
        "Probes: {} of {} emulated by the kernel{}",
        probes.len() - stepped.len(),
        probes.len(),
        if stepped.is_empty() { String::new() } else { format!("; single-stepped (slower): {}", stepped.join(", ")) }
    );
}

/// One line on the unwinders and their table, and one on stacks cut short, if any.
fn render_unwinding(out: &mut String, unwind: &UnwindSection, verbose: bool) {
    // Without -v, a few names per unwinder: a PHP or Python process maps dozens of modules.
    const SHOWN: usize = 3;
    let list = |names: Vec<String>| match names.len() {
        0 => "none".to_string(),
        n if n > SHOWN && !verbose => format!("{} and {} more", names[..SHOWN].join(", "), n - SHOWN),
        _ => names.join(", "),
    };
    let dwarf: Vec<String> = unwind
        .modules
        .iter()
        .filter(|m| m.unwinder == Unwinder::Dwarf)
        .map(|m| module_name(&m.module).to_string())
        .collect();
    let frame_pointer: Vec<String> = unwind
        .modules
        .iter()
        .filter(|m| m.unwinder != Unwinder::Dwarf)
        .map(|m| format!("{} ({})", module_name(&m.module), m.reason))
        .collect();
    let _ = writeln!(
        out,
        "Unwinding ({}): DWARF for {}; frame pointers for {}; {} rows of {} ({} KiB of {} KiB)",
        unwind.mode.name(),
        list(dwarf),
        list(frame_pointer),
        unwind.rows_used,
        unwind.rows_capacity,
        unwind.rows_used * 8 / 1024,
        unwind.table_bytes / 1024
    );
    let cut: Vec<String> = unwind
        .stacks_by_end
        .iter()
        .filter(|(end, _)| **end != StackEnding::Complete)
        .map(|(end, n)| format!("{n} {}", end.name()))
        .collect();
    if !cut.is_empty() {
        let _ = writeln!(out, "Stacks cut short: {}", cut.join(", "));
    }
    if unwind.library_events_lost > 0 {
        let _ = writeln!(
            out,
            "{} library loads were not signalled in time; stacks through those libraries may end early",
            unwind.library_events_lost
        );
    }
    if unwind.table_not_ready > 0 {
        let _ = writeln!(
            out,
            "{} allocations came from a library loaded moments before, not yet in the unwind table: their stacks \
             end at its frames (library not in table yet)",
            unwind.table_not_ready
        );
    }
    if unwind.mappings_dropped > 0 {
        let _ = writeln!(
            out,
            "{} executable mappings did not fit the process's table; frames in them end stacks",
            unwind.mappings_dropped
        );
    }
}

/// Caches or processes listed by name in a group; the rest are counted.
const SHARES_SHOWN: usize = 4;

fn shares(shares: &[Share]) -> String {
    let mut parts: Vec<String> = shares
        .iter()
        .take(SHARES_SHOWN)
        .map(|s| format!("{} ({} objects, {} bytes)", s.name, s.count, s.bytes))
        .collect();
    if shares.len() > SHARES_SHOWN {
        parts.push(format!("{} more", shares.len() - SHARES_SHOWN));
    }
    parts.join(", ")
}

fn render_kernel_group(out: &mut String, kernel: &KernelGroup) {
    // A churn group holds nothing: no cache or task to name.
    if !kernel.caches.is_empty() {
        let _ = writeln!(out, "\t\tcaches: {}", shares(&kernel.caches));
    }
    if !kernel.comms.is_empty() {
        let _ = writeln!(out, "\t\tallocated by: {}", shares(&kernel.comms));
    }
    for share in kernel.comms.iter().take(SHARES_SHOWN).filter(|s| !s.ancestry.is_empty()) {
        let ancestors = share.ancestry.iter().map(|a| format!("{}[{}]", a.comm, a.pid));
        let chain: Vec<String> = std::iter::once(share.name.clone()).chain(ancestors).collect();
        let _ = writeln!(out, "\t\tchain: {}", chain.join(" ← "));
    }
    if let Some(per_run) = &kernel.per_run {
        let _ = writeln!(out, "\t\tper run: {:.2} objects, {:.1} bytes", per_run.count, per_run.bytes);
    }
    if !kernel.user_frames.is_empty() {
        let _ = writeln!(out, "\t\tuser stack of the allocating task:");
        for frame in &kernel.user_frames {
            let _ = writeln!(out, "\t\t\t{}", frame_line(frame));
        }
    }
}

fn kib(bytes: i64) -> String {
    format!("{:+} kB", bytes / 1024)
}

fn render_slab_accounting(out: &mut String, report: &Report, kernel: &KernelSection) {
    let (start, now) = (&kernel.meminfo_start, &kernel.meminfo_now);
    let unreclaim_delta = now.unreclaimable as i64 - start.unreclaimable as i64;
    let _ = writeln!(
        out,
        "Slab since tracing began: SUnreclaim {}, SReclaimable {} (Slab {}); traced outstanding in unreclaimable caches: {} bytes{}",
        kib(unreclaim_delta),
        kib(now.reclaimable as i64 - start.reclaimable as i64),
        kib(now.slab as i64 - start.slab as i64),
        kernel.traced_unreclaimable_bytes,
        if unreclaim_delta > 0 {
            format!(" ({:.0}% of the SUnreclaim growth)", 100.0 * kernel.traced_unreclaimable_bytes as f64 / unreclaim_delta as f64)
        } else {
            String::new()
        }
    );
    let shown = kernel.caches.len().min(report.filters.top);
    if shown > 0 {
        let _ = writeln!(
            out,
            "\t{:<28} {:>12} {:>10} {:>16} {:>12}",
            "cache", "traced bytes", "objects", "slabinfo objects", "reclaimable"
        );
    }
    for cache in kernel.caches.iter().take(shown) {
        let _ = writeln!(
            out,
            "\t{:<28} {:>12} {:>10} {:>16} {:>12}",
            cache.name,
            cache.traced.bytes,
            cache.traced.count,
            cache.slabinfo_objects_delta.map_or("?".to_string(), |d| format!("{d:+}")),
            match cache.reclaimable {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            }
        );
    }
    if !kernel.symbols_visible {
        out.push_str("Kernel addresses are hidden by kernel.kptr_restrict: kernel frames are shown as addresses\n");
    }
    if kernel.kmalloc_caches == Some(KmallocCacheNames::Size) {
        out.push_str(
            "kmalloc objects are named from their size and flags (their slab could not be read): an object of a \
             dedicated kmalloc cache (e.g. msg_msg-4k) shows as kmalloc-4k\n",
        );
    }
    if let Some(runs) = &kernel.runs {
        let _ = writeln!(
            out,
            "Runs of `{}`: {} of {} completed, exit codes {:?}",
            runs.command, runs.completed, runs.repeat, runs.exit_codes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(1_258_291.0), "+1.2 MiB");
        assert_eq!(human_bytes(-340.0), "-340 B");
        assert_eq!(human_bytes(0.0), "+0 B");
    }

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
            kernel: false,
            part: None,
            kind: None,
        };
        assert_eq!(frame_line(&named), "leak+0x1e [app] app.c:12");
        let stripped = Frame { symbol: None, file: None, line: None, offset: Some(0x1136), ..named.clone() };
        assert_eq!(frame_line(&stripped), "app+0x1136");
        let cold = Frame { part: Some("leak.cold".into()), offset: Some(0x6), file: None, line: None, ..named.clone() };
        assert_eq!(frame_line(&cold), "leak.cold+0x6 [app]");
        let unknown = Frame { address: 0x7f00, ..Frame::default() };
        assert_eq!(frame_line(&unknown), "[unknown] 0x7f00");
        let php = Frame {
            symbol: Some("Job::handle".into()),
            file: Some("/srv/jobs.php".into()),
            line: Some(12),
            kind: Some(FrameKind::Php),
            ..Frame::default()
        };
        assert_eq!(frame_line(&php), "[php] Job::handle /srv/jobs.php:12");
        let unreadable = Frame { symbol: None, file: None, line: None, ..php };
        assert_eq!(frame_line(&unreadable), "[php] ?");
    }
}
