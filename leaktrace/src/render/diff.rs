//! Comparing two reports: per stack, the change in outstanding bytes and count.
//!
//! Stacks are matched by their frame names (not addresses), so reports of two runs of the
//! same program match even though address-space randomization moved the code.

use std::{collections::HashMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use super::names::folded_path;
use crate::model::{Frame, Report, Totals};

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
