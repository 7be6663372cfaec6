//! The llama architecture: RMSNorm → GQA attention with RoPE → residual → RMSNorm → SwiGLU
//! feed-forward → residual, repeated; final norm and a (possibly tied) output projection.

use crate::observe::{observe, MatmulObserver};
use crate::weights::WeightMap;
use crate::{LlamaConfig, ModelError};
use kiln_gguf::GgufFile;
use kiln_kvcache::{BlockId, KvDtype, KvStore, DEFAULT_BLOCK_SIZE};
use kiln_nn::glu::NamedWeight;
use kiln_nn::{
    Attention, AttnSeq, Embedding, GateUp, GateUpScratch, Linear, LinearInput, LinearSet, RmsNorm,
};
use kiln_tensor::ops::{self, Rope};
use kiln_tensor::ThreadPool;
use std::sync::Arc;

/// Tokens processed together in one pass of the layers by the single-sequence `forward`
/// (prompt chunks larger than this are split); bounds the scratch memory of a prefill.
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
    /// No logits (a prompt chunk that does not end the prompt).
    None,
}

impl LogitsMode {
    /// Logit rows this mode asks of `n` tokens (always the trailing rows).
    pub fn rows(self, n: usize) -> usize {
        match self {
            LogitsMode::Last => n.min(1),
            LogitsMode::All => n,
            LogitsMode::From(k) => n - k.min(n),
            LogitsMode::None => 0,
        }
    }
}

/// One sequence's part of a batched forward pass: `tokens` enter at positions
/// `pos0..pos0 + tokens.len()`; `blocks` is its block table in the store, covering at least
/// those positions (earlier positions must already hold their keys and values).
#[derive(Debug, Clone, Copy)]
pub struct BatchSeq<'a> {
    pub tokens: &'a [u32],
    pub pos0: usize,
    pub blocks: &'a [BlockId],
    pub logits: LogitsMode,
}

/// Reusable activation buffers of a forward pass (grown to the largest batch seen).
#[derive(Default)]
pub struct ForwardScratch {
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    /// Output of stacked matmuls before it is split into q/k/v.
    stack: Vec<f32>,
    /// Each row's RoPE angles (`Rope::angles`), computed once for all layers.
    rope: Vec<f32>,
    gate_up: GateUpScratch,
    input: LinearInput,
    /// The down projection's input (SiLU·mul of gate and up).
    ffn_input: LinearInput,
    /// Sees every matmul input of the layers when set (calibration); `None` costs nothing.
    observer: Option<Box<dyn MatmulObserver>>,
}

struct Block {
    attn_norm: RmsNorm,
    /// Q, K and V (stacked into one matmul where their types agree).
    qkv: LinearSet,
    wo: Linear,
    ffn_norm: RmsNorm,
    /// Gate and up, fused with the SiLU·mul where their weights pack for it.
    gate_up: GateUp,
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

/// A single sequence with its own KV store (blocks used in order, so memory grows with the
/// tokens written) and scratch buffers: what `Session`, perplexity and benchmarks drive.
pub struct LlamaState {
    store: KvStore,
    blocks: Vec<BlockId>,
    len: usize,
    n_ctx: usize,
    scratch: ForwardScratch,
}

impl LlamaState {
    /// Tokens already in the cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.len
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forgets everything after the first `n` tokens (e.g. to reuse a shared prefix).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn kv_bytes(&self) -> usize {
        self.store.allocated_bytes()
    }

