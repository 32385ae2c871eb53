//! Where the PHP VM keeps what a stack needs, per PHP version, and how a PHP binary is
//! recognized. Debian's PHP binaries are stripped, so the offsets cannot come from DWARF:
//! they are taken from php-src's headers at each version's tag (Zend/zend_globals.h,
//! zend_compile.h, zend_types.h) and checked against the binaries at hand (8.2: the
//! accesses of `zend_get_executed_filename_ex` in Debian's php8.2 read
//! `executor_globals+0x1e8`, `execute_data+0x18` and `func+0x98`).

use object::{Object, ObjectSegment, ObjectSymbol};

/// Offsets that differ between versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `major.minor`.
    pub version: (u8, u8),
    /// `offsetof(zend_executor_globals, current_execute_data)`.
    pub current_execute_data: u64,
    /// `offsetof(zend_op_array, filename)`.
    pub op_array_filename: u64,
}

/// The versions whose layout is known. `current_execute_data` is at the same offset in all
/// of them; `zend_op_array.filename` moves as fields are added or moved before it
/// (`attributes` in 8.0, `doc_comment` among the common fields in 8.2).
pub const LAYOUTS: &[Layout] = &[
    Layout { version: (7, 4), current_execute_data: 488, op_array_filename: 136 },
    Layout { version: (8, 0), current_execute_data: 488, op_array_filename: 144 },
    Layout { version: (8, 1), current_execute_data: 488, op_array_filename: 144 },
    Layout { version: (8, 2), current_execute_data: 488, op_array_filename: 152 },
    Layout { version: (8, 3), current_execute_data: 488, op_array_filename: 144 },
    Layout { version: (8, 4), current_execute_data: 488, op_array_filename: 168 },
];

/// Offsets that have not changed from 7.4 to 8.4.
pub mod fixed {
    /// `offsetof(zend_execute_data, opline)`.
    pub const EXECUTE_DATA_OPLINE: u32 = 0;
    /// `offsetof(zend_execute_data, func)`.
    pub const EXECUTE_DATA_FUNC: u32 = 24;
    /// `offsetof(zend_execute_data, This.u1.type_info)`: the call info flags.
    pub const EXECUTE_DATA_CALL_INFO: u32 = 40;
    /// `offsetof(zend_execute_data, prev_execute_data)`.
    pub const EXECUTE_DATA_PREV: u32 = 48;
    /// `offsetof(zend_op, lineno)`.
    pub const OP_LINENO: u32 = 24;
    /// `offsetof(zend_function, common.function_name)`.
    pub const FUNCTION_NAME: u64 = 8;
    /// `offsetof(zend_function, common.scope)`.
    pub const FUNCTION_SCOPE: u64 = 16;
    /// `offsetof(zend_class_entry, name)`.
    pub const CLASS_NAME: u64 = 8;
    /// `offsetof(zend_string, len)`.
    pub const STRING_LEN: u64 = 16;
    /// `offsetof(zend_string, val)`.
    pub const STRING_VAL: u64 = 24;
    // The eBPF walk reads a frame's first 7 words at once and picks these fields out of them.
    const _: () = {
        let fields = [EXECUTE_DATA_OPLINE, EXECUTE_DATA_FUNC, EXECUTE_DATA_CALL_INFO, EXECUTE_DATA_PREV];
        let mut i = 0;
        while i < fields.len() {
            assert!(fields[i].is_multiple_of(8) && fields[i] < 56);
            i += 1;
        }
    };
    /// `ZEND_CALL_TOP`: the frame is the first one its native `execute_ex` runs.
    pub const CALL_TOP: u32 = 1 << 17;
    /// `zend_function.type` of a C function.
    pub const INTERNAL_FUNCTION: u8 = 1;
    /// `zend_function.type` of PHP code.
    pub const USER_FUNCTION: u8 = 2;
    /// `zend_function.type` of `eval()`'d code.
    pub const EVAL_CODE: u8 = 4;
}

/// What a PHP binary (executable or libphp) is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binary {
    /// A non-thread-safe build: `executor_globals` is at this virtual address of the file.
    Nts {
        /// `major.minor.patch`.
        version: (u8, u8, u8),
        /// Address of `executor_globals` in the file.
        executor_globals: u64,
    },
    /// A thread-safe (ZTS) build: its globals are per thread, found through TLS.
    Zts {
        /// `major.minor.patch`, when found.
        version: Option<(u8, u8, u8)>,
    },
}

/// True for file names that may be a PHP binary: `php`, `php8.2`, `php-fpm8.2`, `php-cgi`,
/// `libphp.so`, `libphp8.2.so`.
pub fn may_be_php(file_name: &str) -> bool {
    file_name.starts_with("php") || file_name.starts_with("libphp")
}

/// Recognizes a PHP binary by its exported executor globals; none for any other file.
pub fn inspect(data: &[u8]) -> Option<Binary> {
    let file = object::File::parse(data).ok()?;
    let mut globals = None;
    let mut zts = false;
    for symbol in file.dynamic_symbols() {
        match symbol.name() {
            Ok("executor_globals") if symbol.address() != 0 => globals = Some(symbol.address()),
            Ok("executor_globals_offset") => zts = true,
            _ => {}
        }
    }
    let version = version_of(data);
    match (globals, zts) {
        (_, true) => Some(Binary::Zts { version }),
        (Some(executor_globals), false) => Some(Binary::Nts { version: version?, executor_globals }),
        (None, false) => None,
    }
}

/// The version in the `X-Powered-By: PHP/8.2.36` header every SAPI can send.
pub fn version_of(data: &[u8]) -> Option<(u8, u8, u8)> {
    const NEEDLE: &[u8] = b"X-Powered-By: PHP/";
    let at = data.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &data[at..data.len().min(at + 32)];
    let end = rest.iter().position(|&b| !(b.is_ascii_digit() || b == b'.')).unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let mut parts = text.split('.').map(|p| p.parse::<u8>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// The layout of `version`, if it is in the table.
pub fn layout_of(version: (u8, u8, u8)) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.version == (version.0, version.1))
}

/// The virtual address the bytes at `file_offset` are loaded at, from the program headers.
pub fn file_offset_to_address(data: &[u8], file_offset: u64) -> Option<u64> {
    let file = object::File::parse(data).ok()?;
    file.segments().find_map(|segment| {
        let (start, size) = segment.file_range();
        (start <= file_offset && file_offset < start + size).then(|| segment.address() + (file_offset - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_from_the_powered_by_header() {
        assert_eq!(version_of(b"\0X-Powered-By: PHP/8.2.36\0"), Some((8, 2, 36)));
        assert_eq!(version_of(b"X-Powered-By: PHP/7.4.3-4ubuntu2\0"), Some((7, 4, 3)));
        assert_eq!(version_of(b"X-Powered-By: ASP.NET"), None);
        assert_eq!(layout_of((8, 2, 36)).map(|l| l.op_array_filename), Some(152));
        assert_eq!(layout_of((7, 3, 1)), None);
        assert_eq!(layout_of((8, 5, 0)), None);
    }

    #[test]
    fn php_file_names() {
        for name in ["php", "php8.2", "php-fpm8.2", "php-cgi", "libphp8.2.so", "libphp.so"] {
            assert!(may_be_php(name), "{name}");
        }
        for name in ["libc.so.6", "python3", "ffi.so"] {
            assert!(!may_be_php(name), "{name}");
        }
    }
}
