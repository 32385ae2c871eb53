//! Comparing two reports: per stack, the change in outstanding bytes and count.
//!
//! Stacks are matched by their frame names (not addresses), so reports of two runs of the
//! same program match even though address-space randomization moved the code.

use std::{collections::HashMap, fmt::Write as _};

use inferno::{differential, flamegraph::Options};
use serde::{Deserialize, Serialize};

use super::{
    flamegraph,
    folded::{self, Weight},
    names::{counted, folded_path},
    text::human_bytes,
};
use crate::{
    error::{Error, Result},
    model::{Frame, Report, Totals},
};

/// Version of the diff JSON layout.
pub const DIFF_SCHEMA_VERSION: u32 = 1;

/// Change of one stack between two reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackDelta {
    /// Bytes after minus bytes before.
    pub bytes_delta: i64,
    /// Count after minus count before.
    pub count_delta: i64,
    /// Outstanding in the first report (zero when the stack is new).
    pub before: Totals,
    /// Outstanding in the second report (zero when the stack is gone).
    pub after: Totals,
    /// The stack's frames, innermost first.
    pub frames: Vec<Frame>,
}

/// The comparison of two reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// [`DIFF_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `generated_at` of the first report.
    pub before_generated_at: String,
    /// `generated_at` of the second report.
    pub after_generated_at: String,
    /// Change of the whole outstanding totals.
    pub bytes_delta: i64,
    /// Change of the outstanding allocation count.
    pub count_delta: i64,
    /// Stacks whose figures changed, largest byte growth first.
    pub stacks: Vec<StackDelta>,
}

fn delta(after: u64, before: u64) -> i64 {
    after as i64 - before as i64
}

/// Compares `before` with `after`.
pub fn compare(before: &Report, after: &Report) -> Diff {
    let mut by_path: HashMap<String, StackDelta> = HashMap::new();
    let mut add = |report: &Report, is_after: bool| {
        for stack in &report.stacks {
            let entry = by_path.entry(folded_path(stack)).or_insert_with(|| StackDelta {
                bytes_delta: 0,
                count_delta: 0,
                before: Totals::default(),
                after: Totals::default(),
                frames: stack.frames.clone(),
            });
            let side = if is_after { &mut entry.after } else { &mut entry.before };
            side.bytes += stack.bytes;
            side.count += stack.count;
        }
    };
    add(before, false);
    add(after, true);
    let mut stacks: Vec<StackDelta> = by_path
        .into_iter()
        .map(|(path, mut d)| {
            d.bytes_delta = delta(d.after.bytes, d.before.bytes);
            d.count_delta = delta(d.after.count, d.before.count);
            (path, d)
        })
        .filter(|(_, d)| d.before != d.after)
        .map(|(_, d)| d)
        .collect();
    stacks.sort_by(|a, b| {
        b.bytes_delta.cmp(&a.bytes_delta).then(b.count_delta.cmp(&a.count_delta)).then_with(|| {
            let name =
                |d: &StackDelta| d.frames.iter().map(|f| f.symbol.clone().unwrap_or_default()).collect::<Vec<_>>();
            name(a).cmp(&name(b))
        })
    });
    Diff {
        schema_version: DIFF_SCHEMA_VERSION,
        before_generated_at: before.generated_at.clone(),
        after_generated_at: after.generated_at.clone(),
        bytes_delta: delta(after.totals.bytes, before.totals.bytes),
        count_delta: delta(after.totals.count, before.totals.count),
        stacks,
    }
}

/// Renders the diff as text, largest growth first.
pub fn render_text(diff: &Diff, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Outstanding memory from {} to {}: {:+} bytes, {:+} allocations",
        diff.before_generated_at, diff.after_generated_at, diff.bytes_delta, diff.count_delta
    );
    for d in diff.stacks.iter().take(top) {
        let _ = writeln!(
            out,
            "\t{:+} bytes, {:+} allocations (from {} bytes in {} to {} bytes in {}) from stack",
            d.bytes_delta, d.count_delta, d.before.bytes, d.before.count, d.after.bytes, d.after.count
        );
        for frame in &d.frames {
            let _ = writeln!(out, "\t\t{}", super::text::frame_line(frame));
        }
    }
    if diff.stacks.len() > top {
        let _ = writeln!(out, "\t... {} more stacks changed", diff.stacks.len() - top);
    }
    out
}

