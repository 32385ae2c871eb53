//! Compiles an ELF file's DWARF call-frame information into the compact unwind rows the
//! eBPF unwinder binary-searches (`leaktrace_common::unwind::UnwindRow`).
//!
//! Every row of every FDE becomes one `UnwindRow`; rows the eBPF program cannot follow
//! (DWARF expressions, unusual registers) are kept as `Unsupported` so that the unwinder
//! stops there instead of guessing. x86-64 only: the return address is always at CFA-8.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};
use leaktrace_common::unwind::{RowKind, UnwindRow, MAX_TABLE_ROWS};
use object::{Object, ObjectSection, ObjectSegment};

type Slice<'d> = EndianSlice<'d, LittleEndian>;

/// The unwind rows of one ELF file.
#[derive(Clone, Debug)]
pub struct CompiledTable {
    /// Sorted by pc, strictly increasing pc, pc relative to `base`.
    pub rows: Vec<UnwindRow>,
    /// ELF virtual address that row pc 0 stands for (lowest FDE start).
    pub base: u64,
    /// Where the CFI came from.
    pub source: UnwindSource,
    /// FDEs (functions) described.
    pub functions: usize,
    /// FDEs whose CFA is rbp-based for some row (they set up a frame pointer).
    pub frame_pointer_functions: usize,
    /// Rows of kind Unsupported.
    pub unsupported_rows: usize,
    /// PT_LOAD segments of the ELF file: (p_offset, p_vaddr, p_filesz, p_memsz).
    pub segments: Vec<(u64, u64, u64, u64)>,
}

/// Where a table's call-frame information came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnwindSource {
    /// The file's `.eh_frame`.
    EhFrame,
    /// The file's `.debug_frame`.
    DebugFrame,
    /// A separate debug file (found by build id or `.gnu_debuglink`).
    SeparateDebugFile(PathBuf),
}

impl CompiledTable {
    /// True when most functions (at least half of FDEs) set up a frame pointer: the module
    /// was built with frame pointers.
    pub fn has_frame_pointers(&self) -> bool {
        self.functions > 0 && self.frame_pointer_functions * 2 >= self.functions
    }

    /// The ELF virtual address at file offset `offset` (through the PT_LOAD segment
    /// containing it), for computing a mapping's load bias.
    pub fn vaddr_of_file_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(off, _, filesz, _)| offset >= off && offset - off < filesz)
            .map(|&(off, vaddr, _, _)| vaddr + (offset - off))
    }

    /// The row covering ELF virtual address `vaddr` (last row with base+pc <= vaddr), None
    /// before the first row or past u32 range. A reference implementation of the lookup
    /// the eBPF program does.
    pub fn lookup(&self, vaddr: u64) -> Option<UnwindRow> {
        let pc = u32::try_from(vaddr.checked_sub(self.base)?).ok()?;
        let after = self.rows.partition_point(|row| row.pc <= pc);
        after.checked_sub(1).map(|index| self.rows[index])
    }
}

/// Why a file's unwind rows could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read.
    #[error("cannot read {path}: {1}", path = .0.display())]
    Io(PathBuf, std::io::Error),
    /// Not an ELF file, a truncated or malformed one, or not x86-64.
    #[error("malformed or unsupported ELF file {path}: {1}", path = .0.display())]
    Elf(PathBuf, String),
    /// Neither the file nor a separate debug file has call-frame information.
    #[error("no unwind information (.eh_frame, .debug_frame, separate debug file) for {}", .0.display())]
    NoUnwindInfo(PathBuf),
    /// More than `MAX_TABLE_ROWS` rows, or functions spread over more than 4 GiB.
    #[error("unwind table of {path} too large: {1} rows (limits: {MAX_TABLE_ROWS} rows, 4 GiB)", path = .0.display())]
    TooLarge(PathBuf, usize),
}

/// A PT_LOAD segment: (p_offset, p_vaddr, p_filesz, p_memsz).
type Segment = (u64, u64, u64, u64);

