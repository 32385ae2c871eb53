//! Growth plot: outstanding bytes over time of the report's top stacks, drawn from the
//! series each stack's trend carries (`stacks[].trend.series`), as an SVG.
//!
//! A leak reads at a glance as a line that keeps climbing while the others level off, so
//! growing stacks are drawn thick and solid and the rest thin and dashed. Every line ends in
//! its rank, and the legend below the chart names each stack by the frame a reader should
//! look at first. The output depends on the report alone (no clock, no random ids), so it
//! is pinned by golden files like the other renderers.

use plotters::{
    coord::Shift,
    element::DashedPathElement,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    names::{counted, frame_name, subject},
    text::human_bytes,
};
use crate::{
    error::{Error, Result},
    model::{Class, Frame, Report, StackReport, Trend},
};

/// Width of the whole picture, in pixels.
const WIDTH: u32 = 1200;
/// Height of the chart above the legend.
const CHART_HEIGHT: u32 = 600;
/// Height of one legend row.
const ROW: u32 = 22;
/// More lines than colours would make two stacks look alike.
const MOST_LINES: usize = 10;
/// Legend names are cut here: C++ and Rust names can run to hundreds of characters.
const NAME_CHARS: usize = 70;
/// Distinct colours, one a line (Tableau 10).
const PALETTE: [RGBColor; MOST_LINES] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];
const FONT: &str = "sans-serif";

/// One stack drawn as a line.
struct Line<'a> {
    /// Rank among the stacks that hold memory, as in the text report (1 is the first).
    rank: usize,
    stack: &'a StackReport,
    trend: &'a Trend,
    color: RGBColor,
}

impl Line<'_> {
    fn growing(&self) -> bool {
        self.trend.class == Class::Growing
    }

    fn style(&self) -> ShapeStyle {
        if self.growing() {
            self.color.stroke_width(3)
        } else {
            self.color.mix(0.8).stroke_width(2)
        }
    }
}

/// What goes into the picture.
struct Plot<'a> {
    lines: Vec<Line<'a>>,
    /// Sentences about the stacks left out, under the legend.
    notes: Vec<String>,
}

/// Renders the growth plot of `report` as SVG.
pub fn render_svg(report: &Report) -> Result<Vec<u8>> {
    let plot = select(report);
    let rows = (plot.lines.len() + plot.notes.len()) as u32;
    let height = if plot.lines.is_empty() { CHART_HEIGHT } else { CHART_HEIGHT + ROW * (rows + 1) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        if plot.lines.is_empty() {
            draw_without_series(&root, report)?;
        } else {
            let (chart, legend) = root.split_vertically(CHART_HEIGHT);
            draw_chart(&chart, report, &plot.lines)?;
            draw_legend(&legend, &plot)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(svg.into_bytes())
}

fn drawing(error: impl std::error::Error) -> Error {
    Error::io("drawing the growth plot", std::io::Error::other(error.to_string()))
}

/// What the report's stacks are called (`--by cache` groups caches, not stacks).
fn groups(report: &Report) -> &'static str {
    report.kernel().map_or("stacks", |k| k.group_by.plural())
}

/// The top stacks that hold memory and have a series, in report order (the text report's
/// ranking); churn and the stacks past the top are only counted.
fn select(report: &Report) -> Plot<'_> {
    let (holding, churning): (Vec<&StackReport>, Vec<&StackReport>) =
        report.stacks.iter().partition(|s| s.bytes > 0 || s.count > 0);
    let top = report.filters.top.clamp(1, MOST_LINES).min(holding.len());
    let lines: Vec<Line<'_>> = holding[..top]
        .iter()
        .enumerate()
        .filter_map(|(i, &stack)| {
            let trend = stack.trend.as_ref().filter(|t| !t.series.is_empty())?;
            Some(Line { rank: i + 1, stack, trend, color: PALETTE[i % PALETTE.len()] })
        })
        .collect();
    let groups = groups(report);
    let mut notes = Vec::new();
    if top > lines.len() {
        let n = top - lines.len();
        let has = if n == 1 { "has" } else { "have" };
        notes.push(format!("{n} of the top {groups} {has} no series yet (first seen after the last sample)"));
    }
    if holding.len() > top {
        let bytes: u64 = holding[top..].iter().map(|s| s.bytes).sum();
        let rest = holding.len() - top;
        notes.push(format!("{rest} more {} {} {} (not drawn)", noun(groups, rest), hold(rest), unsigned(bytes as f64)));
    }
    if !churning.is_empty() {
        let n = churning.len();
        notes.push(format!("{n} {} churned and {} nothing (not drawn)", noun(groups, n), hold(n)));
    }
    Plot { lines, notes }
}

