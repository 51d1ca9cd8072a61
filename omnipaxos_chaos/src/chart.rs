//! The run's timeline as a PNG, in the style of Jepsen's reports: every operation's latency
//! (log scale) at its invoke time, coloured by outcome, with each fault's window shaded and
//! named. Text is drawn with a TrueType font loaded at run time (plotters' `ab_glyph`
//! backend, as `omnipaxos_bench` does), so the build needs no fontconfig; the font file must
//! exist (Debian: fonts-dejavu-core).

use std::path::{Path, PathBuf};

use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use crate::{
    history::{Record, Status},
    nemesis::{FaultKind, FaultRecord},
    ChaosError,
};

/// Where a sans-serif TrueType font is looked for.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const WIDTH_PX: u32 = 1800;
const HEIGHT_PX: u32 = 800;

/// Loads the font once and registers it as "sans-serif".
pub fn load_font() -> Result<(), ChaosError> {
    let path = FONT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        ChaosError::Setup(format!("no font found (tried {FONT_CANDIDATES:?}): install fonts-dejavu-core"))
    })?;
    let bytes = std::fs::read(&path).map_err(|e| ChaosError::io(&path, e))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| ChaosError::Setup(format!("{} is not a usable font", path.display())))
}

fn fault_color(kind: FaultKind) -> RGBColor {
    match kind {
        FaultKind::Kill => RGBColor(0xd6, 0x27, 0x28),
        FaultKind::Pause => RGBColor(0x94, 0x67, 0xbd),
        FaultKind::Skew | FaultKind::SkewBeyond => RGBColor(0x8c, 0x56, 0x4b),
        FaultKind::DiskFull => RGBColor(0x7f, 0x7f, 0x7f),
        _ => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// Draws the timeline of the operations invoked before `until_s` (all: `None`) to `path`.
/// Call [`load_font`] first.
pub fn draw_timeline(
    path: &Path,
    title: &str,
    records: &[Record],
    faults: &[FaultRecord],
    until_s: Option<f64>,
) -> Result<(), ChaosError> {
    let limit_ns = until_s.map_or(u64::MAX, |s| (s * 1e9) as u64);
    let records: Vec<Record> = records.iter().filter(|r| r.invoke_ns <= limit_ns).cloned().collect();
    let faults: Vec<FaultRecord> = faults.iter().filter(|f| f.start_ns <= limit_ns).cloned().collect();
    draw(path, title, &records, &faults)
        .map_err(|e| ChaosError::Setup(format!("drawing {}: {e}", path.display())))
}

/// The fault families in the legend, with their colours.
const FAULT_LEGEND: [(FaultKind, &str); 5] = [
    (FaultKind::Partition, "network fault"),
    (FaultKind::Kill, "SIGKILL"),
    (FaultKind::Pause, "SIGSTOP"),
    (FaultKind::Skew, "clock skew"),
    (FaultKind::DiskFull, "disk full"),
];

fn draw(
    path: &Path,
    title: &str,
    records: &[Record],
    faults: &[FaultRecord],
) -> Result<(), Box<dyn std::error::Error>> {
    let end_s = records.iter().map(|r| r.complete_ns).max().unwrap_or(1_000_000_000) as f64 / 1e9;
    let max_ms = records.iter().map(Record::latency_ms).fold(10.0, f64::max) * 1.5;
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, (0.1f64..max_ms).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time since the start (s)")
        .y_desc("latency (ms, log)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (index, fault) in faults.iter().enumerate() {
        let (from, to) = (fault.start_ns as f64 / 1e9, fault.heal_ns as f64 / 1e9);
        let color = fault_color(fault.kind);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(from, 0.1), (to, max_ms)],
            color.mix(0.15).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            fault.kind.name().to_string(),
            (from, max_ms / (1.4 * 1.7f64.powi((index % 3) as i32))),
            ("sans-serif", 13).into_font().color(&color),
        )))?;
    }
    let series = [
        (Status::Ok, RGBColor(0x1f, 0x77, 0xb4), "ok"),
        (Status::Fail, RGBColor(0xd6, 0x27, 0x28), "fail"),
        (Status::Unknown, RGBColor(0xff, 0x7f, 0x0e), "unknown"),
    ];
    for (status, color, label) in series {
        let count = records.iter().filter(|r| r.status == status).count();
        chart
            .draw_series(records.iter().filter(|r| r.status == status).map(|r| {
                Circle::new((r.invoke_ns as f64 / 1e9, r.latency_ms().max(0.11)), 2, color.filled())
            }))?
            .label(format!("{label} ({count})"))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    for (kind, label) in FAULT_LEGEND {
        let color = fault_color(kind);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.mix(0.3).filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