    /// Installs (or with `None` removes) a hook that sees every matmul input of the layers;
    /// returns the previous one.
    pub fn set_observer(
        &mut self,
        observer: Option<Box<dyn MatmulObserver>>,
    ) -> Option<Box<dyn MatmulObserver>> {
        std::mem::replace(&mut self.scratch.observer, observer)
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
        let set =
            |label: &str, parts: &[(String, u64)], n_in: u64| -> Result<LinearSet, ModelError> {
                let mut weights = Vec::with_capacity(parts.len());
                for (name, n_out) in parts {
                    let (bytes, ty) = w.get(name, &[n_in, *n_out])?;
                    weights.push((name.clone(), bytes, ty, *n_out as usize));
                }
                Ok(LinearSet::new(label, weights, n_in as usize)?)
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
                let w_down = linear(&n("ffn_down"), c.n_ff as u64, d)?;
                let ffn = |s: &str| -> Result<NamedWeight, ModelError> {
                    let (bytes, ty) = w.get(&n(s), &[d, c.n_ff as u64])?;
                    Ok((n(s), bytes, ty))
                };
                Ok(Block {
                    attn_norm: norm(&n("attn_norm"), d)?,
                    qkv: set(
                        &format!("blk.{i}.attn_qkv"),
                        &[
                            (n("attn_q"), q_dim),
                            (n("attn_k"), kv_dim),
                            (n("attn_v"), kv_dim),
                        ],
                        d,
                    )?,
                    wo: linear(&n("attn_output"), q_dim, d)?,
                    ffn_norm: norm(&n("ffn_norm"), d)?,
                    gate_up: GateUp::new(
                        &format!("blk.{i}.ffn_gate_up"),
                        ffn("ffn_gate")?,
                        ffn("ffn_up")?,
                        c.n_embd,
                        c.n_ff,
                        w_down.ty(),
                    )?,
                    w_down,
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
                b.qkv.weight_bytes()
                    + b.gate_up.weight_bytes()
                    + b.wo.weight_bytes()
                    + b.w_down.weight_bytes()
            })
            .sum();
        per_block + self.output.weight_bytes()
    }

    /// A fresh sequence state with room for `n_ctx` tokens (capped by the training context).
    pub fn new_state(&self, n_ctx: usize, kv_dtype: KvDtype) -> Result<LlamaState, ModelError> {
        let n_ctx = n_ctx.clamp(1, self.config.n_ctx_train);
        let n_blocks = n_ctx.div_ceil(DEFAULT_BLOCK_SIZE);
        Ok(LlamaState {
            store: self.new_store(DEFAULT_BLOCK_SIZE, n_blocks, kv_dtype)?,
            blocks: (0..n_blocks as BlockId).collect(),
            len: 0,
            n_ctx,
            scratch: ForwardScratch::default(),
        })
    }

    /// An empty KV store shaped for this model: `n_blocks` blocks of `block_size` positions.
    pub fn new_store(
        &self,
        block_size: usize,
        n_blocks: usize,
        kv_dtype: KvDtype,
    ) -> Result<KvStore, ModelError> {
        Ok(KvStore::new(
            self.config.n_layer,
            self.attention.kv_dim(),
            block_size,
            n_blocks,
            kv_dtype,
        )?)
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
            let mode = match mode {
                LogitsMode::From(k) => LogitsMode::From(k.saturating_sub(ci * MAX_BATCH)),
                LogitsMode::Last if ci + 1 < n_chunks => LogitsMode::None,
                m => m,
            };
            let seq = BatchSeq {
                tokens: chunk,
                pos0: state.len,
                blocks: &state.blocks,
                logits: mode,
            };
            self.forward_into(pool, &mut state.store, &[seq], &mut state.scratch, logits)?;
            state.len += chunk.len();
        }
        Ok(())
    }

