//! Whole-file quantization: picks a storage type for every tensor of a GGUF model (base type,
//! `--tensor-type` regex rules, output and embedding types), converts it with the
//! importance-weighted search of `kiln_quant`, falls back to the next higher precision when the
//! weighted error exceeds a bound, keeps all metadata (with `general.file_type` updated), writes
//! the result atomically and reports the error of every tensor.
//!
//! It lives in `models` because choosing types needs the weight-naming knowledge of the
//! architectures (which tensors are matmul weights, tied embedding/output) and both `gguf` and
//! `quant`, which `models` already depends on; `engine` only adds execution, which quantization
//! does not need.

use crate::imatrix::Imatrix;
use kiln_gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use kiln_quant::{ErrorStats, QuantType, SearchOptions};
use regex::Regex;
use std::borrow::Cow;
use std::path::Path;
use thiserror::Error;

/// Everything that stops a quantization before any output is written.
#[derive(Debug, Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Input {
        path: String,
        #[source]
        source: kiln_gguf::GgufError,
    },
    #[error("output directory {dir} does not exist")]
    OutputDir { dir: String },
    #[error("--tensor-type {pattern:?}: {problem}")]
    Rule { pattern: String, problem: String },
    #[error("tensor {name}: {problem}")]
    Tensor { name: String, problem: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: kiln_gguf::GgufError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct QuantizeSpec {
    /// Type of every quantizable tensor that no other rule covers.
    pub ty: QuantType,
    /// `(regex, type)` rules matched against tensor names; the first match wins over every
    /// other rule. A rule that matches no tensor is an error.
    pub tensor_types: Vec<(String, QuantType)>,
    /// Type of the output projection (also the embedding table when it is tied to the output).
    /// Default: Q6_K when `ty` is a lower-precision block type, else `ty`.
    pub output_type: Option<QuantType>,
    /// Type of `token_embd.weight` when it is not tied to the output. Default: `ty`.
    pub embedding_type: Option<QuantType>,
    /// Clip each row at this percentile of its absolute values when choosing scales.
    pub clip_percentile: Option<f32>,
    /// Largest allowed weighted relative error `Σw(x−x̂)²/Σwx²`; a tensor above it is redone at
    /// the next higher precision.
    pub max_tensor_error: Option<f64>,
    /// Worker threads (0 = all cores).
    pub threads: usize,
}

/// One tensor's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub source_type: String,
    /// The type the rules asked for.
    pub requested_type: String,
    /// The type written.
    pub final_type: String,
    pub rmse: f64,
    pub max_abs_error: f64,
    /// `null` in JSON (infinite) for a tensor copied unchanged.
    pub snr_db: Option<f64>,
    pub weighted_error: f64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub used_imatrix: bool,
    /// Re-quantized from an already quantized source (adds the source's error to ours).
    pub requantized: bool,
    pub note: Option<String>,
}

/// The whole file's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuantizeReport {
    pub input: String,
    pub output: String,
    pub file_type: u32,
    pub tensors: Vec<TensorReport>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub compression_ratio: f64,
    /// Error over every converted tensor together.
    pub total_rmse: f64,
    pub total_snr_db: Option<f64>,
    /// Tensors kept at a higher precision than requested because of `max_tensor_error`.
    pub fallbacks: Vec<String>,
    /// Tensors that were already quantized in the input and were quantized again.
    pub requantized: Vec<String>,
}

/// llama.cpp's `llama_ftype` for a file whose bulk is `ty`.
pub fn file_type(ty: QuantType) -> u32 {
    match ty {
        QuantType::F32 => 0,
        QuantType::F16 => 1,
        QuantType::Q4_0 => 2,
        QuantType::Q4_1 => 3,
        QuantType::Q8_0 => 7,
        QuantType::Q4_K => 14,
        QuantType::Q6_K => 18,
        QuantType::BF16 => 32,
    }
}

/// The next type up the precision ladder Q4_0 < Q4_K < Q4_1 < Q6_K < Q8_0 < F16 < F32
/// (BF16 goes to F32); `None` for F32.
pub fn next_higher(ty: QuantType) -> Option<QuantType> {
    use QuantType::*;
    match ty {
        Q4_0 => Some(Q4_K),
        Q4_K => Some(Q4_1),
        Q4_1 => Some(Q6_K),
        Q6_K => Some(Q8_0),
        Q8_0 => Some(F16),
        F16 | BF16 => Some(F32),
        F32 => None,
    }
}

