//! Layers whose sizes are fixed at compile time (what RTNeural's templated `ModelT` is to its
//! run-time layers): dense, conv1d, LSTM, GRU and the activations. Every loop bound is a
//! constant, so a whole net inlines into the caller's per-sample loop with no dispatch between
//! layers. The weights still come from a net loaded at run time (RTNeural JSON or GGUF, as
//! [`RtLayer`]s) and are checked against the declared sizes. Nothing allocates after
//! construction.
//!
//! ```
//! use kiln_nn::rt::fixed::{ActivationT, DenseT, FixedNet, Seq};
//! use kiln_nn::rt::{Activation, ActivationLayer, Dense, RtLayer, RtMatrix};
//!
//! // The layers of a run-time net (what RTNeural JSON or GGUF loads): dense 2→3, tanh, dense 3→1.
//! let dense = |o: usize, i: usize, w: f32| {
//!     let m = RtMatrix::from_rows(o, i, vec![w; o * i], "w").unwrap();
//!     RtLayer::Dense(Dense::new(m, vec![0.0; o]).unwrap())
//! };
//! let tanh = RtLayer::Activation(ActivationLayer::new(Activation::Tanh, 3));
//! let layers = [dense(3, 2, 0.5), tanh, dense(1, 3, 1.0)];
//!
//! type Net = Seq<DenseT<2, 3>, Seq<ActivationT<3>, DenseT<3, 1>>>;
//! let mut net = FixedNet::<Net>::from_layers(&layers)?;
//! let y = net.forward(&[1.0, 1.0]);
//! assert!((y[0] - 3.0 * 1.0f32.tanh()).abs() < 1e-6);
//! # Ok::<(), kiln_nn::rt::RtError>(())
//! ```
//!
//! [`FixedNet::forward`] runs the net compiled for the CPU's widest vector unit (chosen once
//! at construction); in a crate built with that unit enabled (`-C target-cpu=native`, as
//! RTNeural's templated layers are built with `-march=native`) it inlines completely. The
//! products are fused multiply-adds (`f32::mul_add`): one instruction on any x86-64 with FMA
//! and on AArch64, a library call on older CPUs (correct, slow).

use super::{Activation, Conv1dConfig, RtError, RtLayer, RtMatrix};
use kiln_tensor::cpu::{Compiled, InlineJob};
use kiln_tensor::rnn_cell::{gru_update, lstm_update};

/// One frame: `N` values.
pub trait Frame: Copy {
    fn zeroed() -> Self;
    fn as_slice(&self) -> &[f32];
    fn as_mut_slice(&mut self) -> &mut [f32];
}

impl<const N: usize> Frame for [f32; N] {
    #[inline(always)]
    fn zeroed() -> Self {
        [0.0; N]
    }
    #[inline(always)]
    fn as_slice(&self) -> &[f32] {
        self
    }
    #[inline(always)]
    fn as_mut_slice(&mut self) -> &mut [f32] {
        self
    }
}

/// A layer with compile-time frame sizes.
pub trait FixedLayer: Sized {
    type In: Frame;
    type Out: Frame;
    /// Maps one frame (implementations are `#[inline(always)]`: a net is one function).
    fn forward(&mut self, x: &Self::In, y: &mut Self::Out);
    /// Zeroes the state (history, recurrent state).
    fn reset(&mut self);
    /// Takes this layer's weights from the next layers of a run-time net (one per fixed
    /// layer), checking that they have the declared sizes.
    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError>;
}

/// The next run-time layer, or an error naming what the fixed net expected there.
fn next<'a>(
    layers: &mut std::slice::Iter<'a, RtLayer>,
    want: &str,
) -> Result<&'a RtLayer, RtError> {
    layers
        .next()
        .ok_or_else(|| RtError::shape(want, "the net has fewer layers than the fixed net"))
}

/// `m`'s rows as `[out][in]` f32 (Q8_0 weights dequantized), checked to be `rows × cols`.
fn rows_of(what: &str, m: &RtMatrix, rows: usize, cols: usize) -> Result<Vec<f32>, RtError> {
    if m.rows() != rows || m.cols() != cols {
        return Err(RtError::shape(
            what,
            format!(
                "{}×{} weights, the fixed layer is {rows}×{cols}",
                m.rows(),
                m.cols()
            ),
        ));
    }
    Ok(m.to_rows())
}

