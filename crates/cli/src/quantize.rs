//! `kiln quantize`: argument parsing, progress bar and the per-tensor error table around
//! `kiln_models::quantize::quantize_file`; real-time audio nets (RTNeural JSON or rtnet GGUF)
//! go to INT8 here too, with a per-layer error report on given or generated frames.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_gguf::GgufFile;
use kiln_models::imatrix::Imatrix;
use kiln_models::quantize::{quantize_file, QuantizeReport, QuantizeSpec};
use kiln_models::rtnet::{self, csv::parse_rows, RtNet};
use kiln_quant::QuantType;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The GGUF model to quantize (any supported tensor types).
    pub input: PathBuf,
    /// Where to write the result (atomically: temporary file, then rename).
    pub output: PathBuf,
    /// Target type: q8_0, q4_0, q4_1, q4_k, q6_k, f16, bf16 (or f32).
    #[arg(long = "type", value_parser = parse_type)]
    pub ty: QuantType,
    /// REGEX=TYPE: tensors whose name matches REGEX get TYPE (first match wins; repeatable).
    #[arg(long = "tensor-type", value_parser = parse_rule)]
    pub tensor_type: Vec<(String, QuantType)>,
    /// Type of the output projection (and of a tied embedding table).
    #[arg(long, value_parser = parse_type)]
    pub output_type: Option<QuantType>,
    /// Type of the token embedding table when it is not tied to the output.
    #[arg(long, value_parser = parse_type)]
    pub embedding_type: Option<QuantType>,
    /// Importance matrix (GGUF, from `kiln calibrate` or llama-imatrix).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Clip each row at this percentile of |w| when choosing scales (e.g. 99.9).
    #[arg(long)]
    pub clip_percentile: Option<f32>,
    /// Keep a tensor at the next higher precision while its weighted relative error
    /// Σw(x−x̂)²/Σwx² exceeds this.
    #[arg(long)]
    pub max_tensor_error: Option<f64>,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Audio nets: input frames (CSV, one frame per row) to measure the INT8 error on
    /// (default: 1000 frames of seeded uniform noise in [-1, 1]).
    #[arg(long, value_name = "CSV")]
    pub frames: Option<PathBuf>,
}

fn parse_type(s: &str) -> Result<QuantType, String> {
    QuantType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown type {s:?} (known: {})", names.join(", "))
    })
}

fn parse_rule(s: &str) -> Result<(String, QuantType), String> {
    let (re, ty) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} is not REGEX=TYPE"))?;
    Ok((re.to_owned(), parse_type(ty)?))
}

