//! A report's figures as a picture (`bench/results/NAME.svg`): one bar per comparison, xnic's
//! figure over its baseline's, with the line at 1 where they are equal; green where xnic
//! does better, red where it does worse (by the metric's own direction).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::{Better, Report};

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
            println!("written: {}", svg.display());
        }
    }
    Ok(())
}
