//! The ack-latency plot: p50 and p99 against offered load, Slipway and its baseline.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

/// One point: offered (or, at saturation, achieved) requests per second, p50, p99 (ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    /// Load (req/s).
    pub(crate) load: f64,
    /// p50 (ms).
    pub(crate) p50: f64,
    /// p99 (ms).
    pub(crate) p99: f64,
}

/// Font directories searched for a TrueType font (plotters' bitmap backend draws text with
/// `ab_glyph` from a font we hand it, so no fontconfig is needed).
const FONT_DIRS: [&str; 2] = ["/usr/share/fonts", "/usr/local/share/fonts"];

fn find_font() -> Option<Vec<u8>> {
    if let Ok(p) = std::env::var("SLIPWAY_BENCH_FONT") {
        return std::fs::read(p).ok();
    }
    let mut stack: Vec<std::path::PathBuf> = FONT_DIRS.iter().map(Into::into).collect();
    let mut any = None;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "DejaVuSans.ttf") {
                return std::fs::read(p).ok();
            } else if any.is_none() && p.extension().is_some_and(|x| x == "ttf") {
                any = Some(p);
            }
        }
    }
    any.and_then(|p| std::fs::read(p).ok())
}

/// Draw the plot to `path` (PNG). Fails if no font is found (set `SLIPWAY_BENCH_FONT`).
/// `slipway` and `baseline` are the open-loop points; `saturation` the closed-loop ones
/// (Slipway, baseline), drawn as crosses at the rate they achieved.
pub(crate) fn ack_latency(
    path: &Path,
    title: &str,
    slipway: &[Point],
    baseline: &[Point],
    saturation: Option<(Point, Point)>,
) -> anyhow::Result<()> {
    let font = find_font().context("no TrueType font found for the plot's text (set SLIPWAY_BENCH_FONT)")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| anyhow!("the font found is not a valid TrueType font"))?;
    let sat: Vec<Point> = saturation.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let all = slipway.iter().chain(baseline).chain(&sat);
    let max_x = all.clone().map(|p| p.load).fold(0.0, f64::max) * 1.1;
    let max_y = all.clone().map(|p| p.p99).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.5;
    let min_y =
        all.map(|p| p.p50).filter(|v| v.is_finite() && *v > 0.0).fold(f64::INFINITY, f64::min).min(max_y)
            * 0.6;

    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, (min_y..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered load, webhooks/s (open loop); crosses: saturation, at the rate achieved")
        .y_desc("ack latency, ms (log scale)")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let series: [(&str, &[Point], RGBColor, bool); 4] = [
        ("Slipway p50", slipway, blue, false),
        ("Slipway p99", slipway, blue, true),
        ("baseline p50 (raw signal-with-start)", baseline, orange, false),
        ("baseline p99 (raw signal-with-start)", baseline, orange, true),
    ];
    for (label, points, color, p99) in series {
        let data: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.load, if p99 { p.p99 } else { p.p50 }))
            .filter(|(_, y)| y.is_finite())
            .collect();
        let style = if p99 { color.stroke_width(3) } else { color.stroke_width(1) };
        chart.draw_series(LineSeries::new(data.clone(), style))?.label(label).legend(move |(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                if p99 { color.stroke_width(3) } else { color.stroke_width(1) },
            )
        });
        chart.draw_series(
            data.iter().map(|&(x, y)| Circle::new((x, y), if p99 { 5 } else { 3 }, color.filled())),
        )?;
    }
    if let Some((s, b)) = saturation {
        for (label, p, color) in
            [("Slipway at saturation (p50, p99)", s, blue), ("baseline at saturation (p50, p99)", b, orange)]
        {
            let pts = [(p.load, p.p50), (p.load, p.p99)];
            chart
                .draw_series(
                    pts.iter()
                        .filter(|(_, y)| y.is_finite())
                        .map(|&(x, y)| Cross::new((x, y), 8, color.stroke_width(3))),
                )?
                .label(label)
                .legend(move |(x, y)| Cross::new((x + 10, y), 6, color.stroke_width(3)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
