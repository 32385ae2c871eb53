//! pprof profiles (profile.proto, gzipped), readable by `go tool pprof`, Parca, Pyroscope
//! and speedscope. The message types mirror
//! <https://github.com/google/pprof/blob/main/proto/profile.proto>; prost encodes them.

use std::collections::HashMap;
use std::io::Write as _;

use prost::Message;

use super::names::{export_frames, frame_name};
use crate::model::{Frame, FrameKind, Report};

/// The mapping of PHP frames.
const PHP_MAPPING: &str = "[php]";

#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
    /// Free-form notes (string table indices).
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

/// A sample's label: a string (`str`) or a number (`num`) under `key`.
#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Mapping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "5")]
    filename: i64,
    #[prost(int64, tag = "6")]
    build_id: i64,
    #[prost(bool, tag = "7")]
    has_functions: bool,
    #[prost(bool, tag = "8")]
    has_filenames: bool,
    #[prost(bool, tag = "9")]
    has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    has_inline_frames: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(uint64, tag = "3")]
    address: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

/// Interns strings; index 0 is the empty string, as the format requires.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&id) = self.index.get(s) {
            return id;
        }
        let id = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), id);
        id
    }
}

/// The tables of a profile being built, each entry given an id on first use.
#[derive(Default)]
struct Builder {
    strings: Strings,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<String, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    // Keyed by address and name: frames without an address (a group named after a cache)
    // must not share one location.
    /// The line is part of the key too: PHP frames have no address, and one PHP function
    /// called from two lines is two locations.
    location_ids: HashMap<(u64, String, u32), u64>,
}

impl Builder {
    /// The mapping of `module` (0 for none).
    fn mapping_id(&mut self, module: &str, build_ids: &std::collections::BTreeMap<String, String>) -> u64 {
        if module.is_empty() {
            return 0;
        }
        if let Some(&id) = self.mapping_ids.get(module) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        let filename = self.strings.id(module);
        let build_id = build_ids.get(module).map_or(0, |id| self.strings.id(id));
        self.mappings.push(Mapping {
            id,
            filename,
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mapping_ids.insert(module.to_string(), id);
        id
    }

    /// The function of `frame`, by name and file.
    fn function_id(&mut self, frame: &Frame) -> u64 {
        let name = frame_name(frame);
        let file = frame.file.clone().unwrap_or_default();
        let key = (name, file);
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name_id = self.strings.id(&key.0);
        let filename = self.strings.id(&key.1);
        self.functions.push(Function { id, name: name_id, system_name: name_id, filename });
        self.function_ids.insert(key, id);
        id
    }

    /// The location of frames sharing one address: inlined calls first, then the function
    /// they were inlined into, which is pprof's order for `Location.line` too.
    fn location_id(&mut self, group: &[Frame], build_ids: &std::collections::BTreeMap<String, String>) -> u64 {
        let address = group[0].address;
        let key = (address, frame_name(&group[0]), group[0].line.filter(|_| address == 0).unwrap_or(0));
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        // PHP frames get a mapping of their own, named `[php]`, so that tools can tell them
        // from native code.
        let module = match group[0].kind {
            Some(FrameKind::Php) => PHP_MAPPING,
            None => group[0].module.as_deref().unwrap_or_default(),
        };
        let mapping_id = self.mapping_id(module, build_ids);
        let line = group
            .iter()
            .map(|frame| Line { function_id: self.function_id(frame), line: i64::from(frame.line.unwrap_or(0)) })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location { id, mapping_id, address, line });
        self.location_ids.insert(key, id);
        id
    }
}

/// Splits frames into runs that share an address (a frame without one stands alone).
fn by_address(frames: &[Frame]) -> Vec<&[Frame]> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let address = frames[i].address;
        let mut j = i + 1;
        while address != 0 && j < frames.len() && frames[j].address == address {
            j += 1;
        }
        groups.push(&frames[i..j]);
        i = j;
    }
    groups
}

/// Encodes the report as a gzipped pprof profile with the sample types
/// `inuse_space`/bytes and `inuse_objects`/count.
pub fn render(report: &Report) -> Vec<u8> {
    let mut b = Builder::default();
    b.strings.id("");
    let sample_type = vec![
        ValueType { r#type: b.strings.id("inuse_space"), unit: b.strings.id("bytes") },
        ValueType { r#type: b.strings.id("inuse_objects"), unit: b.strings.id("count") },
    ];
    let mut samples: Vec<Sample> = Vec::new();
    for stack in &report.stacks {
        let frames = export_frames(stack);
        let location_id: Vec<u64> =
            by_address(&frames).into_iter().map(|group| b.location_id(group, &report.build_ids)).collect();
        // PHP's heap traced beside the C one: each sample says its heap (`-tagfocus heap=php`).
        let heap: Vec<Label> = stack
            .heap
            .map(|h| Label { key: b.strings.id("heap"), str: b.strings.id(h.name()), num: 0 })
            .into_iter()
            .collect();
        if stack.holders.is_empty() {
            samples.push(Sample { location_id, value: vec![stack.bytes as i64, stack.count as i64], label: heap });
            continue;
        }
        // Several processes: one sample per holder, labelled, so that pprof can filter and
        // group by process (`-tagfocus pid=…`, `-tags`).
        for holder in &stack.holders {
            let mut label = vec![
                Label { key: b.strings.id("pid"), str: 0, num: i64::from(holder.pid) },
                Label { key: b.strings.id("comm"), str: b.strings.id(&holder.comm), num: 0 },
            ];
            label.extend(heap.iter().cloned());
            let value = vec![holder.bytes as i64, holder.count as i64];
            samples.push(Sample { location_id: location_id.clone(), value, label });
        }
    }
    let time_nanos = chrono::DateTime::parse_from_rfc3339(&report.started_at)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0);
    // Sampled values are already scaled to estimates, as Go's heap profiles are; the period
    // says how they were sampled.
    let sampling = report.user().and_then(|u| u.sampling.as_ref());
    let comment = match sampling {
        Some(s) => vec![b
            .strings
            .id(&format!("estimates from allocations sampled once per {} bytes on average", s.period_bytes))],
        None => Vec::new(),
    };
    let profile = Profile {
        period_type: Some(ValueType { r#type: b.strings.id("space"), unit: b.strings.id("bytes") }),
        period: sampling.map_or(1, |s| s.period_bytes as i64),
        comment,
        default_sample_type: b.strings.id("inuse_space"),
        sample_type,
        sample: samples,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        string_table: std::mem::take(&mut b.strings.table),
        time_nanos,
        duration_nanos: (report.duration_s * 1e9) as i64,
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec()).expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}