/// A differential flame graph (inferno's, after flamegraph.pl's): frames as wide as the
/// bytes outstanding in `after`, each stack's innermost frame red where it grew and blue where
/// it shrank, deeper for a larger change. Stacks are matched by their folded names, as in
/// [`compare`]. A stack gone from `after` has no width to draw, so the subtitle counts it.
pub fn render_svg(before: &Report, after: &Report) -> Result<Vec<u8>> {
    let after_folded = folded::render(after, Weight::Bytes);
    let mut lines = Vec::new();
    if !after_folded.is_empty() {
        // Unnormalized: a leak is a change in absolute bytes, not in the shape of the profile.
        let options = differential::Options { normalize: false, strip_hex: false };
        let before_folded = folded::render(before, Weight::Bytes);
        differential::from_readers(options, before_folded.as_bytes(), after_folded.as_bytes(), &mut lines)
            .map_err(|e| Error::io("comparing the folded stacks", e))?;
    }
    let lines =
        String::from_utf8(lines).map_err(|e| Error::io("comparing the folded stacks", std::io::Error::other(e)))?;
    let diff = compare(before, after);
    let mut options = Options::default();
    options.count_name = "bytes".to_string();
    options.title = format!(
        "Change in outstanding memory: {} in {}",
        human_bytes((stacks_bytes(after) as f64) - stacks_bytes(before) as f64),
        counted(diff.stacks.len() as u64, "stack")
    );
    let when = format!("{} → {}", stamp(&before.generated_at), stamp(&after.generated_at));
    options.subtitle = Some(format!("{when}; {}", change_summary(&diff)));
    flamegraph::draw(options, &lines, "drawing the differential flame graph")
}

/// Outstanding bytes of the stacks (what the graphs draw; the totals also count blocks too
/// young or without a stack).
fn stacks_bytes(report: &Report) -> u64 {
    report.stacks.iter().map(|s| s.bytes).sum()
}

/// `2026-11-22 05:05:41` of an RFC 3339 stamp: the title line has room for two of them.
fn stamp(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replacen('T', " ", 1)
}

/// What the colours stand for, with the figures behind them.
fn change_summary(diff: &Diff) -> String {
    let part = |deltas: Vec<&StackDelta>| {
        let bytes = human_bytes(deltas.iter().map(|d| d.bytes_delta as f64).sum());
        if deltas.is_empty() {
            "none".to_string()
        } else {
            format!("{bytes} in {}", counted(deltas.len() as u64, "stack"))
        }
    };
    let gone = diff.stacks.iter().filter(|d| d.after.bytes == 0 && d.before.bytes > 0).count();
    format!(
        "red grew ({}), blue shrank ({}); width: bytes after{}",
        part(diff.stacks.iter().filter(|d| d.bytes_delta > 0).collect()),
        part(diff.stacks.iter().filter(|d| d.bytes_delta < 0).collect()),
        if gone > 0 { format!(" ({} gone: not drawn)", counted(gone as u64, "stack")) } else { String::new() }
    )
}

/// The diff as pretty JSON, newline-terminated.
pub fn to_json(diff: &Diff) -> String {
    let mut text = serde_json::to_string_pretty(diff).expect("the diff model always serializes");
    text.push('\n');
    text
}

/// Stacks that grew by more than a threshold (`--fail-if-growth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Growth {
    /// The threshold.
    pub threshold: u64,
    /// How many stacks exceeded it.
    pub stacks: usize,
    /// The largest growth.
    pub largest: i64,
}

impl std::fmt::Display for Growth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Growth { threshold, stacks, largest } = self;
        write!(f, "{stacks} stacks grew by more than {threshold} bytes (largest: {largest:+} bytes)")
    }
}

