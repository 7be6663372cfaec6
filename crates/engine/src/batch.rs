//! `BatchEngine`: many requests served together — what the HTTP server drives. `submit` queues
//! a request, each `step` runs ONE batched forward pass over every active sequence (decode
//! rows and prompt chunks mixed) and returns per-request events (token with its text delta and
//! log-probabilities, prompt log-probabilities, finish with reason and usage); `cancel` ends a
//! request and frees its KV blocks at the next step.
//!
//! Time is passed in (`now`, from any fixed origin), so the engine is a deterministic state
//! machine apart from the arithmetic of the forward pass.

use crate::scheduler::{
    FinishReason, RequestId, Scheduler, SchedulerConfig, SchedulerStats, SeqId, SeqRequest,
    StepPlan,
};
use crate::stop::StopMatcher;
use crate::{Engine, EngineError};
use kiln_kvcache::{BlockManager, KvDtype, KvStore, DEFAULT_BLOCK_SIZE};
use kiln_models::{BatchSeq, ForwardScratch, LogitsMode};
use kiln_sampler::{log_softmax_at, top_logprobs, Sampler, SamplingParams};
use kiln_tokenizer::StreamDecoder;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Sizes of the batch engine.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub scheduler: SchedulerConfig,
    /// Blocks in the KV pool (shared by running sequences and the prefix cache).
    pub n_blocks: usize,
    pub block_size: usize,
    pub kv: KvDtype,
}

impl BatchConfig {
    /// Room for `parallel` sequences of `n_ctx` positions each, plus as much again kept for
    /// the prefix cache; memory is only allocated as blocks are first used.
    pub fn for_slots(parallel: usize, n_ctx: usize) -> BatchConfig {
        let block_size = DEFAULT_BLOCK_SIZE;
        let parallel = parallel.max(1);
        BatchConfig {
            scheduler: SchedulerConfig {
                max_batch: parallel,
                n_ctx,
                ..SchedulerConfig::default()
            },
            n_blocks: 2 * parallel * n_ctx.div_ceil(block_size),
            block_size,
            kv: KvDtype::F16,
        }
    }
}

/// One completion request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Prompt token ids (already templated and tokenized).
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// `Some(k)`: every generated token carries its log-probability and the `k` most likely
    /// alternatives.
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt tokens too (completions `echo`); such a prompt is
    /// computed in full rather than taken from the prefix cache.
    pub prompt_logprobs: bool,
    /// Independent completions of the prompt (sequence `i` samples with seed `seed + i`).
    pub n: usize,
    /// Higher is admitted first.
    pub priority: u8,
    pub timeout: Option<Duration>,
    /// End-of-generation tokens are never sampled, so every sequence runs to `max_tokens`
    /// (or the context): for benchmarks that need a fixed amount of generation.
    pub ignore_eos: bool,
}

impl Request {
    /// A greedy request of `max_tokens` for `prompt`, everything else off.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Request {
        Request {
            prompt,
            sampling: SamplingParams::greedy(),
            max_tokens,
            stop: Vec::new(),
            logprobs: None,
            prompt_logprobs: false,
            n: 1,
            priority: 0,
            timeout: None,
            ignore_eos: false,
        }
    }
}

/// A token's log-probability under the model (temperature 1, before any sampling filter) and
/// the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Token counts of one sequence, for `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Tokens sampled (an end-of-generation token included).
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
}

/// What happened to a request during a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Log-probabilities of the prompt tokens (the first has none), once the prompt is read.
    PromptLogprobs {
        req: RequestId,
        logprobs: Vec<Option<TokenLogprob>>,
    },
    /// Sequence `index` of `req` produced `token`; `text` is the newly releasable text (may be
    /// empty while a multi-byte character or a possible stop string is incomplete).
    Token {
        req: RequestId,
        index: usize,
        token: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Sequence `index` of `req` ended; `text` is any text still held back.
    Finished {
        req: RequestId,
        index: usize,
        reason: FinishReason,
        text: String,
        usage: Usage,
        /// How long the request waited in the queue before admission (`None`: it was never
        /// admitted, e.g. cancelled or timed out while waiting).
        queue_time: Option<Duration>,
    },
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub scheduler: SchedulerStats,
    pub block_size: usize,
    /// Rows run through the model so far (prompt and decode tokens).
    pub tokens_computed: u64,
    pub steps: u64,
}