/// `stacks`, or `stack` for one.
fn noun(groups: &str, n: usize) -> &str {
    if n == 1 {
        groups.trim_end_matches('s')
    } else {
        groups
    }
}

/// The verb after [`noun`].
fn hold(n: usize) -> &'static str {
    if n == 1 {
        "holds"
    } else {
        "hold"
    }
}

/// `1.5 MiB`: a size without the sign `human_bytes` puts on changes.
fn unsigned(bytes: f64) -> String {
    human_bytes(bytes).trim_start_matches('+').to_string()
}

/// The picture's title: what was traced and for how long.
fn title(report: &Report) -> String {
    format!("Outstanding memory of the top {}: {}, {:.1} s", groups(report), subject(report), report.duration_s)
}

/// A report taken before the first interval has no series: the picture says so and how to
/// get one, rather than failing an export the user asked for.
fn draw_without_series(root: &DrawingArea<SVGBackend<'_>, Shift>, report: &Report) -> Result<()> {
    let centre = (WIDTH as i32 / 2, CHART_HEIGHT as i32 / 2);
    let style = |size: u32| TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(title(report), (centre.0, 40), style(22))).map_err(drawing)?;
    let lines = [
        "No growth series in this report: it was taken before the first report interval ended.",
        "Trace with an INTERVAL shorter than the run (e.g. leaktrace 1 --plot FILE -- COMMAND).",
    ];
    for (i, line) in lines.into_iter().enumerate() {
        root.draw(&Text::new(line, (centre.0, centre.1 + 30 * i as i32), style(18))).map_err(drawing)?;
    }
    Ok(())
}

/// The largest binary unit in which `bytes` is at least 1, and its size.
fn unit_for(bytes: u64) -> (&'static str, f64) {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    units.into_iter().find(|&(_, size)| bytes >= size).map_or(("bytes", 1.0), |(name, size)| (name, size as f64))
}

/// A tick label: at most three decimals, none that are zero.
fn tick(value: &f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Axes, grid and one line a stack, each ending in its rank.
fn draw_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, report: &Report, lines: &[Line<'_>]) -> Result<()> {
    let samples = || lines.iter().flat_map(|l| l.trend.series.iter());
    let max_t = samples().map(|s| s.t_s).fold(0.0, f64::max);
    let max_bytes = samples().map(|s| s.bytes).max().unwrap_or(0);
    let (unit, scale) = unit_for(max_bytes);
    // Headroom above the highest line, so it does not run along the frame.
    let top = if max_bytes == 0 { 1.0 } else { max_bytes as f64 / scale * 1.08 };
    let right = if max_t > 0.0 { max_t } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title(report), (FONT, 24))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..right, 0.0..top)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("time since tracing began (s)")
        .y_desc(format!("outstanding ({unit})"))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .max_light_lines(4)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .bold_line_style(RGBColor(0xd0, 0xd0, 0xd0))
        .draw()
        .map_err(drawing)?;
    // Growing stacks last, so that nothing is drawn over them.
    let mut order: Vec<&Line<'_>> = lines.iter().collect();
    order.sort_by_key(|l| l.growing());
    let mut ends = Vec::new();
    for line in order {
        let points: Vec<(f64, f64)> = line.trend.series.iter().map(|s| (s.t_s, s.bytes as f64 / scale)).collect();
        if line.growing() {
            chart.draw_series(LineSeries::new(points.iter().copied(), line.style()).point_size(3)).map_err(drawing)?;
        } else {
            chart.draw_series(DashedLineSeries::new(points.iter().copied(), 8, 5, line.style())).map_err(drawing)?;
        }
        if let Some(end) = points.last() {
            ends.push((chart.backend_coord(end), line));
        }
    }
    draw_end_labels(area, ends)
}