/// A bias of `n` values (zeros if the layer has none).
fn bias_of<const N: usize>(what: &str, v: Option<&[f32]>) -> Result<[f32; N], RtError> {
    let mut b = [0.0; N];
    if let Some(v) = v {
        super::check_len(what, v, N)?;
        b.copy_from_slice(v);
    }
    Ok(b)
}

/// `acc[0] += Σ x[i]·cols[i]` over even `i` and `acc[1] += …` over odd `i`: two FMA chains.
/// Each inner loop is one whole-vector FMA for the compiler; an accumulator picked per
/// iteration, or more chains in a loop of their own, had it vectorize across inputs with
/// gathers instead (a 16-channel conv1d 25× slower).
#[inline(always)]
fn add_columns<const I: usize, const O: usize>(
    x: &[f32; I],
    cols: &[[f32; O]; I],
    acc: &mut [[f32; O]; 2],
) {
    let [a, c] = acc;
    let mut i = 0;
    while i + 1 < I {
        for o in 0..O {
            a[o] = x[i].mul_add(cols[i][o], a[o]);
        }
        for o in 0..O {
            c[o] = x[i + 1].mul_add(cols[i + 1][o], c[o]);
        }
        i += 2;
    }
    if i < I {
        for o in 0..O {
            a[o] = x[i].mul_add(cols[i][o], a[o]);
        }
    }
}

/// `bias + Σ` of the columns of every `(frame, columns)` pair, in two chains. (Four chains,
/// alternating pairs, did not make a 15-tap, 16-channel conv1d faster.)
#[inline(always)]
fn columns_sum<'a, const I: usize, const O: usize>(
    bias: &[f32; O],
    frames: impl Iterator<Item = (&'a [f32; I], &'a [[f32; O]; I])>,
    y: &mut [f32; O],
) {
    let mut acc = [*bias, [0.0; O]];
    for (x, cols) in frames {
        add_columns(x, cols, &mut acc);
    }
    for o in 0..O {
        y[o] = acc[0][o] + acc[1][o];
    }
}

/// `y = b + W·x` with `W` `O × I`.
#[derive(Debug, Clone)]
pub struct DenseT<const I: usize, const O: usize> {
    /// Column `i` of `W` (the `O` weights input `i` feeds), so a frame is a sum of columns.
    cols: [[f32; O]; I],
    b: [f32; O],
}

impl<const I: usize, const O: usize> DenseT<I, O> {
    /// From `W` `[out][in]` row-major and a bias (empty: none).
    pub fn new(w: &[f32], b: &[f32]) -> Result<Self, RtError> {
        super::check_len("dense weights", w, I * O)?;
        let mut cols = [[0.0; O]; I];
        for (o, row) in w.chunks_exact(I).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                cols[i][o] = v;
            }
        }
        let b = bias_of("dense bias", (!b.is_empty()).then_some(b))?;
        Ok(DenseT { cols, b })
    }
}

impl<const I: usize, const O: usize> FixedLayer for DenseT<I, O> {
    type In = [f32; I];
    type Out = [f32; O];

    #[inline(always)]
    fn forward(&mut self, x: &[f32; I], y: &mut [f32; O]) {
        if O == 1 {
            // One output is a dot product: eight partial sums keep the FMAs independent.
            let mut acc = [0.0f32; 8];
            for i in 0..I {
                acc[i % 8] = x[i].mul_add(self.cols[i][0], acc[i % 8]);
            }
            let s =
                ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
            y[0] = self.b[0] + s;
        } else {
            columns_sum(&self.b, std::iter::once((x, &self.cols)), y);
        }
    }

    fn reset(&mut self) {}

    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError> {
        let what = "fixed dense";
        let RtLayer::Dense(d) = next(layers, what)? else {
            return Err(RtError::shape(what, "the net's layer here is not dense"));
        };
        let w = rows_of(what, d.matrices()[0].1, O, I)?;
        let b = d
            .vectors()
            .first()
            .map(|&(_, v)| v.to_vec())
            .unwrap_or_default();
        DenseT::new(&w, &b)
    }
}

/// A causal streaming Conv1D (one group, stride 1): `y[t] = b + Σ_j W_j · x[t − (K−1−j)·D]`.
#[derive(Debug, Clone)]
pub struct Conv1dT<const I: usize, const O: usize, const K: usize, const D: usize> {
    /// `taps[j][i]`: the `O` weights of tap `j` (0 = oldest), channel `i`.
    taps: [[[f32; O]; I]; K],
    b: [f32; O],
    /// The last `(K−1)·D + 1` frames, each twice (slots `p` and `p + len`), so every tap's
    /// frame is at a constant offset back from the newest.
    hist: Box<[[f32; I]]>,
    pos: usize,
}

