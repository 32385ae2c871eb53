//! Golden files: committed reports (user mode, sampled, kernel mode, several processes with
//! their holders, and one with growth trends and churn, saved by leaktrace itself) rendered
//! into every format and compared byte for byte with the committed output. No root needed.
//!
//! After an intended change to a renderer, bless the new output with
//! `LEAKTRACE_BLESS=1 cargo test -p leaktrace --test golden` and review the diff.

use std::path::{Path, PathBuf};

use leaktrace::{
    config::{Format, TextOptions},
    render::{self, RENDERERS},
};

const REPORTS: &[&str] = &["user", "user-sampled", "kernel", "growth", "processes"];

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
        Format::Plot => "plot.svg",
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
            check(&path, &rendered, &expected, &mut mismatches);
        }
        // An interval report, with every option of the text report on (colours too).
        let options = TextOptions { verbose: true, show_churn: true, color: true };
        let rendered = render::text::render_with(&report, options, true).into_bytes();
        let path = golden_dir().join(format!("{name}.interval.txt"));
        if bless {
            std::fs::write(&path, &rendered).expect("writing a golden file");
        } else {
            check(&path, &rendered, &std::fs::read(&path).unwrap_or_default(), &mut mismatches);
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered output differs from the golden files (LEAKTRACE_BLESS=1 to accept an intended change):\n{}",
        mismatches.join("\n")
    );
}

/// Records a mismatch, with the actual output beside the golden file.
fn check(path: &Path, rendered: &[u8], expected: &[u8], mismatches: &mut Vec<String>) {
    if rendered != expected {
        let actual = PathBuf::from(format!("{}.actual", path.display()));
        std::fs::write(&actual, rendered).expect("writing the actual output");
        mismatches.push(format!("{} (actual output in {})", path.display(), actual.display()));
    }
}
