//! Causal grouped-query attention over a KV cache (keys and values already written).
//!
//! With an f16 cache the query and the attention weights are rounded to f16 before they meet
//! the cached keys and values, as ggml's f16 matmuls do, so results track llama.cpp closely.

use crate::NnError;
use kiln_kvcache::{KvCache, KvDtype};
use kiln_tensor::{ops, ThreadPool};

/// Largest head size supported (a query head is copied to the stack).
pub const MAX_HEAD_DIM: usize = 512;

/// Head layout of one attention block.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

/// Reusable buffers for `Attention::forward`.
#[derive(Default)]
pub struct AttentionScratch {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl Attention {
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// For query rows `q` (n rows of `q_dim`) at positions `pos0..pos0+n`, attends over cached
    /// positions `0..=pos` of `layer` and writes `out` (n rows of `q_dim`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        pool: &ThreadPool,
        cache: &KvCache,
        layer: usize,
        pos0: usize,
        q: &[f32],
        out: &mut [f32],
        scratch: &mut AttentionScratch,
    ) -> Result<(), NnError> {
        let (qd, kvd, hd) = (self.q_dim(), self.kv_dim(), self.head_dim);
        if hd == 0
            || hd > MAX_HEAD_DIM
            || !q.len().is_multiple_of(qd)
            || out.len() != q.len()
            || cache.kv_dim() != kvd
        {
            return Err(NnError::Shape {
                layer: "attention".into(),
                expected: qd,
                got: q.len(),
            });
        }
        let n = q.len() / qd;
        let n_pos = pos0 + n;
        scratch.keys.resize(n_pos * kvd, 0.0);
        scratch.values.resize(n_pos * kvd, 0.0);
        cache.read(layer, n_pos, &mut scratch.keys, &mut scratch.values)?;
        let (keys, values) = (&scratch.keys[..], &scratch.values[..]);
        let f16_cache = cache.dtype() == KvDtype::F16;
        let group = (self.n_head / self.n_head_kv.max(1)).max(1);
        let scale = 1.0 / (hd as f32).sqrt();
        pool.par_chunks_mut(out, hd, |chunk, o| {
            let (t, h) = (chunk / self.n_head, chunk % self.n_head);
            let kvh = (h / group).min(self.n_head_kv - 1);
            let mut qh = [0f32; MAX_HEAD_DIM];
            let qh = &mut qh[..hd];
            qh.copy_from_slice(&q[t * qd + h * hd..t * qd + (h + 1) * hd]);
            if f16_cache {
                ops::round_to_f16_in_place(qh);
            }
            let upto = pos0 + t + 1;
            let mut scores = vec![0f32; upto];
            ops::dot_rows(qh, keys, kvd, kvh * hd, &mut scores);
            scores.iter_mut().for_each(|s| *s *= scale);
            ops::softmax_in_place(&mut scores);
            if f16_cache {
                ops::round_to_f16_in_place(&mut scores);
            }
            ops::weighted_rows(&scores, values, kvd, kvh * hd, o);
        });
        Ok(())
    }
}