/// The next type up the ladder whose block divides a row of `n`.
fn next_fitting(ty: QuantType, n: usize) -> Option<QuantType> {
    let mut c = next_higher(ty);
    while let Some(x) = c {
        if n.is_multiple_of(x.block_size()) {
            return Some(x);
        }
        c = next_higher(x);
    }
    None
}

/// Rank on the ladder of [`next_higher`] (BF16 ranks with F16).
fn rank(ty: QuantType) -> u8 {
    use QuantType::*;
    match ty {
        Q4_0 => 0,
        Q4_K => 1,
        Q4_1 => 2,
        Q6_K => 3,
        Q8_0 => 4,
        F16 | BF16 => 5,
        F32 => 6,
    }
}

/// Whether a tensor holds weights that are quantized (matrices; norms and biases stay).
fn quantizable(t: &TensorInfo) -> bool {
    t.dims.len() >= 2 && t.name.ends_with(".weight")
}

/// Validates the output path and the rules, quantizes `input` and writes `output` atomically.
/// `progress(done, total, name)` is called before each tensor. Nothing is written on error.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    spec: &QuantizeSpec,
    imatrix: Option<&Imatrix>,
    imatrix_path: Option<&str>,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<QuantizeReport, QuantizeError> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(QuantizeError::OutputDir {
            dir: dir.display().to_string(),
        });
    }
    if let Some(p) = spec.clip_percentile {
        if !(p > 0.0 && p <= 100.0) {
            return Err(QuantizeError::Invalid(format!(
                "--clip-percentile {p} must be in (0, 100]"
            )));
        }
    }
    let file = GgufFile::open(input).map_err(|source| QuantizeError::Input {
        path: input.display().to_string(),
        source,
    })?;
    let rules = compile_rules(&spec.tensor_types, &file)?;
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    let ft = file_type(spec.ty);
    w.add_metadata("general.file_type", Value::U32(ft));
    w.add_metadata("general.quantization_version", Value::U32(2));
    if let (Some(m), Some(p)) = (imatrix, imatrix_path) {
        w.add_metadata("quantize.imatrix.file", Value::from(p));
        if let Some(d) = m.datasets.first() {
            w.add_metadata("quantize.imatrix.dataset", Value::from(d.as_str()));
        }
        w.add_metadata(
            "quantize.imatrix.entries_count",
            Value::I32(m.entries.len() as i32),
        );
        w.add_metadata(
            "quantize.imatrix.chunks_count",
            Value::I32(m.chunk_count as i32),
        );
    }
    let tied = file.tensor("output.weight").is_none();
    let total = file.tensors().len();
    let mut reports = Vec::with_capacity(total);
    let mut all = ErrorStats::default();
    for (i, t) in file.tensors().iter().enumerate() {
        progress(i, total, &t.name);
        let (data, report, stats) = convert(&file, t, spec, &rules, tied, imatrix)?;
        all.merge(&stats);
        let gt = GgmlType::from_name(&report.final_type).ok_or_else(|| QuantizeError::Tensor {
            name: t.name.clone(),
            problem: format!("type {} has no ggml id", report.final_type),
        })?;
        w.add_tensor_cow(t.name.clone(), gt, &t.dims, data)
            .map_err(|e| QuantizeError::Tensor {
                name: t.name.clone(),
                problem: e.to_string(),
            })?;
        reports.push(report);
    }
    progress(total, total, "");
    w.write_file(output)
        .map_err(|source| QuantizeError::Write {
            path: output.display().to_string(),
            source,
        })?;
    let bytes_before: u64 = reports.iter().map(|r| r.bytes_before).sum();
    let bytes_after: u64 = reports.iter().map(|r| r.bytes_after).sum();
    Ok(QuantizeReport {
        input: input.display().to_string(),
        output: output.display().to_string(),
        file_type: ft,
        fallbacks: reports
            .iter()
            .filter(|r| r.final_type != r.requested_type && r.note.is_some())
            .filter(|r| {
                r.note
                    .as_deref()
                    .is_some_and(|n| n.contains("max-tensor-error"))
            })
            .map(|r| r.name.clone())
            .collect(),
        requantized: reports
            .iter()
            .filter(|r| r.requantized)
            .map(|r| r.name.clone())
            .collect(),
        tensors: reports,
        bytes_before,
        bytes_after,
        compression_ratio: bytes_before as f64 / bytes_after.max(1) as f64,
        total_rmse: all.rmse(),
        total_snr_db: Some(all.snr_db()).filter(|v| v.is_finite()),
    })
}

