//! `kiln compare`: side-by-side throughput from several benchmark JSON files — kiln bench's
//! own and llama-bench's `-o json` — with ratios against the first, and an optional SVG bar
//! chart; or several `kiln bench-serve` reports, per concurrency level.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Benchmark JSON files (kiln bench --output, or llama-bench -o json); the first is the
    /// baseline of the ratios.
    #[arg(required = true, num_args = 2..)]
    pub files: Vec<PathBuf>,
    /// Also draw the comparison as a grouped bar chart.
    ///
    /// Where one file has several records of the same test and thread count (llama-bench
    /// run with `-fa 0,1`), the fastest is compared.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Throughput of one test (e.g. "tg128") at one thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub test: String,
    pub threads: usize,
    pub tokens_per_second: f64,
    pub stddev: f64,
}

/// One file's results, labelled for the table.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub rows: Vec<Measurement>,
}

pub fn main(args: CompareArgs) -> Result<()> {
    if let Some(serve) = serve_reports(&args.files)? {
        if args.plot.is_some() {
            bail!("--plot draws kiln bench / llama-bench throughput only, not bench-serve files");
        }
        return crate::common::print_stdout(&serve_table(&serve));
    }
    let series = args
        .files
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>>>()?;
    crate::common::print_stdout(&table(&series))?;
    if let Some(svg_path) = &args.plot {
        crate::common::write_atomic(svg_path, svg(&series).as_bytes())?;
        eprintln!("kiln compare: wrote {}", svg_path.display());
    }
    Ok(())
}

/// The files as `kiln bench-serve` reports, if every one is; `None` if none is.
fn serve_reports(files: &[PathBuf]) -> Result<Option<Vec<(String, Value)>>> {
    let mut out = Vec::new();
    for p in files {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => continue, // not JSON at all: `load` reports it
        };
        if v["kind"] == "bench-serve" {
            out.push((label(p), v));
        }
    }
    match out.len() {
        0 => Ok(None),
        n if n == files.len() => Ok(Some(out)),
        _ => bail!("cannot compare bench-serve files with kiln bench / llama-bench files"),
    }
}

