//! RTNeural's Keras JSON export (`in_shape` + `layers`, weights as Keras' `get_weights()`),
//! converted to `nn::rt` layers with `[out][in]` matrices. Every layer's declared `shape` is
//! checked against its weights, so a file that disagrees with itself names the layer.

use super::json::{transpose, JsonTensor, OrderedObject};
use super::{RtNet, RtNetError};
use kiln_nn::rt::*;
use serde_json::Value;

/// Frame size implied by a Keras shape: features × channels for 4-D (conv2d) shapes, else the
/// last dimension.
fn frame_size(shape: &Value) -> Option<usize> {
    let dims = shape.as_array()?;
    let last = |k: usize| dims.get(dims.len().checked_sub(k)?)?.as_u64();
    if dims.len() == 4 {
        Some((last(2)? * last(1)?) as usize)
    } else {
        Some(last(1)? as usize)
    }
}

fn get<'a>(obj: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// An integer parameter given as `n` or `[n]`.
fn int_param(l: &serde_json::Map<String, Value>, key: &str) -> Option<usize> {
    match l.get(key)? {
        Value::Array(a) => a.first()?.as_u64().map(|v| v as usize),
        v => v.as_u64().map(|v| v as usize),
    }
}

/// Builds the net from a parsed Keras-format object.
pub fn from_object(obj: &OrderedObject) -> Result<RtNet, RtNetError> {
    let in_size = get(&obj.0, "in_shape")
        .and_then(frame_size)
        .ok_or_else(|| RtNetError::Format("in_shape is missing or malformed".into()))?;
    let layers = get(&obj.0, "layers")
        .and_then(|v| v.as_array())
        .ok_or_else(|| RtNetError::Format("layers is not an array".into()))?;
    let mut out = Vec::new();
    let mut cur = in_size;
    for (index, lv) in layers.iter().enumerate() {
        let l = lv
            .as_object()
            .ok_or_else(|| RtNetError::layer(index, "?", "not an object"))?;
        let kind = l.get("type").and_then(|v| v.as_str()).unwrap_or("?");
        let err = |p: String| RtNetError::layer(index, kind, p);
        let weights: Vec<JsonTensor> = match l.get("weights") {
            Some(Value::Array(ws)) => ws
                .iter()
                .map(JsonTensor::from_value)
                .collect::<Result<_, _>>()
                .map_err(err)?,
            _ => Vec::new(),
        };
        let declared = l.get("shape").and_then(frame_size);
        let act_name = l.get("activation").and_then(|v| v.as_str()).unwrap_or("");
        let act = match act_name {
            "" | "linear" => None,
            n => Some(
                Activation::from_name(n).ok_or_else(|| err(format!("unknown activation {n:?}")))?,
            ),
        };
        let layer = build(kind, l, &weights, cur, declared).map_err(err)?;
        let produced = layer.as_ref().map_or(cur, |l| l.out_size());
        if let Some(d) = declared {
            if d != produced {
                return Err(err(format!(
                    "shape says {d} outputs but the weights give {produced}"
                )));
            }
        }
        cur = produced;
        if let Some(layer) = layer {
            out.push(layer);
        }
        // RNN cells apply their own tanh/sigmoid; their "activation" key is informational.
        if let (Some(a), false) = (act, matches!(kind, "gru" | "lstm")) {
            out.push(RtLayer::Activation(ActivationLayer::new(a, cur)));
        }
    }
    RtNet::new(in_size, out).map_err(|e| match e {
        RtNetError::Layer { .. } => e,
        other => other,
    })
}

fn rt(e: RtError) -> String {
    e.to_string()
}

fn need(w: &[JsonTensor], n: usize) -> Result<(), String> {
    if w.len() < n {
        Err(format!("{} weight arrays, expected at least {n}", w.len()))
    } else {
        Ok(())
    }
}

