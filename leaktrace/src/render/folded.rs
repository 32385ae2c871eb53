//! Folded stacks (`root;…;leaf value`), the input format of flamegraph.pl, inferno and
//! speedscope. Stacks with the same names are merged; lines are sorted.

use std::collections::BTreeMap;

use super::names::folded_path;
use crate::model::Report;

/// What each line's value counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// Outstanding bytes.
    Bytes,
    /// Outstanding allocations.
    Count,
}

/// Renders `report` as folded stacks.
pub fn render(report: &Report, weight: Weight) -> String {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for stack in &report.stacks {
        let value = match weight {
            Weight::Bytes => stack.bytes,
            Weight::Count => stack.count,
        };
        if value == 0 {
            // Churn stacks hold nothing; a zero-width frame would only clutter the graph.
            continue;
        }
        let path = folded_path(stack);
        let path = if path.is_empty() { "[no frames]".to_string() } else { path };
        *merged.entry(path).or_default() += value;
    }
    merged.into_iter().map(|(path, value)| format!("{path} {value}\n")).collect()
}
