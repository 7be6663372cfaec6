//! GGUF storage of an `RtNet` (`general.architecture = "rtnet"`).
//!
//! Metadata: `rtnet.input_size`, `rtnet.layer_count`, and per layer `rtnet.layer.{i}.type`
//! (`dense`, `lstm`, `gru`, `conv1d`, `conv2d`, `convtranspose1d`, `batchnorm`, `prelu`,
//! `activation`) plus that type's hyper-parameters (`rtnet.layer.{i}.kernel`, …).
//! Tensors: `l{i}.{name}`; weight matrices are 2-D, logical `[out][in]` row-major (GGUF dims
//! `[in, out]`); vectors (biases, folded batch-norm scale/shift, PReLU alphas) are 1-D.
//! Matrices load from F32, F16 or Q8_0 (Q8_0 runs on the INT8 kernels); vectors from F32 or
//! F16. A Q8_0 row whose length is not a whole number of 32-blocks is stored padded with zero
//! weights (GGUF dims `[padded, out]`) and `rtnet.layer.{i}.{name}.columns` gives its true
//! length.

use super::{RtNet, RtNetError};
use kiln_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use kiln_nn::rt::*;
use kiln_quant::QuantType;
use std::path::Path;

/// The architecture key value.
pub const ARCH: &str = "rtnet";

fn k(i: usize, name: &str) -> String {
    format!("{ARCH}.layer.{i}.{name}")
}

fn u(v: usize) -> Value {
    Value::U32(v as u32)
}

/// Builds the GGUF image of `net` (matrices in their current storage type, f32 or Q8_0).
pub fn to_writer(net: &RtNet) -> Result<GgufWriter<'static>, RtNetError> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::from(ARCH));
    w.add_metadata(format!("{ARCH}.input_size"), u(net.in_size()));
    w.add_metadata(format!("{ARCH}.layer_count"), u(net.layers().len()));
    for (i, l) in net.layers().iter().enumerate() {
        w.add_metadata(k(i, "type"), Value::from(l.kind()));
        let meta: Vec<(&str, usize)> = match l {
            RtLayer::Conv1d(c) => {
                let c = c.config();
                vec![
                    ("in_channels", c.in_ch),
                    ("kernel", c.kernel),
                    ("dilation", c.dilation),
                    ("groups", c.groups),
                    ("stride", c.stride),
                ]
            }
            RtLayer::Conv2d(c) => {
                let c = c.config();
                vec![
                    ("features_in", c.features_in),
                    ("channels_in", c.ch_in),
                    ("kernel_time", c.kernel_time),
                    ("kernel_feature", c.kernel_feature),
                    ("dilation", c.dilation),
                    ("stride", c.stride),
                    ("same", c.same as usize),
                ]
            }
            RtLayer::ConvTranspose1d(c) => {
                let c = c.config();
                vec![
                    ("out_channels", c.out_ch),
                    ("kernel", c.kernel),
                    ("stride", c.stride),
                    ("dilation", c.dilation),
                ]
            }
            RtLayer::BatchNorm(_) | RtLayer::PRelu(_) | RtLayer::Activation(_) => {
                vec![("size", l.in_size())]
            }
            _ => Vec::new(),
        };
        for (name, v) in meta {
            w.add_metadata(k(i, name), u(v));
        }
        if let RtLayer::Activation(a) = l {
            w.add_metadata(k(i, "activation"), Value::from(a.activation().name()));
        }
        for (name, m) in l.matrices() {
            let ty = match m.ty() {
                QuantType::Q8_0 => GgmlType::Q8_0,
                _ => GgmlType::F32,
            };
            if m.stored_cols() != m.cols() {
                w.add_metadata(k(i, &format!("{name}.columns")), u(m.cols()));
            }
            w.add_tensor(
                format!("l{i}.{name}"),
                ty,
                &[m.stored_cols() as u64, m.rows() as u64],
                m.raw_bytes(),
            )?;
        }
        for (name, v) in l.vectors() {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(
                format!("l{i}.{name}"),
                GgmlType::F32,
                &[v.len() as u64],
                bytes,
            )?;
        }
    }
    Ok(w)
}

/// Writes `net` to `path` (atomically, as the GGUF writer does).
pub fn save(net: &RtNet, path: &Path) -> Result<(), RtNetError> {
    Ok(to_writer(net)?.write_file(path)?)
}

/// Loads an rtnet GGUF file.
pub fn load(path: &Path) -> Result<RtNet, RtNetError> {
    from_file(&GgufFile::open(path)?)
}

/// Reads the net from an opened GGUF file.
pub fn from_file(f: &GgufFile) -> Result<RtNet, RtNetError> {
    let arch = f.architecture()?;
    if arch != ARCH {
        return Err(RtNetError::Format(format!(
            "general.architecture is {arch:?}, expected {ARCH:?}"
        )));
    }
    let n = f.get_u64(&format!("{ARCH}.layer_count"))? as usize;
    let in_size = f.get_u64(&format!("{ARCH}.input_size"))? as usize;
    let mut layers = Vec::with_capacity(n.min(1 << 16));
    let mut cur = in_size;
    for i in 0..n {
        let kind = f.get_str(&k(i, "type"))?.to_string();
        let l = layer(f, i, &kind, cur).map_err(|e| RtNetError::layer(i, &kind, e))?;
        cur = l.out_size();
        layers.push(l);
    }
    RtNet::new(in_size, layers)
}

fn meta(f: &GgufFile, i: usize, name: &str) -> Result<usize, String> {
    f.get_u64(&k(i, name))
        .map(|v| v as usize)
        .map_err(|e| e.to_string())
}

