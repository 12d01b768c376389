//! A report's figures as a picture (`bench/results/NAME.svg`): one bar per comparison, xnic's
//! figure over its baseline's, with the line at 1 where they are equal; green where xnic
//! does better, red where it does worse (by the metric's own direction); and each of its
//! series over time as a line chart (`NAME-series-N.svg`), with marks where things happened.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::prelude::*;

use crate::report::{Better, Report, Series};

/// Height of one bar's row, pixels.
const ROW: u32 = 26;

pub fn ratios_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let bars: Vec<(String, f64, bool)> = report
        .results
        .iter()
        .flat_map(|r| {
            r.baselines
                .iter()
                .filter(|(_, b)| **b > 0.0)
                .map(move |(name, b)| {
                    let ratio = r.xnic / b;
                    let better = match r.better {
                        Better::Higher => ratio >= 1.0,
                        Better::Lower => ratio <= 1.0,
                    };
                    (
                        format!("{} — {} vs {}", r.metric, r.scenario, name),
                        ratio,
                        better,
                    )
                })
        })
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    let n = bars.len();
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.1;
    let height = 80 + ROW * n as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: xnic / baseline (same run)", report.bench),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(0)
        .build_cartesian_2d(0.0..max, 0.0..n as f64)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("xnic / baseline")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (label, ratio, better)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let color = if *better {
            GREEN.mix(0.6)
        } else {
            RED.mix(0.6)
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (*ratio, y + 0.85)],
                color.filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{ratio:.2}× {label}"),
                (0.01 * max, y + 0.65),
                ("sans-serif", 13),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .draw_series(LineSeries::new(vec![(1.0, 0.0), (1.0, n as f64)], BLACK))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Colours of a series' lines, in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Each of the report's series as a line chart, `NAME-series-N.svg` in `dir`.
pub fn series_svgs(report: &Report, dir: &Path) -> anyhow::Result<()> {
    for (i, s) in report.series.iter().enumerate() {
        let path = dir.join(crate::report::series_file(&report.bench, i));
        series_svg(s, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn series_svg(s: &Series, path: &Path) -> anyhow::Result<()> {
    let points = || s.lines.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = points().fold(0.0f64, |m, p| m.max(p.1)) * 1.1;
    if x0 >= x1 || y1 <= 0.0 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1000, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&s.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(s.x_label.as_str())
        .y_desc(s.y_label.as_str())
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, line) in s.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    for (x, label) in &s.marks {
        chart
            .draw_series(LineSeries::new(vec![(*x, 0.0), (*x, y1)], BLACK.mix(0.5)))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (*x, y1 * 0.97),
                ("sans-serif", 13),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// `xnic-bench plot`: the pictures of every report already in `bench/results/`.
pub fn all() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let report: Report =
                serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let svg = path.with_extension("svg");
            ratios_svg(&report, &svg)?;
            series_svgs(&report, &dir)?;
            println!("written: {}", svg.display());
        }
    }
    Ok(())
}
