//! The example five-model pipeline of issue 6 (a music-assistant plugin's sizes): 497,664,
//! 412,672, 74,048, 13,456 and 19,040 parameters (1,016,880 in all), each Dense → tanh →
//! LSTM/GRU → Dense, chained (each model's output frame is the next one's input), weights drawn
//! from a fixed seed.
//!
//! The sizes were chosen so every matrix of the four large models has rows that are a whole
//! number of 32-blocks, so their Q8_0 copies need no padding; the 13k-parameter model's
//! narrow matrices are padded.

use super::{RtNet, RtNetError};
use kiln_nn::rt::*;

/// Default seed of the example weights.
pub const EXAMPLE_SEED: u64 = 0x6b69_6c6e;

/// The recurrent cell of one example model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
}

/// One model: Dense `input→hidden_in` (bias?) → tanh → `cell` `hidden_in→units` → Dense
/// `units→output` (bias?).
#[derive(Debug, Clone, Copy)]
pub struct ExampleSpec {
    pub name: &'static str,
    pub input: usize,
    pub hidden_in: usize,
    pub in_bias: bool,
    pub cell: Cell,
    pub units: usize,
    pub output: usize,
    pub out_bias: bool,
    pub params: usize,
}

/// The five models, in pipeline order.
pub const EXAMPLE_PIPELINE: [ExampleSpec; 5] = [
    ExampleSpec {
        name: "m1_gru_320",
        input: 32,
        hidden_in: 128,
        in_bias: true,
        cell: Cell::Gru,
        units: 320,
        output: 192,
        out_bias: false,
        params: 497_664,
    },
    ExampleSpec {
        name: "m2_lstm_224",
        input: 192,
        hidden_in: 128,
        in_bias: true,
        cell: Cell::Lstm,
        units: 224,
        output: 320,
        out_bias: false,
        params: 412_672,
    },
    ExampleSpec {
        name: "m3_lstm_64",
        input: 320,
        hidden_in: 64,
        in_bias: true,
        cell: Cell::Lstm,
        units: 64,
        output: 320,
        out_bias: false,
        params: 74_048,
    },
    ExampleSpec {
        name: "m4_gru_24",
        input: 320,
        hidden_in: 8,
        in_bias: false,
        cell: Cell::Gru,
        units: 24,
        output: 352,
        out_bias: false,
        params: 13_456,
    },
    ExampleSpec {
        name: "m5_gru_32",
        input: 352,
        hidden_in: 32,
        in_bias: false,
        cell: Cell::Gru,
        units: 32,
        output: 45,
        out_bias: false,
        params: 19_040,
    },
];

/// SplitMix64: a tiny, well-mixed deterministic generator for example weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    fn uniform(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
    /// Glorot-like scale so activations stay in tanh's useful range.
    fn matrix(&mut self, rows: usize, cols: usize) -> Result<RtMatrix, RtError> {
        let a = (6.0 / (rows + cols) as f32).sqrt();
        RtMatrix::from_rows(rows, cols, self.vec(rows * cols, a), "example")
    }
}

/// Builds one example model from `spec` with weights from `seed`.
pub fn build(spec: &ExampleSpec, seed: u64) -> Result<RtNet, RtNetError> {
    let err = |e: RtError| RtNetError::Format(format!("{}: {e}", spec.name));
    let mut r = Rng(seed);
    let s = *spec;
    let bias = |r: &mut Rng, on: bool, n: usize| if on { r.vec(n, 0.1) } else { Vec::new() };
    let d1 = Dense::new(
        r.matrix(s.hidden_in, s.input).map_err(err)?,
        bias(&mut r, s.in_bias, s.hidden_in),
    )
    .map_err(err)?;
    let cell = match s.cell {
        Cell::Lstm => {
            let (wi, wh) = (
                r.matrix(4 * s.units, s.hidden_in).map_err(err)?,
                r.matrix(4 * s.units, s.units).map_err(err)?,
            );
            RtLayer::Lstm(Lstm::new(wi, wh, r.vec(4 * s.units, 0.1)).map_err(err)?)
        }
        Cell::Gru => {
            let (wi, wh) = (
                r.matrix(3 * s.units, s.hidden_in).map_err(err)?,
                r.matrix(3 * s.units, s.units).map_err(err)?,
            );
            let (bi, bh) = (r.vec(3 * s.units, 0.1), r.vec(3 * s.units, 0.1));
            RtLayer::Gru(Gru::new(wi, wh, bi, bh).map_err(err)?)
        }
    };
    let d2 = Dense::new(
        r.matrix(s.output, s.units).map_err(err)?,
        bias(&mut r, s.out_bias, s.output),
    )
    .map_err(err)?;
    RtNet::new(
        s.input,
        vec![
            RtLayer::Dense(d1),
            RtLayer::Activation(ActivationLayer::new(Activation::Tanh, s.hidden_in)),
            cell,
            RtLayer::Dense(d2),
        ],
    )
}

