//! `RtNet`: a sequential real-time audio net (RTNeural's model) built from `nn::rt` layers, with
//! its importers (RTNeural Keras JSON, PyTorch state-dict JSON), its GGUF mapping
//! (`general.architecture = "rtnet"`) and the INT8-vs-f32 error report.
//!
//! After construction `reset`, `forward` and `forward_block` never allocate: every layer owns
//! its state and scratch, and the net owns two ping-pong frame buffers.

pub mod csv;
pub mod example;
pub mod gguf;
mod json;
pub mod keras;
pub mod report;
pub mod torch;

pub use json::OrderedObject;
pub use kiln_nn::rt::{Activation, RtLayer, RtMatrix};

use std::path::Path;
use thiserror::Error;

/// Everything that can go wrong loading or running an `RtNet`.
#[derive(Debug, Error)]
pub enum RtNetError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("layer {index} ({kind}): {problem}")]
    Layer {
        index: usize,
        kind: String,
        problem: String,
    },
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::GgufError),
    #[error("input has {got} values per frame, the net takes {expected}")]
    FrameSize { expected: usize, got: usize },
}

impl RtNetError {
    pub(crate) fn layer(index: usize, kind: &str, problem: impl Into<String>) -> RtNetError {
        RtNetError::Layer {
            index,
            kind: kind.to_string(),
            problem: problem.into(),
        }
    }
}

/// Frames `RtNet::forward_block` runs through one layer before the next.
const BLOCK_FRAMES: usize = 16;

/// A chain of real-time layers with preallocated frame buffers.
#[derive(Debug, Clone)]
pub struct RtNet {
    layers: Vec<RtLayer>,
    in_size: usize,
    /// Each layer's (input, output) frame size, fixed at construction: `forward` reads them
    /// here instead of asking every layer's weights on every frame.
    sizes: Vec<(usize, usize)>,
    /// Two halves of `width × BLOCK_FRAMES` values: `forward` has layer `i` write frame 0 of
    /// half `i % 2`; `forward_block` runs up to `BLOCK_FRAMES` frames through each layer in
    /// turn, alternating halves likewise.
    bufs: Vec<f32>,
    width: usize,
    /// Whether the last output frame is in the first half of `bufs`.
    out_in_a: bool,
}

impl RtNet {
    /// Checks that each layer's input size is the previous layer's output size.
    pub fn new(in_size: usize, layers: Vec<RtLayer>) -> Result<RtNet, RtNetError> {
        if layers.is_empty() {
            return Err(RtNetError::Format("the net has no layers".into()));
        }
        let mut cur = in_size;
        for (i, l) in layers.iter().enumerate() {
            if l.in_size() != cur {
                return Err(RtNetError::layer(
                    i,
                    l.kind(),
                    format!("takes {} inputs but receives {cur}", l.in_size()),
                ));
            }
            cur = l.out_size();
        }
        let width = layers.iter().map(|l| l.out_size()).max().unwrap_or(0);
        // The kernel family is chosen once per process, reading KILN_KERNELS (which
        // allocates); do it now so the first forward pass does not.
        let _ = kiln_tensor::cpu::kernel_choice();
        let sizes = layers.iter().map(|l| (l.in_size(), l.out_size())).collect();
        Ok(RtNet {
            layers,
            in_size,
            sizes,
            bufs: vec![0.0; 2 * width * BLOCK_FRAMES],
            width,
            out_in_a: true,
        })
    }

