//! tracefs: finding (or mounting) it, and reading tracepoint field offsets from the events'
//! `format` files, since layouts differ between events and kernel versions.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Returns the tracefs mount point, mounting tracefs at /sys/kernel/tracing when it is not
/// mounted anywhere (and saying so on stderr).
pub fn ensure_mounted() -> Result<PathBuf> {
    for candidate in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in a constant");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL in a constant");
    // SAFETY: plain mount(2) with NUL-terminated strings and no data.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(Error::Tracefs(std::io::Error::last_os_error()));
    }
    crate::say!("leaktrace: mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

/// Offset and size of each field of one tracepoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFormat {
    fields: HashMap<String, (u32, u32)>,
}

impl EventFormat {
    /// Reads `events/<category>/<event>/format`; `None` when the event does not exist.
    pub fn read(tracefs: &Path, category: &str, event: &str) -> Option<Self> {
        std::fs::read_to_string(tracefs.join("events").join(category).join(event).join("format"))
            .ok()
            .map(|text| Self::parse(&text))
    }

    /// Parses the text of a `format` file.
    pub fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            // "\tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;"
            let mut name = None;
            let mut offset = None;
            let mut size = None;
            for part in line.split(';').map(str::trim) {
                if let Some(decl) = part.strip_prefix("field:") {
                    // The name is the last word of the declaration, without any array suffix.
                    name = decl.split_whitespace().last().map(|n| n.split('[').next().unwrap_or(n).to_string());
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            if let (Some(name), Some(offset), Some(size)) = (name, offset, size) {
                fields.insert(name, (offset, size));
            }
        }
        Self { fields }
    }

    /// Offset of `field`, checking that it has the expected size.
    pub fn offset(&self, event: &str, field: &str, size: u32) -> Result<u32> {
        match self.fields.get(field) {
            Some(&(offset, actual)) if actual == size => Ok(offset),
            Some(&(_, actual)) => Err(Error::UnsupportedKernel(format!(
                "tracepoint {event}: field {field} is {actual} bytes, expected {size}; this kernel's layout is not supported"
            ))),
            None => Err(Error::UnsupportedKernel(format!("tracepoint {event} has no field {field} on this kernel"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kmem_cache_alloc_of_6_18() {
        let format = EventFormat::parse(include_str!("../../tests/data/kmem_cache_alloc-6.18.format"));
        assert_eq!(format.offset("kca", "ptr", 8).unwrap(), 16);
        assert_eq!(format.offset("kca", "name", 4).unwrap(), 24);
        assert_eq!(format.offset("kca", "bytes_alloc", 8).unwrap(), 40);
        assert_eq!(format.offset("kca", "gfp_flags", 8).unwrap(), 48);
        assert!(format.offset("kca", "ptr", 4).is_err());
        assert!(format.offset("kca", "nope", 8).is_err());
    }

    #[test]
    fn parses_an_older_layout() {
        // kmalloc of 5.15: no bytes_req/bytes_alloc reordering, the same names at other offsets.
        let text = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                    \tfield:unsigned long call_site;\toffset:8;\tsize:8;\tsigned:0;\n\
                    \tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;\n\
                    \tfield:size_t bytes_req;\toffset:24;\tsize:8;\tsigned:0;\n\
                    \tfield:size_t bytes_alloc;\toffset:32;\tsize:8;\tsigned:0;\n\
                    \tfield:gfp_t gfp_flags;\toffset:40;\tsize:4;\tsigned:0;\n";
        let format = EventFormat::parse(text);
        assert_eq!(format.offset("kmalloc", "bytes_alloc", 8).unwrap(), 32);
        assert_eq!(format.offset("kmalloc", "gfp_flags", 4).unwrap(), 40);
    }
}
