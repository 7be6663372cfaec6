//! Stateless real-time layers: Dense, BatchNorm (1-D and 2-D, folded to scale and shift),
//! PReLU and the activations (tanh, ReLU, sigmoid, softmax, ELU).

use super::{check_len, RtError, RtMatrix};

/// An activation function applied element-wise (softmax over the whole frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Tanh,
    Relu,
    Sigmoid,
    Softmax,
    /// ELU with α = 1 (Keras' default).
    Elu,
}

impl Activation {
    /// From RTNeural's names; `None` for unknown ones.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "softmax" => Activation::Softmax,
            "elu" => Activation::Elu,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Softmax => "softmax",
            Activation::Elu => "elu",
        }
    }

    /// Applies the activation to `x` in place.
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Activation::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Sigmoid => x.iter_mut().for_each(|v| *v = sigmoid(*v)),
            Activation::Elu => x.iter_mut().for_each(|v| {
                if *v < 0.0 {
                    *v = v.exp_m1()
                }
            }),
            Activation::Softmax => kiln_tensor::ops::softmax_in_place(x),
        }
    }
}

#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A stand-alone activation layer over frames of `size` values.
#[derive(Debug, Clone)]
pub struct ActivationLayer {
    act: Activation,
    size: usize,
}

impl ActivationLayer {
    pub fn new(act: Activation, size: usize) -> ActivationLayer {
        ActivationLayer { act, size }
    }
    pub fn activation(&self) -> Activation {
        self.act
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.size
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.size
    }
    pub fn reset(&mut self) {}
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
        self.act.apply(y);
    }
    pub fn memory_bytes(&self) -> usize {
        0
    }
    pub fn n_params(&self) -> usize {
        0
    }
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        Vec::new()
    }
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        Vec::new()
    }
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        Vec::new()
    }
}

/// `y = W·x + b` with `W` `[out][in]`; a layer without bias has `b` = 0 and stores none.
#[derive(Debug, Clone)]
pub struct Dense {
    w: RtMatrix,
    b: Vec<f32>,
}

impl Dense {
    /// `bias` is empty (no bias) or `w.rows()` long.
    pub fn new(w: RtMatrix, bias: Vec<f32>) -> Result<Dense, RtError> {
        if !bias.is_empty() {
            check_len("dense bias", &bias, w.rows())?;
        }
        Ok(Dense { w, b: bias })
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.w.cols()
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.w.rows()
    }
    pub fn reset(&mut self) {}
    #[inline]
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        self.w.matvec_bias(x, &self.b, y);
    }
    /// Consecutive frames (see [`crate::rt::RtLayer::forward_frames`]).
    pub fn forward_frames(&mut self, xs: &[f32], ys: &mut [f32]) {
        let step = self.w.cols();
        self.w.matvec_bias_frames(xs, step, &self.b, ys);
    }
    pub fn memory_bytes(&self) -> usize {
        self.w.memory_bytes() + self.b.len() * 4
    }
    pub fn n_params(&self) -> usize {
        self.w.rows() * self.w.cols() + self.b.len()
    }
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        vec![("weight", &self.w)]
    }
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        vec![&mut self.w]
    }
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        if self.b.is_empty() {
            Vec::new()
        } else {
            vec![("bias", &self.b)]
        }
    }
}

/// Per-channel affine normalization, `y = x·scale[c] + shift[c]` with `c = i % channels`
/// (frames are feature-major, channel-minor, so 1-D and 2-D batch norm share this).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    size: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl BatchNorm {
    /// From running statistics: `scale = γ/√(σ²+ε)`, `shift = β − μ·scale` (γ = 1, β = 0
    /// when `gamma`/`beta` are empty). `size` must be a multiple of the channel count.
    pub fn from_stats(
        size: usize,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
    ) -> Result<BatchNorm, RtError> {
        let c = mean.len();
        check_len("batchnorm variance", var, c)?;
        if !gamma.is_empty() {
            check_len("batchnorm gamma", gamma, c)?;
        }
        if !beta.is_empty() {
            check_len("batchnorm beta", beta, c)?;
        }
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma.get(i).copied().unwrap_or(1.0) / (var[i] + eps).sqrt())
            .collect();
        let shift = (0..c)
            .map(|i| beta.get(i).copied().unwrap_or(0.0) - mean[i] * scale[i])
            .collect();
        BatchNorm::new(size, scale, shift)
    }

    /// From folded `scale` and `shift` (one per channel).
    pub fn new(size: usize, scale: Vec<f32>, shift: Vec<f32>) -> Result<BatchNorm, RtError> {
        check_len("batchnorm shift", &shift, scale.len())?;
        if scale.is_empty() || !size.is_multiple_of(scale.len()) {
            return Err(RtError::shape(
                "batchnorm",
                format!("{} channels do not divide a frame of {size}", scale.len()),
            ));
        }
        Ok(BatchNorm { size, scale, shift })
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.size
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.size
    }
    pub fn reset(&mut self) {}
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        let c = self.scale.len();
        for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
            *o = v * self.scale[i % c] + self.shift[i % c];
        }
    }
    pub fn memory_bytes(&self) -> usize {
        (self.scale.len() + self.shift.len()) * 4
    }
    pub fn n_params(&self) -> usize {
        self.scale.len() * 2
    }
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        Vec::new()
    }
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        Vec::new()
    }
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        vec![("scale", &self.scale), ("shift", &self.shift)]
    }
}

/// `y = x` where `x ≥ 0`, else `α[i % alpha.len()]·x` (one α per channel, or one shared).
#[derive(Debug, Clone)]
pub struct PRelu {
    size: usize,
    alpha: Vec<f32>,
}

impl PRelu {
    pub fn new(size: usize, alpha: Vec<f32>) -> Result<PRelu, RtError> {
        if alpha.is_empty() || !size.is_multiple_of(alpha.len()) {
            return Err(RtError::shape(
                "prelu",
                format!("{} alphas do not divide a frame of {size}", alpha.len()),
            ));
        }
        Ok(PRelu { size, alpha })
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.size
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.size
    }
    pub fn reset(&mut self) {}
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        let c = self.alpha.len();
        for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
            *o = if v >= 0.0 { v } else { self.alpha[i % c] * v };
        }
    }
    pub fn memory_bytes(&self) -> usize {
        self.alpha.len() * 4
    }
    pub fn n_params(&self) -> usize {
        self.alpha.len()
    }
    pub fn matrices(&self) -> Vec<(&'static str, &RtMatrix)> {
        Vec::new()
    }
    pub fn matrices_mut(&mut self) -> Vec<&mut RtMatrix> {
        Vec::new()
    }
    pub fn vectors(&self) -> Vec<(&'static str, &[f32])> {
        vec![("alpha", &self.alpha)]
    }
}
