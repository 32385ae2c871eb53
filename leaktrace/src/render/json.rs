//! JSON output: the report model serialized as-is.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::Report;

/// Serializes `report` (pretty-printed, newline-terminated).
pub fn to_string(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report model always serializes");
    text.push('\n');
    text
}

/// Reads a report saved with `--json`.
pub fn load(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse(&text).map_err(|source| Error::BadReport { path: path.to_path_buf(), source })
}

/// Parses the text of a saved report, and checks the figures that rendering adds up or
/// subtracts.
pub fn parse(text: &str) -> serde_json::Result<Report> {
    let report: Report = serde_json::from_str(text)?;
    check_figures(&report).map_err(<serde_json::Error as serde::de::Error>::custom)?;
    Ok(report)
}

/// leaktrace never writes a figure past 2^54 (16 PiB, more than any machine holds) nor stacks
/// whose bytes or counts add up past it: such a file was edited or corrupted. The renderers
/// add the figures, a diff subtracts them as signed numbers, and the differential flame graph
/// multiplies a difference by 150 to colour it: below 2^54 none of that can overflow.
fn check_figures(report: &Report) -> std::result::Result<(), String> {
    const LIMIT: u64 = 1 << 54;
    let (mut bytes, mut count) = (0u64, 0u64);
    for stack in &report.stacks {
        bytes = bytes.saturating_add(stack.bytes);
        count = count.saturating_add(stack.count);
    }
    if bytes > LIMIT || count > LIMIT {
        return Err("the stacks' bytes or counts add up past 2^54".into());
    }
    let sections =
        [("totals", &report.totals), ("too_young", &report.too_young), ("without_stack", &report.without_stack)];
    match sections.iter().find(|(_, t)| t.bytes > LIMIT || t.count > LIMIT) {
        Some((name, _)) => Err(format!("{name} past 2^54")),
        None => Ok(()),
    }
}