impl<const I: usize, const O: usize, const K: usize, const D: usize> Conv1dT<I, O, K, D> {
    /// Frames of history kept.
    const LEN: usize = (K - 1) * D + 1;

    /// From `W` `[out][k·in]` (column `j·in + c`: tap `j`, channel `c`, the run-time
    /// [`super::Conv1d`] layout) and a bias (empty: none).
    pub fn new(w: &[f32], b: &[f32]) -> Result<Self, RtError> {
        if K == 0 || D == 0 {
            return Err(RtError::shape(
                "fixed conv1d",
                "kernel and dilation must be ≥ 1",
            ));
        }
        super::check_len("conv1d weights", w, O * K * I)?;
        let mut taps = [[[0.0; O]; I]; K];
        for (o, row) in w.chunks_exact(K * I).enumerate() {
            for (col, &v) in row.iter().enumerate() {
                taps[col / I][col % I][o] = v;
            }
        }
        let b = bias_of("conv1d bias", (!b.is_empty()).then_some(b))?;
        Ok(Conv1dT {
            taps,
            b,
            hist: vec![[0.0; I]; 2 * Self::LEN].into_boxed_slice(),
            pos: 0,
        })
    }
}

impl<const I: usize, const O: usize, const K: usize, const D: usize> FixedLayer
    for Conv1dT<I, O, K, D>
{
    type In = [f32; I];
    type Out = [f32; O];

    #[inline(always)]
    fn forward(&mut self, x: &[f32; I], y: &mut [f32; O]) {
        let len = Self::LEN;
        let p = self.pos;
        self.hist[p] = *x;
        self.hist[p + len] = *x;
        // The newest frame is slot p + len; tap j is (K−1−j)·D frames back from it.
        let window = &self.hist[p + 1..p + len + 1];
        let frames = (0..K).map(|j| (&window[j * D], &self.taps[j]));
        columns_sum(&self.b, frames, y);
        self.pos = if p + 1 == len { 0 } else { p + 1 };
    }

    fn reset(&mut self) {
        self.hist.iter_mut().for_each(|f| *f = [0.0; I]);
        self.pos = 0;
    }

    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError> {
        let what = "fixed conv1d";
        let RtLayer::Conv1d(c) = next(layers, what)? else {
            return Err(RtError::shape(what, "the net's layer here is not conv1d"));
        };
        let want = Conv1dConfig {
            in_ch: I,
            out_ch: O,
            kernel: K,
            dilation: D,
            groups: 1,
            stride: 1,
        };
        if c.config() != want {
            return Err(RtError::shape(
                what,
                format!(
                    "the net's layer is {:?}, the fixed layer {want:?}",
                    c.config()
                ),
            ));
        }
        let w = rows_of(what, c.matrices()[0].1, O, K * I)?;
        let b = c
            .vectors()
            .first()
            .map(|&(_, v)| v.to_vec())
            .unwrap_or_default();
        Conv1dT::new(&w, &b)
    }
}

/// The recurrent weights of a fixed cell with `G` gate values (`gates × H`): columns of the
/// input and of the recurrent matrix, each `G` long, so a gate vector is a sum of columns.
fn gate_columns<const N: usize, const G: usize>(
    what: &str,
    m: &RtMatrix,
) -> Result<[[f32; G]; N], RtError> {
    let w = rows_of(what, m, G, N)?;
    let mut cols = [[0.0; G]; N];
    for (g, row) in w.chunks_exact(N).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            cols[i][g] = v;
        }
    }
    Ok(cols)
}

/// An LSTM of `H` units over `I` inputs; `G` must be `4·H` (the gate values `[i | f | g | o]`;
/// stable Rust cannot write `4 * H` as an array length of a generic type, so it is spelled
/// out and checked when the type is used). `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`:
/// the gate vector is a sum of input and recurrent columns, and the state update is the
/// run-time cells' SIMD kernel ([`lstm_update`]; per-unit σ and tanh written here, left to the
/// compiler's vectorization, were 20–30% slower).
#[derive(Debug, Clone)]
pub struct LstmT<const I: usize, const H: usize, const G: usize> {
    wx: [[f32; G]; I],
    wh: [[f32; G]; H],
    b: [f32; G],
    h: [f32; H],
    c: [f32; H],
}

