//! Streaming convolutions over time: Conv1D (causal; dilation, groups, stride), Conv2D (causal in
//! time, valid/same over features, feature stride) and ConvTranspose1D (one input frame in,
//! `stride` output frames out). History lives in preallocated rings.
//!
//! Weight layouts (logical `[out][cols]`, so a generic quantizer sees ordinary rows):
//! Conv1D `[out][k · in/groups]` with column `j·(in/groups) + c` = tap `j` (0 = oldest) of group
//! channel `c`; Conv2D `[c_out][k_t · k_f · c_in]` with column `(j·k_f + q)·c_in + c`;
//! ConvTranspose1D `[k · out][in]` with row `j·out + o`.

use super::{check_len, RtError, RtMatrix};

/// Hyper-parameters of a streaming Conv1D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dConfig {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub dilation: usize,
    pub groups: usize,
    /// Computes a new output every `stride` frames (counted from `reset`, first at frame 0) and
    /// holds it in between.
    pub stride: usize,
}

impl Conv1dConfig {
    /// Whether each frame's input column must be gathered from the history (dilated taps or
    /// several groups) rather than read in place.
    fn gathers(&self) -> bool {
        self.dilation != 1 || self.groups != 1
    }
}

/// `y[t] = b + Σ_j W_j · x[t − (k−1−j)·d]` per group.
///
/// The history ring holds every frame twice (slots `p` and `p + len`), so with dilation 1 and
/// one group the last `k` frames, oldest first, are already the contiguous input column of the
/// weights and nothing is gathered per frame.
#[derive(Debug, Clone)]
pub struct Conv1d {
    cfg: Conv1dConfig,
    w: RtMatrix,
    b: Vec<f32>,
    hist: Vec<f32>,
    len: usize,
    pos: usize,
    phase: usize,
    patch: Vec<f32>,
    held: Vec<f32>,
    /// `forward_frames`' linear history: the last `len − 1` frames, then up to
    /// [`FRAMES_PER_PASS`] new ones (empty for strided or grouped convolutions).
    lin: Vec<f32>,
}

/// Frames `Conv1d::forward_frames` computes per matmul pass.
const FRAMES_PER_PASS: usize = 16;

