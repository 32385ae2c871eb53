//! Writing report files: checked before tracing starts, written atomically at the end.

use std::{io::Write as _, path::Path};

use crate::error::{Error, Result};

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

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see a
/// half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let output_error = |source| Error::Output { path: path.to_path_buf(), source };
    let temp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(output_error)
}
