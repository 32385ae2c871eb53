//! Renderers: the [`Report`] model turned into what people and tools read. Every format is
//! one row of [`RENDERERS`]; the final report, `leaktrace report` and the export flags all
//! go through [`render`].

pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod names;
pub mod output;
pub mod plot;
pub mod pprof;
pub mod text;

use crate::{config::Format, error::Result, model::Report};

/// One output format.
pub struct Renderer {
    /// The format.
    pub format: Format,
    /// Name in messages ("Wrote … report to …").
    pub name: &'static str,
    /// Renders a report as the bytes of a file.
    pub render: fn(&Report) -> Result<Vec<u8>>,
}

/// Every format leaktrace writes.
pub const RENDERERS: &[Renderer] = &[
    Renderer { format: Format::Text, name: "text", render: |r| Ok(text::render(r).into_bytes()) },
    Renderer { format: Format::Json, name: "JSON", render: |r| Ok(json::to_string(r).into_bytes()) },
    Renderer {
        format: Format::Folded,
        name: "folded",
        render: |r| Ok(folded::render(r, folded::Weight::Bytes).into_bytes()),
    },
    Renderer {
        format: Format::FoldedCount,
        name: "folded (counts)",
        render: |r| Ok(folded::render(r, folded::Weight::Count).into_bytes()),
    },
    Renderer { format: Format::Svg, name: "SVG flame graph", render: flamegraph::render_svg },
    Renderer { format: Format::Pprof, name: "pprof", render: |r| Ok(pprof::render(r)) },
    Renderer { format: Format::Plot, name: "SVG growth plot", render: plot::render_svg },
];

/// The renderer of `format`.
pub fn renderer(format: Format) -> &'static Renderer {
    RENDERERS.iter().find(|r| r.format == format).expect("every format has a renderer (checked by a test)")
}

/// Renders `report` in `format` as the bytes of a file.
pub fn render(report: &Report, format: Format) -> Result<Vec<u8>> {
    (renderer(format).render)(report)
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::*;

    #[test]
    fn every_format_has_one_renderer() {
        for format in Format::value_variants() {
            assert_eq!(RENDERERS.iter().filter(|r| r.format == *format).count(), 1, "{format:?}");
        }
    }
}