fn label(p: &Path) -> String {
    p.file_stem().map_or_else(
        || p.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// One row per concurrency level and file: throughput (ratio against the first file) and
/// latency percentiles.
fn serve_table(reports: &[(String, Value)]) -> String {
    let mut s = String::from(
        "| concurrency | file | gen tok/s | ratio | TTFT p50 / p99 ms | ITL p50 / p99 ms | E2E p99 ms | ok/req |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let level = |v: &Value, c: u64| -> Option<Value> {
        v["levels"]
            .as_array()?
            .iter()
            .find(|l| l["concurrency"].as_u64() == Some(c))
            .cloned()
    };
    let mut levels: Vec<u64> = reports
        .iter()
        .flat_map(|(_, v)| v["levels"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l["concurrency"].as_u64())
        .collect();
    levels.sort_unstable();
    levels.dedup();
    for c in levels {
        let base = level(&reports[0].1, c).and_then(|l| l["gen_tokens_per_s"].as_f64());
        for (name, v) in reports {
            let Some(l) = level(v, c) else {
                continue;
            };
            let tps = l["gen_tokens_per_s"].as_f64().unwrap_or(0.0);
            let ratio = base
                .filter(|b| *b > 0.0)
                .map_or("-".into(), |b| format!("{:.2}", tps / b));
            let _ = writeln!(
                s,
                "| {c} | {name} | {tps:.1} | {ratio} | {} / {} | {} / {} | {} | {}/{} |",
                l["ttft_ms"]["p50"],
                l["ttft_ms"]["p99"],
                l["itl_ms"]["p50"],
                l["itl_ms"]["p99"],
                l["e2e_ms"]["p99"],
                l["ok"],
                l["requests"]
            );
        }
    }
    s
}

/// Reads either format; records without a usable test (e.g. pp0+tg0) are skipped.
pub fn load(path: &Path) -> Result<Series> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let stem = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let (records, engine) = match &v {
        Value::Array(items) => (items.as_slice(), "llama.cpp"),
        Value::Object(o) => match o.get("results").and_then(Value::as_array) {
            Some(r) => (
                r.as_slice(),
                o.get("engine").and_then(Value::as_str).unwrap_or("kiln"),
            ),
            None => bail!(
                "{}: no `results` array (is this a benchmark file?)",
                path.display()
            ),
        },
        _ => bail!("{}: expected a JSON array or object", path.display()),
    };
    let mut rows = Vec::new();
    for r in records {
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let f = |k: &str| r.get(k).and_then(Value::as_f64);
        let (n_prompt, n_gen) = (n("n_prompt"), n("n_gen"));
        let test = match (n_prompt, n_gen) {
            (0, 0) => continue,
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        let Some(ts) = f("avg_ts") else { continue };
        let m = Measurement {
            test,
            threads: n("n_threads"),
            tokens_per_second: ts,
            stddev: f("stddev_ts").unwrap_or(0.0),
        };
        // Several settings of one test (llama-bench -fa 0,1): keep the peer's fastest.
        match rows
            .iter_mut()
            .find(|r: &&mut Measurement| r.test == m.test && r.threads == m.threads)
        {
            Some(r) if r.tokens_per_second < m.tokens_per_second => *r = m,
            Some(_) => {}
            None => rows.push(m),
        }
    }
    if rows.is_empty() {
        bail!(
            "{}: no measurements with n_prompt/n_gen/avg_ts",
            path.display()
        );
    }
    let model = records
        .first()
        .and_then(|r| r.get("model_type").and_then(Value::as_str))
        .unwrap_or("");
    Ok(Series {
        label: format!(
            "{stem} ({engine}{}{model})",
            if model.is_empty() { "" } else { ", " }
        ),
        rows,
    })
}

type Key = (String, usize);

fn keys(series: &[Series]) -> Vec<Key> {
    let mut k: BTreeMap<Key, ()> = BTreeMap::new();
    for s in series {
        for r in &s.rows {
            k.insert((r.test.clone(), r.threads), ());
        }
    }
    k.into_keys().collect()
}

fn find<'a>(s: &'a Series, key: &Key) -> Option<&'a Measurement> {
    s.rows
        .iter()
        .find(|r| r.test == key.0 && r.threads == key.1)
}

pub fn table(series: &[Series]) -> String {
    let mut out = String::new();
    for (i, s) in series.iter().enumerate() {
        let _ = writeln!(out, "[{}] {}", i + 1, s.label);
    }
    out.push('\n');
    let mut header = String::from("| test | threads |");
    let mut rule = String::from("| --- | ---: |");
    for i in 0..series.len() {
        let _ = write!(header, " [{}] t/s |", i + 1);
        rule.push_str(" ---: |");
        if i > 0 {
            let _ = write!(header, " [{}]/[1] |", i + 1);
            rule.push_str(" ---: |");
        }
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for key in keys(series) {
        let base = find(&series[0], &key).map(|m| m.tokens_per_second);
        let _ = write!(out, "| {} | {} |", key.0, key.1);
        for (i, s) in series.iter().enumerate() {
            match find(s, &key) {
                Some(m) => {
                    let _ = write!(out, " {:.2} ± {:.2} |", m.tokens_per_second, m.stddev);
                }
                None => out.push_str(" - |"),
            }
            if i > 0 {
                match (find(s, &key), base) {
                    (Some(m), Some(b)) if b > 0.0 => {
                        let _ = write!(out, " {:.2}× |", m.tokens_per_second / b);
                    }
                    _ => out.push_str(" - |"),
                }
            }
        }
        out.push('\n');
    }
    out
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A grouped bar chart: one group per (test, threads), one bar per file.
pub fn svg(series: &[Series]) -> String {
    let keys = keys(series);
    let max = series
        .iter()
        .flat_map(|s| s.rows.iter().map(|r| r.tokens_per_second))
        .fold(1.0f64, f64::max);
    let (bar_w, gap, left, top, plot_h) = (22.0, 18.0, 60.0, 30.0, 260.0);
    let group_w = bar_w * series.len() as f64 + gap;
    let width = left + group_w * keys.len() as f64 + 20.0;
    let legend_h = 18.0 * series.len() as f64;
    let height = top + plot_h + 50.0 + legend_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18" font-size="13">tokens per second (higher is better)</text>"#
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            width - 20.0,
            left - 4.0,
            y + 4.0
        );
    }
    for (gi, key) in keys.iter().enumerate() {
        let x0 = left + gap / 2.0 + group_w * gi as f64;
        for (si, series) in series.iter().enumerate() {
            if let Some(m) = find(series, key) {
                let h = plot_h * m.tokens_per_second / max;
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{bar_w}" height="{h:.1}" fill="{}"><title>{} {} t={}: {:.2} t/s</title></rect>"#,
                    x0 + bar_w * si as f64,
                    top + plot_h - h,
                    COLORS[si % COLORS.len()],
                    escape(&series.label),
                    key.0,
                    key.1,
                    m.tokens_per_second
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} t={}</text>"#,
            x0 + bar_w * series.len() as f64 / 2.0,
            top + plot_h + 16.0,
            key.0,
            key.1
        );
    }
    for (si, series) in series.iter().enumerate() {
        let y = top + plot_h + 36.0 + 18.0 * si as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y - 10.0,
            COLORS[si % COLORS.len()],
            left + 18.0,
            y,
            escape(&series.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    #[test]
    fn reads_both_formats_and_computes_ratios() {
        let dir = tempfile::tempdir().unwrap();
        let llama = write(
            dir.path(),
            "llama.json",
            &serde_json::json!([
                {"model_type": "llama 135M Q4_1", "n_prompt": 512, "n_gen": 0, "n_threads": 2, "avg_ts": 250.0, "stddev_ts": 5.0},
                {"model_type": "llama 135M Q4_1", "n_prompt": 0, "n_gen": 128, "n_threads": 2, "avg_ts": 100.0, "stddev_ts": 1.0},
                {"model_type": "llama 135M Q4_1", "n_prompt": 0, "n_gen": 128, "n_threads": 2, "avg_ts": 90.0, "stddev_ts": 1.0, "flash_attn": true}
            ]),
        );
        let kiln = write(
            dir.path(),
            "kiln.json",
            &serde_json::json!({"engine": "kiln 0.1.0", "results": [
                {"model_type": "llama 135M Q4_1", "n_prompt": 0, "n_gen": 128, "n_threads": 2, "avg_ts": 150.0, "stddev_ts": 2.0}
            ]}),
        );
        let series = vec![load(&llama).unwrap(), load(&kiln).unwrap()];
        assert_eq!(series[0].rows.len(), 2);
        let t = table(&series);
        assert!(
            t.contains("| tg128 | 2 | 100.00 ± 1.00 | 150.00 ± 2.00 | 1.50× |"),
            "{t}"
        );
        assert!(t.contains("| pp512 | 2 | 250.00 ± 5.00 | - | - |"), "{t}");
        let svg = svg(&series);
        assert!(
            svg.starts_with("<svg") && svg.contains("<rect") && svg.trim_end().ends_with("</svg>")
        );
    }

    #[test]
    fn rejects_non_benchmark_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x.json", &serde_json::json!({"hello": 1}));
        assert!(load(&p).is_err());
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{not json").unwrap();
        assert!(load(&p).is_err());
    }
}
