//! `kiln bench`: llama-bench-style throughput (prompt processing ppN, generation tgN) per
//! thread count, with peak RSS and decode bandwidth utilisation; table on stdout, JSON
//! (llama-bench field names where one exists) with `--output`.

use crate::common::resolve_model;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_engine::Engine;
use kiln_gguf::GgufFile;
use kiln_kvcache::KvDtype;
use kiln_tensor::membench::ReadProbe;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A GGUF file path or a known model name (default: the default model).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Prompt lengths to time (comma-separated; 0 or empty skips).
    #[arg(
        short = 'p',
        long = "n-prompt",
        default_value = "512",
        value_delimiter = ','
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to time (comma-separated; 0 skips).
    #[arg(
        short = 'n',
        long = "n-gen",
        default_value = "128",
        value_delimiter = ','
    )]
    pub n_gen: Vec<usize>,
    /// Thread counts (comma-separated).
    #[arg(
        short = 't',
        long = "threads",
        default_value = "2",
        value_delimiter = ','
    )]
    pub threads: Vec<usize>,
    /// Repetitions per test (after one warm-up run that is not counted).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16", value_parser = crate::common::parse_kv)]
    pub kv_type: KvDtype,
    /// Write the results as JSON here.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Skip the memory-bandwidth measurement.
    #[arg(long)]
    pub no_bandwidth: bool,
}

/// The machine a benchmark ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub isa: String,
    /// Read bandwidth in GB/s per thread count, measured by kiln itself (the median of the
    /// measurements before that thread count's decode runs of the last decode test).
    pub read_bandwidth_gbs: Vec<(usize, f64)>,
    /// Bytes the bandwidth probe streams per pass: what one decoded token reads, at most
    /// 1 GiB (0 when nothing was probed, or in reports written before the probe took the
    /// model's size).
    #[serde(default)]
    pub read_bandwidth_probe_bytes: u64,
}

/// One test at one thread count; field names follow llama-bench's JSON where one exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub model_filename: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub n_threads: usize,
    pub type_k: String,
    pub type_v: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub avg_ns: u64,
    pub stddev_ns: u64,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub median_ts: f64,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
    /// Decode only: bytes read per token × tokens/s ÷ the read bandwidth measured right
    /// before the same run; the median over the runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bandwidth_utilisation: Option<f64>,
    /// Decode only: the median of the read bandwidths measured before each run, GB/s.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read_bandwidth_gbs: Option<f64>,
}

/// What `kiln bench --output` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub engine: String,
    pub build_commit: String,
    pub kernels: String,
    pub machine: Machine,
    pub peak_rss_bytes: u64,
    pub results: Vec<Record>,
}

