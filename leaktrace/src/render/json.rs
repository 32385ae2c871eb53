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
    serde_json::from_str(&text).map_err(|source| Error::BadReport { path: path.to_path_buf(), source })
}