fn compile_rules(
    rules: &[(String, QuantType)],
    file: &GgufFile,
) -> Result<Vec<(Regex, QuantType)>, QuantizeError> {
    rules
        .iter()
        .map(|(pattern, ty)| {
            let re = Regex::new(pattern).map_err(|e| QuantizeError::Rule {
                pattern: pattern.clone(),
                problem: e.to_string(),
            })?;
            if !file
                .tensors()
                .iter()
                .any(|t| quantizable(t) && re.is_match(&t.name))
            {
                return Err(QuantizeError::Rule {
                    pattern: pattern.clone(),
                    problem: "matches no quantizable tensor of the input".into(),
                });
            }
            Ok((re, *ty))
        })
        .collect()
}

/// The type the rules ask for (before row-length and error checks).
fn requested(
    t: &TensorInfo,
    spec: &QuantizeSpec,
    rules: &[(Regex, QuantType)],
    tied: bool,
) -> QuantType {
    if let Some((_, ty)) = rules.iter().find(|(re, _)| re.is_match(&t.name)) {
        return *ty;
    }
    let is_output = t.name == "output.weight" || (tied && t.name == "token_embd.weight");
    if is_output {
        return spec.output_type.unwrap_or(
            if spec.ty.is_quantized() && rank(spec.ty) < rank(QuantType::Q6_K) {
                QuantType::Q6_K
            } else {
                spec.ty
            },
        );
    }
    if t.name == "token_embd.weight" {
        return spec.embedding_type.unwrap_or(spec.ty);
    }
    spec.ty
}

type Converted<'f> = (Cow<'f, [u8]>, TensorReport, ErrorStats);

