//! Checks the Grafana dashboard (`dashboards/xnic.json`) against what a daemon really
//! exports: every metric a panel's query names must be declared in a scrape of `/metrics`,
//! and every label it groups by or shows in its legend must be on that metric's series
//! (where the scrape has series of it).

use std::collections::{BTreeMap, BTreeSet};

/// The dashboard's queries: (panel title, expression, legend).
pub fn queries() -> Vec<(String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/xnic.json");
    let text = std::fs::read_to_string(path).expect("dashboards/xnic.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                t["expr"].as_str().unwrap_or_default().to_string(),
                t["legendFormat"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Metric names an expression reads.
pub fn metrics_of(expr: &str) -> BTreeSet<String> {
    words(expr)
        .filter(|w| w.starts_with("xnic_"))
        .map(str::to_string)
        .collect()
}

/// Labels an expression groups by and a legend shows (`instance` aside: Prometheus adds it).
pub fn labels_of(expr: &str, legend: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let after = &rest[i + 4..];
        let end = after.find(')').unwrap_or(after.len());
        out.extend(words(&after[..end]).map(str::to_string));
        rest = &after[end..];
    }
    let mut rest = legend;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        out.insert(after[..end].trim().to_string());
        rest = &after[end..];
    }
    out.remove("instance");
    out
}

/// Each metric of a scrape with the label names its series carry (none yet for a family
/// declared without series: a counter of events that have not happened).
pub fn exported(scrape: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut w = line.split(' ');
        if let (Some(name), Some(kind)) = (w.next(), w.next()) {
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            out.entry(name).or_default();
        }
    }
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.find('{') {
            Some(i) => (
                &line[..i],
                &line[i + 1..line.rfind('}').unwrap_or(line.len())],
            ),
            None => (line.split(' ').next().unwrap_or(line), ""),
        };
        let set = out.entry(name.to_string()).or_default();
        for pair in labels.split("\",") {
            if let Some((k, _)) = pair.split_once('=') {
                set.insert(k.trim().to_string());
            }
        }
    }
    out
}

/// Every dashboard query whose metrics all start with one of `prefixes` must find its
/// metrics and labels in `scrape`; the failures, described (empty: all good). At least one
/// query must have been checked.
pub fn check(scrape: &str, prefixes: &[&str]) -> Vec<String> {
    let have = exported(scrape);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (title, expr, legend) in queries() {
        let metrics = metrics_of(&expr);
        if metrics.is_empty()
            || !metrics
                .iter()
                .all(|m| prefixes.iter().any(|p| m.starts_with(p)))
        {
            continue;
        }
        checked += 1;
        for m in &metrics {
            if !have.contains_key(m) {
                problems.push(format!("{title:?}: {m} is not exported"));
            }
        }
        // Labels can be checked only on series there are.
        if metrics
            .iter()
            .any(|m| have.get(m).is_none_or(BTreeSet::is_empty))
        {
            continue;
        }
        for l in labels_of(&expr, &legend) {
            if !metrics
                .iter()
                .any(|m| have.get(m).is_some_and(|ls| ls.contains(&l)))
            {
                problems.push(format!(
                    "{title:?}: no series of {metrics:?} has label {l:?}"
                ));
            }
        }
    }
    if checked == 0 {
        problems.push(format!(
            "no dashboard query reads metrics starting with {prefixes:?}"
        ));
    }
    problems
}
