//! Perplexity with llama.cpp's `llama-perplexity` protocol: the whole text is tokenized once,
//! cut into consecutive chunks of `n_ctx` tokens, each chunk is evaluated from an empty cache,
//! and only the second half of each chunk is scored (every scored token then has at least
//! `n_ctx/2` tokens of context).

use crate::{Engine, EngineError};
use kiln_kvcache::KvDtype;
use kiln_models::LogitsMode;

#[derive(Debug, Clone)]
pub struct PerplexityOptions {
    pub n_ctx: usize,
    pub kv: KvDtype,
    /// Stop after this many chunks (0 = all).
    pub max_chunks: usize,
}

/// Result of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    pub ppl: f64,
    /// Standard error of the PPL estimate (delta method on the mean negative log-likelihood).
    pub ppl_stderr: f64,
    pub n_chunks: usize,
    pub n_scored: usize,
    pub n_tokens: usize,
}

/// Running sums of negative log-likelihoods.
#[derive(Debug, Default, Clone, Copy)]
struct NllSums {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl NllSums {
    fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    fn ppl_stderr(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        (var / (n - 1.0)).sqrt() * self.ppl()
    }
}

impl Engine {
    /// Runs the protocol over `tokens`; `progress(chunk_done, n_chunks, running_ppl)` is called
    /// after every chunk.
    pub fn perplexity(
        &self,
        tokens: &[u32],
        opts: &PerplexityOptions,
        progress: impl FnMut(usize, usize, f64),
    ) -> Result<PerplexityReport, EngineError> {
        self.perplexity_with(tokens, opts, progress, |_, _, _, _| Ok(()))
    }

    /// [`Engine::perplexity`] that also hands every chunk to `on_chunk(chunk, n_chunks,
    /// chunk_tokens, logits)`, where `logits` holds the scored rows (positions `n_ctx/2` to
    /// `n_ctx − 2`, each predicting the next token) of `n_vocab` values.
    pub fn perplexity_with(
        &self,
        tokens: &[u32],
        opts: &PerplexityOptions,
        mut progress: impl FnMut(usize, usize, f64),
        mut on_chunk: impl FnMut(usize, usize, &[u32], &[f32]) -> Result<(), EngineError>,
    ) -> Result<PerplexityReport, EngineError> {
        let n_ctx = opts.n_ctx;
        if n_ctx < 4 {
            return Err(EngineError::Invalid(format!(
                "context {n_ctx} is too small for perplexity (need at least 4)"
            )));
        }
        let mut n_chunks = tokens.len() / n_ctx;
        if opts.max_chunks > 0 {
            n_chunks = n_chunks.min(opts.max_chunks);
        }
        if n_chunks == 0 {
            return Err(EngineError::Invalid(format!(
                "the text has {} tokens; perplexity needs at least one chunk of {n_ctx}",
                tokens.len()
            )));
        }
        let mut session = self.new_session(n_ctx, opts.kv)?;
        let first = n_ctx / 2;
        let bos = self
            .tokenizer()
            .bos()
            .filter(|_| self.tokenizer().add_bos());
        let n_vocab = self.model().config().n_vocab;
        let mut sums = NllSums::default();
        let mut logits = Vec::new();
        let mut chunk_tokens = Vec::with_capacity(n_ctx);
        for chunk in 0..n_chunks {
            chunk_tokens.clear();
            chunk_tokens.extend_from_slice(&tokens[chunk * n_ctx..(chunk + 1) * n_ctx]);
            if let Some(b) = bos {
                chunk_tokens[0] = b;
            }
            session.clear();
            self.model().forward(
                self.pool(),
                session.state_mut(),
                &chunk_tokens,
                LogitsMode::From(first),
                &mut logits,
            )?;
            for j in first..n_ctx - 1 {
                let row = &logits[(j - first) * n_vocab..(j - first + 1) * n_vocab];
                let target = chunk_tokens[j + 1];
                sums.add(-f64::from(kiln_sampler::log_softmax_at(row, target)));
            }
            let scored = (n_ctx - 1 - first) * n_vocab;
            on_chunk(
                chunk,
                n_chunks,
                &chunk_tokens,
                &logits[..scored.min(logits.len())],
            )?;
            progress(chunk + 1, n_chunks, sums.ppl());
        }
        Ok(PerplexityReport {
            ppl: sums.ppl(),
            ppl_stderr: sums.ppl_stderr(),
            n_chunks,
            n_scored: sums.count,
            n_tokens: tokens.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_nll_gives_exp_and_zero_error() {
        let mut s = NllSums::default();
        for _ in 0..10 {
            s.add(2.0);
        }
        assert!((s.ppl() - 2.0f64.exp()).abs() < 1e-12);
        assert_eq!(s.ppl_stderr(), 0.0);
        s.add(3.0);
        assert!(s.ppl_stderr() > 0.0);
    }
}
