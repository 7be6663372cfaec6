//! PyTorch state-dict JSON (`json.dump(model.state_dict())` with tensors as nested lists), as
//! RTNeural's `torch_helpers` read it: a layer list says which prefix is which layer type and
//! gives what a state dict does not hold (stride, dilation, activations); [`infer`] guesses
//! that list from the key names for the common cases.

use super::json::{JsonTensor, OrderedObject};
use super::{RtNet, RtNetError};
use kiln_nn::rt::*;

/// One layer of a PyTorch model, by state-dict prefix (`"lstm"` for keys `lstm.weight_ih_l0`…;
/// empty when the keys have no prefix).
#[derive(Debug, Clone, PartialEq)]
pub enum TorchLayer {
    Linear {
        prefix: String,
    },
    /// `layers` stacked cells (`…_l0` … `…_l{layers-1}`), one `RtLayer` each.
    Lstm {
        prefix: String,
        layers: usize,
    },
    Gru {
        prefix: String,
        layers: usize,
    },
    /// `groups` 0 means "infer from the input size".
    Conv1d {
        prefix: String,
        stride: usize,
        dilation: usize,
        groups: usize,
    },
    ConvTranspose1d {
        prefix: String,
        stride: usize,
        dilation: usize,
    },
    /// `eps` is read from the state dict's `eps` entry when present.
    BatchNorm1d {
        prefix: String,
        eps: f32,
    },
    PRelu {
        prefix: String,
    },
    Activation(Activation),
}

fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

struct Dict<'a>(&'a OrderedObject);

impl Dict<'_> {
    fn get(&self, name: &str) -> Option<Result<JsonTensor, String>> {
        let v = self.0 .0.iter().find(|(k, _)| k == name).map(|(_, v)| v)?;
        Some(JsonTensor::from_value(v).map_err(|e| format!("{name}: {e}")))
    }
    fn need(&self, name: &str) -> Result<JsonTensor, String> {
        self.get(name)
            .unwrap_or_else(|| Err(format!("{name} is missing")))
    }
}

/// Guesses the layer list from key names, in key order: `weight_ih_l*` → LSTM (4 gates) or GRU
/// (3 gates); `running_mean` → BatchNorm1d; `weight` 2-D → Linear, 3-D → Conv1d (stride 1,
/// dilation 1, groups from the input size), 1-D → PReLU.
pub fn infer(obj: &OrderedObject) -> Result<Vec<TorchLayer>, RtNetError> {
    let mut prefixes: Vec<String> = Vec::new();
    for (k, _) in &obj.0 {
        let p = k.rsplit_once('.').map_or("", |(p, _)| p).to_string();
        if !prefixes.contains(&p) {
            prefixes.push(p);
        }
    }
    let d = Dict(obj);
    let mut out = Vec::new();
    for (i, p) in prefixes.iter().enumerate() {
        let err = |e: String| RtNetError::layer(i, "torch", format!("{p:?}: {e}"));
        let prefix = p.clone();
        if let Some(hh) = d.get(&key(p, "weight_hh_l0")) {
            let hh = hh.map_err(err)?;
            let layers = (0..)
                .take_while(|l| d.get(&key(p, &format!("weight_ih_l{l}"))).is_some())
                .count();
            match hh.shape[..] {
                [g, u] if g == 4 * u => out.push(TorchLayer::Lstm { prefix, layers }),
                [g, u] if g == 3 * u => out.push(TorchLayer::Gru { prefix, layers }),
                _ => return Err(err(format!("weight_hh_l0 has shape {:?}", hh.shape))),
            }
        } else if d.get(&key(p, "running_mean")).is_some() {
            out.push(TorchLayer::BatchNorm1d { prefix, eps: 1e-5 });
        } else {
            let w = d.need(&key(p, "weight")).map_err(err)?;
            out.push(match w.shape.len() {
                1 => TorchLayer::PRelu { prefix },
                2 => TorchLayer::Linear { prefix },
                3 => TorchLayer::Conv1d {
                    prefix,
                    stride: 1,
                    dilation: 1,
                    groups: 0,
                },
                _ => return Err(err(format!("weight has shape {:?}", w.shape))),
            });
        }
    }
    Ok(out)
}

