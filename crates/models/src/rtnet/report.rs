//! What INT8 weights cost: runs a reference (f32) net and a quantized copy of the same
//! architecture side by side over given input frames and reports, after every layer and at the
//! output, the error of the quantized stream against the reference stream.

use super::{RtNet, RtNetError};
use kiln_quant::QuantType;

/// Error statistics of one stream of values against its reference.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Root-mean-square difference.
    pub rms: f32,
    /// Root-mean-square of the reference (to judge `rms` against).
    pub ref_rms: f32,
}

impl ErrorStats {
    /// `rms / ref_rms` (0 when the reference is all zeros).
    pub fn relative_rms(&self) -> f32 {
        if self.ref_rms > 0.0 {
            self.rms / self.ref_rms
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct Acc {
    max: f64,
    se: f64,
    sr: f64,
    n: usize,
}

impl Acc {
    fn add(&mut self, got: &[f32], want: &[f32]) {
        for (&g, &w) in got.iter().zip(want) {
            let d = (g - w) as f64;
            self.max = self.max.max(d.abs());
            self.se += d * d;
            self.sr += (w as f64) * (w as f64);
            self.n += 1;
        }
    }
    fn stats(&self) -> ErrorStats {
        let n = self.n.max(1) as f64;
        ErrorStats {
            max_abs: self.max as f32,
            rms: (self.se / n).sqrt() as f32,
            ref_rms: (self.sr / n).sqrt() as f32,
        }
    }
}

/// One layer's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    pub index: usize,
    pub kind: &'static str,
    /// Storage type of the quantized net's matrices in this layer (`None` for layers without).
    pub weight_type: Option<QuantType>,
    /// Error of this layer's output in the quantized stream (errors of earlier layers included).
    pub error: ErrorStats,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantReport {
    pub layers: Vec<LayerReport>,
    pub output: ErrorStats,
    pub frames: usize,
    pub reference_bytes: usize,
    pub quantized_bytes: usize,
}

/// Runs `reference` and `quantized` (same layer structure) over `inputs` from reset state.
pub fn compare(
    reference: &RtNet,
    quantized: &RtNet,
    inputs: &[Vec<f32>],
) -> Result<QuantReport, RtNetError> {
    let (mut a, mut b) = (reference.clone(), quantized.clone());
    let same = a.layers.len() == b.layers.len()
        && a.in_size == b.in_size
        && a.layers
            .iter()
            .zip(&b.layers)
            .all(|(x, y)| x.kind() == y.kind() && x.out_size() == y.out_size());
    if !same {
        return Err(RtNetError::Format(
            "the two nets do not have the same layers".into(),
        ));
    }
    a.reset();
    b.reset();
    let n = a.layers.len();
    let mut accs: Vec<Acc> = (0..n).map(|_| Acc::default()).collect();
    for x in inputs {
        if x.len() != a.in_size {
            return Err(RtNetError::FrameSize {
                expected: a.in_size,
                got: x.len(),
            });
        }
        let (mut xa, mut xb) = (x.clone(), x.clone());
        for (i, acc) in accs.iter_mut().enumerate() {
            let mut ya = vec![0.0; a.layers[i].out_size()];
            let mut yb = vec![0.0; ya.len()];
            a.layers[i].forward(&xa, &mut ya);
            b.layers[i].forward(&xb, &mut yb);
            acc.add(&yb, &ya);
            (xa, xb) = (ya, yb);
        }
    }
    let layers = b
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerReport {
            index: i,
            kind: l.kind(),
            weight_type: l
                .matrices()
                .iter()
                .map(|(_, m)| m.ty())
                .max_by_key(|t| (*t == QuantType::Q8_0) as u8),
            error: accs[i].stats(),
        })
        .collect::<Vec<_>>();
    let output = layers.last().map(|l| l.error).unwrap_or_default();
    Ok(QuantReport {
        layers,
        output,
        frames: inputs.len(),
        reference_bytes: reference.memory_bytes(),
        quantized_bytes: quantized.memory_bytes(),
    })
}

/// [`compare`] of `net` against its Q8_0 copy ([`RtNet::to_q8_0`]).
pub fn int8_report(net: &RtNet, inputs: &[Vec<f32>]) -> Result<QuantReport, RtNetError> {
    compare(net, &net.to_q8_0(), inputs)
}
