//! The result format every benchmark shares, written as JSON and as a markdown summary.
//!
//! ```json
//! {"bench": NAME, "host": {"kernel": ..., "cpus": ...}, "results": [{"metric": ...,
//!  "scenario": ..., "unit": ..., "better": "higher"|"lower", "xnic": NUMBER,
//!  "baselines": {NAME: NUMBER, ...}}]}
//! ```

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    pub kernel: String,
    pub cpus: usize,
}

impl Host {
    pub fn this() -> Host {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Host { kernel, cpus }
    }
}

/// Figures over time in one run: a line each, with moments worth marking.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Series {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// (x, what happened then), drawn as vertical lines.
    #[serde(default)]
    pub marks: Vec<(f64, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Result {
    pub metric: String,
    pub scenario: String,
    pub unit: String,
    pub better: Better,
    pub xnic: f64,
    pub baselines: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub bench: String,
    pub host: Host,
    pub results: Vec<Result>,
    /// Figures over time (drawn as `NAME-series-N.svg`).
    #[serde(default)]
    pub series: Vec<Series>,
    /// How the numbers were taken, for the markdown summary.
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(bench: &str) -> Report {
        Report {
            bench: bench.to_string(),
            host: Host::this(),
            results: Vec::new(),
            series: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add(
        &mut self,
        metric: &str,
        scenario: &str,
        unit: &str,
        better: Better,
        xnic: f64,
        baselines: &[(&str, f64)],
    ) {
        self.results.push(Result {
            metric: metric.into(),
            scenario: scenario.into(),
            unit: unit.into(),
            better,
            xnic,
            baselines: baselines.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        });
    }

    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Benchmark: {}\n\nHost: Linux {}, {} CPUs.\n\n",
            self.bench, self.host.kernel, self.host.cpus
        );
        for note in &self.notes {
            let _ = writeln!(md, "- {note}");
        }
        if !self.notes.is_empty() {
            md.push('\n');
        }
        let _ = writeln!(md, "![xnic / baseline]({}.svg)\n", self.bench);
        for (i, s) in self.series.iter().enumerate() {
            let _ = writeln!(md, "![{}]({})\n", s.title, series_file(&self.bench, i));
        }
        md.push_str("| metric | scenario | xnic | baseline | baseline value | xnic / baseline |\n");
        md.push_str("|---|---|---:|---|---:|---:|\n");
        for r in &self.results {
            let mut first = true;
            for (name, value) in &r.baselines {
                let ratio = if *value != 0.0 {
                    r.xnic / value
                } else {
                    f64::NAN
                };
                let (metric, scenario, xnic) = if first {
                    (
                        format!(
                            "{} ({}, {} is better)",
                            r.metric,
                            r.unit,
                            match r.better {
                                Better::Higher => "higher",
                                Better::Lower => "lower",
                            }
                        ),
                        r.scenario.clone(),
                        fmt_num(r.xnic),
                    )
                } else {
                    (String::new(), String::new(), String::new())
                };
                first = false;
                // A `|` inside a cell would end it.
                let cell = |s: &str| s.replace('|', "\\|");
                let _ = writeln!(
                    md,
                    "| {} | {} | {xnic} | {} | {} | {ratio:.3} |",
                    cell(&metric),
                    cell(&scenario),
                    cell(name),
                    fmt_num(*value)
                );
            }
        }
        md
    }

    /// Writes `bench/results/<bench>.json` and `.md`, and prints the markdown.
    pub fn write(&self) -> anyhow::Result<()> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
        std::fs::create_dir_all(&dir)?;
        let json = dir.join(format!("{}.json", self.bench));
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        let md = dir.join(format!("{}.md", self.bench));
        let text = self.markdown();
        std::fs::write(&md, &text).with_context(|| format!("writing {}", md.display()))?;
        let svg = dir.join(format!("{}.svg", self.bench));
        crate::plot::ratios_svg(self, &svg)
            .with_context(|| format!("writing {}", svg.display()))?;
        crate::plot::series_svgs(self, &dir)?;
        println!("{text}");
        println!(
            "written: {}, {} and {}",
            json.display(),
            md.display(),
            svg.display()
        );
        Ok(())
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The median of `v` (which must not be empty).
/// Median kernel-timed ns of `runs` single runs of `run` (given the run's index).
pub fn timed(runs: usize, mut run: impl FnMut(u32) -> anyhow::Result<u64>) -> anyhow::Result<f64> {
    let mut v = Vec::with_capacity(runs);
    for i in 0..runs {
        v.push(run(i as u32)? as f64);
    }
    Ok(median(v))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The file series `i` of benchmark `bench` is drawn in.
pub fn series_file(bench: &str, i: usize) -> String {
    format!("{bench}-series-{}.svg", i + 1)
}
