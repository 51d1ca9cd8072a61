//! The charts of `opkv compare-etcd`: throughput against clients, latency percentiles and the
//! failover timeline (PNG, plotters; text in DejaVu Sans loaded at run time).

use std::path::{Path, PathBuf};

use plotters::{
    prelude::*,
    style::{register_font, FontStyle},
};

use crate::{
    bench::Workload,
    compare::{CellResult, FailoverResult, System},
};

/// Where a sans-serif TrueType font is looked for.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const SYSTEMS: [System; 2] = [System::Ours, System::Etcd];

fn color(system: System) -> RGBColor {
    match system {
        System::Ours => RGBColor(0x1f, 0x77, 0xb4),
        System::Etcd => RGBColor(0xd6, 0x27, 0x28),
    }
}

fn load_font() -> Result<(), String> {
    let path = FONT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        format!("no TrueType font found (tried {FONT_CANDIDATES:?}); install fonts-dejavu-core")
    })?;
    let bytes = std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a usable font", path.display()))
}

fn name(workload: Workload) -> &'static str {
    match workload {
        Workload::Write => "write-only",
        Workload::Read => "linearizable reads",
        Workload::Mixed => "90 % reads",
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws `throughput.png`, `latency.png` and `failover.png` into `out`.
pub fn draw_all(cells: &[CellResult], failovers: &[FailoverResult], out: &Path) -> Result<(), String> {
    load_font()?;
    let draw = |result: DrawResult, file: &str| result.map_err(|error| format!("{file}: {error}"));
    if !cells.is_empty() {
        draw(throughput(cells, &out.join("throughput.png")), "throughput.png")?;
        draw(latency(cells, &out.join("latency.png")), "latency.png")?;
    }
    if !failovers.is_empty() {
        draw(failover(failovers, &out.join("failover.png")), "failover.png")?;
    }
    Ok(())
}

fn distinct<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

/// One panel per (value size, workload): ops/s against clients, a line per system (log–log).
fn throughput(cells: &[CellResult], path: &Path) -> DrawResult {
    let sizes = distinct(cells.iter().map(|c| c.report.value_size));
    let workloads = distinct(cells.iter().map(|c| c.report.workload));
    let root = BitMapBackend::new(path, (1500, 500 * sizes.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((sizes.len().max(1), workloads.len().max(1)));
    let max_clients = cells.iter().map(|c| c.report.clients).max().unwrap_or(1).max(2) as f64;
    let high = cells.iter().map(|c| c.report.ops_per_second).fold(10.0f64, f64::max);
    let low = cells.iter().map(|c| c.report.ops_per_second).filter(|r| *r > 0.0).fold(high, f64::min);
    let y_range = 10f64.powf(low.max(1.0).log10().floor())..10f64.powf(high.log10().ceil());
    for (row, size) in sizes.iter().enumerate() {
        for (col, workload) in workloads.iter().enumerate() {
            let area = &areas[row * workloads.len() + col];
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{}, {} B values", name(*workload), size), ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d((0.8f64..max_clients * 1.25).log_scale(), y_range.clone().log_scale())?;
            chart
                .configure_mesh()
                .x_desc("concurrent clients")
                .y_desc("operations/s")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 14))
                .draw()?;
            for system in SYSTEMS {
                let mut points: Vec<(f64, f64)> = cells
                    .iter()
                    .filter(|c| {
                        c.system == system && c.report.value_size == *size && c.report.workload == *workload
                    })
                    .map(|c| (c.report.clients as f64, c.report.ops_per_second.max(1.0)))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let style = color(system);
                chart
                    .draw_series(LineSeries::new(points.clone(), style.stroke_width(3)))?
                    .label(system_name(system))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(3)));
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, style.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn system_name(system: System) -> &'static str {
    match system {
        System::Ours => "ours (opkv)",
        System::Etcd => "etcd 3.4",
    }
}

/// One panel per workload at the largest client count measured with the smallest value:
/// p50, p99, p99.9 bars per system (log scale, ms).
fn latency(cells: &[CellResult], path: &Path) -> DrawResult {
    let workloads = distinct(cells.iter().map(|c| c.report.workload));
    let size = cells.iter().map(|c| c.report.value_size).min().unwrap_or(0);
    let clients_all = distinct(cells.iter().map(|c| c.report.clients));
    let clients = if clients_all.contains(&64) { 64 } else { clients_all.iter().copied().max().unwrap_or(1) };
    let root = BitMapBackend::new(path, (1500, 550)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, workloads.len().max(1)));
    let chosen: Vec<&CellResult> =
        cells.iter().filter(|c| c.report.value_size == size && c.report.clients == clients).collect();
    let high = chosen.iter().map(|c| c.report.latency_us_p999 as f64 / 1000.0).fold(1.0f64, f64::max);
    let low = chosen
        .iter()
        .map(|c| c.report.latency_us_p50 as f64 / 1000.0)
        .filter(|v| *v > 0.0)
        .fold(high, f64::min);
    let y_range = 10f64.powf(low.max(0.001).log10().floor())..10f64.powf(high.log10().ceil() + 0.3);
    const PERCENTILES: [&str; 3] = ["p50", "p99", "p99.9"];
    for (col, workload) in workloads.iter().enumerate() {
        let mut chart = ChartBuilder::on(&areas[col])
            .caption(format!("{}: {} clients, {} B", name(*workload), clients, size), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..2.5, y_range.clone().log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(3)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() > 1e-6 || !(0.0..3.0).contains(&i) {
                    String::new()
                } else {
                    PERCENTILES[i as usize].to_string()
                }
            })
            .y_desc("latency, ms (log)")
            .y_label_formatter(&|y| format!("{y}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for (k, system) in SYSTEMS.iter().copied().enumerate() {
            let Some(cell) = chosen.iter().find(|c| c.system == system && c.report.workload == *workload)
            else {
                continue;
            };
            let values =
                [cell.report.latency_us_p50, cell.report.latency_us_p99, cell.report.latency_us_p999];
            let style = color(system);
            let bars = values.iter().enumerate().map(|(i, us)| {
                let left = i as f64 - 0.35 + k as f64 * 0.35;
                Rectangle::new(
                    [(left, y_range.start), (left + 0.32, (*us as f64 / 1000.0).max(y_range.start))],
                    style.filled(),
                )
            });
            chart
                .draw_series(bars)?
                .label(system_name(system))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], style.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Acknowledged writes per bucket against time since the kill, the first run of each system,
/// with each system's measured failover marked.
fn failover(failovers: &[FailoverResult], path: &Path) -> DrawResult {
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let firsts: Vec<&FailoverResult> =
        SYSTEMS.iter().filter_map(|s| failovers.iter().find(|f| f.system == *s)).collect();
    let series = |f: &FailoverResult| -> Vec<(f64, f64)> {
        f.timeline
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let t = (i as f64 * f.bucket_ms as f64 - f.pre_kill_ms as f64) / 1000.0;
                (t, *count as f64 * 1000.0 / f.bucket_ms as f64)
            })
            .collect()
    };
    let x_min = firsts.iter().flat_map(|f| series(f)).map(|p| p.0).fold(0.0f64, f64::min);
    let x_max = firsts.iter().flat_map(|f| series(f)).map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = firsts.iter().flat_map(|f| series(f)).map(|p| p.1).fold(10.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Leader SIGKILL at t = 0 under a steady write load: acknowledged writes/s (100 ms buckets)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the kill")
        .y_desc("acknowledged writes/s")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (0.0, y_max)],
        BLACK.stroke_width(2),
    )))?;
    for f in firsts {
        let style = color(f.system);
        let label = match f.failover_ms {
            Some(ms) => format!("{}: first write after the kill at {:.0} ms", system_name(f.system), ms),
            None => format!("{}: no write after the kill", system_name(f.system)),
        };
        chart
            .draw_series(LineSeries::new(series(f), style.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(3)));
        if let Some(ms) = f.failover_ms {
            let x = ms / 1000.0;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, y_max)],
                style.stroke_width(1),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}
