//! Timed building blocks for `kiln bench` in llama-bench's manner: prompt processing and
//! token generation measured separately from an empty cache, with no tokenization or
//! sampling inside the timed region.

use crate::{Engine, EngineError};
use kiln_kvcache::KvDtype;
use kiln_models::LogitsMode;
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
}