    /// Loads a `.json` (RTNeural Keras export, or a PyTorch state dict) or `.gguf` file.
    pub fn load(path: &Path) -> Result<RtNet, RtNetError> {
        let is_gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if is_gguf {
            return gguf::load(path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| RtNetError::Io {
            path: path.display().to_string(),
            source,
        })?;
        RtNet::from_json_str(&text)
    }

    /// Parses RTNeural JSON: the Keras format (an object with `layers`) or a PyTorch state dict
    /// (anything else), whose hyper-parameters are inferred (see [`torch::infer`]).
    pub fn from_json_str(text: &str) -> Result<RtNet, RtNetError> {
        let obj: json::OrderedObject =
            serde_json::from_str(text).map_err(|e| RtNetError::Json(e.to_string()))?;
        if obj.0.iter().any(|(k, _)| k == "layers") {
            keras::from_object(&obj)
        } else {
            torch::from_state_dict(&obj, &torch::infer(&obj)?)
        }
    }

    pub fn layers(&self) -> &[RtLayer] {
        &self.layers
    }

    pub fn in_size(&self) -> usize {
        self.in_size
    }

    #[inline]
    pub fn out_size(&self) -> usize {
        self.sizes.last().map_or(0, |s| s.1)
    }

    /// Total trainable parameters.
    pub fn n_params(&self) -> usize {
        self.layers.iter().map(|l| l.n_params()).sum()
    }

    /// Heap bytes held: weights, state, scratch and frame buffers.
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.memory_bytes()).sum::<usize>() + self.bufs.len() * 4
    }

    /// Zeroes every layer's state.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
    }

    /// Runs one frame (`x.len() == in_size()`) and returns the output frame. Never allocates.
    /// Panics on a wrong frame length (use [`RtNet::try_forward`] for unchecked input).
    pub fn forward(&mut self, x: &[f32]) -> &[f32] {
        assert_eq!(x.len(), self.in_size, "RtNet::forward: frame length");
        let (a, b) = self.bufs.split_at_mut(self.width * BLOCK_FRAMES);
        let mut last_in_a = false;
        for (i, (layer, &(n_in, n_out))) in self.layers.iter_mut().zip(&self.sizes).enumerate() {
            if i == 0 {
                layer.forward(x, &mut a[..n_out]);
                last_in_a = true;
            } else if last_in_a {
                layer.forward(&a[..n_in], &mut b[..n_out]);
                last_in_a = false;
            } else {
                layer.forward(&b[..n_in], &mut a[..n_out]);
                last_in_a = true;
            }
        }
        self.out_in_a = last_in_a;
        self.output()
    }

    /// The output frame of the last `forward` (zeros before the first).
    pub fn output(&self) -> &[f32] {
        let n = self.out_size();
        let half = self.width * BLOCK_FRAMES;
        if self.out_in_a {
            &self.bufs[..n]
        } else {
            &self.bufs[half..half + n]
        }
    }

    /// [`RtNet::forward`] with the frame length checked.
    pub fn try_forward(&mut self, x: &[f32]) -> Result<&[f32], RtNetError> {
        if x.len() != self.in_size {
            return Err(RtNetError::FrameSize {
                expected: self.in_size,
                got: x.len(),
            });
        }
        Ok(self.forward(x))
    }

    /// Runs consecutive frames: `input` holds `n` frames of `in_size()`, `output` `n` frames of
    /// `out_size()`, each exactly as [`RtNet::forward`] computes it. Up to `BLOCK_FRAMES`
    /// frames at a time go through one layer before the next ([`RtLayer::forward_frames`]),
    /// so the per-layer dispatch is paid once per block, not per frame. Never allocates.
    pub fn forward_block(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), RtNetError> {
        let (ni, no) = (self.in_size, self.out_size());
        if ni == 0 || !input.len().is_multiple_of(ni) || output.len() != input.len() / ni * no {
            return Err(RtNetError::FrameSize {
                expected: ni,
                got: input.len(),
            });
        }
        let half = self.width * BLOCK_FRAMES;
        let last = self.layers.len() - 1;
        let blocks = input.chunks(ni * BLOCK_FRAMES);
        for (xs, ys) in blocks.zip(output.chunks_mut(no * BLOCK_FRAMES)) {
            let nf = xs.len() / ni;
            let (a, b) = self.bufs.split_at_mut(half);
            // Where layer `i`'s input is: `None` for the caller's frames, else half A or B.
            let mut from_a: Option<bool> = None;
            for (i, (layer, &(n_in, n_out))) in self.layers.iter_mut().zip(&self.sizes).enumerate()
            {
                let (src, spare): (&[f32], &mut [f32]) = match from_a {
                    None => (xs, &mut a[..]),
                    Some(true) => (&a[..nf * n_in], &mut b[..]),
                    Some(false) => (&b[..nf * n_in], &mut a[..]),
                };
                if i == last {
                    layer.forward_frames(src, ys);
                } else {
                    layer.forward_frames(src, &mut spare[..nf * n_out]);
                    from_a = Some(from_a != Some(true));
                }
            }
            // `output()` keeps returning the last frame, as after `forward`.
            a[..no].copy_from_slice(&ys[(nf - 1) * no..]);
            self.out_in_a = true;
        }
        Ok(())
    }

    /// A copy with every weight matrix stored as Q8_0 (rows padded with zero weights to whole
    /// 32-blocks where needed), state reset.
    pub fn to_q8_0(&self) -> RtNet {
        let mut q = self.clone();
        for l in &mut q.layers {
            for m in l.matrices_mut() {
                if let Some(qm) = m.to_q8_0() {
                    *m = qm;
                }
            }
        }
        q.reset();
        q
    }
}
