//! The llama architecture: RMSNorm → GQA attention with RoPE → residual → RMSNorm → SwiGLU
//! feed-forward → residual, repeated; final norm and a (possibly tied) output projection.

use crate::observe::{observe, MatmulObserver};
use crate::weights::WeightMap;
use crate::{LlamaConfig, ModelError};
use kiln_gguf::GgufFile;
use kiln_kvcache::{KvCache, KvDtype};
use kiln_nn::{Attention, AttentionScratch, Embedding, Linear, LinearInput, RmsNorm};
use kiln_tensor::ops::{self, Rope};
use kiln_tensor::ThreadPool;
use std::sync::Arc;

/// Tokens processed together in one pass of the layers (prompt chunks larger than this are
/// split); bounds the scratch memory of a prefill.
pub const MAX_BATCH: usize = 128;

/// Which positions of a forward pass produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token (generation).
    Last,
    /// Every token (prompt scoring).
    All,
    /// Every token from this index of the call's tokens on (perplexity scores only the
    /// second half of each chunk); rows start at that token.
    From(usize),
}

struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: RmsNorm,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// A loaded llama-family model; immutable and shareable between sequences.
pub struct Llama {
    config: LlamaConfig,
    embedding: Embedding,
    blocks: Vec<Block>,
    output_norm: RmsNorm,
    output: Linear,
    rope: Rope,
    attention: Attention,
    file: Arc<GgufFile>,
}

/// Per-sequence state: the KV cache and reusable scratch buffers.
pub struct LlamaState {
    cache: KvCache,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    input: LinearInput,
    attn_scratch: AttentionScratch,
    observer: Option<Box<dyn MatmulObserver>>,
}

impl LlamaState {
    /// Tokens already in the cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.cache.len()
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// Forgets everything after the first `n` tokens (e.g. to reuse a shared prefix).
    pub fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    pub fn clear(&mut self) {
        self.cache.clear();
    }

    pub fn kv_bytes(&self) -> usize {
        self.cache.allocated_bytes()
    }

    /// Installs (or with `None` removes) a hook that sees every matmul input of the layers;
    /// returns the previous one.
    pub fn set_observer(
        &mut self,
        observer: Option<Box<dyn MatmulObserver>>,
    ) -> Option<Box<dyn MatmulObserver>> {
        std::mem::replace(&mut self.observer, observer)
    }
}

