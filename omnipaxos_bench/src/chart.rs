//! The PNG chart: entries/s per workload, one bar per library (median) with a min–max whisker,
//! on a log scale.
//!
//! Text is drawn with a TrueType font loaded at run time (plotters' `ab_glyph` backend), so the
//! build needs no fontconfig or freetype; the font file must exist (Debian: fonts-dejavu-core).

use std::path::{Path, PathBuf};

use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use crate::suite::{Library, SuiteResults};

/// Where a sans-serif TrueType font is looked for when none is given.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const WIDTH_PX: u32 = 1400;
const HEIGHT_PX: u32 = 760;

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

/// Draws the chart to `path` (PNG). Call [`load_font`] first.
pub fn draw_chart(results: &SuiteResults, title: &str, path: &Path) -> Result<(), ChartError> {
    draw(results, title, path).map_err(|e| ChartError::Draw(e.to_string()))
}

fn draw(results: &SuiteResults, title: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let workloads = results.workloads();
    let groups = workloads.len().max(1);
    let rates = results.measurements.iter().map(|m| m.entries_per_s());
    let (low, high) = rates.fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r.min), hi.max(r.max)));
    let y_min = 10f64.powf((low.max(1.0)).log10().floor());
    let y_max = 10f64.powf((high.max(10.0)).log10().ceil());

    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_range = -0.5f64..groups as f64 - 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
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
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|y| axis_rate(*y))
        .y_desc("decided entries/s (log scale; whisker = min–max)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;

    let libraries = Library::ALL;
    let bar_width = 0.8 / libraries.len() as f64;
    for (k, library) in libraries.iter().copied().enumerate() {
        let style = color(library);
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (g, workload) in workloads.iter().enumerate() {
            let Some(m) = results.get(library, *workload) else { continue };
            let rate = m.entries_per_s();
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}