/// `--fail-if-growth`: the stacks that grew by more than `threshold` bytes, if any did.
pub fn growth_above(diff: &Diff, threshold: u64) -> Option<Growth> {
    let grown: Vec<i64> = diff.stacks.iter().map(|d| d.bytes_delta).filter(|&d| d > threshold as i64).collect();
    grown.iter().max().map(|&largest| Growth { threshold, stacks: grown.len(), largest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StackReport;

    /// A saved report whose stacks hold `bytes` from `main;…;leaf`, at time `at`.
    fn report(at: &str, stacks: &[(&str, u64)]) -> Report {
        let mut report: Report = serde_json::from_str(include_str!("../../tests/golden/user.json")).unwrap();
        report.generated_at = at.to_string();
        report.stacks = stacks
            .iter()
            .map(|&(leaf, bytes)| {
                let frames = [leaf, "main"].map(|symbol| Frame { symbol: Some(symbol.into()), ..Frame::default() });
                StackReport { bytes, count: 1, frames: frames.to_vec(), ..StackReport::default() }
            })
            .collect();
        report
    }

    /// The frame named `name` in a flame graph: its tooltip and its fill colour.
    fn frame<'a>(svg: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
        let start = svg.find(&format!("<title>{name} ("))?;
        let title = svg[start + 7..].split("</title>").next()?;
        let fill = svg[start..].split(r#"fill=""#).nth(1)?.split('"').next()?;
        Some((title, fill))
    }

    #[test]
    fn the_differential_flame_graph_is_as_wide_as_after_and_coloured_by_the_change() {
        let before = report("10:00", &[("leak", 1000), ("fixed", 500), ("steady", 300)]);
        let after = report("11:00", &[("leak", 4000), ("steady", 300), ("new", 700)]);
        let svg = String::from_utf8(render_svg(&before, &after).unwrap()).unwrap();
        // Widths are the second report's bytes; the change is the share of the whole.
        let (leak, leak_fill) = frame(&svg, "leak").unwrap();
        assert_eq!(leak, "leak (4,000 bytes, 80.00%; +60.00%)");
        let (new, new_fill) = frame(&svg, "new").unwrap();
        assert_eq!(new, "new (700 bytes, 14.00%; +14.00%)");
        let (steady, steady_fill) = frame(&svg, "steady").unwrap();
        assert_eq!(steady, "steady (300 bytes, 6.00%; 0.00%)");
        // Red for growth, the deeper the larger; white for no change.
        assert_eq!(leak_fill, "rgb(255,100,100)");
        assert!(new_fill.starts_with("rgb(255,") && new_fill != leak_fill, "{new_fill}");
        assert_eq!(steady_fill, "rgb(250,250,250)");
        // What went away has no width after: the subtitle counts it.
        assert!(frame(&svg, "fixed").is_none());
        assert!(svg.contains("Change in outstanding memory: +3.1 KiB in 3 stacks"), "{svg}");
        let summary = "10:00 → 11:00; red grew (+3.6 KiB in 2 stacks), blue shrank (-500 B in 1 stack); width: bytes \
                       after (1 stack gone: not drawn)";
        assert!(svg.contains(summary), "{svg}");
    }

    #[test]
    fn shrinking_is_blue_and_an_empty_second_report_still_draws() {
        let before = report("10:00", &[("leak", 4000)]);
        let after = report("11:00", &[("leak", 1000)]);
        let svg = String::from_utf8(render_svg(&before, &after).unwrap()).unwrap();
        let (leak, fill) = frame(&svg, "leak").unwrap();
        assert_eq!(leak, "leak (1,000 bytes, 100.00%; -300.00%)");
        assert_eq!(fill, "rgb(100,100,255)");
        let svg = String::from_utf8(render_svg(&before, &report("11:00", &[])).unwrap()).unwrap();
        assert!(svg.contains("nothing outstanding"));
    }
}