impl<const I: usize, const H: usize, const G: usize> FixedLayer for LstmT<I, H, G> {
    type In = [f32; I];
    type Out = [f32; H];

    #[inline(always)]
    fn forward(&mut self, x: &[f32; I], y: &mut [f32; H]) {
        let mut acc = [self.b, [0.0; G]];
        add_columns(x, &self.wx, &mut acc);
        add_columns(&self.h, &self.wh, &mut acc);
        let mut z = [0.0f32; G];
        for k in 0..G {
            z[k] = acc[0][k] + acc[1][k];
        }
        lstm_update(&z, H, &mut self.c, &mut self.h);
        *y = self.h;
    }

    fn reset(&mut self) {
        self.h = [0.0; H];
        self.c = [0.0; H];
    }

    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError> {
        const { assert!(G == 4 * H, "LstmT<I, H, G> needs G = 4·H") };
        let what = "fixed lstm";
        let RtLayer::Lstm(l) = next(layers, what)? else {
            return Err(RtError::shape(what, "the net's layer here is not an LSTM"));
        };
        let m = l.matrices();
        let wx = gate_columns::<I, G>(what, m[0].1)?;
        let wh = gate_columns::<H, G>(what, m[1].1)?;
        let b = bias_of(what, l.vectors().first().map(|&(_, v)| v))?;
        Ok(LstmT {
            wx,
            wh,
            b,
            h: [0.0; H],
            c: [0.0; H],
        })
    }
}

/// A GRU (`reset_after`, gate values `[z | r | n]`) of `H` units over `I` inputs; `G` must be
/// `3·H`. `z = σ(..)`, `r = σ(..)`, `n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn))`,
/// `h' = (1 − z)·n + z·h`, the update by the run-time cells' kernel ([`gru_update`]).
#[derive(Debug, Clone)]
pub struct GruT<const I: usize, const H: usize, const G: usize> {
    wx: [[f32; G]; I],
    wh: [[f32; G]; H],
    bx: [f32; G],
    bh: [f32; G],
    h: [f32; H],
}

impl<const I: usize, const H: usize, const G: usize> FixedLayer for GruT<I, H, G> {
    type In = [f32; I];
    type Out = [f32; H];

    #[inline(always)]
    fn forward(&mut self, x: &[f32; I], y: &mut [f32; H]) {
        let mut gx = [self.bx, [0.0; G]];
        add_columns(x, &self.wx, &mut gx);
        let mut gh = [self.bh, [0.0; G]];
        add_columns(&self.h, &self.wh, &mut gh);
        let (mut a, mut b) = ([0.0f32; G], [0.0f32; G]);
        for k in 0..G {
            a[k] = gx[0][k] + gx[1][k];
            b[k] = gh[0][k] + gh[1][k];
        }
        gru_update(&a, &b, H, &mut self.h);
        *y = self.h;
    }

    fn reset(&mut self) {
        self.h = [0.0; H];
    }

    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError> {
        const { assert!(G == 3 * H, "GruT<I, H, G> needs G = 3·H") };
        let what = "fixed gru";
        let RtLayer::Gru(l) = next(layers, what)? else {
            return Err(RtError::shape(what, "the net's layer here is not a GRU"));
        };
        let (m, v) = (l.matrices(), l.vectors());
        Ok(GruT {
            wx: gate_columns::<I, G>(what, m[0].1)?,
            wh: gate_columns::<H, G>(what, m[1].1)?,
            bx: bias_of(what, Some(v[0].1))?,
            bh: bias_of(what, Some(v[1].1))?,
            h: [0.0; H],
        })
    }
}

/// An activation over frames of `N` values (which one is read from the net).
#[derive(Debug, Clone)]
pub struct ActivationT<const N: usize> {
    act: Activation,
}

impl<const N: usize> ActivationT<N> {
    pub fn new(act: Activation) -> Self {
        ActivationT { act }
    }
}

impl<const N: usize> FixedLayer for ActivationT<N> {
    type In = [f32; N];
    type Out = [f32; N];

    #[inline(always)]
    fn forward(&mut self, x: &[f32; N], y: &mut [f32; N]) {
        *y = *x;
        if self.act == Activation::Relu {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        } else {
            self.act.apply(y);
        }
    }

    fn reset(&mut self) {}

    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError> {
        let what = "fixed activation";
        let RtLayer::Activation(a) = next(layers, what)? else {
            return Err(RtError::shape(
                what,
                "the net's layer here is not an activation",
            ));
        };
        if a.in_size() != N {
            return Err(RtError::shape(
                what,
                format!("{} values, the fixed layer has {N}", a.in_size()),
            ));
        }
        Ok(ActivationT::new(a.activation()))
    }
}

