//! The PNG chart, two panels: on top the headline (decided entries per wall-second, a fresh
//! process per run), below the steady state (per CPU-second, in process, memory reused). Each
//! panel has one group per cell (n, B) with a bar per library (median, min–max whisker) on a log
//! scale, and ours ÷ omnipaxos 0.2.4 (median of the paired ratios) written above the group.
//!
//! Text is drawn with a TrueType font loaded at run time (plotters' `ab_glyph` backend), so the
//! build needs no fontconfig or freetype; the font file must exist (Debian: fonts-dejavu-core).

use std::path::{Path, PathBuf};

use plotters::{
    prelude::*,
    style::{
        register_font,
        text_anchor::{HPos, Pos, VPos},
        FontStyle,
    },
};

use crate::{
    harness::Rate,
    suite::{Library, SuiteResults},
};

/// Where a sans-serif TrueType font is looked for when none is given.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const WIDTH_PX: u32 = 1400;
const HEIGHT_PX: u32 = 1200;

/// The libraries in the chart.
const CHARTED: [Library; 3] = [Library::Ours, Library::OmniPaxos, Library::Raft];

/// Why the chart could not be drawn.
#[derive(Debug)]
pub enum ChartError {
    /// No font file: pass `--font` or install fonts-dejavu-core.
    NoFont(Vec<PathBuf>),
    /// The font file is not a usable TrueType font.
    BadFont(PathBuf),
    Io(PathBuf, std::io::Error),
    Draw(String),
}

impl std::fmt::Display for ChartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChartError::NoFont(tried) => write!(
                f,
                "no TrueType font found (tried {tried:?}); pass --font PATH or install fonts-dejavu-core"
            ),
            ChartError::BadFont(path) => write!(f, "{} is not a usable TrueType font", path.display()),
            ChartError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            ChartError::Draw(e) => write!(f, "drawing the chart failed: {e}"),
        }
    }
}

impl std::error::Error for ChartError {}

fn color(library: Library) -> RGBColor {
    match library {
        Library::Ours => RGBColor(0x1f, 0x77, 0xb4),
        Library::OursEager => RGBColor(0x6b, 0xae, 0xd6),
        Library::OmniPaxos => RGBColor(0xff, 0x7f, 0x0e),
        Library::Raft => RGBColor(0xd6, 0x27, 0x28),
        Library::Null => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// An axis label: `100 M`, `2 M`, `500 k`.
fn axis_rate(entries_per_s: f64) -> String {
    if entries_per_s >= 1e6 {
        format!("{} M", (entries_per_s / 1e6 * 100.0).round() / 100.0)
    } else {
        format!("{} k", (entries_per_s / 1e3 * 100.0).round() / 100.0)
    }
}

/// Loads the font once and registers it as "sans-serif". The bytes live for the process.
pub fn load_font(font: Option<&Path>) -> Result<(), ChartError> {
    let candidates: Vec<PathBuf> = match font {
        Some(path) => vec![path.to_path_buf()],
        None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
    };
    let path =
        candidates.iter().find(|p| p.is_file()).ok_or_else(|| ChartError::NoFont(candidates.clone()))?;
    let bytes = std::fs::read(path).map_err(|e| ChartError::Io(path.clone(), e))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| ChartError::BadFont(path.clone()))
}

/// One panel of the chart.
pub struct Panel<'a> {
    pub results: &'a SuiteResults,
    pub rate: Rate,
    pub title: String,
}

/// Draws the chart to `path` (PNG): one panel per entry of `panels`, stacked. Call
/// [`load_font`] first.
pub fn draw_chart(panels: &[Panel], path: &Path) -> Result<(), ChartError> {
    draw(panels, path).map_err(|e| ChartError::Draw(e.to_string()))
}

fn draw(panels: &[Panel], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(panel, area)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel(
    panel: &Panel,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
) -> Result<(), Box<dyn std::error::Error>> {
    let results = panel.results;
    let workloads = results.workloads();
    let groups = workloads.len().max(1);
    let measured =
        results.measurements.iter().filter(|m| CHARTED.contains(&m.library) && !m.samples.is_empty());
    let (low, high) = measured
        .map(|m| m.entries_per(panel.rate))
        .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r.min), hi.max(r.max)));
    let y_min = 10f64.powf((low.max(1.0)).log10().floor());
    // A decade of headroom above the tallest bar for the ratio labels.
    let y_max = 10f64.powf((high.max(10.0)).log10().ceil() + 1.0);

    let x_range = -0.5f64..groups as f64 - 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range, (y_min..y_max).log_scale())?;
    // Labels only at whole numbers: the group centres.
    let label_of = |x: &f64| {
        let g = x.round();
        if (x - g).abs() > 1e-6 || g < 0.0 {
            return String::new();
        }
        workloads
            .get(g as usize)
            .map_or(String::new(), |w| format!("n = {}, B = {}", w.cluster_size, w.batch))
    };
    let y_desc = match panel.rate {
        Rate::Wall => "decided entries per wall-second (log; whisker = min–max)",
        Rate::Cpu => "decided entries per CPU-second (log; whisker = min–max)",
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|y| axis_rate(*y))
        .y_desc(y_desc)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    let bar_width = 0.8 / CHARTED.len() as f64;
    for (k, library) in CHARTED.iter().copied().enumerate() {
        let style = color(library);
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (g, workload) in workloads.iter().enumerate() {
            let Some(m) = results.get(library, *workload).filter(|m| !m.samples.is_empty()) else { continue };
            let rate = m.entries_per(panel.rate);
            let left = g as f64 - 0.4 + k as f64 * bar_width;
            let right = left + bar_width * 0.9;
            let middle = (left + right) / 2.0;
            bars.push(Rectangle::new([(left, y_min), (right, rate.median)], style.filled()));
            whiskers
                .push(PathElement::new(vec![(middle, rate.min), (middle, rate.max)], BLACK.stroke_width(2)));
        }
        chart
            .draw_series(bars)?
            .label(library.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], style.filled()));
        chart.draw_series(whiskers)?;
    }
    // Ours ÷ omnipaxos above each group.
    let label_style = TextStyle::from(("sans-serif", 17).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    let mut labels = Vec::new();
    for (g, workload) in workloads.iter().enumerate() {
        let Some(ratio) = results.paired_ratio(Library::OmniPaxos, *workload, panel.rate) else { continue };
        let top = CHARTED
            .iter()
            .filter_map(|&l| results.get(l, *workload).filter(|m| !m.samples.is_empty()))
            .map(|m| m.entries_per(panel.rate).max)
            .fold(y_min, f64::max);
        labels.push(Text::new(
            format!("ours ÷ omnipaxos {:.2}×", ratio.median),
            (g as f64, top * 1.4),
            label_style.clone(),
        ));
    }
    chart.draw_series(labels)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    Ok(())
}
