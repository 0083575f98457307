//! PNG charts of the scaling curves: for one workload and one figure (throughput, p99
//! latency, memory), x = clients on a log scale, one line per backend through the
//! medians, a bar from the 95% interval's low to high end at each point.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::chart::{register_font, COLORS, FONT};
use crate::report::{Metric, Results, Workload};

/// The figures charted per scaling workload, with the file name suffix and axis label.
pub const FIGURES: [(Metric, &str); 3] = [
    (Metric::Value, "throughput"),
    (Metric::P99, "p99"),
    (Metric::PssPeak, "memory"),
];

/// Writes `<dir>/<workload>_<figure>.png` for every figure; returns the files written.
pub fn write_scaling(results: &Results, w: &Workload, dir: &Path) -> Result<Vec<String>, String> {
    let with_text = register_font();
    let mut written = Vec::new();
    for (metric, suffix) in FIGURES {
        let path = dir.join(format!("{}_{suffix}.png", w.id));
        let label = match metric {
            Metric::Value => w.unit.to_string(),
            Metric::P99 => "p99 latency, us (log)".to_string(),
            _ => "PSS peak, MiB (smbd + descendants)".to_string(),
        };
        let title = format!("{}: {suffix}", w.id);
        match draw(results, w, metric, &path, &title, &label, with_text) {
            Ok(true) => written.push(path.display().to_string()),
            Ok(false) => {}
            Err(e) => return Err(format!("drawing {}: {e}", path.display())),
        }
    }
    Ok(written)
}

/// One backend's points: (clients, median, lo, hi).
type Line = Vec<(f64, f64, f64, f64)>;

/// Draws one chart; false (and nothing written) when the figure was not measured.
fn draw(
    results: &Results,
    w: &Workload,
    metric: Metric,
    path: &Path,
    title: &str,
    y_label: &str,
    with_text: bool,
) -> Result<bool, Box<dyn std::error::Error>> {
    let points = results.client_points(w.id);
    let lines: Vec<(&str, Line)> = results
        .backends
        .iter()
        .map(|b| {
            let line = points
                .iter()
                .filter_map(|&c| {
                    let e = results.compare(w.id, b, c, metric)?.own;
                    Some((c as f64, e.median, e.lo, e.hi))
                })
                .collect();
            (*b, line)
        })
        .collect();
    let all: Vec<&(f64, f64, f64, f64)> = lines.iter().flat_map(|(_, l)| l.iter()).collect();
    if all.is_empty() {
        return Ok(false);
    }
    let x_max = points.last().copied().unwrap_or(1).max(2) as f64 * 1.3;
    let y_max = all.iter().fold(0.0_f64, |m, p| m.max(p.3)) * 1.1;
    let y_min_pos = all
        .iter()
        .map(|p| p.2)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);

    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(title, (FONT, 22))
            .x_label_area_size(45)
            .y_label_area_size(80);
    }
    let x_range = (0.8f64..x_max).log_scale();
    // Latency spans orders of magnitude between 1 and 64 clients: log there.
    if metric == Metric::P99 {
        let y_range = (y_min_pos.min(y_max / 10.0) * 0.8..y_max.max(1.0)).log_scale();
        let mut chart = builder.build_cartesian_2d(x_range, y_range)?;
        mesh(&mut chart, with_text, y_label)?;
        series(&mut chart, &lines, with_text)?;
    } else {
        let mut chart = builder.build_cartesian_2d(x_range, 0f64..y_max.max(1e-9))?;
        mesh(&mut chart, with_text, y_label)?;
        series(&mut chart, &lines, with_text)?;
    }
    root.present()?;
    Ok(true)
}

fn mesh<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    with_text: bool,
    y_label: &str,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    if with_text {
        chart
            .configure_mesh()
            .x_desc("clients (log scale)")
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| crate::tables::num(*y))
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn series<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    lines: &[(&str, Line)],
    with_text: bool,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = lines.len().max(1) as f64;
    for (i, (backend, line)) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        // Backends side by side at each x (a few percent apart on the log axis), so
        // their interval bars do not hide each other.
        let shift = 1.04f64.powf(i as f64 - (n - 1.0) / 2.0);
        let at = |p: &(f64, f64, f64, f64)| (p.0 * shift, p.1);
        let drawn = chart
            .draw_series(LineSeries::new(line.iter().map(at), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if with_text {
            drawn.label(*backend).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        }
        chart
            .draw_series(line.iter().map(|p| {
                ErrorBar::new_vertical(p.0 * shift, p.2, p.1, p.3, color.stroke_width(2), 8)
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(line.iter().map(|p| Circle::new(at(p), 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if with_text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