impl Conv1d {
    /// `w` `[out][k·in/groups]` (layout in the module docs); `bias` empty or `[out]`.
    pub fn new(cfg: Conv1dConfig, w: RtMatrix, bias: Vec<f32>) -> Result<Conv1d, RtError> {
        let c = cfg;
        if c.kernel == 0 || c.dilation == 0 || c.groups == 0 || c.stride == 0 {
            return Err(RtError::shape(
                "conv1d",
                "kernel, dilation, groups and stride must be ≥ 1",
            ));
        }
        if !c.in_ch.is_multiple_of(c.groups) || !c.out_ch.is_multiple_of(c.groups) {
            return Err(RtError::shape(
                "conv1d",
                format!(
                    "{} groups do not divide {} inputs and {} outputs",
                    c.groups, c.in_ch, c.out_ch
                ),
            ));
        }
        let cols = c.kernel * (c.in_ch / c.groups);
        if w.rows() != c.out_ch || w.cols() != cols {
            return Err(RtError::shape(
                "conv1d",
                format!(
                    "weights are {}x{}, expected {}x{cols}",
                    w.rows(),
                    w.cols(),
                    c.out_ch
                ),
            ));
        }
        if !bias.is_empty() {
            check_len("conv1d bias", &bias, c.out_ch)?;
        }
        let w = w.with_row_segments(c.out_ch / c.groups, "conv1d")?;
        let len = (c.kernel - 1) * c.dilation + 1;
        Ok(Conv1d {
            cfg,
            w,
            b: bias,
            hist: vec![0.0; 2 * len * c.in_ch],
            len,
            pos: 0,
            phase: 0,
            patch: vec![0.0; if c.gathers() { cols } else { 0 }],
            held: vec![0.0; if c.stride > 1 { c.out_ch } else { 0 }],
            lin: if c.gathers() || c.stride > 1 {
                Vec::new()
            } else {
                vec![0.0; (len - 1 + FRAMES_PER_PASS) * c.in_ch]
            },
        })
    }
    pub fn config(&self) -> Conv1dConfig {
        self.cfg
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.cfg.in_ch
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.cfg.out_ch
    }
    pub fn reset(&mut self) {
        self.hist.fill(0.0);
        self.held.fill(0.0);
        self.pos = 0;
        self.phase = 0;
    }
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        let c = self.cfg;
        let f = c.in_ch;
        let twin = self.pos + self.len;
        // The frame goes into both copies of the ring in one loop: two `copy_from_slice`
        // calls became two libc `memmove` calls, 12% of a 4-channel conv's time.
        let (lo, hi) = self.hist.split_at_mut(twin * f);
        let (first, second) = (&mut lo[self.pos * f..][..f], &mut hi[..f]);
        for ((a, b), &v) in first.iter_mut().zip(second.iter_mut()).zip(x) {
            *a = v;
            *b = v;
        }
        let compute = self.phase == 0;
        self.phase = (self.phase + 1) % c.stride;
        if !compute {
            y.copy_from_slice(&self.held);
        } else if !c.gathers() {
            let window = &self.hist[(self.pos + 1) * f..(twin + 1) * f];
            self.w.matvec_rows(0, window, &self.b, y);
        } else {
            let (in_g, out_g) = (c.in_ch / c.groups, c.out_ch / c.groups);
            for g in 0..c.groups {
                for j in 0..c.kernel {
                    let back = (c.kernel - 1 - j) * c.dilation;
                    let slot = (self.pos + self.len - back) % self.len;
                    let src = &self.hist[slot * f + g * in_g..][..in_g];
                    self.patch[j * in_g..(j + 1) * in_g].copy_from_slice(src);
                }
                let rows = g * out_g..(g + 1) * out_g;
                let bias = self.b.get(rows.clone()).unwrap_or(&[]);
                self.w
                    .matvec_rows(g * out_g, &self.patch, bias, &mut y[rows]);
            }
        }
        if compute && c.stride > 1 {
            self.held.copy_from_slice(y);
        }
        self.pos = (self.pos + 1) % self.len;
    }
    /// Consecutive frames (see [`crate::rt::RtLayer::forward_frames`]), each exactly as
    /// `forward` computes it. An ungrouped, unstrided convolution lays the history and up to
    /// 16 new frames out in a row, so every frame's window is a slice of it, and computes
    /// them in one pass of the weights; the ring is then set to the state `forward` would
    /// have left.
    pub fn forward_frames(&mut self, xs: &[f32], ys: &mut [f32]) {
        let (f, o) = (self.cfg.in_ch, self.cfg.out_ch);
        if self.lin.is_empty() || !self.w.is_packed_whole() {
            for (x, y) in xs.chunks_exact(f).zip(ys.chunks_exact_mut(o)) {
                self.forward(x, y);
            }
            return;
        }
        let keep = (self.len - 1) * f;
        let chunks = xs.chunks(FRAMES_PER_PASS * f);
        for (xs, ys) in chunks.zip(ys.chunks_mut(FRAMES_PER_PASS * o)) {
            let n = xs.len() / f;
            // The previous len − 1 frames, oldest first, sit after the write slot.
            let (pos, len) = (self.pos, self.len);
            self.lin[..keep].copy_from_slice(&self.hist[(pos + 1) * f..(pos + len) * f]);
            self.lin[keep..keep + n * f].copy_from_slice(xs);
            self.w
                .matvec_bias_frames(&self.lin[..keep + n * f], f, &self.b, ys);
            // The state after these frames: their last len − 1 before the write slot 0
            // (slots 1.., and the twins len + 1..).
            let last = &self.lin[n * f..keep + n * f];
            self.hist[f..len * f].copy_from_slice(last);
            self.hist[(len + 1) * f..2 * len * f].copy_from_slice(last);
            self.pos = 0;
        }
    }
    pub fn memory_bytes(&self) -> usize {
        self.w.memory_bytes()
            + (self.b.len() + self.hist.len() + self.patch.len() + self.held.len() + self.lin.len())
                * 4
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

/// Hyper-parameters of a streaming Conv2D (time × features × channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub features_in: usize,
    pub ch_in: usize,
    pub ch_out: usize,
    pub kernel_time: usize,
    pub kernel_feature: usize,
    /// Dilation over time.
    pub dilation: usize,
    /// Stride over features.
    pub stride: usize,
    /// "same" padding over features (TensorFlow's rule); otherwise "valid".
    pub same: bool,
}

