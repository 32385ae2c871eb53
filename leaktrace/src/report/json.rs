//! JSON output: the report model serialized as-is, written atomically.

use std::{io::Write as _, path::Path};

use super::Report;
use crate::error::{Error, Result};

/// Serializes `report` (pretty-printed, newline-terminated).
pub fn to_string(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report model always serializes");
    text.push('\n');
    text
}

/// Parses a report written by [`write_atomic`].
pub fn from_str(text: &str) -> serde_json::Result<Report> {
    serde_json::from_str(text)
}

/// Temporary file beside `path`, so the final rename stays on one filesystem.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Checks up front that `path` can be written, so a bad path fails before tracing starts.
pub fn check_writable(path: &Path) -> Result<()> {
    let output_error = |source| Error::Output { path: path.to_path_buf(), source };
    if path.is_dir() {
        return Err(output_error(std::io::Error::from(std::io::ErrorKind::IsADirectory)));
    }
    let temp = temp_path(path);
    std::fs::File::create(&temp).map_err(output_error)?;
    std::fs::remove_file(&temp).map_err(output_error)
}

/// Writes `report` to `path` through a temporary file and a rename, so readers never see a
/// half-written report.
pub fn write_atomic(report: &Report, path: &Path) -> Result<()> {
    let output_error = |source| Error::Output { path: path.to_path_buf(), source };
    let temp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(to_string(report).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(output_error)
}