/// All five models, named, each with its own seed derived from `seed`.
pub fn pipeline(seed: u64) -> Result<Vec<(&'static str, RtNet)>, RtNetError> {
    EXAMPLE_PIPELINE
        .iter()
        .enumerate()
        .map(|(i, s)| Ok((s.name, build(s, seed.wrapping_add(i as u64 * 7919))?)))
        .collect()
}

/// A net of one layer with random weights, for layer benchmarks with RTNeural's sizes:
/// `kind` is `dense`, `lstm`, `gru` or `conv1d` (kernel `in_size − 1`, dilation 1, as
/// RTNeural's `layer_bench` builds it).
pub fn single_layer(
    kind: &str,
    in_size: usize,
    out_size: usize,
    seed: u64,
) -> Result<RtNet, RtNetError> {
    let err = |e: RtError| RtNetError::Format(format!("{kind}: {e}"));
    let mut r = Rng(seed);
    let (i, o) = (in_size, out_size);
    let layer = match kind {
        "dense" => {
            RtLayer::Dense(Dense::new(r.matrix(o, i).map_err(err)?, r.vec(o, 0.1)).map_err(err)?)
        }
        "lstm" => RtLayer::Lstm(
            Lstm::new(
                r.matrix(4 * o, i).map_err(err)?,
                r.matrix(4 * o, o).map_err(err)?,
                r.vec(4 * o, 0.1),
            )
            .map_err(err)?,
        ),
        "gru" => RtLayer::Gru(
            Gru::new(
                r.matrix(3 * o, i).map_err(err)?,
                r.matrix(3 * o, o).map_err(err)?,
                r.vec(3 * o, 0.1),
                r.vec(3 * o, 0.1),
            )
            .map_err(err)?,
        ),
        "conv1d" => {
            let k = i.saturating_sub(1).max(1);
            let cfg = Conv1dConfig {
                in_ch: i,
                out_ch: o,
                kernel: k,
                dilation: 1,
                groups: 1,
                stride: 1,
            };
            RtLayer::Conv1d(
                Conv1d::new(cfg, r.matrix(o, k * i).map_err(err)?, r.vec(o, 0.1)).map_err(err)?,
            )
        }
        other => {
            return Err(RtNetError::Format(format!(
                "unknown layer type {other:?} (dense, lstm, gru, conv1d)"
            )))
        }
    };
    RtNet::new(in_size, vec![layer])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_chain_and_counts_match_the_issue() {
        let p = pipeline(EXAMPLE_SEED).unwrap();
        let mut prev = None;
        for ((_, net), spec) in p.iter().zip(&EXAMPLE_PIPELINE) {
            assert_eq!(net.n_params(), spec.params, "{}", spec.name);
            if let Some(o) = prev {
                assert_eq!(net.in_size(), o);
            }
            prev = Some(net.out_size());
        }
        let total: usize = p.iter().map(|(_, n)| n.n_params()).sum();
        assert_eq!(total, 1_016_880);
        // Same seed, same weights.
        let again = pipeline(EXAMPLE_SEED).unwrap();
        let a = p[4].1.layers()[0].matrices()[0].1.to_rows();
        assert_eq!(a, again[4].1.layers()[0].matrices()[0].1.to_rows());
    }

    #[test]
    fn single_layers_have_the_asked_sizes() {
        for kind in ["dense", "lstm", "gru", "conv1d"] {
            let net = single_layer(kind, 8, 16, 1).unwrap();
            assert_eq!((net.in_size(), net.out_size()), (8, 16), "{kind}");
        }
        assert!(single_layer("attention", 8, 8, 1).is_err());
    }
}