/// The rows of one CFI section, before sorting.
#[derive(Default)]
struct Collected {
    /// (address, FDE number + 1 or 0 for the NoInfo rows after functions, row with pc 0):
    /// on ties the higher number wins.
    rows: Vec<(u64, usize, UnwindRow)>,
    starts: HashSet<u64>,
    ends: Vec<u64>,
    functions: usize,
    frame_pointer_functions: usize,
}

/// Compiles the unwind rows of the ELF file at `path`.
pub fn compile(path: &Path) -> Result<CompiledTable, TableError> {
    let data = std::fs::read(path).map_err(|e| TableError::Io(path.to_path_buf(), e))?;
    let file = parse_elf(path, &data)?;
    let segments: Vec<Segment> =
        file.segments().map(|s| (s.file_range().0, s.address(), s.file_range().1, s.size())).collect();
    let elf_err = |e: String| TableError::Elf(path.to_path_buf(), e);

    if let Some(c) = collect_section(&file, ".eh_frame", &segments).map_err(elf_err)? {
        return finish(path, c, UnwindSource::EhFrame, segments);
    }
    if let Some(c) = collect_section(&file, ".debug_frame", &segments).map_err(elf_err)? {
        return finish(path, c, UnwindSource::DebugFrame, segments);
    }
    for candidate in debug_file_candidates(path, &file) {
        // A missing or unusable candidate is not an error: the next one may do.
        let Ok(debug_data) = std::fs::read(&candidate) else { continue };
        let Ok(debug_file) = parse_elf(&candidate, &debug_data) else { continue };
        let collected = match collect_section(&debug_file, ".debug_frame", &segments) {
            Ok(None) => collect_section(&debug_file, ".eh_frame", &segments),
            other => other,
        };
        if let Ok(Some(c)) = collected {
            return finish(path, c, UnwindSource::SeparateDebugFile(candidate), segments);
        }
    }
    Err(TableError::NoUnwindInfo(path.to_path_buf()))
}

fn parse_elf<'d>(path: &Path, data: &'d [u8]) -> Result<object::File<'d>, TableError> {
    let err = |e: String| TableError::Elf(path.to_path_buf(), e);
    let file = object::File::parse(data).map_err(|e| err(e.to_string()))?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(err(format!("not an ELF file ({:?})", file.format())));
    }
    if file.architecture() != object::Architecture::X86_64 {
        return Err(err(format!("architecture {:?}, not x86-64", file.architecture())));
    }
    Ok(file)
}

/// The rows of section `name` (`.eh_frame` or `.debug_frame`); None when it is absent, has
/// no data (NOBITS in debug files) or no usable FDE.
fn collect_section(file: &object::File<'_>, name: &str, segments: &[Segment]) -> Result<Option<Collected>, String> {
    let Some(section) = file.section_by_name(name) else { return Ok(None) };
    let compressed = section.compressed_data().map_err(|e| format!("{name}: {e}"))?;
    let data = match compressed.format {
        object::CompressionFormat::None => Cow::Borrowed(compressed.data),
        // Debug files often have compressed sections; object is built without its
        // compression feature, and flate2 is a dependency anyway.
        object::CompressionFormat::Zlib => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(compressed.data)
                .take(compressed.uncompressed_size)
                .read_to_end(&mut out)
                .map_err(|e| format!("{name}: {e}"))?;
            Cow::Owned(out)
        }
        _ => return Ok(None),
    };
    if name == ".debug_frame" {
        let mut debug_frame = DebugFrame::new(&data, LittleEndian);
        debug_frame.set_address_size(8);
        return Ok(collect(&debug_frame, &BaseAddresses::default(), segments));
    }
    let mut bases = BaseAddresses::default().set_eh_frame(section.address());
    let address = |name| file.section_by_name(name).map(|s| s.address());
    if let Some(a) = address(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(a);
    }
    if let Some(a) = address(".text") {
        bases = bases.set_text(a);
    }
    if let Some(a) = address(".got") {
        bases = bases.set_got(a);
    }
    let mut eh_frame = EhFrame::new(&data, LittleEndian);
    eh_frame.set_address_size(8);
    Ok(collect(&eh_frame, &bases, segments))
}

