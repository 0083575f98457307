//! A PNG bar chart of the transfer workloads' ratios to plain (one group of bars per
//! workload, one bar per backend, the paired ratio's 95% interval as a whisker), and
//! the font and colours every chart shares (see curves.rs for the scaling charts).
//!
//! plotters draws text only with a font. It is built with `ab_glyph` (pure Rust, no
//! system library) and given a TTF file found on this machine; with none, the chart
//! is drawn without any text and the colours are listed on stdout instead.

use std::fs;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{Metric, Results, Workload, REFERENCE};

/// TrueType fonts commonly present on Debian (fonts-dejavu-core, fonts-liberation).
const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];
pub const FONT: &str = "sans-serif";
pub const COLORS: [RGBColor; 6] = [
    RGBColor(110, 110, 110),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Loads the first font found; false if there is none.
pub fn register_font() -> bool {
    for path in FONT_CANDIDATES {
        if let Ok(bytes) = fs::read(path) {
            // plotters keeps the font for the program's lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Writes the chart of `workloads` to `path`. Returns a note for the report (e.g. no
/// font found).
pub fn write_png(
    results: &Results,
    workloads: &[&Workload],
    path: &Path,
    title: &str,
) -> Result<Option<String>, String> {
    let with_text = register_font();
    draw(results, workloads, path, title, with_text)
        .map_err(|e| format!("drawing {}: {e}", path.display()))?;
    if with_text {
        return Ok(None);
    }
    let legend: Vec<String> = results
        .backends
        .iter()
        .zip(COLORS.iter().cycle())
        .map(|(b, c)| format!("{b}=rgb({},{},{})", c.0, c.1, c.2))
        .collect();
    Ok(Some(format!(
        "chart {}: no TrueType font found (looked for {FONT_CANDIDATES:?}), drawn without \
         text. Groups left to right: {}; bars: {}; the grey line is 1.0 (plain).",
        path.display(),
        workloads
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>()
            .join(", "),
        legend.join(", ")
    )))
}

/// (median, lo, hi) of the paired ratio to plain; 1 for plain itself.
fn ratio(results: &Results, workload: &str, backend: &str) -> Option<(f64, f64, f64)> {
    let clients = *results.client_points(workload).first()?;
    let c = results.compare(workload, backend, clients, Metric::Value)?;
    Some(c.ratio.map_or((1.0, 1.0, 1.0), |r| (r.median, r.lo, r.hi)))
}

fn draw(
    results: &Results,
    workloads: &[&Workload],
    path: &Path,
    title: &str,
    with_text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let groups = workloads.len().max(1);
    let backends = results.backends.len().max(1);
    let ratios: Vec<Vec<Option<(f64, f64, f64)>>> = workloads
        .iter()
        .map(|w| {
            results
                .backends
                .iter()
                .map(|b| ratio(results, w.id, b))
                .collect()
        })
        .collect();
    let top = ratios
        .iter()
        .flatten()
        .flatten()
        .fold(1.2_f64, |m, r| m.max(r.2 * 1.1));

    let root = BitMapBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(title, (FONT, 22))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    // Group i is centred on x = i, so the axis' integer key points label the groups.
    let mut chart = builder.build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), 0f64..top)?;
    if with_text {
        let names: Vec<&str> = workloads.iter().map(|w| w.id).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc(format!("ratio to {REFERENCE} (higher is better)"))
            .label_style((FONT, 14))
            .draw()?;
    }

    let width = 0.8 / backends as f64;
    for (b, backend) in results.backends.iter().enumerate() {
        let color = COLORS[b % COLORS.len()];
        let left = |g: usize| g as f64 - 0.4 + b as f64 * width;
        let bars: Vec<Rectangle<(f64, f64)>> = ratios
            .iter()
            .enumerate()
            .filter_map(|(g, row)| {
                let (r, _, _) = row[b]?;
                Some(Rectangle::new(
                    [(left(g), 0.0), (left(g) + width * 0.9, r)],
                    color.filled(),
                ))
            })
            .collect();
        let series = chart.draw_series(bars)?;
        if with_text {
            series.label(*backend).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
            });
            // Where a backend could not run, say so at the foot of its bar.
            let missing: Vec<Text<(f64, f64), String>> = workloads
                .iter()
                .enumerate()
                .filter(|(_, w)| results.is_unavailable(w.id, backend))
                .map(|(g, _)| Text::new("n/a".to_string(), (left(g), top * 0.02), (FONT, 12)))
                .collect();
            chart.draw_series(missing)?;
        }
        let whiskers: Vec<PathElement<(f64, f64)>> = ratios
            .iter()
            .enumerate()
            .filter_map(|(g, row)| {
                let (_, lo, hi) = row[b]?;
                let x = left(g) + width * 0.45;
                Some(PathElement::new(
                    vec![(x, lo), (x, hi)],
                    BLACK.stroke_width(2),
                ))
            })
            .collect();
        chart.draw_series(whiskers)?;
    }
    // The plain share's level.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 1.0), (groups as f64 - 0.5, 1.0)],
        RGBColor(90, 90, 90).stroke_width(1),
    )))?;
    if with_text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