/// One Keras layer (None for a pure activation layer, which the caller appends).
fn build(
    kind: &str,
    l: &serde_json::Map<String, Value>,
    w: &[JsonTensor],
    n_in: usize,
    declared: Option<usize>,
) -> Result<Option<RtLayer>, String> {
    Ok(Some(match kind {
        "dense" | "time-distributed-dense" => {
            need(w, 1)?;
            let out = *w[0].shape.get(1).ok_or("kernel is not 2-D")?;
            w[0].expect_shape("kernel", &[n_in, out])?;
            let m = RtMatrix::from_rows(out, n_in, transpose(&w[0].data, n_in, out), "kernel")
                .map_err(rt)?;
            let bias = match w.get(1) {
                Some(b) => {
                    b.expect_shape("bias", &[out])?;
                    b.data.clone()
                }
                None => Vec::new(),
            };
            RtLayer::Dense(Dense::new(m, bias).map_err(rt)?)
        }
        "lstm" | "gru" => {
            need(w, 3)?;
            let gates = if kind == "lstm" { 4 } else { 3 };
            let u = *w[1].shape.first().ok_or("recurrent kernel is empty")?;
            if let Some(d) = declared {
                if d != u {
                    return Err(format!("shape says {d} units but the weights have {u}"));
                }
            }
            w[0].expect_shape("kernel", &[n_in, gates * u])?;
            w[1].expect_shape("recurrent kernel", &[u, gates * u])?;
            let wi = RtMatrix::from_rows(
                gates * u,
                n_in,
                transpose(&w[0].data, n_in, gates * u),
                "kernel",
            )
            .map_err(rt)?;
            let wh = RtMatrix::from_rows(
                gates * u,
                u,
                transpose(&w[1].data, u, gates * u),
                "recurrent kernel",
            )
            .map_err(rt)?;
            if kind == "lstm" {
                w[2].expect_shape("bias", &[4 * u])?;
                RtLayer::Lstm(Lstm::new(wi, wh, w[2].data.clone()).map_err(rt)?)
            } else {
                w[2].expect_shape("bias", &[2, 3 * u])?;
                let (bi, bh) = w[2].data.split_at(3 * u);
                RtLayer::Gru(Gru::new(wi, wh, bi.to_vec(), bh.to_vec()).map_err(rt)?)
            }
        }
        "conv1d" => {
            need(w, 1)?;
            let k = int_param(l, "kernel_size").ok_or("kernel_size is missing")?;
            let dilation = int_param(l, "dilation").unwrap_or(1);
            let groups = int_param(l, "groups").unwrap_or(1).max(1);
            let (kk, in_g, out) = match w[0].shape[..] {
                [a, b, c] => (a, b, c),
                _ => return Err(format!("kernel has shape {:?}, expected 3-D", w[0].shape)),
            };
            if kk != k || in_g * groups != n_in {
                return Err(format!(
                    "kernel {:?} does not fit kernel_size {k}, {n_in} inputs and {groups} groups",
                    w[0].shape
                ));
            }
            // Keras [k][in_g][out] -> rows [out][k * in_g].
            let cols = k * in_g;
            let mut m = vec![0.0; out * cols];
            for j in 0..k {
                for c in 0..in_g {
                    for o in 0..out {
                        m[o * cols + j * in_g + c] = w[0].data[(j * in_g + c) * out + o];
                    }
                }
            }
            let cfg = Conv1dConfig {
                in_ch: n_in,
                out_ch: out,
                kernel: k,
                dilation,
                groups,
                stride: 1,
            };
            let bias = w.get(1).map(|b| b.data.clone()).unwrap_or_default();
            let m = RtMatrix::from_rows(out, cols, m, "kernel").map_err(rt)?;
            RtLayer::Conv1d(Conv1d::new(cfg, m, bias).map_err(rt)?)
        }
        "conv2d" => {
            need(w, 1)?;
            let p = |k: &str| int_param(l, k).ok_or(format!("{k} is missing"));
            let (kt, kf) = (p("kernel_size_time")?, p("kernel_size_feature")?);
            let (c_in, f_in, c_out) = (
                p("num_filters_in")?,
                p("num_features_in")?,
                p("num_filters_out")?,
            );
            if c_in * f_in != n_in {
                return Err(format!(
                    "{f_in} features x {c_in} filters do not match {n_in} inputs"
                ));
            }
            w[0].expect_shape("kernel", &[kt, kf, c_in, c_out])?;
            let cfg = Conv2dConfig {
                features_in: f_in,
                ch_in: c_in,
                ch_out: c_out,
                kernel_time: kt,
                kernel_feature: kf,
                dilation: int_param(l, "dilation").unwrap_or(1),
                stride: int_param(l, "strides").unwrap_or(1),
                same: l.get("padding").and_then(|v| v.as_str()) == Some("same"),
            };
            // [kt][kf][c_in][c_out] -> rows [c_out][(j*kf+q)*c_in + c]: a transpose.
            let cols = kt * kf * c_in;
            let m = RtMatrix::from_rows(c_out, cols, transpose(&w[0].data, cols, c_out), "kernel")
                .map_err(rt)?;
            let bias = w.get(1).map(|b| b.data.clone()).unwrap_or_default();
            RtLayer::Conv2d(Conv2d::new(cfg, m, bias).map_err(rt)?)
        }
        "batchnorm" | "batchnorm2d" => {
            let eps = l
                .get("epsilon")
                .and_then(|v| v.as_f64())
                .ok_or("epsilon is missing")? as f32;
            let (g, b, m, v) = match w.len() {
                4 => (&w[0].data[..], &w[1].data[..], &w[2].data, &w[3].data),
                2 => (&[][..], &[][..], &w[0].data, &w[1].data),
                n => return Err(format!("{n} weight arrays, expected 2 or 4")),
            };
            RtLayer::BatchNorm(BatchNorm::from_stats(n_in, g, b, m, v, eps).map_err(rt)?)
        }
        "prelu" => {
            need(w, 1)?;
            RtLayer::PRelu(PRelu::new(n_in, w[0].data.clone()).map_err(rt)?)
        }
        "activation" => return Ok(None),
        other => return Err(format!("unsupported layer type {other:?}")),
    }))
}