/// The rows of every FDE of `section`; None when no FDE is usable.
fn collect<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    bases: &BaseAddresses,
    segments: &[Segment],
) -> Option<Collected> {
    let mut out = Collected::default();
    let mut ctx = Box::new(UnwindContext::new());
    let mut fde_rows = Vec::new();
    let mut entries = section.entries(bases);
    // An entry gimli cannot parse ends the walk: its length is not trustworthy.
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else { continue };
        let Ok(fde) = partial.parse(|s, b, offset| s.cie_from_offset(b, offset)) else { continue };
        let (start, end) = (fde.initial_address(), fde.initial_address().wrapping_add(fde.len()));
        // Skips empty FDEs and those of discarded code (address 0 or a tombstone), which
        // lie outside every loaded segment.
        let loaded =
            segments.is_empty() || segments.iter().any(|&(_, vaddr, _, memsz)| start >= vaddr && start - vaddr < memsz);
        if start == 0 || end <= start || !loaded {
            continue;
        }
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else { continue };
        fde_rows.clear();
        // An FDE whose program fails part-way is dropped whole: its later rows are unknown.
        let complete = loop {
            match table.next_row() {
                Ok(Some(row)) if row.start_address() < row.end_address() => {
                    fde_rows.push((row.start_address(), classify(section, row, fde.is_signal_trampoline())));
                }
                Ok(Some(_)) => {}
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if !complete || fde_rows.is_empty() {
            continue;
        }
        out.functions += 1;
        if fde_rows.iter().any(|(_, r)| r.kind == RowKind::CfaRbp as u8) {
            out.frame_pointer_functions += 1;
        }
        out.starts.insert(start);
        out.ends.push(end);
        let priority = out.functions;
        out.rows.extend(fde_rows.iter().map(|&(address, row)| (address, priority, row)));
    }
    (out.functions > 0).then_some(out)
}

/// `DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11`
/// (`DW_OP_lit10` for IBT PLTs) `; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`: the CFA of
/// a lazy-binding PLT stub, as the linker writes it.
const PLT_EXPRESSION: [u8; 11] = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];

fn is_plt_expression(bytes: &[u8]) -> bool {
    bytes.len() == PLT_EXPRESSION.len()
        && bytes.iter().zip(PLT_EXPRESSION).enumerate().all(|(i, (&b, want))| {
            b == want || (i == 6 && b == 0x3a) // DW_OP_lit10
        })
}

/// The unwind row (with pc 0) of one DWARF row.
fn classify<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    row: &gimli::UnwindTableRow<usize>,
    signal: bool,
) -> UnwindRow {
    let only = |kind: RowKind| UnwindRow { kind: kind as u8, ..UnwindRow::default() };
    if signal {
        return only(RowKind::Signal);
    }
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => return only(RowKind::End),
        Some(RegisterRule::Offset(-8)) => {}
        _ => return only(RowKind::Unsupported),
    }
    let (kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => match (*register, u16::try_from(*offset)) {
            (X86_64::RSP, Ok(offset)) => (RowKind::CfaRsp, offset),
            (X86_64::RBP, Ok(offset)) => (RowKind::CfaRbp, offset),
            _ => return only(RowKind::Unsupported),
        },
        CfaRule::Expression(expression) => {
            let plt = expression.get(section).is_ok_and(|e| is_plt_expression(e.0.slice()));
            return only(if plt { RowKind::Plt } else { RowKind::Unsupported });
        }
    };
    let rbp_offset = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(n)) if n != 0 && n % 8 == 0 => match i8::try_from(n / 8) {
            Ok(units) => units,
            Err(_) => return only(RowKind::Unsupported),
        },
        Some(_) => return only(RowKind::Unsupported),
    };
    UnwindRow { pc: 0, cfa_offset, kind: kind as u8, rbp_offset }
}