/// `#rank` beside the last point of each line, moved apart where lines end close together
/// (stacks of one size often do) so that every rank stays readable.
fn draw_end_labels(area: &DrawingArea<SVGBackend<'_>, Shift>, mut ends: Vec<((i32, i32), &Line<'_>)>) -> Result<()> {
    const SPACING: i32 = 14;
    ends.sort_by_key(|&((x, y), line)| (x / SPACING, y, line.rank));
    let mut previous: Option<(i32, i32)> = None;
    for ((x, mut y), line) in ends {
        if let Some((_, py)) = previous.filter(|&(px, _)| px / SPACING == x / SPACING) {
            y = y.max(py + SPACING);
        }
        previous = Some((x, y));
        let style = TextStyle::from((FONT, 15).into_font()).color(&line.color).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(format!("#{}", line.rank), (x + 6, y), style)).map_err(drawing)?;
    }
    Ok(())
}

/// One row a line: its style, rank, name, what it holds and its trend; then the notes.
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, Shift>, plot: &Plot<'_>) -> Result<()> {
    let text = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let (left, sample) = (95, 40);
    for (i, (line, name)) in plot.lines.iter().zip(legend_names(&plot.lines)).enumerate() {
        let y = (ROW * i as u32 + ROW / 2) as i32;
        let ends = vec![(left, y), (left + sample, y)];
        if line.growing() {
            area.draw(&PathElement::new(ends, line.style())).map_err(drawing)?;
        } else {
            area.draw(&DashedPathElement::new(ends, 8, 5, line.style())).map_err(drawing)?;
        }
        let entry = format!("#{} {name} — {}", line.rank, holds(line));
        area.draw(&Text::new(entry, (left + sample + 10, y), text.clone())).map_err(drawing)?;
    }
    let grey = text.color(&RGBColor(0x55, 0x55, 0x55));
    for (i, note) in plot.notes.iter().enumerate() {
        let y = (ROW * (plot.lines.len() + i) as u32 + ROW / 2) as i32;
        area.draw(&Text::new(note.clone(), (left, y), grey.clone())).map_err(drawing)?;
    }
    Ok(())
}