pub fn main(args: BenchArgs) -> Result<()> {
    let kv = args.kv_type;
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts");
    }
    let reps = args.repetitions.max(1);
    let path = resolve_model(args.model.as_deref())?;
    let file =
        Arc::new(GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let model_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let model_type = describe(&file);
    let file_name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let kernels = kiln_tensor::cpu::kernel_choice().name().to_string();
    let mut tests: Vec<(usize, usize)> = Vec::new();
    tests.extend(args.n_prompt.iter().filter(|&&p| p > 0).map(|&p| (p, 0)));
    tests.extend(args.n_gen.iter().filter(|&&n| n > 0).map(|&n| (0, n)));
    if tests.is_empty() {
        bail!("nothing to measure: give -p and/or -n");
    }

    // The machine's read bandwidth drifts (on a shared VM by 2× within minutes), so it is
    // measured right before every timed decode run, not once for the whole sitting, and each
    // run's utilisation is taken against its own measurement. The probe streams as many bytes
    // as one decoded token reads ([`ReadProbe::for_working_set`]). It is built at the first
    // decode test and stays resident for the whole command; its pages are left out of the
    // peak RSS reported.
    let max_gen = tests.iter().map(|&(_, n_gen)| n_gen).max().unwrap_or(0);
    let mut probe: Option<ReadProbe> = None;
    let mut bandwidths: Vec<(usize, f64)> = Vec::new();
    let mut results = Vec::new();
    for &threads in &args.threads {
        let engine = Engine::from_gguf(Arc::clone(&file), threads)?;
        for &(n_prompt, n_gen) in &tests {
            let label = test_label(n_prompt, n_gen);
            let run = |engine: &Engine| -> Result<Duration> {
                Ok(if n_prompt > 0 {
                    engine.time_prefill(n_prompt, kv)?
                } else {
                    engine.time_decode(n_gen, kv)?
                })
            };
            eprint!("kiln bench: {label} t={threads}: warm-up");
            run(&engine)?;
            if n_gen > 0 && !args.no_bandwidth && probe.is_none() {
                eprint!("kiln bench: preparing the bandwidth probe…");
                let bytes = decode_bytes_per_token(&engine, kv, max_gen);
                probe = Some(ReadProbe::for_working_set(bytes));
                eprintln!();
            }
            let probe = probe.as_ref().filter(|_| n_gen > 0);
            let mut samples = Vec::with_capacity(reps);
            let mut probed = Vec::new();
            for i in 0..reps {
                eprint!("\rkiln bench: {label} t={threads}: run {}/{reps}   ", i + 1);
                if let Some(p) = probe {
                    probed.push(p.measure(engine.pool(), ReadProbe::WORKING_SET_PASSES));
                }
                samples.push(run(&engine)?);
            }
            eprintln!();
            let n_tokens = n_prompt + n_gen;
            let mut record = record(
                &file_name,
                &model_type,
                model_size,
                n_params,
                threads,
                kv,
                n_prompt,
                n_gen,
                n_tokens,
                &samples,
            );
            if !probed.is_empty() {
                let bytes = decode_bytes_per_token(&engine, kv, n_gen) as f64;
                let utilisation: Vec<f64> = (record.samples_ts.iter().zip(&probed))
                    .map(|(ts, bw)| bytes * ts / bw)
                    .collect();
                record.bandwidth_utilisation = Some(median(&utilisation));
                let gbs = median(&probed) / 1e9;
                record.read_bandwidth_gbs = Some(gbs);
                eprintln!("kiln bench: {label} t={threads}: read bandwidth {gbs:.1} GB/s (median)");
                bandwidths.retain(|(t, _)| *t != threads);
                bandwidths.push((threads, gbs));
            }
            results.push(record);
        }
    }
    let probe_bytes = probe.as_ref().map_or(0, |p| p.bytes() as u64);
    let peak_rss_bytes = peak_rss().unwrap_or(0).saturating_sub(probe_bytes);

    let report = BenchReport {
        engine: format!("kiln {}", env!("CARGO_PKG_VERSION")),
        build_commit: build_commit(),
        kernels,
        machine: Machine {
            cpu: cpu_name(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            isa: isa_summary(),
            read_bandwidth_gbs: bandwidths,
            read_bandwidth_probe_bytes: probe_bytes,
        },
        peak_rss_bytes,
        results,
    };
    crate::common::print_stdout(&table(&report))?;
    if let Some(out) = &args.output {
        let json = serde_json::to_string_pretty(&report)?;
        crate::common::write_atomic(out, (json + "\n").as_bytes())?;
        eprintln!("kiln bench: wrote {}", out.display());
    }
    Ok(())
}

fn test_label(n_prompt: usize, n_gen: usize) -> String {
    if n_prompt > 0 {
        format!("pp{n_prompt}")
    } else {
        format!("tg{n_gen}")
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    file_name: &str,
    model_type: &str,
    model_size: u64,
    n_params: u64,
    threads: usize,
    kv: KvDtype,
    n_prompt: usize,
    n_gen: usize,
    n_tokens: usize,
    samples: &[Duration],
) -> Record {
    let samples_ns: Vec<u64> = samples.iter().map(|d| d.as_nanos() as u64).collect();
    let samples_ts: Vec<f64> = samples
        .iter()
        .map(|d| n_tokens as f64 / d.as_secs_f64().max(1e-12))
        .collect();
    let (avg_ns, sd_ns) = mean_sd(&samples_ns.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let (avg_ts, stddev_ts) = mean_sd(&samples_ts);
    let kv_name = kv.name();
    Record {
        model_filename: file_name.to_string(),
        model_type: model_type.to_string(),
        model_size,
        model_n_params: n_params,
        n_threads: threads,
        type_k: kv_name.into(),
        type_v: kv_name.into(),
        n_prompt,
        n_gen,
        avg_ns: avg_ns as u64,
        stddev_ns: sd_ns as u64,
        avg_ts,
        stddev_ts,
        median_ts: median(&samples_ts),
        samples_ns,
        samples_ts,
        bandwidth_utilisation: None,
        read_bandwidth_gbs: None,
    }
}

/// Mean and sample standard deviation.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Bytes one token of an `n_gen`-token decode reads: the weights once, plus the KV cache at
/// the average position.
fn decode_bytes_per_token(engine: &Engine, kv: KvDtype, n_gen: usize) -> usize {
    let c = engine.model().config();
    let kv_per_position = 2 * c.n_layer * c.n_head_kv * c.head_dim * kv.element_bytes();
    engine.model().weight_bytes_per_token() + kv_per_position * n_gen / 2
}

fn describe(file: &GgufFile) -> String {
    let arch = file
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let size = file
        .get("general.size_label")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
    for t in file.tensors() {
        *counts.entry(t.ggml_type.name()).or_default() += t.n_bytes;
    }
    let main_type = counts
        .iter()
        .max_by_key(|(_, b)| **b)
        .map_or("?", |(t, _)| *t);
    format!("{arch} {size} {}", main_type.to_uppercase()).replace("  ", " ")
}

fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "kiln {} ({} kernels) on {}\n\n",
        r.build_commit, r.kernels, r.machine.cpu
    ));
    s.push_str("| model | size | params | threads | test | t/s | median t/s | bw util |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for x in &r.results {
        s.push_str(&format!(
            "| {} | {:.2} MiB | {:.2} M | {} | {} | {:.2} ± {:.2} | {:.2} | {} |\n",
            x.model_type,
            x.model_size as f64 / (1 << 20) as f64,
            x.model_n_params as f64 / 1e6,
            x.n_threads,
            test_label(x.n_prompt, x.n_gen),
            x.avg_ts,
            x.stddev_ts,
            x.median_ts,
            x.bandwidth_utilisation
                .map_or_else(|| "-".to_string(), |u| format!("{:.0}%", u * 100.0)),
        ));
    }
    s.push_str(&format!(
        "\npeak RSS {:.1} MiB\n",
        r.peak_rss_bytes as f64 / (1 << 20) as f64
    ));
    s
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn isa_summary() -> String {
    let f = kiln_tensor::cpu::features();
    let mut v = Vec::new();
    for (on, name) in [
        (f.avx2, "AVX2"),
        (f.fma, "FMA"),
        (f.f16c, "F16C"),
        (f.avx512f, "AVX512F"),
        (f.avx512bw, "AVX512BW"),
        (f.avx512vl, "AVX512VL"),
        (f.avx512vnni, "AVX512_VNNI"),
    ] {
        if on {
            v.push(name);
        }
    }
    v.join(" ")
}

/// The git commit kiln was built from (set by the build script), or "unknown".
fn build_commit() -> String {
    option_env!("KILN_BUILD_COMMIT")
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((sd - 1.2909944).abs() < 1e-6);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