impl Conv2dConfig {
    /// Output features and left padding.
    pub fn geometry(&self) -> (usize, usize) {
        let (f, k, s) = (self.features_in, self.kernel_feature, self.stride.max(1));
        if self.same {
            let out = f.div_ceil(s);
            let total = ((out.saturating_sub(1)) * s + k).saturating_sub(f);
            (out, total / 2)
        } else if f >= k {
            ((f - k) / s + 1, 0)
        } else {
            (0, 0)
        }
    }
}

/// Streams one time frame (features × channels, channel-minor) per call; causal in time.
#[derive(Debug, Clone)]
pub struct Conv2d {
    cfg: Conv2dConfig,
    f_out: usize,
    pad: usize,
    w: RtMatrix,
    b: Vec<f32>,
    hist: Vec<f32>,
    len: usize,
    pos: usize,
    patch: Vec<f32>,
}

impl Conv2d {
    /// `w` `[ch_out][k_t·k_f·ch_in]` (layout in the module docs); `bias` empty or `[ch_out]`.
    pub fn new(cfg: Conv2dConfig, w: RtMatrix, bias: Vec<f32>) -> Result<Conv2d, RtError> {
        let c = cfg;
        if c.kernel_time == 0 || c.kernel_feature == 0 || c.dilation == 0 || c.stride == 0 {
            return Err(RtError::shape(
                "conv2d",
                "kernel sizes, dilation and stride must be ≥ 1",
            ));
        }
        let (f_out, pad) = c.geometry();
        if f_out == 0 {
            return Err(RtError::shape(
                "conv2d",
                "the kernel is wider than the features",
            ));
        }
        let cols = c.kernel_time * c.kernel_feature * c.ch_in;
        if w.rows() != c.ch_out || w.cols() != cols {
            return Err(RtError::shape(
                "conv2d",
                format!(
                    "weights are {}x{}, expected {}x{cols}",
                    w.rows(),
                    w.cols(),
                    c.ch_out
                ),
            ));
        }
        if !bias.is_empty() {
            check_len("conv2d bias", &bias, c.ch_out)?;
        }
        let len = (c.kernel_time - 1) * c.dilation + 1;
        Ok(Conv2d {
            cfg,
            f_out,
            pad,
            w,
            b: bias,
            hist: vec![0.0; len * c.features_in * c.ch_in],
            len,
            pos: 0,
            patch: vec![0.0; cols],
        })
    }
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.cfg.features_in * self.cfg.ch_in
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.f_out * self.cfg.ch_out
    }
    pub fn reset(&mut self) {
        self.hist.fill(0.0);
        self.pos = 0;
    }
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        let c = self.cfg;
        let frame = c.features_in * c.ch_in;
        self.hist[self.pos * frame..(self.pos + 1) * frame].copy_from_slice(x);
        for fo in 0..self.f_out {
            for j in 0..c.kernel_time {
                let back = (c.kernel_time - 1 - j) * c.dilation;
                let slot = (self.pos + self.len - back) % self.len;
                let src = &self.hist[slot * frame..(slot + 1) * frame];
                for q in 0..c.kernel_feature {
                    let dst = &mut self.patch[(j * c.kernel_feature + q) * c.ch_in..][..c.ch_in];
                    let fi = (fo * c.stride + q).checked_sub(self.pad);
                    match fi {
                        Some(fi) if fi < c.features_in => {
                            dst.copy_from_slice(&src[fi * c.ch_in..(fi + 1) * c.ch_in])
                        }
                        _ => dst.fill(0.0),
                    }
                }
            }
            let out = &mut y[fo * c.ch_out..(fo + 1) * c.ch_out];
            self.w.matvec(&self.patch, out);
            for (o, &b) in out.iter_mut().zip(&self.b) {
                *o += b;
            }
        }
        self.pos = (self.pos + 1) % self.len;
    }
    pub fn memory_bytes(&self) -> usize {
        self.w.memory_bytes() + (self.b.len() + self.hist.len() + self.patch.len()) * 4
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

/// Hyper-parameters of a streaming ConvTranspose1D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose1dConfig {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
}