/// Layer `A`, then layer `B` on its output.
#[derive(Debug, Clone)]
pub struct Seq<A: FixedLayer, B: FixedLayer<In = A::Out>> {
    pub first: A,
    pub then: B,
    mid: A::Out,
}

impl<A: FixedLayer, B: FixedLayer<In = A::Out>> FixedLayer for Seq<A, B> {
    type In = A::In;
    type Out = B::Out;

    #[inline(always)]
    fn forward(&mut self, x: &A::In, y: &mut B::Out) {
        self.first.forward(x, &mut self.mid);
        self.then.forward(&self.mid, y);
    }

    fn reset(&mut self) {
        self.first.reset();
        self.then.reset();
        self.mid = A::Out::zeroed();
    }

    fn load(layers: &mut std::slice::Iter<'_, RtLayer>) -> Result<Self, RtError> {
        Ok(Seq {
            first: A::load(layers)?,
            then: B::load(layers)?,
            mid: A::Out::zeroed(),
        })
    }
}

/// A net and its output frame, the job [`Compiled`] builds per vector unit.
struct Job<L: FixedLayer> {
    net: L,
    out: L::Out,
}

impl<L: FixedLayer> InlineJob for Job<L> {
    type Arg = L::In;
    #[inline(always)]
    fn run(&mut self, x: &L::In) {
        self.net.forward(x, &mut self.out);
    }
}

/// A fixed net with its output frame: `forward` maps a frame and returns the output.
pub struct FixedNet<L: FixedLayer> {
    job: Job<L>,
    compiled: Compiled<Job<L>>,
}

impl<L: FixedLayer> FixedNet<L> {
    /// Wraps `net`, choosing its compiled copy for this CPU.
    pub fn new(net: L) -> Self {
        FixedNet {
            job: Job {
                net,
                out: L::Out::zeroed(),
            },
            compiled: Compiled::for_this_cpu(),
        }
    }

    /// Loads the weights of a run-time net whose layers match `L` one for one.
    pub fn from_layers(layers: &[RtLayer]) -> Result<Self, RtError> {
        let mut it = layers.iter();
        let net = L::load(&mut it)?;
        if it.len() != 0 {
            return Err(RtError::shape(
                "fixed net",
                format!("the net has {} more layers than the fixed net", it.len()),
            ));
        }
        Ok(FixedNet::new(net))
    }

    /// Maps one frame; never allocates.
    #[inline(always)]
    pub fn forward(&mut self, x: &L::In) -> &L::Out {
        if cfg!(all(
            target_arch = "x86_64",
            target_feature = "avx512f",
            target_feature = "fma"
        )) {
            // Built for this vector unit already: the whole net inlines here.
            self.job.run(x);
        } else {
            self.compiled.run(&mut self.job, x);
        }
        &self.job.out
    }

    /// [`FixedNet::forward`] on a slice; panics if its length is not the input size.
    pub fn forward_slice(&mut self, x: &[f32]) -> &[f32] {
        let mut frame = L::In::zeroed();
        assert_eq!(x.len(), frame.as_slice().len(), "FixedNet: frame length");
        frame.as_mut_slice().copy_from_slice(x);
        self.forward(&frame).as_slice()
    }

    pub fn reset(&mut self) {
        self.job.net.reset();
        self.job.out = L::Out::zeroed();
    }