/// Converts one tensor (or copies it) and measures the error.
fn convert<'f>(
    file: &'f GgufFile,
    t: &TensorInfo,
    spec: &QuantizeSpec,
    rules: &[(Regex, QuantType)],
    tied: bool,
    imatrix: Option<&Imatrix>,
) -> Result<Converted<'f>, QuantizeError> {
    let src = file.tensor_data(t);
    let mut report = TensorReport {
        name: t.name.clone(),
        dims: t.dims.clone(),
        source_type: t.ggml_type.name().to_owned(),
        requested_type: t.ggml_type.name().to_owned(),
        final_type: t.ggml_type.name().to_owned(),
        rmse: 0.0,
        max_abs_error: 0.0,
        snr_db: None,
        weighted_error: 0.0,
        bytes_before: src.len() as u64,
        bytes_after: src.len() as u64,
        used_imatrix: false,
        requantized: false,
        note: None,
    };
    let copy = |report: TensorReport, note: Option<String>| {
        let report = TensorReport { note, ..report };
        Ok((Cow::Borrowed(src), report, ErrorStats::default()))
    };
    if !quantizable(t) {
        return copy(report, None);
    }
    let want = requested(t, spec, rules, tied);
    report.requested_type = want.name().to_owned();
    let Some(src_ty) = QuantType::from_ggml_id(t.ggml_type.id()) else {
        let note = format!(
            "source type {} is not supported; copied",
            t.ggml_type.name()
        );
        return copy(report, Some(note));
    };
    let n = t.dims.first().copied().unwrap_or(0) as usize;
    if !n.is_multiple_of(want.block_size()) {
        let note = format!(
            "row length {n} is not a multiple of {want}'s block of {}; kept {src_ty}",
            want.block_size()
        );
        return copy(report, Some(note));
    }
    if want == src_ty {
        return copy(report, Some(format!("already {want}; copied unchanged")));
    }
    let importance = imatrix.and_then(|m| {
        m.importance(&t.name).or_else(|| {
            (tied && t.name == "token_embd.weight")
                .then(|| m.importance("output.weight"))
                .flatten()
        })
    });
    if let Some(imp) = &importance {
        if imp.len() != n {
            return Err(QuantizeError::Tensor {
                name: t.name.clone(),
                problem: format!(
                    "the importance matrix has {} channels, the tensor's rows {n}",
                    imp.len()
                ),
            });
        }
    }
    report.used_imatrix = importance.is_some();
    report.requantized = src_ty.is_quantized();
    let rows = t.n_rows() as usize;
    let mut ty = want;
    let mut notes = Vec::new();
    if imatrix.is_some() && importance.is_none() {
        notes.push("no importance-matrix entry; uniform weights".to_owned());
    }
    loop {
        let (data, stats) = quantize_tensor(src, src_ty, ty, n, rows, importance.as_deref(), spec)
            .map_err(|problem| QuantizeError::Tensor {
                name: t.name.clone(),
                problem,
            })?;
        let err = stats.weighted_rel_error();
        let over = spec.max_tensor_error.is_some_and(|m| err > m);
        let next = next_fitting(ty, n);
        match (over, next) {
            (true, Some(nt)) => {
                notes.push(format!(
                    "weighted error {err:.3e} at {ty} > max-tensor-error; trying {nt}"
                ));
                if nt == src_ty {
                    notes.push(format!(
                        "reached the source type {src_ty}; copied unchanged"
                    ));
                    report.final_type = src_ty.name().to_owned();
                    report.requantized = false;
                    return copy(report, Some(notes.join("; ")));
                }
                ty = nt;
            }
            _ => {
                report.final_type = ty.name().to_owned();
                report.bytes_after = data.len() as u64;
                report.rmse = stats.rmse();
                report.max_abs_error = stats.max_abs;
                report.snr_db = Some(stats.snr_db()).filter(|v| v.is_finite());
                report.weighted_error = err;
                if !notes.is_empty() {
                    report.note = Some(notes.join("; "));
                }
                return Ok((Cow::Owned(data), report, stats));
            }
        }
    }
}

/// Dequantizes every row of `src` (`src_ty`), quantizes it to `ty` with the weighted search and
/// measures the error against the dequantized source, on `spec.threads` threads.
fn quantize_tensor(
    src: &[u8],
    src_ty: QuantType,
    ty: QuantType,
    n: usize,
    rows: usize,
    importance: Option<&[f32]>,
    spec: &QuantizeSpec,
) -> Result<(Vec<u8>, ErrorStats), String> {
    let in_row = src_ty.row_bytes(n).map_err(|e| e.to_string())?;
    let out_row = ty.row_bytes(n).map_err(|e| e.to_string())?;
    if src.len() != in_row * rows {
        return Err(format!(
            "{} bytes, expected {rows} rows of {in_row}",
            src.len()
        ));
    }
    let mut out = vec![0u8; out_row * rows];
    let threads = if spec.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        spec.threads
    };
    let per = rows.div_ceil(threads.max(1)).max(1);
    let results: Vec<Result<ErrorStats, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * out_row)
            .zip(src.chunks(per * in_row))
            .map(|(dst, sr)| {
                s.spawn(move || {
                    let mut x = vec![0.0f32; n];
                    let mut y = vec![0.0f32; n];
                    let mut stats = ErrorStats::default();
                    for (d, r) in dst.chunks_mut(out_row).zip(sr.chunks(in_row)) {
                        kiln_quant::dequantize_row(src_ty, r, &mut x).map_err(|e| e.to_string())?;
                        let clip = spec
                            .clip_percentile
                            .and_then(|p| kiln_quant::clip_threshold(&x, p));
                        let opts = SearchOptions { importance, clip };
                        kiln_quant::quantize_row_searched(ty, &x, &opts, d)
                            .map_err(|e| e.to_string())?;
                        kiln_quant::dequantize_row(ty, d, &mut y).map_err(|e| e.to_string())?;
                        stats.add_row(&x, &y, importance);
                    }
                    Ok(stats)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into()))
            })
            .collect()
    });
    let mut stats = ErrorStats::default();
    for r in results {
        stats.merge(&r?);
    }
    Ok((out, stats))
}
