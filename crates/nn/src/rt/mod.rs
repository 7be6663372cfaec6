//! Real-time layers for small audio nets (RTNeural's layer set): streaming, stateful, one frame
//! per call, every buffer allocated when the layer is built so `forward` never allocates.
//!
//! Each layer maps one input frame (`in_size()` values) to one output frame (`out_size()`
//! values); stateful layers (recurrent cells, convolutions over time) keep their history until
//! `reset()`, which zeroes it. Weight matrices are `RtMatrix` (f32 or Q8_0).

mod conv;
mod elementwise;
pub mod fixed;
mod matrix;
mod recurrent;

pub use conv::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, ConvTranspose1d, ConvTranspose1dConfig,
};
pub use elementwise::{Activation, ActivationLayer, BatchNorm, Dense, PRelu};
pub use matrix::{q8_0_row_len, RtMatrix};
pub use recurrent::{Gru, Lstm};

use thiserror::Error;

/// A layer's parameters disagree with its shape.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RtError {
    #[error("{what}: {problem}")]
    Shape { what: String, problem: String },
}

impl RtError {
    pub(crate) fn shape(what: &str, problem: impl Into<String>) -> RtError {
        RtError::Shape {
            what: what.to_string(),
            problem: problem.into(),
        }
    }
}

/// Checks that `v` has `n` values.
pub(crate) fn check_len(what: &str, v: &[f32], n: usize) -> Result<(), RtError> {
    if v.len() == n {
        Ok(())
    } else {
        Err(RtError::shape(
            what,
            format!("{} values, expected {n}", v.len()),
        ))
    }
}

/// How a layer type runs a block of frames: dense and (ungrouped, unstrided) conv1d layers in
/// one kernel call, the others one frame at a time through their own (statically dispatched)
/// `forward`.
trait Frames {
    fn frames(&mut self, xs: &[f32], ys: &mut [f32]);
}

macro_rules! frame_by_frame {
    ($($t:ty),*) => {$(
        impl Frames for $t {
            fn frames(&mut self, xs: &[f32], ys: &mut [f32]) {
                let (i, o) = (self.in_size(), self.out_size());
                for (x, y) in xs.chunks_exact(i).zip(ys.chunks_exact_mut(o)) {
                    self.forward(x, y);
                }
            }
        }
    )*};
}
frame_by_frame!(
    Lstm,
    Gru,
    Conv2d,
    ConvTranspose1d,
    BatchNorm,
    PRelu,
    ActivationLayer
);

impl Frames for Conv1d {
    fn frames(&mut self, xs: &[f32], ys: &mut [f32]) {
        self.forward_frames(xs, ys);
    }
}

impl Frames for Dense {
    fn frames(&mut self, xs: &[f32], ys: &mut [f32]) {
        self.forward_frames(xs, ys);
    }
}

/// One layer of a sequential real-time net.
#[derive(Debug, Clone)]
pub enum RtLayer {
    Dense(Dense),
    Lstm(Lstm),
    Gru(Gru),
    Conv1d(Conv1d),
    Conv2d(Conv2d),
    ConvTranspose1d(ConvTranspose1d),
    BatchNorm(BatchNorm),
    PRelu(PRelu),
    Activation(ActivationLayer),
}

macro_rules! each {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            RtLayer::Dense($l) => $e,
            RtLayer::Lstm($l) => $e,
            RtLayer::Gru($l) => $e,
            RtLayer::Conv1d($l) => $e,
            RtLayer::Conv2d($l) => $e,
            RtLayer::ConvTranspose1d($l) => $e,
            RtLayer::BatchNorm($l) => $e,
            RtLayer::PRelu($l) => $e,
            RtLayer::Activation($l) => $e,
        }
    };
}

impl RtLayer {
    /// Short type name (as in RTNeural's JSON `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            RtLayer::Dense(_) => "dense",
            RtLayer::Lstm(_) => "lstm",
            RtLayer::Gru(_) => "gru",
            RtLayer::Conv1d(_) => "conv1d",
            RtLayer::Conv2d(_) => "conv2d",
            RtLayer::ConvTranspose1d(_) => "convtranspose1d",
            RtLayer::BatchNorm(_) => "batchnorm",
            RtLayer::PRelu(_) => "prelu",
            RtLayer::Activation(_) => "activation",
        }
    }

    #[inline]
    pub fn in_size(&self) -> usize {
        each!(self, l => l.in_size())
    }

    #[inline]
    pub fn out_size(&self) -> usize {
        each!(self, l => l.out_size())
    }

    /// Zeroes the layer's state (history, hidden and cell state).
    pub fn reset(&mut self) {
        each!(self, l => l.reset())
    }

    /// One frame: `x.len() == in_size()`, `y.len() == out_size()`; never allocates.
    /// Panics if the lengths are wrong (the net checks them once when it is built).
    #[inline]
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        // One dispatch for the check and the call (a per-frame cost a 4×4 dense feels).
        each!(self, l => {
            assert!(
                x.len() == l.in_size() && y.len() == l.out_size(),
                "RtLayer::forward: frame sizes"
            );
            l.forward(x, y)
        })
    }

    /// Consecutive frames: `xs` holds whole frames of `in_size()` values and `ys` as many of
    /// `out_size()`; each is computed exactly as [`RtLayer::forward`] would, in order, with one
    /// dispatch for the block (and, for a dense layer, one kernel choice). Never allocates.
    /// Panics if the lengths are not whole, matching frames.
    pub fn forward_frames(&mut self, xs: &[f32], ys: &mut [f32]) {
        each!(self, l => {
            let (i, o) = (l.in_size(), l.out_size());
            assert!(
                i > 0 && o > 0 && xs.len().is_multiple_of(i) && ys.len() == xs.len() / i * o,
                "RtLayer::forward_frames: frame sizes"
            );
            l.frames(xs, ys)
        })
    }

    /// Heap bytes the layer holds (weights, state, scratch).
    pub fn memory_bytes(&self) -> usize {
        each!(self, l => l.memory_bytes())
    }

    /// Number of trainable parameters.
    pub fn n_params(&self) -> usize {
        each!(self, l => l.n_params())
    }

    /// The layer's weight matrices (for storage and quantization), in a fixed order.
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        each!(self, l => l.matrices())
    }

    /// Mutable access to the weight matrices, same order as [`RtLayer::matrices`].
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        each!(self, l => l.matrices_mut())
    }

    /// The layer's parameter vectors (biases, norms, alphas), in a fixed order.
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        each!(self, l => l.vectors())
    }
}
