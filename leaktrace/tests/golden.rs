//! Golden files: committed reports (one user-mode, one sampled, one kernel-mode, saved by
//! leaktrace itself) rendered into every format and compared byte for byte with the
//! committed output. No root needed.
//!
//! After an intended change to a renderer, bless the new output with
//! `LEAKTRACE_BLESS=1 cargo test -p leaktrace --test golden` and review the diff.

use std::path::{Path, PathBuf};

use leaktrace::{
    config::Format,
    render::{self, RENDERERS},
};

const REPORTS: &[&str] = &["user", "user-sampled", "kernel"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The golden file of `report` rendered as `format`.
fn expected_path(report: &str, format: Format) -> PathBuf {
    let extension = match format {
        Format::Text => "txt",
        // A saved report renders as itself: the wire format does not drift.
        Format::Json => "json",
        Format::Folded => "folded",
        Format::FoldedCount => "count.folded",
        Format::Svg => "svg",
        Format::Pprof => "pb.gz",
    };
    golden_dir().join(format!("{report}.{extension}"))
}

#[test]
fn every_report_renders_as_its_golden_files() {
    let bless = std::env::var_os("LEAKTRACE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for name in REPORTS {
        let report = render::json::load(&golden_dir().join(format!("{name}.json"))).expect("golden report loads");
        for renderer in RENDERERS {
            let rendered = (renderer.render)(&report).expect("renders");
            let path = expected_path(name, renderer.format);
            if bless && renderer.format != Format::Json {
                std::fs::write(&path, &rendered).expect("writing a golden file");
                continue;
            }
            let expected = std::fs::read(&path).unwrap_or_default();
            if rendered != expected {
                let actual = PathBuf::from(format!("{}.actual", path.display()));
                std::fs::write(&actual, &rendered).expect("writing the actual output");
                mismatches.push(format!("{} (actual output in {})", path.display(), actual.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered output differs from the golden files (LEAKTRACE_BLESS=1 to accept an intended change):\n{}",
        mismatches.join("\n")
    );
}