/// Little-endian f32 or f16 values of a tensor.
fn floats(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>, String> {
    match ty {
        GgmlType::F32 => Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        GgmlType::F16 => Ok(data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        other => Err(format!("type {} is not supported here", other.name())),
    }
}

fn matrix(f: &GgufFile, i: usize, name: &str) -> Result<RtMatrix, String> {
    let tn = format!("l{i}.{name}");
    let t = f.tensor(&tn).ok_or(format!("tensor {tn} is missing"))?;
    let (cols, rows) = match t.dims[..] {
        [c, r] => (c as usize, r as usize),
        _ => return Err(format!("tensor {tn} has dims {:?}, expected 2", t.dims)),
    };
    let data = f.tensor_data(t);
    match t.ggml_type {
        GgmlType::Q8_0 => {
            let cols = match f.get_u64(&k(i, &format!("{name}.columns"))) {
                Ok(c) if c >= 1 && (c as usize).checked_next_multiple_of(32) == Some(cols) => {
                    c as usize
                }
                Ok(c) => {
                    return Err(format!(
                        "{tn}: {c} columns do not pad to its stored rows of {cols}"
                    ))
                }
                Err(_) => cols,
            };
            RtMatrix::from_q8_0(rows, cols, data.to_vec(), &tn).map_err(|e| e.to_string())
        }
        ty => RtMatrix::from_rows(
            rows,
            cols,
            floats(ty, data).map_err(|e| format!("{tn}: {e}"))?,
            &tn,
        )
        .map_err(|e| e.to_string()),
    }
}

fn vector(f: &GgufFile, i: usize, name: &str) -> Result<Option<Vec<f32>>, String> {
    let tn = format!("l{i}.{name}");
    let Some(t) = f.tensor(&tn) else {
        return Ok(None);
    };
    if t.dims.len() != 1 {
        return Err(format!("tensor {tn} has dims {:?}, expected 1", t.dims));
    }
    floats(t.ggml_type, f.tensor_data(t))
        .map(Some)
        .map_err(|e| format!("{tn}: {e}"))
}

fn need_vec(f: &GgufFile, i: usize, name: &str) -> Result<Vec<f32>, String> {
    vector(f, i, name)?.ok_or(format!("tensor l{i}.{name} is missing"))
}

fn layer(f: &GgufFile, i: usize, kind: &str, n_in: usize) -> Result<RtLayer, String> {
    let e = |x: RtError| x.to_string();
    let m = |name| matrix(f, i, name);
    let bias = || vector(f, i, "bias").map(Option::unwrap_or_default);
    Ok(match kind {
        "dense" => RtLayer::Dense(Dense::new(m("weight")?, bias()?).map_err(e)?),
        "lstm" => RtLayer::Lstm(
            Lstm::new(m("weight_ih")?, m("weight_hh")?, need_vec(f, i, "bias")?).map_err(e)?,
        ),
        "gru" => RtLayer::Gru(
            Gru::new(
                m("weight_ih")?,
                m("weight_hh")?,
                need_vec(f, i, "bias_ih")?,
                need_vec(f, i, "bias_hh")?,
            )
            .map_err(e)?,
        ),
        "conv1d" => {
            let w = m("weight")?;
            let cfg = Conv1dConfig {
                in_ch: meta(f, i, "in_channels")?,
                out_ch: w.rows(),
                kernel: meta(f, i, "kernel")?,
                dilation: meta(f, i, "dilation")?,
                groups: meta(f, i, "groups")?,
                stride: meta(f, i, "stride")?,
            };
            RtLayer::Conv1d(Conv1d::new(cfg, w, bias()?).map_err(e)?)
        }
        "conv2d" => {
            let w = m("weight")?;
            let cfg = Conv2dConfig {
                features_in: meta(f, i, "features_in")?,
                ch_in: meta(f, i, "channels_in")?,
                ch_out: w.rows(),
                kernel_time: meta(f, i, "kernel_time")?,
                kernel_feature: meta(f, i, "kernel_feature")?,
                dilation: meta(f, i, "dilation")?,
                stride: meta(f, i, "stride")?,
                same: meta(f, i, "same")? != 0,
            };
            RtLayer::Conv2d(Conv2d::new(cfg, w, bias()?).map_err(e)?)
        }
        "convtranspose1d" => {
            let w = m("weight")?;
            let cfg = ConvTranspose1dConfig {
                in_ch: w.cols(),
                out_ch: meta(f, i, "out_channels")?,
                kernel: meta(f, i, "kernel")?,
                stride: meta(f, i, "stride")?,
                dilation: meta(f, i, "dilation")?,
            };
            RtLayer::ConvTranspose1d(ConvTranspose1d::new(cfg, w, bias()?).map_err(e)?)
        }
        "batchnorm" => RtLayer::BatchNorm(
            BatchNorm::new(
                meta(f, i, "size")?,
                need_vec(f, i, "scale")?,
                need_vec(f, i, "shift")?,
            )
            .map_err(e)?,
        ),
        "prelu" => {
            RtLayer::PRelu(PRelu::new(meta(f, i, "size")?, need_vec(f, i, "alpha")?).map_err(e)?)
        }
        "activation" => {
            let name = f.get_str(&k(i, "activation")).map_err(|x| x.to_string())?;
            let a = Activation::from_name(name).ok_or(format!("unknown activation {name:?}"))?;
            let size = meta(f, i, "size")?;
            if size != n_in {
                return Err(format!("size {size} but the previous layer gives {n_in}"));
            }
            RtLayer::Activation(ActivationLayer::new(a, size))
        }
        other => return Err(format!("unknown layer type {other:?}")),
    })
}
