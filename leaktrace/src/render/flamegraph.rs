//! Flame graph of outstanding bytes, drawn by inferno from the folded stacks.

use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use super::folded::{self, Weight};
use crate::{
    error::{Error, Result},
    model::Report,
};

/// Renders an SVG flame graph of the report's outstanding bytes.
pub fn render_svg(report: &Report) -> Result<Vec<u8>> {
    let folded = folded::render(report, Weight::Bytes);
    let mut options = Options::default();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.count_name = "bytes".to_string();
    options.title = format!(
        "Outstanding memory: pid {} ({}), {:.1} s",
        report.target.pid, report.target.command, report.duration_s
    );
    draw(options, &folded, "drawing the flame graph")
}

/// Draws folded stacks (one count a line, or two for a differential graph). inferno refuses
/// empty input; an empty graph still says what was traced, and that nothing was outstanding.
pub(super) fn draw(mut options: Options<'_>, folded: &str, doing: &str) -> Result<Vec<u8>> {
    let mut svg = Vec::new();
    if folded.is_empty() {
        options.title.push_str(", nothing outstanding");
        flamegraph::from_lines(&mut options, std::iter::once("[nothing outstanding] 1"), &mut svg)
    } else {
        flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
    }
    .map_err(|e| Error::io(doing, std::io::Error::other(e.to_string())))?;
    Ok(svg)
}