pub fn main(args: QuantizeArgs) -> Result<()> {
    if let Some(r) = &args.report {
        if let Some(d) = r.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !d.is_dir() {
                bail!("report directory {} does not exist", d.display());
            }
        }
    }
    if let Some(net) = audio_net(&args.input)? {
        return quantize_audio_net(&args, net);
    }
    if args.frames.is_some() {
        bail!(
            "--frames applies to real-time audio nets; {} is not one",
            args.input.display()
        );
    }
    let imatrix = match &args.imatrix {
        Some(p) => Some(Imatrix::load(p).with_context(|| format!("loading {}", p.display()))?),
        None => None,
    };
    if let Some(m) = &imatrix {
        eprintln!(
            "kiln: importance matrix with {} entries from {} chunks of {} ({})",
            m.entries.len(),
            m.chunk_count,
            m.chunk_size,
            m.datasets.join(", ")
        );
    }
    let spec = QuantizeSpec {
        ty: args.ty,
        tensor_types: args.tensor_type.clone(),
        output_type: args.output_type,
        embedding_type: args.embedding_type,
        clip_percentile: args.clip_percentile,
        max_tensor_error: args.max_tensor_error,
        threads: args.threads,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("quantize {bar:30} {pos}/{len} tensors {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let imatrix_name = args.imatrix.as_ref().map(|p| p.display().to_string());
    let report = quantize_file(
        &args.input,
        &args.output,
        &spec,
        imatrix.as_ref(),
        imatrix_name.as_deref(),
        |done, total, name| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(name.to_owned());
        },
    )?;
    bar.finish_and_clear();
    if !report.requantized.is_empty() {
        eprintln!(
            "warning: {} tensors were already quantized in the input and were quantized again; \
             their error adds to the source's (quantize from an f16/f32 model when you can)",
            report.requantized.len()
        );
    }
    if let Some(p) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        crate::common::write_atomic(p, json.as_bytes())?;
    }
    crate::common::print_stdout(&table(&report)?)?;
    eprintln!(
        "kiln: wrote {} in {:.1} s",
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The input as a real-time audio net when it is one: an RTNeural JSON file, or a GGUF file
/// whose architecture is `rtnet`. `None` for anything else (an LLM GGUF file).
fn audio_net(path: &Path) -> Result<Option<RtNet>> {
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let net = if json {
        RtNet::load(path)
    } else {
        let file = GgufFile::open(path).with_context(|| format!("loading {}", path.display()))?;
        if file.architecture().ok() != Some(rtnet::gguf::ARCH) {
            return Ok(None);
        }
        rtnet::gguf::from_file(&file)
    };
    Ok(Some(
        net.with_context(|| format!("loading {}", path.display()))?,
    ))
}

/// Seed of the default frames an audio net's INT8 error is measured on.
const NOISE_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// `kiln quantize` for an audio net: every matrix to Q8_0 (or the net stored as f32), written
/// as rtnet GGUF, with the per-layer error of the result against the input net.
fn quantize_audio_net(args: &QuantizeArgs, net: RtNet) -> Result<()> {
    let name = args.input.display();
    let llm_only = [
        ("--tensor-type", !args.tensor_type.is_empty()),
        ("--output-type", args.output_type.is_some()),
        ("--embedding-type", args.embedding_type.is_some()),
        ("--imatrix", args.imatrix.is_some()),
        ("--clip-percentile", args.clip_percentile.is_some()),
        ("--max-tensor-error", args.max_tensor_error.is_some()),
    ];
    if let Some((flag, _)) = llm_only.iter().find(|(_, set)| *set) {
        bail!("{flag} applies to LLM files; {name} is a real-time audio net");
    }
    let out = match args.ty {
        QuantType::Q8_0 => net.to_q8_0(),
        QuantType::F32 => net.clone(),
        other => bail!(
            "{name} is a real-time audio net: it is stored as q8_0 (INT8) or f32, not {}",
            other.name()
        ),
    };
    let (frames, source) = match &args.frames {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let rows = parse_rows(&text).with_context(|| format!("reading {}", p.display()))?;
            if let Some((i, r)) = rows
                .iter()
                .enumerate()
                .find(|(_, r)| r.len() != net.in_size())
            {
                bail!(
                    "{}: row {} has {} values, the net takes {} per frame",
                    p.display(),
                    i + 1,
                    r.len(),
                    net.in_size()
                );
            }
            (rows, p.display().to_string())
        }
        None => (
            crate::common::noise(1000 * net.in_size(), NOISE_SEED)
                .chunks(net.in_size().max(1))
                .map(<[f32]>::to_vec)
                .collect(),
            "seeded noise in [-1, 1]".to_owned(),
        ),
    };
    let rep = rtnet::report::compare(&net, &out, &frames)?;
    rtnet::gguf::save(&out, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(p) = &args.report {
        let layers: Vec<serde_json::Value> = rep
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "index": l.index, "type": l.kind,
                    "weights": l.weight_type.map(|t| t.name()),
                    "max_abs": l.error.max_abs, "rms": l.error.rms, "ref_rms": l.error.ref_rms,
                })
            })
            .collect();
        let json = serde_json::json!({
            "input": name.to_string(), "output": args.output.display().to_string(),
            "type": args.ty.name(), "frames": rep.frames, "frames_source": source,
            "layers": layers,
            "output_error": {
                "max_abs": rep.output.max_abs, "rms": rep.output.rms,
                "relative_rms": rep.output.relative_rms(),
            },
            "bytes_before": rep.reference_bytes, "bytes_after": rep.quantized_bytes,
        });
        crate::common::write_atomic(p, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    let what = if args.ty == QuantType::Q8_0 {
        "INT8 (Q8_0)"
    } else {
        args.ty.name()
    };
    let table = crate::rt_run::quant_table(what, &rep);
    crate::common::print_stdout(&format!("{table}(frames: {source})\n"))?;
    eprintln!(
        "kiln: wrote {} ({} layers)",
        args.output.display(),
        out.layers().len()
    );
    Ok(())
}

fn snr(v: Option<f64>) -> String {
    v.map_or_else(|| "inf".to_owned(), |s| format!("{s:.2}"))
}

/// The per-tensor table with totals.
fn table(r: &QuantizeReport) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "{:<28} {:>6} {:>6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>6}  note",
        "tensor",
        "from",
        "to",
        "rmse",
        "max_abs",
        "snr_db",
        "w_err",
        "bytes_in",
        "bytes_out",
        "ratio"
    )?;
    for t in &r.tensors {
        writeln!(
            out,
            "{:<28} {:>6} {:>6} {:>10.3e} {:>10.3e} {:>8} {:>10.3e} {:>10} {:>10} {:>6.2}  {}{}",
            t.name,
            t.source_type,
            t.final_type,
            t.rmse,
            t.max_abs_error,
            snr(t.snr_db),
            t.weighted_error,
            t.bytes_before,
            t.bytes_after,
            t.bytes_before as f64 / t.bytes_after.max(1) as f64,
            if t.used_imatrix { "[imatrix] " } else { "" },
            t.note.as_deref().unwrap_or("")
        )?;
    }
    writeln!(
        out,
        "total: {} -> {} bytes (ratio {:.3}), rmse {:.3e}, snr {} dB, file_type {}; {} tensors re-quantized, {} kept at higher precision{}",
        r.bytes_before,
        r.bytes_after,
        r.compression_ratio,
        r.total_rmse,
        snr(r.total_snr_db),
        r.file_type,
        r.requantized.len(),
        r.fallbacks.len(),
        if r.fallbacks.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.fallbacks.join(", "))
        }
    )?;
    Ok(out)
}
