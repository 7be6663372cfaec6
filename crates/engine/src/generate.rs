//! The generate loop: prefill (reusing any cached prefix), sample, stream text, stop.

use crate::{Engine, EngineError};
use kiln_models::{LlamaState, LogitsMode};
use kiln_sampler::{Sampler, SamplingParams};
use kiln_tokenizer::StreamDecoder;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// One sequence: its KV cache and the tokens that are in it.
pub struct Session {
    state: LlamaState,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The token callback asked to stop.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
}

/// Timings and counts of one `generate` call.
#[derive(Debug, Clone)]
pub struct GenerationStats {
    /// Prompt tokens that had to be computed (those not already in the cache).
    pub prompt_tokens: usize,
    /// Prompt tokens reused from the cache.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_time: Duration,
    pub generation_time: Duration,
    pub stop: StopReason,
    /// Ids of the generated tokens (including a final end-of-generation token).
    pub tokens: Vec<u32>,
}

impl GenerationStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_time)
    }

    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens, self.generation_time)
    }
}

fn per_second(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

impl Session {
    pub(crate) fn new(state: LlamaState) -> Session {
        Session {
            state,
            tokens: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Tokens currently held in the KV cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    pub fn kv_bytes(&self) -> usize {
        self.state.kv_bytes()
    }

    /// The model state, for callers that drive `Llama::forward` themselves (scoring, tests).
    pub fn state_mut(&mut self) -> &mut LlamaState {
        &mut self.state
    }

    pub fn clear(&mut self) {
        self.state.clear();
        self.tokens.clear();
    }
}

impl Engine {
    /// Continues `session` so that it holds `prompt` (reusing the longest cached prefix) and
    /// generates up to `opts.max_tokens` tokens. `on_text` receives the decoded text as it is
    /// produced (always whole UTF-8 characters) and may return `ControlFlow::Break` to stop.
    /// The generated tokens stay in the session (except a final end-of-generation token), so a
    /// chat can continue from them.
    pub fn generate(
        &self,
        session: &mut Session,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let n_ctx = session.n_ctx();
        if prompt.len() > n_ctx {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                n_ctx,
            });
        }
        let mut sampler = Sampler::new(opts.sampling.clone())?;
        // Keep the common prefix, but always recompute at least the last prompt token so
        // that there are logits to sample from.
        let common = session
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        session.state.truncate(common);
        session.tokens.truncate(common);
        for &t in prompt {
            sampler.accept(t);
        }

        let start = Instant::now();
        let todo = &prompt[common..];
        self.model().forward(
            self.pool(),
            &mut session.state,
            todo,
            LogitsMode::Last,
            &mut session.logits,
        )?;
        session.tokens.extend_from_slice(todo);
        let prompt_time = start.elapsed();

        let gen_start = Instant::now();
        let mut decoder = StreamDecoder::new();
        let mut generated = Vec::new();
        let tokenizer = self.tokenizer();
        let stop = loop {
            if generated.len() >= opts.max_tokens {
                break StopReason::MaxTokens;
            }
            let token = sampler.sample(&session.logits);
            generated.push(token);
            if tokenizer.is_eog(token) {
                break StopReason::EndOfGeneration;
            }
            sampler.accept(token);
            let text = decoder.push(tokenizer, token);
            if !text.is_empty() && on_text(&text).is_break() {
                break StopReason::Cancelled;
            }
            if generated.len() >= opts.max_tokens {
                // Feed nothing more: the caller asked for no further tokens.
                break StopReason::MaxTokens;
            }
            if session.tokens.len() >= n_ctx {
                break StopReason::ContextFull;
            }
            self.model().forward(
                self.pool(),
                &mut session.state,
                &[token],
                LogitsMode::Last,
                &mut session.logits,
            )?;
            session.tokens.push(token);
        };
        let rest = decoder.finish();
        if !rest.is_empty() {
            let _ = on_text(&rest);
        }
        Ok(GenerationStats {
            prompt_tokens: todo.len(),
            cached_tokens: common,
            generated_tokens: generated.len(),
            prompt_time,
            generation_time: gen_start.elapsed(),
            stop,
            tokens: generated,
        })
    }
}