    pub fn net(&self) -> &L {
        &self.job.net
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{ActivationLayer, Conv1d, Dense};

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn dense(i: usize, o: usize, seed: u32) -> RtLayer {
        let w = RtMatrix::from_rows(o, i, values(i * o, seed), "w").unwrap();
        RtLayer::Dense(Dense::new(w, values(o, seed + 1)).unwrap())
    }

    fn conv(i: usize, o: usize, k: usize, d: usize, seed: u32) -> RtLayer {
        let cfg = Conv1dConfig {
            in_ch: i,
            out_ch: o,
            kernel: k,
            dilation: d,
            groups: 1,
            stride: 1,
        };
        let w = RtMatrix::from_rows(o, k * i, values(o * k * i, seed), "w").unwrap();
        RtLayer::Conv1d(Conv1d::new(cfg, w, values(o, seed + 1)).unwrap())
    }

    fn lstm(i: usize, u: usize, seed: u32) -> RtLayer {
        let w = |r, c, s| RtMatrix::from_rows(r, c, values(r * c, s), "w").unwrap();
        let b = values(4 * u, seed + 2);
        RtLayer::Lstm(crate::rt::Lstm::new(w(4 * u, i, seed), w(4 * u, u, seed + 1), b).unwrap())
    }

    fn gru(i: usize, u: usize, seed: u32) -> RtLayer {
        let w = |r, c, s| RtMatrix::from_rows(r, c, values(r * c, s), "w").unwrap();
        let (bi, bh) = (values(3 * u, seed + 2), values(3 * u, seed + 3));
        RtLayer::Gru(crate::rt::Gru::new(w(3 * u, i, seed), w(3 * u, u, seed + 1), bi, bh).unwrap())
    }

    /// Runs `frames` frames through the run-time layers and the fixed net side by side.
    fn matches<L: FixedLayer>(mut layers: Vec<RtLayer>, frames: usize) {
        let mut fixed = FixedNet::<L>::from_layers(&layers).unwrap();
        let n_in = L::In::zeroed().as_slice().len();
        let sizes: Vec<usize> = layers.iter().map(|l| l.out_size()).collect();
        let width = *sizes.iter().max().unwrap();
        for (t, x) in values(frames * n_in, 99).chunks_exact(n_in).enumerate() {
            let mut cur = x.to_vec();
            for (l, &n) in layers.iter_mut().zip(&sizes) {
                let mut next = vec![0.0; n.max(width)];
                l.forward(&cur, &mut next[..n]);
                next.truncate(n);
                cur = next;
            }
            let got = fixed.forward_slice(x);
            for (a, b) in got.iter().zip(&cur) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "frame {t}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn fixed_layers_match_the_run_time_layers() {
        matches::<DenseT<4, 4>>(vec![dense(4, 4, 1)], 20);
        matches::<DenseT<24, 1>>(vec![dense(24, 1, 2)], 20);
        matches::<DenseT<16, 16>>(vec![dense(16, 16, 3)], 20);
        matches::<Conv1dT<4, 4, 3, 1>>(vec![conv(4, 4, 3, 1, 4)], 40);
        matches::<Conv1dT<3, 5, 4, 2>>(vec![conv(3, 5, 4, 2, 5)], 40);
        type Chain = Seq<DenseT<4, 8>, Seq<ActivationT<8>, DenseT<8, 1>>>;
        let tanh = RtLayer::Activation(ActivationLayer::new(Activation::Tanh, 8));
        matches::<Chain>(vec![dense(4, 8, 6), tanh, dense(8, 1, 7)], 20);
        matches::<LstmT<4, 4, 16>>(vec![lstm(4, 4, 8)], 40);
        matches::<LstmT<1, 24, 96>>(vec![lstm(1, 24, 9)], 40);
        matches::<GruT<4, 4, 12>>(vec![gru(4, 4, 10)], 40);
        matches::<GruT<16, 16, 48>>(vec![gru(16, 16, 11)], 40);
    }

    #[test]
    fn reset_clears_the_history() {
        let layers = vec![conv(2, 2, 3, 2, 8)];
        let mut net = FixedNet::<Conv1dT<2, 2, 3, 2>>::from_layers(&layers).unwrap();
        let first: Vec<f32> = net.forward(&[0.5, -0.25]).to_vec();
        for _ in 0..7 {
            net.forward(&[1.0, 1.0]);
        }
        net.reset();
        assert_eq!(net.forward(&[0.5, -0.25]).to_vec(), first);
    }

    #[test]
    fn shapes_that_disagree_are_rejected() {
        let err = |r: Result<FixedNet<DenseT<4, 4>>, RtError>| r.err().unwrap().to_string();
        assert!(err(FixedNet::from_layers(&[dense(4, 5, 1)])).contains("fixed dense"));
        assert!(err(FixedNet::from_layers(&[conv(4, 4, 3, 1, 1)])).contains("not dense"));
        assert!(err(FixedNet::from_layers(&[])).contains("fewer layers"));
        assert!(
            err(FixedNet::from_layers(&[dense(4, 4, 1), dense(4, 4, 2)])).contains("more layers")
        );
        let conv_err = FixedNet::<Conv1dT<4, 4, 3, 2>>::from_layers(&[conv(4, 4, 3, 1, 1)]);
        assert!(conv_err.err().unwrap().to_string().contains("fixed conv1d"));
    }
}
