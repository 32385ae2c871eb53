//! Golden tests of the text report, what most users read: reports written by hand, with a
//! distinct value in every field, are rendered by `leaktrace report` and compared line by
//! line with the text the format (bcc memleak's wording, docs/json-report.md) gives for those
//! values. A wrong number, a swapped field or a missing line fails.

use std::process::Command;

use leaktrace_integration_tests::*;
use serde_json::{json, Value};

fn render(report: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(report).unwrap()).unwrap();
    let output = Command::new(leaktrace_bin()).args(["report", path.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Compares line by line, so that a failure names the first line that differs.
fn assert_text(rendered: &str, expected: &str) {
    for (i, (got, want)) in rendered.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {}:\n{rendered}", i + 1);
    }
    assert_eq!(rendered, expected, "{rendered}");
}

fn frame(
    address: u64,
    module: Option<&str>,
    symbol: Option<&str>,
    offset: Option<u64>,
    file: Option<&str>,
    line: Option<u64>,
) -> Value {
    json!({"address": address, "module": module, "symbol": symbol, "offset": offset, "file": file, "line": line, "inlined": false})
}

fn common(mode: &str) -> Value {
    json!({
        "schema_version": 1,
        "mode": mode,
        "target": {"pid": 4242, "command": "./app --serve", "exe": "/opt/app/app"},
        "allocator": if mode == "kernel" { "kernel" } else { "/usr/lib/x86_64-linux-gnu/libc.so.6" },
        "started_at": "2026-11-22T05:05:30.000+00:00",
        "generated_at": "2026-11-22T05:05:41.123+00:00",
        "duration_s": 11.123,
        "kernel_release": "6.18.0",
        "target_exited": false,
        "build_ids": {},
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn user_report_text_is_exact() {
    let report = merge(
        common("user"),
        json!({
            "filters": {"older_than_ms": 500, "min_size": 0, "max_size": null, "top": 2, "sort": "bytes"},
            "totals": {"bytes": 34700, "count": 13},
            "too_young": {"bytes": 200, "count": 1},
            "without_stack": {"bytes": 96, "count": 2},
            "lost": {"allocs_map_full": 8, "stack_lost": 3, "stack_collision": 0, "return_without_entry": 0, "pending_map_full": 0,
                     "pending_stale": 0, "out_pointer_unreadable": 0, "probe_misses": 0, "user_stack_lost": 0},
            "activity": {"alloc_calls": 21, "free_calls": 6, "free_unknown": 2, "nested_calls": 1, "failed_allocs": 7, "stacks_cut_short": 1},
            "incomplete": true,
            "stacks": [
                {
                    "bytes": 30000, "count": 3, "oldest_age_ms": 1500,
                    "frames": [
                        {"address": 4198710, "module": "/opt/app/app", "symbol": "inner", "offset": null, "file": "inner.h", "line": 3, "inlined": true},
                        frame(4198710, Some("/opt/app/app"), Some("leak_large"), Some(0x15), Some("app.c"), Some(57)),
                        frame(0x7f0011136, Some("/usr/lib/libfoo.so"), None, Some(0x1136), None, None),
                        frame(0x7f00, None, None, None, None, None),
                    ],
                    "allocations": [
                        {"address": 4096, "size": 10000, "age_ms": 1500},
                        {"address": 20480, "size": 10000, "age_ms": 1200},
                        {"address": 36864, "size": 10000, "age_ms": 700},
                    ],
                    "trend": {"class": "growing", "bytes_per_min": 1258291.0, "r_squared": 0.987, "intervals_grown": 7, "intervals": 8,
                              "allocated_per_min": 2097152.0, "series": []},
                    "cut_short": "frame limit",
                },
                {
                    "bytes": 4000, "count": 4, "oldest_age_ms": 900,
                    "frames": [frame(4198800, Some("/opt/app/app"), Some("leak_bound"), Some(8), Some("app.c"), Some(60))],
                    "trend": {"class": "unclear", "bytes_per_min": 0.0, "r_squared": 1.0, "intervals_grown": 1, "intervals": 2,
                              "allocated_per_min": 100.0, "series": []},
                },
                {
                    "bytes": 500, "count": 5, "oldest_age_ms": 800,
                    "frames": [frame(4198900, Some("/opt/app/app"), Some("leak_small"), Some(9), Some("app.c"), Some(63))],
                },
                {
                    "bytes": 3, "count": 1, "oldest_age_ms": 800,
                    "frames": [frame(4199000, Some("/opt/app/app"), Some("leak_tiny"), Some(10), Some("app.c"), Some(66))],
                },
            ],
            "unwind": {
                "mode": "dwarf", "rows_used": 30671, "rows_capacity": 1048576, "table_bytes": 8388608, "mappings_dropped": 0,
                "table_updates": 2, "library_events_lost": 0,
                "modules": [
                    {"module": "/opt/app/app", "unwinder": "dwarf", "reason": "--unwind dwarf", "rows": 79},
                    {"module": "/usr/lib/x86_64-linux-gnu/libc.so.6", "unwinder": "frame-pointer", "reason": "unwind table full (raise --unwind-rows)", "rows": 0},
                ],
                "stacks_by_end": {"complete": 3, "frame limit": 1},
            },
            "probes": [
                {"function": "malloc", "offset": 0, "handling": "emulated", "return_probe": true},
                {"function": "free", "offset": 3, "handling": "emulated", "return_probe": false},
                {"function": "reallocarray", "offset": 0, "handling": "single_stepped", "return_probe": true},
            ],
        }),
    );
    let expected = "\
[05:05:41.123] Top 2 stacks with outstanding allocations:
\t30000 bytes in 3 allocations from stack (oldest 1500 ms)
\t\ttrend: +1.2 MiB/min, growing, grew in 7/8 intervals (r² 0.99), +2.0 MiB/min allocated
\t\tinner [app] (inlined) inner.h:3
\t\tleak_large+0x15 [app] app.c:57
\t\tlibfoo.so+0x1136
\t\t[unknown] 0x7f00
\t\t(stack cut short: frame limit)
\t\t\taddr = 0x1000 size = 10000 age = 1500 ms
\t\t\taddr = 0x5000 size = 10000 age = 1200 ms
\t\t\taddr = 0x9000 size = 10000 age = 700 ms
\t4000 bytes in 4 allocations from stack (oldest 900 ms)
\t\ttrend: unclear after 2 intervals
\t\tleak_bound+0x8 [app] app.c:60
\t... 2 more stacks hold 503 bytes in 6 allocations
Outstanding: 34700 bytes in 13 allocations; 200 bytes in 1 allocations younger than 500 ms not shown; 96 bytes in 2 allocations have no stack
Lost events: 8 allocations not tracked (allocation map full, raise --max-allocs), 3 stacks not captured (stack map full or unwalkable, raise --stack-storage-size); the figures above may be incomplete
Activity: 21 allocations, 6 frees (2 of untracked blocks: allocated before tracing, or freed again from a thread's cache), 1 nested calls, 7 failed allocations
1 stacks end early: their frame-pointer walk left mapped code (code built without frame pointers)
Unwinding (dwarf): DWARF for app; frame pointers for libc.so.6 (unwind table full (raise --unwind-rows)); 30671 rows of 1048576 (239 KiB of 8192 KiB)
Stacks cut short: 1 frame limit
Probes: 2 of 3 emulated by the kernel; single-stepped (slower): reallocarray+0
";
    assert_text(&render(&report), expected);
    // The text parser the other tests use reads this text back to the same figures.
    let groups = parse_text_groups(expected);
    assert_eq!(groups.iter().map(|g| (g.bytes, g.count)).collect::<Vec<_>>(), [(30000, 3), (4000, 4)]);
    assert_eq!(groups[0].functions(), ["inner", "leak_large", "libfoo.so", "[unknown]"]);
    assert_eq!(groups[0].allocations, [(0x1000, 10000), (0x5000, 10000), (0x9000, 10000)]);
    assert_eq!(groups[0].cut_short.as_deref(), Some("frame limit"));
    assert_eq!(text_outstanding(expected), (34700, 13));
}

#[test]
fn kernel_report_text_is_exact() {
    let kernel_frame = |address: u64, symbol: &str, offset: u64| json!({"address": address, "module": "kernel", "symbol": symbol, "offset": offset, "file": null, "line": null, "inlined": false, "kernel": true});
    let report = merge(
        common("kernel"),
        json!({
            "filters": {"older_than_ms": 0, "min_size": 0, "max_size": null, "top": 10, "sort": "bytes"},
            "totals": {"bytes": 10240, "count": 81},
            "too_young": {"bytes": 0, "count": 0},
            "without_stack": {"bytes": 0, "count": 0},
            "lost": {"allocs_map_full": 0, "stack_lost": 0, "stack_collision": 0, "return_without_entry": 0, "pending_map_full": 0,
                     "pending_stale": 0, "out_pointer_unreadable": 0, "probe_misses": 5, "user_stack_lost": 2},
            "activity": {"alloc_calls": 261, "free_calls": 4729, "free_unknown": 4720, "nested_calls": 0, "failed_allocs": 0, "stacks_cut_short": 0},
            "incomplete": true,
            "stacks": [{
                "bytes": 7680, "count": 40, "oldest_age_ms": 311,
                "frames": [kernel_frame(0xffffffff81234567, "kmem_cache_alloc_noprof", 0x227), kernel_frame(0xffffffff81345678, "alloc_empty_file", 0x3c)],
                "kernel": {
                    "key": "",
                    "requested_bytes": 7360,
                    "caches": [{"name": "filp", "bytes": 7680, "count": 40}],
                    "comms": [
                        {"name": "app[4242]", "bytes": 3840, "count": 20}, {"name": "sh[1]", "bytes": 1920, "count": 10},
                        {"name": "sh[2]", "bytes": 960, "count": 5}, {"name": "sh[3]", "bytes": 576, "count": 3},
                        {"name": "sh[4]", "bytes": 384, "count": 2},
                    ],
                    "user_frames": [frame(0x401136, Some("/opt/app/app"), Some("open_files"), Some(0x21), Some("app.c"), Some(12))],
                    "per_run": {"bytes": 1920.0, "count": 10.0},
                },
            }],
            "kernel": {
                "group_by": "stack",
                "events": ["kmem:kmalloc", "kmem:kfree"],
                "symbols_visible": false,
                "meminfo_start": {"slab": 300000000, "reclaimable": 250000000, "unreclaimable": 50000000},
                "meminfo_now": {"slab": 300102400, "reclaimable": 249948800, "unreclaimable": 50153600},
                "caches": [
                    {"name": "filp", "reclaimable": false, "traced": {"bytes": 7680, "count": 40}, "slabinfo_objects_delta": 94, "slabinfo_bytes_delta": 18048},
                    {"name": "dentry", "reclaimable": true, "traced": {"bytes": 2560, "count": 41}, "slabinfo_objects_delta": -3, "slabinfo_bytes_delta": -576},
                    {"name": "mystery", "reclaimable": null, "traced": {"bytes": 0, "count": 0}, "slabinfo_objects_delta": null, "slabinfo_bytes_delta": null},
                ],
                "traced_unreclaimable_bytes": 7680,
                "runs": {"command": "service x status", "repeat": 4, "completed": 4, "exit_codes": [0, 0, 1, 0]},
            },
        }),
    );
    // SUnreclaim grew by 153600 bytes (150 kB); 7680 traced bytes are 5 % of it.
    let expected = "\
[05:05:41.123] Top 1 stacks with outstanding allocations:
\t7680 bytes in 40 allocations from stack (oldest 311 ms)
\t\tcaches: filp (40 objects, 7680 bytes)
\t\tallocated by: app[4242] (20 objects, 3840 bytes), sh[1] (10 objects, 1920 bytes), sh[2] (5 objects, 960 bytes), sh[3] (3 objects, 576 bytes), 1 more
\t\tper run: 10.00 objects, 1920.0 bytes
\t\tuser stack of the allocating task:
\t\t\topen_files+0x21 [app] app.c:12
\t\tkmem_cache_alloc_noprof+0x227 [kernel]
\t\talloc_empty_file+0x3c [kernel]
Outstanding: 10240 bytes in 81 allocations
Lost events: 5 probe hits skipped by the kernel, 2 user stacks not captured; outstanding figures may be inflated (a missed free looks like a leak) or incomplete
Slab since tracing began: SUnreclaim +150 kB, SReclaimable -50 kB (Slab +100 kB); traced outstanding in unreclaimable caches: 7680 bytes (5% of the SUnreclaim growth)
\tcache                        traced bytes    objects slabinfo objects  reclaimable
\tfilp                                 7680         40              +94           no
\tdentry                               2560         41               -3          yes
\tmystery                                 0          0                ?            ?
Kernel addresses are hidden by kernel.kptr_restrict: kernel frames are shown as addresses
Runs of `service x status`: 4 of 4 completed, exit codes [0, 0, 1, 0]
Activity: 261 allocations, 4729 frees (4720 of objects allocated before tracing or not traced)
";
    assert_text(&render(&report), expected);
}