/// Per-sequence generation state.
struct SeqState {
    sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    usage: Usage,
}

struct ReqState {
    req: Request,
    seqs: Vec<Option<SeqState>>,
    finished: usize,
    prompt_lp: Vec<Option<TokenLogprob>>,
    queue_time: Option<Duration>,
}

/// The result of one `step`.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    pub events: Vec<Event>,
    /// Rows the forward pass ran (0 when there was nothing to do).
    pub rows: usize,
    /// When nothing ran because requests wait for the queue delay: when to step again.
    pub wake_at: Option<Duration>,
}

/// Continuous-batching engine over one model.
pub struct BatchEngine {
    engine: Arc<Engine>,
    sched: Scheduler,
    store: KvStore,
    scratch: ForwardScratch,
    logits: Vec<f32>,
    reqs: HashMap<RequestId, ReqState>,
    tokens_computed: u64,
    steps: u64,
}

impl BatchEngine {
    pub fn new(engine: Arc<Engine>, cfg: BatchConfig) -> Result<BatchEngine, EngineError> {
        let mut sc = cfg.scheduler;
        sc.n_ctx = sc.n_ctx.clamp(1, engine.model().config().n_ctx_train);
        let store = engine
            .model()
            .new_store(cfg.block_size, cfg.n_blocks, cfg.kv)?;
        let blocks = BlockManager::new(cfg.n_blocks, cfg.block_size)
            .map_err(|e| EngineError::Model(e.into()))?;
        Ok(BatchEngine {
            engine,
            sched: Scheduler::new(sc, blocks),
            store,
            scratch: ForwardScratch::default(),
            logits: Vec::new(),
            reqs: HashMap::new(),
            tokens_computed: 0,
            steps: 0,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Queues `req`; refused when the queue is full (retry later) or the request cannot fit.
    pub fn submit(&mut self, req: Request, now: Duration) -> Result<RequestId, EngineError> {
        req.sampling.validate()?;
        let n_vocab = self.engine.model().config().n_vocab;
        if let Some(&bad) = req.prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(EngineError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        let id = self
            .sched
            .submit(
                SeqRequest {
                    prompt: req.prompt.clone(),
                    n: req.n,
                    max_new_tokens: req.max_tokens,
                    priority: req.priority,
                    timeout: req.timeout,
                    prompt_logits: req.prompt_logprobs,
                },
                now,
            )
            .map_err(EngineError::Submit)?;
        let n = req.n;
        self.reqs.insert(
            id,
            ReqState {
                req,
                seqs: (0..n).map(|_| None).collect(),
                finished: 0,
                prompt_lp: Vec::new(),
                queue_time: None,
            },
        );
        Ok(id)
    }

    /// Ends `id` at the next step (its sequences finish `Cancelled`, their blocks are freed).
    pub fn cancel(&mut self, id: RequestId) -> bool {
        self.sched.cancel(id)
    }

    /// No request is queued or running.
    pub fn is_idle(&self) -> bool {
        self.sched.is_idle()
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            scheduler: self.sched.stats(),
            block_size: self.sched.block_manager().block_size(),
            tokens_computed: self.tokens_computed,
            steps: self.steps,
        }
    }

    /// Runs one batched forward pass over every active sequence and returns what happened.
    pub fn step(&mut self, now: Duration) -> Result<StepOutput, EngineError> {
        let plan = self.sched.schedule(now);
        let mut out = StepOutput {
            wake_at: plan.wake_at,
            ..StepOutput::default()
        };
        for &(req, waited) in &plan.admitted {
            if let Some(rs) = self.reqs.get_mut(&req) {
                rs.queue_time = Some(waited);
            }
        }
        for &(req, index, reason) in &plan.finished {
            self.end(req, index, reason, None, &mut out.events);
        }
        if plan.items.is_empty() {
            return Ok(out);
        }
        self.forward(&plan)?;
        self.sched.complete(&plan);
        out.rows = plan.items.iter().map(|i| i.len).sum();
        self.tokens_computed += out.rows as u64;
        self.steps += 1;
        let n_vocab = self.engine.model().config().n_vocab;
        let mut row = 0;
        for item in &plan.items {
            let n_rows = item.logits.rows(item.len);
            let rows = row..row + n_rows;
            row += n_rows;
            if n_rows == 0 {
                continue;
            }
            let Some((tokens, _)) = self.sched.seq(item.seq) else {
                continue;
            };
            let reaches_end = item.start + item.len == tokens.len();
            if item.logits == LogitsMode::All {
                self.prompt_logprobs(item.req, item.start, &rows, &mut out.events);
            }
            if reaches_end {
                let last = (rows.end - 1) * n_vocab;
                let mut logits = std::mem::take(&mut self.logits);
                let r = self.sample(
                    item.seq,
                    item.req,
                    item.index,
                    &mut logits[last..last + n_vocab],
                );
                self.logits = logits;
                out.events.extend(r?);
            }
        }
        Ok(out)
    }

    fn forward(&mut self, plan: &StepPlan) -> Result<(), EngineError> {
        let mut seqs = Vec::with_capacity(plan.items.len());
        for item in &plan.items {
            let (tokens, blocks) = self.sched.seq(item.seq).ok_or_else(|| {
                EngineError::Invalid(format!("sequence {} vanished mid-step", item.seq))
            })?;
            seqs.push(BatchSeq {
                tokens: &tokens[item.start..item.start + item.len],
                pos0: item.start,
                blocks,
                logits: item.logits,
            });
        }
        self.engine.model().forward_batch(
            self.engine.pool(),
            &mut self.store,
            &seqs,
            &mut self.scratch,
            &mut self.logits,
        )?;
        Ok(())
    }

    /// Records prompt log-probabilities from the rows of a prompt chunk computed with every
    /// row's logits; emits them once the whole prompt is read.
    fn prompt_logprobs(
        &mut self,
        req: RequestId,
        start: usize,
        rows: &std::ops::Range<usize>,
        events: &mut Vec<Event>,
    ) {
        let Some(rs) = self.reqs.get_mut(&req) else {
            return;
        };
        let n_vocab = self.engine.model().config().n_vocab;
        let n_prompt = rs.req.prompt.len();
        let k = rs.req.logprobs.unwrap_or(0);
        if start == 0 {
            rs.prompt_lp.clear();
            rs.prompt_lp.push(None);
        }
        for (i, r) in rows.clone().enumerate() {
            let pos = start + i;
            if pos + 1 >= n_prompt {
                break;
            }
            let l = &self.logits[r * n_vocab..(r + 1) * n_vocab];
            let token = rs.req.prompt[pos + 1];
            rs.prompt_lp.push(Some(TokenLogprob {
                token,
                logprob: log_softmax_at(l, token),
                top: top_logprobs(l, k),
            }));
        }
        if rs.prompt_lp.len() == n_prompt {
            events.push(Event::PromptLogprobs {
                req,
                logprobs: std::mem::take(&mut rs.prompt_lp),
            });
        }
    }

    /// Samples the next token of sequence `seq` from `logits` and applies stop conditions.
    fn sample(
        &mut self,
        seq: SeqId,
        req: RequestId,
        index: usize,
        logits: &mut [f32],
    ) -> Result<Vec<Event>, EngineError> {
        let mut events = Vec::new();
        let (n_prompt, cached) = self.sched.prompt_info(seq).unwrap_or((0, 0));
        let Some(rs) = self.reqs.get_mut(&req) else {
            self.sched.finish(seq, FinishReason::Cancelled);
            return Ok(events);
        };
        if rs.seqs[index].is_none() {
            let mut params = rs.req.sampling.clone();
            params.seed = params.seed.wrapping_add(index as u64);
            let mut sampler = Sampler::new(params)?;
            sampler.accept_all(&rs.req.prompt);
            rs.seqs[index] = Some(SeqState {
                sampler,
                decoder: StreamDecoder::new(),
                stop: StopMatcher::new(&rs.req.stop),
                usage: Usage {
                    prompt_tokens: n_prompt,
                    completion_tokens: 0,
                    cached_tokens: cached,
                },
            });
        }
        let want_lp = rs.req.logprobs;
        let max_tokens = rs.req.max_tokens;
        let ignore_eos = rs.req.ignore_eos;
        let Some(st) = rs.seqs[index].as_mut() else {
            return Ok(events);
        };
        if st.usage.completion_tokens >= max_tokens {
            self.sched.finish(seq, FinishReason::Length);
            self.end(req, index, FinishReason::Length, None, &mut events);
            return Ok(events);
        }
        let tokenizer = self.engine.tokenizer();
        let token = if ignore_eos {
            // Masked for the sampler only: log-probabilities below stay the model's own.
            let eog = tokenizer.eog_ids();
            let saved: Vec<f32> = eog
                .iter()
                .map(|&t| logits.get(t as usize).copied().unwrap_or(0.0))
                .collect();
            for &t in eog {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let token = st.sampler.sample(logits);
            for (&t, &v) in eog.iter().zip(&saved) {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = v;
                }
            }
            token
        } else {
            st.sampler.sample(logits)
        };
        st.sampler.accept(token);
        st.usage.completion_tokens += 1;
        let logprob = want_lp.map(|k| TokenLogprob {
            token,
            logprob: log_softmax_at(logits, token),
            top: top_logprobs(logits, k),
        });
        if tokenizer.is_eog(token) {
            self.sched.finish(seq, FinishReason::Stop);
            events.push(Event::Token {
                req,
                index,
                token,
                text: String::new(),
                logprob,
            });
            self.end(req, index, FinishReason::Stop, None, &mut events);
            return Ok(events);
        }
        let piece = st.decoder.push(tokenizer, token);
        let (text, stopped) = st.stop.push(&piece);
        events.push(Event::Token {
            req,
            index,
            token,
            text,
            logprob,
        });
        let reason = if stopped {
            self.sched.finish(seq, FinishReason::Stop);
            Some(FinishReason::Stop)
        } else {
            self.sched.sampled(seq, token)
        };
        if let Some(r) = reason {
            self.end(req, index, r, Some(stopped), &mut events);
        }
        Ok(events)
    }

    /// Emits `Finished` for sequence `index` of `req` (flushing held-back text unless a stop
    /// string ended it) and forgets the request once all its sequences ended.
    fn end(
        &mut self,
        req: RequestId,
        index: usize,
        reason: FinishReason,
        stopped_by_string: Option<bool>,
        events: &mut Vec<Event>,
    ) {
        let Some(rs) = self.reqs.get_mut(&req) else {
            return;
        };
        let n_prompt = rs.req.prompt.len();
        let queue_time = rs.queue_time;
        let (text, usage) = match rs.seqs.get_mut(index).and_then(|s| s.as_mut()) {
            Some(st) => {
                let mut text = String::new();
                if stopped_by_string != Some(true) {
                    let rest = st.decoder.finish();
                    let (t, hit) = st.stop.push(&rest);
                    text.push_str(&t);
                    if !hit {
                        text.push_str(&st.stop.finish());
                    }
                }
                (text, st.usage)
            }
            None => (
                String::new(),
                Usage {
                    prompt_tokens: n_prompt,
                    ..Usage::default()
                },
            ),
        };
        events.push(Event::Finished {
            req,
            index,
            reason,
            text,
            usage,
            queue_time,
        });
        rs.finished += 1;
        if rs.finished >= rs.seqs.len() {
            self.reqs.remove(&req);
        }
    }
}