impl Llama {
    /// Builds the model over the tensors of `file` (zero-copy).
    pub fn load(file: Arc<GgufFile>) -> Result<Llama, ModelError> {
        let config = LlamaConfig::from_gguf(&file)?;
        let w = WeightMap::new(Arc::clone(&file));
        let c = &config;
        let (d, q_dim, kv_dim) = (
            c.n_embd as u64,
            (c.n_head * c.head_dim) as u64,
            (c.n_head_kv * c.head_dim) as u64,
        );
        let linear = |name: &str, n_in: u64, n_out: u64| -> Result<Linear, ModelError> {
            let (bytes, ty) = w.get(name, &[n_in, n_out])?;
            Ok(Linear::new(name, bytes, ty, n_in as usize, n_out as usize)?)
        };
        let norm = |name: &str, n: u64| -> Result<RmsNorm, ModelError> {
            Ok(RmsNorm::new(w.vector(name, n as usize)?, c.rms_eps))
        };
        let (emb_bytes, emb_ty) = w.get("token_embd.weight", &[d, c.n_vocab as u64])?;
        let embedding = Embedding::new(emb_bytes, emb_ty, c.n_embd, c.n_vocab)?;
        let output = if w.contains("output.weight") {
            linear("output.weight", d, c.n_vocab as u64)?
        } else {
            linear("token_embd.weight", d, c.n_vocab as u64)?
        };
        if w.contains("rope_freqs.weight") {
            return Err(ModelError::Unsupported(
                "per-dimension RoPE frequency factors (rope_freqs.weight) are not supported yet"
                    .into(),
            ));
        }
        let blocks = (0..c.n_layer)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Block {
                    attn_norm: norm(&n("attn_norm"), d)?,
                    wq: linear(&n("attn_q"), d, q_dim)?,
                    wk: linear(&n("attn_k"), d, kv_dim)?,
                    wv: linear(&n("attn_v"), d, kv_dim)?,
                    wo: linear(&n("attn_output"), q_dim, d)?,
                    ffn_norm: norm(&n("ffn_norm"), d)?,
                    w_gate: linear(&n("ffn_gate"), d, c.n_ff as u64)?,
                    w_up: linear(&n("ffn_up"), d, c.n_ff as u64)?,
                    w_down: linear(&n("ffn_down"), c.n_ff as u64, d)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Llama {
            output_norm: norm("output_norm.weight", d)?,
            rope: Rope::new(c.head_dim, c.rope_dims, c.rope_freq_base),
            attention: Attention {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
            },
            embedding,
            blocks,
            output,
            config,
            file,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// Bytes of weights read per generated token (every matmul weight plus the used
    /// embedding row is negligible).
    pub fn weight_bytes_per_token(&self) -> usize {
        let per_block: usize = self
            .blocks
            .iter()
            .map(|b| {
                [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down]
                    .iter()
                    .map(|l| l.weight_bytes())
                    .sum::<usize>()
            })
            .sum();
        per_block + self.output.weight_bytes()
    }

    /// A fresh sequence state with room for `n_ctx` tokens (capped by the training context).
    pub fn new_state(&self, n_ctx: usize, kv_dtype: KvDtype) -> Result<LlamaState, ModelError> {
        let n_ctx = n_ctx.clamp(1, self.config.n_ctx_train);
        Ok(LlamaState {
            cache: KvCache::new(
                self.config.n_layer,
                n_ctx,
                self.attention.kv_dim(),
                kv_dtype,
            )?,
            x: Vec::new(),
            xn: Vec::new(),
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            attn: Vec::new(),
            proj: Vec::new(),
            gate: Vec::new(),
            up: Vec::new(),
            input: LinearInput::new(),
            attn_scratch: AttentionScratch::default(),
            observer: None,
        })
    }

    /// Appends `tokens` to the sequence in `state` and computes logits (rows of `n_vocab`)
    /// into `logits`: one row for `LogitsMode::Last`, one per token for `LogitsMode::All`,
    /// one per token from index `k` on for `LogitsMode::From(k)`.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        state: &mut LlamaState,
        tokens: &[u32],
        mode: LogitsMode,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let needed = state.n_past() + tokens.len();
        if needed > state.n_ctx() {
            return Err(ModelError::ContextOverflow {
                needed,
                n_ctx: state.n_ctx(),
            });
        }
        logits.clear();
        let n_chunks = tokens.len().div_ceil(MAX_BATCH);
        for (ci, chunk) in tokens.chunks(MAX_BATCH).enumerate() {
            let want = match mode {
                LogitsMode::All => chunk.len(),
                LogitsMode::From(k) => {
                    let start = ci * MAX_BATCH;
                    chunk.len() - k.saturating_sub(start).min(chunk.len())
                }
                LogitsMode::Last if ci + 1 == n_chunks => 1,
                LogitsMode::Last => 0,
            };
            self.forward_chunk(pool, state, chunk, want, logits)?;
        }
        Ok(())
    }

    /// One pass over the layers for up to `MAX_BATCH` tokens; appends logits of the last
    /// `n_logits` tokens.
    fn forward_chunk(
        &self,
        pool: &ThreadPool,
        s: &mut LlamaState,
        tokens: &[u32],
        n_logits: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n = tokens.len();
        let pos0 = s.cache.len();
        let (d, qd, kvd) = (c.n_embd, self.attention.q_dim(), self.attention.kv_dim());
        s.x.resize(n * d, 0.0);
        for (t, &id) in tokens.iter().enumerate() {
            self.embedding.lookup(id, &mut s.x[t * d..(t + 1) * d])?;
        }
        s.xn.resize(n * d, 0.0);
        s.q.resize(n * qd, 0.0);
        s.k.resize(n * kvd, 0.0);
        s.v.resize(n * kvd, 0.0);
        s.attn.resize(n * qd, 0.0);
        s.proj.resize(n * d, 0.0);
        s.gate.resize(n * c.n_ff, 0.0);
        s.up.resize(n * c.n_ff, 0.0);
        for (layer, b) in self.blocks.iter().enumerate() {
            b.attn_norm.forward(&s.x, &mut s.xn)?;
            s.input.set(&s.xn, d);
            observe(&mut s.observer, &[&b.wq, &b.wk, &b.wv], &s.xn, d);
            b.wq.forward(pool, &mut s.input, &mut s.q)?;
            b.wk.forward(pool, &mut s.input, &mut s.k)?;
            b.wv.forward(pool, &mut s.input, &mut s.v)?;
            for t in 0..n {
                let pos = pos0 + t;
                self.rope.apply(&mut s.q[t * qd..(t + 1) * qd], pos);
                self.rope.apply(&mut s.k[t * kvd..(t + 1) * kvd], pos);
                s.cache.write(
                    layer,
                    pos,
                    &s.k[t * kvd..(t + 1) * kvd],
                    &s.v[t * kvd..(t + 1) * kvd],
                )?;
            }
            self.attention.forward(
                pool,
                &s.cache,
                layer,
                pos0,
                &s.q,
                &mut s.attn,
                &mut s.attn_scratch,
            )?;
            s.input.set(&s.attn, qd);
            observe(&mut s.observer, &[&b.wo], &s.attn, qd);
            b.wo.forward(pool, &mut s.input, &mut s.proj)?;
            ops::add_in_place(&mut s.x, &s.proj);

            b.ffn_norm.forward(&s.x, &mut s.xn)?;
            s.input.set(&s.xn, d);
            observe(&mut s.observer, &[&b.w_gate, &b.w_up], &s.xn, d);
            b.w_gate.forward(pool, &mut s.input, &mut s.gate)?;
            b.w_up.forward(pool, &mut s.input, &mut s.up)?;
            ops::silu_mul_in_place(&mut s.gate, &s.up);
            s.input.set(&s.gate, c.n_ff);
            observe(&mut s.observer, &[&b.w_down], &s.gate, c.n_ff);
            b.w_down.forward(pool, &mut s.input, &mut s.proj)?;
            ops::add_in_place(&mut s.x, &s.proj);
        }
        s.cache.set_len(pos0 + n)?;
        if n_logits == 0 {
            return Ok(());
        }
        let rows = &s.x[(n - n_logits) * d..];
        let normed = &mut s.xn[..n_logits * d];
        self.output_norm.forward(rows, normed)?;
        s.input.set(normed, d);
        let start = logits.len();
        logits.resize(start + n_logits * c.n_vocab, 0.0);
        self.output
            .forward(pool, &mut s.input, &mut logits[start..])?;
        Ok(())
    }
}