/// Separate debug files that may describe `path`, most specific first.
fn debug_file_candidates(path: &Path, file: &object::File<'_>) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(Some(id)) = file.build_id() {
        if id.len() > 1 {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            candidates.push(PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..])));
        }
    }
    if let Ok(Some((name, _crc))) = file.gnu_debuglink() {
        let name = Path::new(std::str::from_utf8(name).unwrap_or_default());
        let dir = path.parent().unwrap_or(Path::new("."));
        if !name.as_os_str().is_empty() {
            // The link may name the file itself (same name, same directory): skip that.
            let same = dir.join(name);
            if same.canonicalize().ok() != path.canonicalize().ok() {
                candidates.push(same);
            }
            candidates.push(dir.join(".debug").join(name));
            candidates.push(Path::new("/usr/lib/debug").join(dir.strip_prefix("/").unwrap_or(dir)).join(name));
        }
    }
    candidates
}

/// Sorts and compacts the rows of `c` into a table.
fn finish(
    path: &Path,
    mut c: Collected,
    source: UnwindSource,
    segments: Vec<Segment>,
) -> Result<CompiledTable, TableError> {
    let no_info = UnwindRow { kind: RowKind::NoInfo as u8, ..UnwindRow::default() };
    c.rows.extend(c.ends.iter().filter(|end| !c.starts.contains(end)).map(|&end| (end, 0, no_info)));
    // Stable: among rows of one FDE at one address, the last one evaluated wins.
    c.rows.sort_by_key(|&(address, priority, _)| (address, priority));
    c.rows.dedup_by(|next, prev| {
        let same = next.0 == prev.0;
        if same {
            *prev = *next;
        }
        same
    });
    let base = c.rows.first().map_or(0, |r| r.0);
    let too_large = |rows| TableError::TooLarge(path.to_path_buf(), rows);
    let mut rows = Vec::with_capacity(c.rows.len());
    for &(address, _, row) in &c.rows {
        let pc = u32::try_from(address - base).map_err(|_| too_large(c.rows.len()))?;
        // A row that repeats what the row before says is covered by that one already.
        if rows.last().is_none_or(|p: &UnwindRow| {
            (p.kind, p.cfa_offset, p.rbp_offset) != (row.kind, row.cfa_offset, row.rbp_offset)
        }) {
            rows.push(UnwindRow { pc, ..row });
        }
    }
    if rows.len() > MAX_TABLE_ROWS {
        return Err(too_large(rows.len()));
    }
    let unsupported_rows = rows.iter().filter(|r| r.kind == RowKind::Unsupported as u8).count();
    Ok(CompiledTable {
        rows,
        base,
        source,
        functions: c.functions,
        frame_pointer_functions: c.frame_pointer_functions,
        unsupported_rows,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    fn kind(row: &UnwindRow) -> Option<RowKind> {
        RowKind::from_byte(row.kind)
    }

    /// Address and size of symbol `name` in the ELF file at `path`.
    fn symbol(path: &Path, name: &str) -> (u64, u64) {
        use object::ObjectSymbol;
        let data = std::fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let sym = file.dynamic_symbols().chain(file.symbols()).find(|s| s.name() == Ok(name));
        let sym = sym.unwrap_or_else(|| panic!("no symbol {name} in {}", path.display()));
        (sym.address(), sym.size())
    }

    /// Rows covering `[address, address + size)`.
    fn rows_of(table: &CompiledTable, (address, size): (u64, u64)) -> Vec<UnwindRow> {
        let (start, end) = (address - table.base, address + size - table.base);
        table.rows.iter().filter(|r| u64::from(r.pc) >= start && u64::from(r.pc) < end).copied().collect()
    }

    #[test]
    fn libc_table() {
        let started = std::time::Instant::now();
        let table = compile(Path::new(LIBC)).unwrap();
        let elapsed = started.elapsed();
        let (rows, bytes, functions) = (table.rows.len(), table.rows.len() * 8, table.functions);
        let (fp, unsupported) = (table.frame_pointer_functions, table.unsupported_rows);
        crate::say!("libc: {rows} rows, {bytes} bytes, {functions} functions ({fp} with frame pointer)");
        crate::say!("libc: {unsupported} unsupported rows, compiled in {elapsed:?}");
        assert_eq!(table.source, UnwindSource::EhFrame);
        assert!(table.functions > 1000, "{} functions", table.functions);
        assert!(table.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        assert!(table.rows.iter().all(|r| kind(r).is_some()));
        assert!(!table.has_frame_pointers());
        let (malloc, _) = symbol(Path::new(LIBC), "malloc");
        let row = table.lookup(malloc).unwrap();
        assert_eq!((kind(&row), row.cfa_offset, row.rbp_offset), (Some(RowKind::CfaRsp), 8, 0));
        assert_eq!(table.lookup(table.base.wrapping_sub(1)), None);
        for expected in [RowKind::End, RowKind::NoInfo, RowKind::Signal] {
            assert!(table.rows.iter().any(|r| kind(r) == Some(expected)), "no {expected:?} row");
        }
    }

    #[test]
    fn libc_file_offset_to_vaddr() {
        use object::read::elf::ProgramHeader;
        let data = std::fs::read(LIBC).unwrap();
        let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).unwrap();
        let endian = elf.endian();
        let exec = elf
            .elf_program_headers()
            .iter()
            .find(|p| p.p_type(endian) == object::elf::PT_LOAD && p.p_flags(endian) & object::elf::PF_X != 0)
            .unwrap();
        let table = compile(Path::new(LIBC)).unwrap();
        let (offset, vaddr) = (exec.p_offset(endian), exec.p_vaddr(endian));
        assert_eq!(table.vaddr_of_file_offset(offset), Some(vaddr));
        assert_eq!(table.vaddr_of_file_offset(offset + 0x10), Some(vaddr + 0x10));
        assert_eq!(table.vaddr_of_file_offset(u64::MAX), None);
    }

    #[test]
    fn libc_plt_rows() {
        let data = std::fs::read(LIBC).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let plt = file.section_by_name(".plt").expect("libc has a .plt");
        let table = compile(Path::new(LIBC)).unwrap();
        let rows = rows_of(&table, (plt.address(), plt.size()));
        assert!(rows.iter().any(|r| kind(r) == Some(RowKind::Plt)), "no PLT row: {rows:?}");
        assert!(rows.iter().all(|r| kind(r) != Some(RowKind::Unsupported)), "{rows:?}");
        assert!(is_plt_expression(&[0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3a, 0x2a, 0x33, 0x24, 0x22]));
        assert!(!is_plt_expression(&[0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x39, 0x2a, 0x33, 0x24, 0x22]));
    }

    #[test]
    fn garbage_is_an_elf_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let libc = std::fs::read(LIBC).unwrap();
        let cases = [("random", &random[..]), ("empty", &[][..]), ("truncated", &libc[..64 * 1024])];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            match compile(&path) {
                Err(e @ TableError::Elf(..)) => assert!(e.to_string().contains(name), "{e}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(compile(&dir.path().join("missing")), Err(TableError::Io(..))));
    }

    const SOURCE: &str = r#"
        #include <string.h>
        __attribute__((noinline)) long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
        __attribute__((noinline)) int big(int n) {
            volatile char buf[8192];
            memset((char *)buf, n, sizeof buf);
            return buf[n & 8191] + (int)fib(n);
        }
        __attribute__((noinline)) int twice(int n) { return big(n) + big(n + 1); }
        int entry(int n) { return twice(n) * 3; }
    "#;

    /// Builds `SOURCE` as a shared library with `flags`; None when there is no C compiler.
    fn build(dir: &Path, name: &str, flags: &[&str]) -> Option<PathBuf> {
        let source = dir.join("t.c");
        std::fs::write(&source, SOURCE).unwrap();
        let out = dir.join(name);
        let status =
            Command::new("cc").args(["-O2", "-shared", "-fPIC"]).args(flags).arg(&source).arg("-o").arg(&out).status();
        match status {
            Ok(s) if s.success() => Some(out),
            Ok(s) => panic!("cc failed: {s}"),
            Err(e) => {
                crate::say!("skipped: cannot run cc: {e}");
                None
            }
        }
    }

    #[test]
    fn frame_pointer_detection() {
        let dir = tempfile::tempdir().unwrap();
        let Some(fp) = build(dir.path(), "fp.so", &["-fno-omit-frame-pointer"]) else { return };
        let Some(nofp) = build(dir.path(), "nofp.so", &["-fomit-frame-pointer"]) else { return };

        let table = compile(&fp).unwrap();
        assert_eq!(table.source, UnwindSource::EhFrame);
        assert!(table.has_frame_pointers(), "{} of {}", table.frame_pointer_functions, table.functions);
        let rows = rows_of(&table, symbol(&fp, "fib"));
        let rbp = UnwindRow { kind: RowKind::CfaRbp as u8, cfa_offset: 16, rbp_offset: -2, pc: 0 };
        assert!(rows.iter().any(|r| UnwindRow { pc: 0, ..*r } == rbp), "{rows:?}");

        let table = compile(&nofp).unwrap();
        assert!(!table.has_frame_pointers(), "{} of {}", table.frame_pointer_functions, table.functions);
        assert_eq!(table.frame_pointer_functions, 0);
        for name in ["fib", "big"] {
            let (address, size) = symbol(&nofp, name);
            let entry = table.lookup(address).map(|r| (kind(&r), r.cfa_offset));
            assert_eq!(entry, Some((Some(RowKind::CfaRsp), 8)), "{name}");
            let rows = rows_of(&table, (address, size));
            let pushed = rows.iter().any(|r| kind(r) == Some(RowKind::CfaRsp) && r.cfa_offset > 8);
            assert!(pushed, "{name}: {rows:?}");
        }
        // The shared library has a lazy-binding PLT (memset): its rows are recognised.
        assert_eq!(table.unsupported_rows, 0, "{:?}", table.rows);
    }

    #[test]
    fn debug_frame_and_separate_debug_file() {
        let dir = tempfile::tempdir().unwrap();
        let flags = ["-g", "-fno-asynchronous-unwind-tables", "-fomit-frame-pointer"];
        let Some(lib) = build(dir.path(), "dbg.so", &flags) else { return };
        let table = compile(&lib).unwrap();
        assert_eq!(table.source, UnwindSource::DebugFrame);
        let rows = rows_of(&table, symbol(&lib, "fib"));
        assert!(rows.iter().any(|r| kind(r) == Some(RowKind::CfaRsp) && r.cfa_offset > 8), "{rows:?}");

        let debug = dir.path().join("dbg.so.debug");
        let objcopy = |args: &[&std::ffi::OsStr]| Command::new("objcopy").args(args).status().map(|s| s.success());
        let kept = objcopy(&["--only-keep-debug".as_ref(), lib.as_os_str(), debug.as_os_str()]);
        if !matches!(kept, Ok(true)) {
            crate::say!("skipped: objcopy unavailable");
            return;
        }
        let link = format!("--add-gnu-debuglink={}", debug.display());
        let args =
            ["--strip-debug".as_ref(), "--remove-section=.note.gnu.build-id".as_ref(), link.as_ref(), lib.as_os_str()];
        assert!(matches!(objcopy(&args), Ok(true)));
        let separate = compile(&lib).unwrap();
        assert_eq!(separate.source, UnwindSource::SeparateDebugFile(debug.clone()));
        assert_eq!(separate.rows, table.rows);
        assert_eq!(separate.segments, table.segments);

        std::fs::remove_file(&debug).unwrap();
        assert!(matches!(compile(&lib), Err(TableError::NoUnwindInfo(_))));
    }
}