/// Each line's name in the legend. Different stacks often meet in one function (two paths
/// into `__mmap_region`); those names get their caller too, so that no two rows read alike.
fn legend_names(lines: &[Line<'_>]) -> Vec<String> {
    let names: Vec<String> = lines.iter().map(|l| stack_name(l.stack, false)).collect();
    lines
        .iter()
        .zip(&names)
        .map(|(line, name)| {
            if names.iter().filter(|&other| other == name).count() > 1 {
                stack_name(line.stack, true)
            } else {
                name.clone()
            }
        })
        .collect()
}

/// A stack's name: its group (a cache or command with `--by`), else the frame to look at
/// first, else its innermost frame; with the source file and line, and with `caller` the
/// name of the next frame out.
fn stack_name(stack: &StackReport, caller: bool) -> String {
    if let Some(key) = stack.kernel.as_ref().map(|k| &k.key).filter(|k| !k.is_empty()) {
        return key.clone();
    }
    let index = stack.focus_frame.filter(|&i| i < stack.frames.len()).unwrap_or(0);
    let Some(frame) = stack.frames.get(index) else {
        return "[no frames]".to_string();
    };
    let mut name = short_name(frame);
    if let (Some(file), Some(line)) = (&frame.file, frame.line) {
        name = format!("{name} ({}:{line})", file.rsplit('/').next().unwrap_or(file));
    }
    match stack.frames.get(index + 1).filter(|_| caller) {
        Some(outer) => format!("{name} ← {}", short_name(outer)),
        None => name,
    }
}

/// A frame's name, cut to fit a legend row.
fn short_name(frame: &Frame) -> String {
    let name = frame_name(frame);
    // The legend says which mode it is; flame graphs need the suffix to colour kernel frames.
    let name = name.strip_suffix("_[k]").unwrap_or(&name);
    if name.chars().count() > NAME_CHARS {
        name.chars().take(NAME_CHARS - 1).chain(std::iter::once('…')).collect()
    } else {
        name.to_string()
    }
}

/// What a stack holds now and how it moves.
fn holds(line: &Line<'_>) -> String {
    let stack = line.stack;
    let now = format!("{} in {}", unsigned(stack.bytes as f64), counted(stack.count, "allocation"));
    let trend = line.trend;
    match trend.class {
        Class::Growing => {
            format!("{now}, growing {}/min (r² {:.2})", human_bytes(trend.bytes_per_min), trend.r_squared)
        }
        Class::Plateau => format!("{now}, plateau"),
        Class::Churn => format!("{now}, churn"),
        Class::Unclear => format!("{now}, unclear after {}", counted(trend.intervals as u64, "interval")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sample;

    #[test]
    fn units_are_binary() {
        assert_eq!(unit_for(0), ("bytes", 1.0));
        assert_eq!(unit_for(1023), ("bytes", 1.0));
        assert_eq!(unit_for(1024), ("KiB", 1024.0));
        assert_eq!(unit_for(5 << 20), ("MiB", (1 << 20) as f64));
        assert_eq!(unit_for(3 << 30), ("GiB", (1u64 << 30) as f64));
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&3.0), "3");
        assert_eq!(tick(&0.30000000000000004), "0.3");
    }

    /// A stack allocated from `symbol` (through malloc) whose series is `series`.
    fn stack(symbol: &str, class: Class, series: &[(f64, u64)]) -> StackReport {
        let series: Vec<Sample> = series
            .iter()
            .map(|&(t_s, bytes)| Sample { t_s, bytes, count: bytes / 1024, ..Sample::default() })
            .collect();
        let last = series.last().copied().unwrap_or_default();
        let frame = |symbol: &str, module: &str| Frame {
            symbol: Some(symbol.into()),
            module: Some(module.into()),
            file: Some("/src/app.c".into()),
            line: Some(7),
            ..Frame::default()
        };
        StackReport {
            bytes: last.bytes,
            count: last.count,
            frames: vec![
                frame("malloc", "/lib/libc.so.6"),
                frame(symbol, "/usr/bin/app"),
                frame("main", "/usr/bin/app"),
            ],
            focus_frame: Some(1),
            trend: Some(Trend {
                class,
                bytes_per_min: 60.0 * 1024.0,
                r_squared: 1.0,
                intervals_grown: series.len() - 1,
                intervals: series.len() - 1,
                allocated_per_min: None,
                series,
            }),
            ..StackReport::default()
        }
    }

    /// A saved report with `stacks` in place of its own.
    fn report(stacks: Vec<StackReport>) -> Report {
        let mut report: Report = serde_json::from_str(include_str!("../../tests/golden/growth.json")).unwrap();
        report.stacks = stacks;
        report
    }

    fn render(report: &Report) -> String {
        String::from_utf8(render_svg(report).unwrap()).unwrap()
    }

    /// The points of the solid line drawn in `color`.
    fn polyline(svg: &str, color: &str) -> Vec<(f64, f64)> {
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline") && l.contains(&format!(r#"stroke="{color}" stroke-width="3""#)))
            .unwrap_or_else(|| panic!("no line in {color}"));
        let points = line.split(r#"points=""#).nth(1).unwrap().split('"').next().unwrap();
        points
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    /// Where the text `text` is drawn.
    fn text_at(svg: &str, text: &str) -> (f64, f64) {
        let lines: Vec<&str> = svg.lines().collect();
        let i = lines.iter().position(|l| *l == text).unwrap_or_else(|| panic!("no text {text}"));
        let attr = |name: &str| lines[i - 1].split(&format!(r#" {name}=""#)).nth(1).unwrap().split('"').next().unwrap();
        (attr("x").parse().unwrap(), attr("y").parse().unwrap())
    }

    #[test]
    fn plots_outstanding_bytes_of_the_stacks_that_hold_memory() {
        let report = report(vec![
            stack("leak_here", Class::Growing, &[(0.0, 0), (1.0, 2048), (2.0, 4096)]),
            stack("cache_fill", Class::Plateau, &[(0.0, 0), (1.0, 3072), (2.0, 3072)]),
            stack("churner", Class::Churn, &[(0.0, 0), (1.0, 0), (2.0, 0)]),
        ]);
        let svg = render(&report);
        // The growing stack is the thick solid line in the first colour: a straight rise
        // from the x axis to 4 KiB at the right end of the time axis.
        let leak = polyline(&svg, "#1F77B4");
        assert_eq!(leak.len(), 3, "{leak:?}");
        let (base, top) = (leak[0].1, leak[2].1);
        assert!(top < base - 300.0, "4 KiB is drawn near the top of the chart: {leak:?}");
        assert!((leak[1].1 - (base + top) / 2.0).abs() <= 1.0, "2 KiB is half way up: {leak:?}");
        assert!((leak[1].0 - (leak[0].0 + leak[2].0) / 2.0).abs() <= 1.0, "1 s is half way across: {leak:?}");
        // The plateau is dashed (no solid line in its colour) and ends at 3 KiB, where its
        // rank is written.
        assert!(!svg.contains(r##"stroke="#D62728" stroke-width="3""##));
        let (x, y) = text_at(&svg, "#2");
        assert!((x - leak[2].0 - 6.0).abs() <= 1.0);
        assert!(((base - y) / (base - top) - 0.75).abs() < 0.01, "3 KiB is three quarters of 4 KiB: {y}");
        assert!(svg.contains("outstanding (KiB)") && svg.contains("time since tracing began (s)"));
        // Named by the frame to look at first, with its source line: not by malloc.
        assert!(svg.contains("#1 leak_here (app.c:7) — 4.0 KiB in 4 allocations, growing +60.0 KiB/min (r² 1.00)"));
        assert!(svg.contains("#2 cache_fill (app.c:7) — 3.0 KiB in 3 allocations, plateau"));
        assert!(!svg.contains("malloc") && !svg.contains("churner"));
        assert!(svg.contains("1 stack churned and holds nothing (not drawn)"));
    }

    #[test]
    fn lines_stop_at_the_top_n_and_alike_names_get_their_caller() {
        let mut report = report(vec![
            stack("grow", Class::Growing, &[(0.0, 0), (1.0, 2048)]),
            stack("grow", Class::Unclear, &[(0.0, 0), (1.0, 1024)]),
            stack("small", Class::Unclear, &[(0.0, 0), (1.0, 1024)]),
        ]);
        report.stacks[1].frames[2].symbol = Some("worker".into());
        report.filters.top = 2;
        let svg = render(&report);
        assert!(svg.contains("#1 grow (app.c:7) ← main — 2.0 KiB in 2 allocations, growing"), "{svg}");
        assert!(svg.contains("#2 grow (app.c:7) ← worker — 1.0 KiB in 1 allocation, unclear after 1 interval"));
        assert!(svg.contains("1 more stack holds 1.0 KiB (not drawn)"));
        assert!(!svg.contains("small"));
    }

    #[test]
    fn a_report_without_series_says_so() {
        let mut report = report(vec![stack("leak_here", Class::Growing, &[(0.0, 0), (1.0, 2048)])]);
        report.stacks[0].trend = None;
        let svg = render(&report);
        assert!(svg.contains("No growth series in this report"));
        assert!(!svg.contains("<polyline") && !svg.contains("leak_here"));
        // The same without any stack at all.
        assert!(render(&self::report(Vec::new())).contains("No growth series in this report"));
    }
}