/// The input size the first layer takes.
fn first_in_size(d: &Dict, l: &TorchLayer) -> Result<usize, String> {
    let dim = |name: String, axis: usize| -> Result<usize, String> {
        let t = d.need(&name)?;
        t.shape
            .get(axis)
            .copied()
            .ok_or(format!("{name} has shape {:?}", t.shape))
    };
    match l {
        TorchLayer::Linear { prefix } => dim(key(prefix, "weight"), 1),
        TorchLayer::Lstm { prefix, .. } | TorchLayer::Gru { prefix, .. } => {
            dim(key(prefix, "weight_ih_l0"), 1)
        }
        TorchLayer::Conv1d { prefix, groups, .. } => {
            Ok(dim(key(prefix, "weight"), 1)? * (*groups).max(1))
        }
        TorchLayer::ConvTranspose1d { prefix, .. } => dim(key(prefix, "weight"), 0),
        TorchLayer::BatchNorm1d { prefix, .. } => dim(key(prefix, "running_mean"), 0),
        TorchLayer::PRelu { prefix } => dim(key(prefix, "weight"), 0),
        TorchLayer::Activation(_) => Err("the first layer cannot be an activation".into()),
    }
}

/// Builds the net from a state dict and its layer list.
pub fn from_state_dict(obj: &OrderedObject, spec: &[TorchLayer]) -> Result<RtNet, RtNetError> {
    let d = Dict(obj);
    let first = spec
        .first()
        .ok_or_else(|| RtNetError::Format("the layer list is empty".into()))?;
    let in_size = first_in_size(&d, first).map_err(|e| RtNetError::layer(0, "torch", e))?;
    let mut layers: Vec<RtLayer> = Vec::new();
    let mut cur = in_size;
    for (i, l) in spec.iter().enumerate() {
        let built = build(&d, l, cur).map_err(|e| RtNetError::layer(i, kind(l), e))?;
        for b in built {
            cur = b.out_size();
            layers.push(b);
        }
    }
    RtNet::new(in_size, layers)
}

fn kind(l: &TorchLayer) -> &'static str {
    match l {
        TorchLayer::Linear { .. } => "linear",
        TorchLayer::Lstm { .. } => "lstm",
        TorchLayer::Gru { .. } => "gru",
        TorchLayer::Conv1d { .. } => "conv1d",
        TorchLayer::ConvTranspose1d { .. } => "convtranspose1d",
        TorchLayer::BatchNorm1d { .. } => "batchnorm1d",
        TorchLayer::PRelu { .. } => "prelu",
        TorchLayer::Activation(_) => "activation",
    }
}

fn rt(e: RtError) -> String {
    e.to_string()
}

fn opt_vec(d: &Dict, name: &str, n: usize) -> Result<Vec<f32>, String> {
    match d.get(name) {
        None => Ok(Vec::new()),
        Some(t) => {
            let t = t?;
            t.expect_shape(name, &[n])?;
            Ok(t.data)
        }
    }
}