    /// One pass over the layers for every sequence of `seqs` together: each weight is applied
    /// in ONE matmul over the rows of all sequences (decode steps and prompt chunks mixed);
    /// attention runs per sequence over its own blocks. Writes the new keys and values into
    /// `store` and sets `logits` to the rows each sequence asked for, in sequence order.
    pub fn forward_batch(
        &self,
        pool: &ThreadPool,
        store: &mut KvStore,
        seqs: &[BatchSeq<'_>],
        scratch: &mut ForwardScratch,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        logits.clear();
        self.forward_into(pool, store, seqs, scratch, logits)
    }

    /// `forward_batch` appending to `logits`.
    fn forward_into(
        &self,
        pool: &ThreadPool,
        store: &mut KvStore,
        seqs: &[BatchSeq<'_>],
        s: &mut ForwardScratch,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let (d, qd, kvd) = (c.n_embd, self.attention.q_dim(), self.attention.kv_dim());
        let bs = store.block_size();
        if store.kv_dim() != kvd || store.n_layers() != c.n_layer {
            return Err(ModelError::Unsupported(format!(
                "KV store of {} layers × {} values does not fit this model ({} × {kvd})",
                store.n_layers(),
                store.kv_dim(),
                c.n_layer
            )));
        }
        for q in seqs {
            let needed = q.pos0 + q.tokens.len();
            if needed > q.blocks.len() * bs {
                return Err(ModelError::ContextOverflow {
                    needed,
                    n_ctx: q.blocks.len() * bs,
                });
            }
        }
        let n: usize = seqs.iter().map(|q| q.tokens.len()).sum();
        if n == 0 {
            return Ok(());
        }
        s.x.resize(n * d, 0.0);
        for (t, &id) in seqs.iter().flat_map(|q| q.tokens).enumerate() {
            self.embedding.lookup(id, &mut s.x[t * d..(t + 1) * d])?;
        }
        s.q.resize(n * qd, 0.0);
        s.k.resize(n * kvd, 0.0);
        s.v.resize(n * kvd, 0.0);
        s.attn.resize(n * qd, 0.0);
        s.proj.resize(n * d, 0.0);
        let n_angles = self.rope.angles_len();
        s.rope.resize(n * n_angles, 0.0);
        let positions = seqs.iter().flat_map(|q| q.pos0..q.pos0 + q.tokens.len());
        for (t, pos) in positions.enumerate() {
            self.rope
                .angles(pos, &mut s.rope[t * n_angles..(t + 1) * n_angles]);
        }
        let attn_seqs: Vec<AttnSeq<'_>> = seqs
            .iter()
            .map(|q| AttnSeq {
                blocks: q.blocks,
                pos0: q.pos0,
                n_rows: q.tokens.len(),
            })
            .collect();
        for (layer, b) in self.blocks.iter().enumerate() {
            s.input
                .set_rms_norm(&s.x, &b.attn_norm, b.qkv.first_type())?;
            observe(&mut s.observer, b.qkv.names(), s.input.rows(), d);
            b.qkv.forward(
                pool,
                &mut s.input,
                &mut s.stack,
                &mut [&mut s.q, &mut s.k, &mut s.v],
            )?;
            // RoPE is applied to each key as it is written, so the store holds rotated keys.
            let mut t = 0;
            for q in seqs {
                for i in 0..q.tokens.len() {
                    let pos = q.pos0 + i;
                    let angles = &s.rope[t * n_angles..(t + 1) * n_angles];
                    self.rope.rotate(&mut s.q[t * qd..(t + 1) * qd], angles);
                    self.rope.rotate(&mut s.k[t * kvd..(t + 1) * kvd], angles);
                    store.write(
                        layer,
                        q.blocks[pos / bs],
                        pos % bs,
                        &s.k[t * kvd..(t + 1) * kvd],
                        &s.v[t * kvd..(t + 1) * kvd],
                    )?;
                    t += 1;
                }
            }
            self.attention
                .forward(pool, store.layer(layer)?, bs, &attn_seqs, &s.q, &mut s.attn)?;
            s.input.set(&s.attn, qd);
            observe(&mut s.observer, [b.wo.name()], &s.attn, qd);
            b.wo.forward(pool, &mut s.input, &mut s.proj)?;
            ops::add_in_place(&mut s.x, &s.proj);

            s.input
                .set_rms_norm(&s.x, &b.ffn_norm, b.gate_up.first_type())?;
            observe(&mut s.observer, b.gate_up.names(), s.input.rows(), d);
            b.gate_up.forward(
                pool,
                &mut s.input,
                &mut s.gate_up,
                &mut s.ffn_input,
                b.w_down.ty(),
            )?;
            observe(
                &mut s.observer,
                [b.w_down.name()],
                s.ffn_input.rows(),
                c.n_ff,
            );
            b.w_down.forward(pool, &mut s.ffn_input, &mut s.proj)?;
            ops::add_in_place(&mut s.x, &s.proj);
        }
        // Gather the rows that want logits, normalize them and project them in one matmul.
        let mut n_logits = 0;
        let mut row0 = 0;
        for q in seqs {
            let len = q.tokens.len();
            let k = q.logits.rows(len);
            for r in row0 + len - k..row0 + len {
                let (dst, src) = (n_logits * d, r * d);
                if dst != src {
                    s.x.copy_within(src..src + d, dst);
                }
                n_logits += 1;
            }
            row0 += len;
        }
        if n_logits == 0 {
            return Ok(());
        }
        s.input
            .set_rms_norm(&s.x[..n_logits * d], &self.output_norm, self.output.ty())?;
        let start = logits.len();
        logits.resize(start + n_logits * c.n_vocab, 0.0);
        self.output
            .forward(pool, &mut s.input, &mut logits[start..])?;
        Ok(())
    }
}
