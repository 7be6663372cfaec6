//! Timed building blocks for `kiln bench` in llama-bench's manner: prompt processing and
//! token generation measured separately from an empty cache, with no tokenization or
//! sampling inside the timed region.

use crate::{Engine, EngineError};
use kiln_kvcache::BlockId;
use kiln_kvcache::KvDtype;
use kiln_models::{BatchSeq, ForwardScratch, LogitsMode};
use std::time::{Duration, Instant};

/// Deterministic token ids spread over the vocabulary (benchmarks need no real text).
pub fn bench_tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab.max(1) as u64) as u32
        })
        .collect()
}

impl Engine {
    /// Time to process `n_prompt` tokens in one prefill from an empty cache (logits of the
    /// last token included, as a real prompt needs them).
    pub fn time_prefill(&self, n_prompt: usize, kv: KvDtype) -> Result<Duration, EngineError> {
        let tokens = bench_tokens(n_prompt, self.model().config().n_vocab);
        let mut session = self.new_session(n_prompt.max(1), kv)?;
        let mut logits = Vec::new();
        let start = Instant::now();
        self.model().forward(
            self.pool(),
            session.state_mut(),
            &tokens,
            LogitsMode::Last,
            &mut logits,
        )?;
        Ok(start.elapsed())
    }

    /// Time to generate `n_gen` tokens one at a time from an empty cache (each step a full
    /// forward of one token with its logits; the next token is fixed, not sampled).
    pub fn time_decode(&self, n_gen: usize, kv: KvDtype) -> Result<Duration, EngineError> {
        let tokens = bench_tokens(n_gen, self.model().config().n_vocab);
        let mut session = self.new_session(n_gen.max(1), kv)?;
        let mut logits = Vec::new();
        let start = Instant::now();
        for &t in &tokens {
            self.model().forward(
                self.pool(),
                session.state_mut(),
                &[t],
                LogitsMode::Last,
                &mut logits,
            )?;
        }
        Ok(start.elapsed())
    }

    /// Time for `n_seqs` sequences to generate `n_gen` tokens each in lock-step, every step
    /// ONE batched forward pass over one new token of every sequence (continuous batching's
    /// decode phase; the tokens are fixed, not sampled).
    pub fn time_batched_decode(
        &self,
        n_seqs: usize,
        n_gen: usize,
        kv: KvDtype,
    ) -> Result<Duration, EngineError> {
        let n_seqs = n_seqs.max(1);
        let bs = kiln_kvcache::DEFAULT_BLOCK_SIZE;
        let per_seq = n_gen.max(1).div_ceil(bs);
        let mut store = self.model().new_store(bs, n_seqs * per_seq, kv)?;
        let tables: Vec<Vec<BlockId>> = (0..n_seqs)
            .map(|s| ((s * per_seq) as BlockId..((s + 1) * per_seq) as BlockId).collect())
            .collect();
        let tokens: Vec<Vec<u32>> = (0..n_seqs)
            .map(|s| bench_tokens(n_gen + s, self.model().config().n_vocab)[s..].to_vec())
            .collect();
        let mut scratch = ForwardScratch::default();
        let mut logits = Vec::new();
        let start = Instant::now();
        for pos in 0..n_gen {
            let seqs: Vec<BatchSeq> = (0..n_seqs)
                .map(|s| BatchSeq {
                    tokens: &tokens[s][pos..pos + 1],
                    pos0: pos,
                    blocks: &tables[s],
                    logits: LogitsMode::Last,
                })
                .collect();
            self.model().forward_batch(
                self.pool(),
                &mut store,
                &seqs,
                &mut scratch,
                &mut logits,
            )?;
        }
        Ok(start.elapsed())
    }
}