fn build(d: &Dict, l: &TorchLayer, n_in: usize) -> Result<Vec<RtLayer>, String> {
    Ok(match l {
        TorchLayer::Linear { prefix } => {
            let w = d.need(&key(prefix, "weight"))?;
            let out = *w.shape.first().ok_or("weight is empty")?;
            w.expect_shape("weight", &[out, n_in])?;
            let b = opt_vec(d, &key(prefix, "bias"), out)?;
            let m = RtMatrix::from_rows(out, n_in, w.data, "weight").map_err(rt)?;
            vec![RtLayer::Dense(Dense::new(m, b).map_err(rt)?)]
        }
        TorchLayer::Lstm { prefix, layers } | TorchLayer::Gru { prefix, layers } => {
            let lstm = matches!(l, TorchLayer::Lstm { .. });
            let gates = if lstm { 4 } else { 3 };
            let mut v = Vec::new();
            let mut cur = n_in;
            for k in 0..*layers {
                let name = |s: &str| key(prefix, &format!("{s}_l{k}"));
                let hh = d.need(&name("weight_hh"))?;
                let u = *hh.shape.get(1).ok_or("weight_hh is not 2-D")?;
                hh.expect_shape(&name("weight_hh"), &[gates * u, u])?;
                let ih = d.need(&name("weight_ih"))?;
                ih.expect_shape(&name("weight_ih"), &[gates * u, cur])?;
                let bi = opt_vec(d, &name("bias_ih"), gates * u)?;
                let bh = opt_vec(d, &name("bias_hh"), gates * u)?;
                let fill = |b: Vec<f32>| {
                    if b.is_empty() {
                        vec![0.0; gates * u]
                    } else {
                        b
                    }
                };
                let (bi, bh) = (fill(bi), fill(bh));
                if lstm {
                    let wi = RtMatrix::from_rows(4 * u, cur, ih.data, "weight_ih").map_err(rt)?;
                    let wh = RtMatrix::from_rows(4 * u, u, hh.data, "weight_hh").map_err(rt)?;
                    let b = bi.iter().zip(&bh).map(|(a, b)| a + b).collect();
                    v.push(RtLayer::Lstm(Lstm::new(wi, wh, b).map_err(rt)?));
                } else {
                    // PyTorch's gate blocks are r, z, n; the cell wants z, r, n.
                    let swap = |x: &[f32], row: usize| -> Vec<f32> {
                        let blk = u * row;
                        [&x[blk..2 * blk], &x[..blk], &x[2 * blk..]].concat()
                    };
                    let wi = RtMatrix::from_rows(3 * u, cur, swap(&ih.data, cur), "weight_ih")
                        .map_err(rt)?;
                    let wh = RtMatrix::from_rows(3 * u, u, swap(&hh.data, u), "weight_hh")
                        .map_err(rt)?;
                    v.push(RtLayer::Gru(
                        Gru::new(wi, wh, swap(&bi, 1), swap(&bh, 1)).map_err(rt)?,
                    ));
                }
                cur = u;
            }
            v
        }
        TorchLayer::Conv1d {
            prefix,
            stride,
            dilation,
            groups,
        } => {
            let w = d.need(&key(prefix, "weight"))?;
            let (out, in_g, k) = match w.shape[..] {
                [a, b, c] => (a, b, c),
                _ => return Err(format!("weight has shape {:?}, expected 3-D", w.shape)),
            };
            let groups = if *groups == 0 {
                n_in / in_g.max(1)
            } else {
                *groups
            };
            if in_g * groups != n_in {
                return Err(format!(
                    "weight {:?} with {groups} groups does not take {n_in} inputs",
                    w.shape
                ));
            }
            let cols = k * in_g;
            let mut m = vec![0.0; out * cols];
            for o in 0..out {
                for c in 0..in_g {
                    for j in 0..k {
                        m[o * cols + j * in_g + c] = w.data[(o * in_g + c) * k + j];
                    }
                }
            }
            let b = opt_vec(d, &key(prefix, "bias"), out)?;
            let cfg = Conv1dConfig {
                in_ch: n_in,
                out_ch: out,
                kernel: k,
                dilation: *dilation,
                groups,
                stride: *stride,
            };
            let m = RtMatrix::from_rows(out, cols, m, "weight").map_err(rt)?;
            vec![RtLayer::Conv1d(Conv1d::new(cfg, m, b).map_err(rt)?)]
        }
        TorchLayer::ConvTranspose1d {
            prefix,
            stride,
            dilation,
        } => {
            let w = d.need(&key(prefix, "weight"))?;
            let (inp, out, k) = match w.shape[..] {
                [a, b, c] => (a, b, c),
                _ => return Err(format!("weight has shape {:?}, expected 3-D", w.shape)),
            };
            if inp != n_in {
                return Err(format!("weight {:?} does not take {n_in} inputs", w.shape));
            }
            let mut m = vec![0.0; k * out * inp];
            for i in 0..inp {
                for o in 0..out {
                    for j in 0..k {
                        m[(j * out + o) * inp + i] = w.data[(i * out + o) * k + j];
                    }
                }
            }
            let b = opt_vec(d, &key(prefix, "bias"), out)?;
            let cfg = ConvTranspose1dConfig {
                in_ch: inp,
                out_ch: out,
                kernel: k,
                stride: *stride,
                dilation: *dilation,
            };
            let m = RtMatrix::from_rows(k * out, inp, m, "weight").map_err(rt)?;
            vec![RtLayer::ConvTranspose1d(
                ConvTranspose1d::new(cfg, m, b).map_err(rt)?,
            )]
        }
        TorchLayer::BatchNorm1d { prefix, eps } => {
            let mean = d.need(&key(prefix, "running_mean"))?.data;
            let var = d.need(&key(prefix, "running_var"))?.data;
            let c = mean.len();
            let g = opt_vec(d, &key(prefix, "weight"), c)?;
            let b = opt_vec(d, &key(prefix, "bias"), c)?;
            let eps = match d.get(&key(prefix, "eps")) {
                Some(t) => *t?.data.first().ok_or("eps is empty")?,
                None => *eps,
            };
            vec![RtLayer::BatchNorm(
                BatchNorm::from_stats(n_in, &g, &b, &mean, &var, eps).map_err(rt)?,
            )]
        }
        TorchLayer::PRelu { prefix } => {
            let w = d.need(&key(prefix, "weight"))?;
            vec![RtLayer::PRelu(PRelu::new(n_in, w.data).map_err(rt)?)]
        }
        TorchLayer::Activation(a) => vec![RtLayer::Activation(ActivationLayer::new(*a, n_in))],
    })
}

/// Parses state-dict JSON text.
pub fn parse(text: &str) -> Result<OrderedObject, RtNetError> {
    serde_json::from_str(text).map_err(|e| RtNetError::Json(e.to_string()))
}