/// Each input frame `t` adds `W_j·x` to output frame `t·s + j·d` and emits the `s` frames
/// `t·s .. t·s + s − 1`, which are then complete (frame-major, `s · out_ch` values). PyTorch's
/// `padding` `p` corresponds to dropping the first `p` emitted frames.
#[derive(Debug, Clone)]
pub struct ConvTranspose1d {
    cfg: ConvTranspose1dConfig,
    w: RtMatrix,
    b: Vec<f32>,
    acc: Vec<f32>,
    len: usize,
    base: usize,
    z: Vec<f32>,
}

impl ConvTranspose1d {
    /// `w` `[k·out][in]` (row `j·out + o`); `bias` empty or `[out]`.
    pub fn new(
        cfg: ConvTranspose1dConfig,
        w: RtMatrix,
        bias: Vec<f32>,
    ) -> Result<ConvTranspose1d, RtError> {
        let c = cfg;
        if c.kernel == 0 || c.stride == 0 || c.dilation == 0 {
            return Err(RtError::shape(
                "convtranspose1d",
                "kernel, stride and dilation must be ≥ 1",
            ));
        }
        if w.rows() != c.kernel * c.out_ch || w.cols() != c.in_ch {
            return Err(RtError::shape(
                "convtranspose1d",
                format!(
                    "weights are {}x{}, expected {}x{}",
                    w.rows(),
                    w.cols(),
                    c.kernel * c.out_ch,
                    c.in_ch
                ),
            ));
        }
        if !bias.is_empty() {
            check_len("convtranspose1d bias", &bias, c.out_ch)?;
        }
        let len = (c.kernel - 1) * c.dilation + c.stride;
        Ok(ConvTranspose1d {
            cfg,
            w,
            b: bias,
            acc: vec![0.0; len * c.out_ch],
            len,
            base: 0,
            z: vec![0.0; c.kernel * c.out_ch],
        })
    }
    pub fn config(&self) -> ConvTranspose1dConfig {
        self.cfg
    }
    #[inline]
    pub fn in_size(&self) -> usize {
        self.cfg.in_ch
    }
    #[inline]
    pub fn out_size(&self) -> usize {
        self.cfg.stride * self.cfg.out_ch
    }
    pub fn reset(&mut self) {
        self.acc.fill(0.0);
        self.base = 0;
    }
    pub fn forward(&mut self, x: &[f32], y: &mut [f32]) {
        let c = self.cfg;
        let o = c.out_ch;
        self.w.matvec(x, &mut self.z);
        for j in 0..c.kernel {
            let slot = (self.base + j * c.dilation) % self.len;
            for (a, &v) in self.acc[slot * o..(slot + 1) * o]
                .iter_mut()
                .zip(&self.z[j * o..])
            {
                *a += v;
            }
        }
        for e in 0..c.stride {
            let slot = (self.base + e) % self.len;
            let acc = &mut self.acc[slot * o..(slot + 1) * o];
            let dst = &mut y[e * o..(e + 1) * o];
            dst.copy_from_slice(acc);
            acc.fill(0.0);
            for (d, &b) in dst.iter_mut().zip(&self.b) {
                *d += b;
            }
        }
        self.base = (self.base + c.stride) % self.len;
    }
    pub fn memory_bytes(&self) -> usize {
        self.w.memory_bytes() + (self.b.len() + self.acc.len() + self.z.len()) * 4
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
