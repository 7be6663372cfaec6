//! The batch scheduler: a plain state machine (time is passed in, no I/O, no model) that
//! decides, step by step, which tokens of which sequences go into the next batched forward.
//!
//! - Continuous batching: every step carries one token of every decoding sequence; requests
//!   waiting in the queue join between steps.
//! - Chunked prefill: prompts are fed in chunks within a per-step token budget, after the
//!   decode rows, so running streams keep flowing while a long prompt is read.
//! - Admission reserves each sequence's worst-case KV blocks (prompt + max new tokens), so an
//!   admitted sequence never runs out of blocks and nothing needs preempting.
//! - Priority levels (higher first, then arrival order), a bounded queue, a maximum queue
//!   delay (while idle, wait for a fuller batch), per-request timeouts and cancellation; a
//!   cancelled or timed-out request's blocks are freed at the next step.
//! - `n` sequences per request: the first reads the prompt, the others then take its full
//!   prompt blocks from the prefix index and compute only the partial tail.

use kiln_kvcache::{BlockId, BlockManager, BlockTable, KvError, PrefixStats};
use kiln_models::LogitsMode;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

pub type RequestId = u64;
pub type SeqId = u64;

/// Limits of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most sequences running at once (every one gets a row in every step).
    pub max_batch: usize,
    /// Most tokens (rows) in one step; raised to `max_batch` if lower.
    pub token_budget: usize,
    /// Most requests waiting for admission; more are rejected with `QueueFull`.
    pub max_queue: usize,
    /// While nothing runs, how long to hold the first waiting request for a fuller batch.
    pub max_queue_delay: Duration,
    /// Most positions per sequence (prompt + generated).
    pub n_ctx: usize,
    /// What `QueueFull` suggests as the wait before retrying.
    pub retry_after: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch: 16,
            token_budget: 256,
            max_queue: 256,
            max_queue_delay: Duration::ZERO,
            n_ctx: 2048,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// What the scheduler needs to know of a request.
#[derive(Debug, Clone)]
pub struct SeqRequest {
    pub prompt: Vec<u32>,
    /// Independent sequences sampled from the prompt (at least 1).
    pub n: usize,
    pub max_new_tokens: usize,
    /// Higher runs first.
    pub priority: u8,
    /// From submission; past it the request finishes `TimedOut`.
    pub timeout: Option<Duration>,
    /// Logits for every prompt token of the first sequence (prompt log-probabilities); such a
    /// prompt is computed in full, not taken from the prefix index.
    pub prompt_logits: bool,
}

/// Why `submit` refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue is full ({max_queue} requests waiting); retry after {retry_after:?}")]
    QueueFull {
        max_queue: usize,
        retry_after: Duration,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt} tokens but the context holds {n_ctx}")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("the request needs {needed} KV blocks but the pool has {n_blocks}")]
    TooLarge { needed: usize, n_blocks: usize },
    #[error("n must be between 1 and {max}, got {n}")]
    BadN { n: usize, max: usize },
}

/// How a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// End-of-generation token or a stop string (decided by the caller).
    Stop,
    /// `max_new_tokens` generated.
    Length,
    /// The context is full.
    ContextFull,
    Cancelled,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Admitted; waits until the first sequence of its request has read the prompt.
    AwaitLeader,
    Running,
}

struct Seq {
    req: RequestId,
    index: usize,
    tokens: Vec<u32>,
    n_prompt: usize,
    /// Positions whose keys and values are in the store.
    computed: usize,
    /// Prompt tokens taken from the prefix index.
    cached: usize,
    table: BlockTable,
    /// Blocks this sequence may still allocate (its share of the reservation).
    budget: usize,
    max_new: usize,
    phase: Phase,
}

struct Req {
    priority: u8,
    order: u64,
    deadline: Option<Duration>,
    arrival: Duration,
    seqs: Vec<SeqId>,
    prompt_logits: bool,
    cancelled: bool,
    admitted: bool,
    request: Option<SeqRequest>,
}

/// One sequence's part of a step: its tokens `start..start + len` enter the forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepItem {
    pub seq: SeqId,
    pub req: RequestId,
    /// Which of the request's `n` sequences.
    pub index: usize,
    pub start: usize,
    pub len: usize,
    /// Logit rows wanted: `Last` when the chunk reaches the sequence's newest token (a token
    /// is to be sampled), `All` for prompt log-probabilities, else `None`.
    pub logits: LogitsMode,
}

/// What one call to `schedule` decided.
#[derive(Debug, Clone, Default)]
pub struct StepPlan {
    pub items: Vec<StepItem>,
    /// Sequences the scheduler ended (cancelled, timed out) since the last plan.
    pub finished: Vec<(RequestId, usize, FinishReason)>,
    /// When nothing is planned but requests wait for the queue delay: when to call again.
    pub wake_at: Option<Duration>,
    /// Requests admitted by this plan and how long each waited in the queue.
    pub admitted: Vec<(RequestId, Duration)>,
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub running: usize,
    pub waiting: usize,
    pub blocks_in_use: usize,
    pub blocks_total: usize,
    pub prefix: PrefixStats,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    blocks: BlockManager,
    seqs: HashMap<SeqId, Seq>,
    reqs: HashMap<RequestId, Req>,
    /// Waiting requests: (255 - priority, arrival order, id).
    queue: BTreeSet<(u8, u64, RequestId)>,
    /// Admitted, unfinished sequences in admission order.
    running: Vec<SeqId>,
    /// Blocks promised to running sequences but not yet allocated.
    reserved: usize,
    next_id: u64,
    finished: Vec<(RequestId, usize, FinishReason)>,
    admitted: Vec<(RequestId, Duration)>,
}

impl Scheduler {
    /// A scheduler over the blocks of `blocks` (the pool of the KV store it plans for).
    pub fn new(mut cfg: SchedulerConfig, blocks: BlockManager) -> Scheduler {
        cfg.max_batch = cfg.max_batch.max(1);
        cfg.token_budget = cfg.token_budget.max(cfg.max_batch);
        cfg.n_ctx = cfg.n_ctx.max(1);
        Scheduler {
            cfg,
            blocks,
            seqs: HashMap::new(),
            reqs: HashMap::new(),
            queue: BTreeSet::new(),
            running: Vec::new(),
            reserved: 0,
            next_id: 1,
            finished: Vec::new(),
            admitted: Vec::new(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    /// Positions a sequence of this request may fill.
    fn max_len(&self, prompt: usize, max_new: usize) -> usize {
        prompt.saturating_add(max_new).min(self.cfg.n_ctx)
    }

    /// Queues a request (admitted at a later `schedule`); its id is also the key of its events.
    pub fn submit(&mut self, req: SeqRequest, now: Duration) -> Result<RequestId, SubmitError> {
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.n == 0 || req.n > self.cfg.max_batch {
            return Err(SubmitError::BadN {
                n: req.n,
                max: self.cfg.max_batch,
            });
        }
        if req.prompt.len() > self.cfg.n_ctx {
            return Err(SubmitError::PromptTooLong {
                prompt: req.prompt.len(),
                n_ctx: self.cfg.n_ctx,
            });
        }
        let per_seq = self
            .blocks
            .blocks_for(self.max_len(req.prompt.len(), req.max_new_tokens));
        let needed = per_seq.saturating_mul(req.n);
        if needed > self.blocks.n_blocks() {
            return Err(SubmitError::TooLarge {
                needed,
                n_blocks: self.blocks.n_blocks(),
            });
        }
        if self.queue.len() >= self.cfg.max_queue {
            return Err(SubmitError::QueueFull {
                max_queue: self.cfg.max_queue,
                retry_after: self.cfg.retry_after,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.insert((255 - req.priority, id, id));
        self.reqs.insert(
            id,
            Req {
                priority: req.priority,
                order: id,
                deadline: req.timeout.map(|t| now.saturating_add(t)),
                arrival: now,
                seqs: Vec::new(),
                prompt_logits: req.prompt_logits,
                cancelled: false,
                admitted: false,
                request: Some(req),
            },
        );
        Ok(id)
    }

    /// Asks for `id` to end; its sequences finish `Cancelled` and their blocks are freed at
    /// the next `schedule`. False if no such request is pending.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match self.reqs.get_mut(&id) {
            Some(r) => {
                r.cancelled = true;
                true
            }
            None => false,
        }
    }

    /// Ends sequence `seq` (end-of-generation, stop string, or any reason the caller has);
    /// its blocks are released at once.
    pub fn finish(&mut self, seq: SeqId, reason: FinishReason) {
        self.end_seq(seq, reason, false);
    }

    fn end_seq(&mut self, sid: SeqId, reason: FinishReason, report: bool) {
        let Some(mut s) = self.seqs.remove(&sid) else {
            return;
        };
        self.blocks.free(&mut s.table);
        self.reserved = self.reserved.saturating_sub(s.budget);
        self.running.retain(|&x| x != sid);
        if report {
            self.finished.push((s.req, s.index, reason));
        }
        let done = self
            .reqs
            .get(&s.req)
            .is_some_and(|r| r.seqs.iter().all(|x| !self.seqs.contains_key(x)));
        if done {
            self.reqs.remove(&s.req);
        }
    }

    /// Records the token sampled for `seq` after a step; returns why the sequence ended if
    /// this token ends it (`Length` or `ContextFull`; the sequence is then finished).
    pub fn sampled(&mut self, seq: SeqId, token: u32) -> Option<FinishReason> {
        let n_ctx = self.cfg.n_ctx;
        let s = self.seqs.get_mut(&seq)?;
        s.tokens.push(token);
        let reason = if s.tokens.len() - s.n_prompt >= s.max_new {
            Some(FinishReason::Length)
        } else if s.tokens.len() > n_ctx {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        if let Some(r) = reason {
            self.end_seq(seq, r, false);
        }
        reason
    }

    /// The tokens of `seq` (prompt, then generated) and its block table.
    pub fn seq(&self, seq: SeqId) -> Option<(&[u32], &[BlockId])> {
        self.seqs
            .get(&seq)
            .map(|s| (&s.tokens[..], s.table.blocks()))
    }

    /// Prompt length of `seq` and how many of its prompt tokens came from the prefix index.
    pub fn prompt_info(&self, seq: SeqId) -> Option<(usize, usize)> {
        self.seqs.get(&seq).map(|s| (s.n_prompt, s.cached))
    }

    pub fn is_idle(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            running: self.running.len(),
            waiting: self.queue.len(),
            blocks_in_use: self.blocks.in_use(),
            blocks_total: self.blocks.n_blocks(),
            prefix: self.blocks.stats(),
        }
    }

    /// Takes the prompt's cached full blocks for `sid` (unless it must compute its prompt).
    fn start_seq(&mut self, sid: SeqId, lookup: bool) {
        let Some(s) = self.seqs.get_mut(&sid) else {
            return;
        };
        s.phase = Phase::Running;
        if !lookup {
            return;
        }
        // At least the last prompt token is computed: its logits are the first sample's.
        let table = self.blocks.lookup(&s.tokens, s.n_prompt - 1);
        let hits = table.blocks().len();
        s.table = table;
        s.computed = hits * self.blocks.block_size();
        s.cached = s.computed;
        s.budget = s.budget.saturating_sub(hits);
        self.reserved = self.reserved.saturating_sub(hits);
    }

    /// Ends cancelled and timed-out requests, admits waiting ones and plans the next step.
    pub fn schedule(&mut self, now: Duration) -> StepPlan {
        let mut plan = StepPlan::default();
        self.expire(now);
        self.wake_siblings();
        plan.wake_at = self.admit(now);
        let mut left = self.cfg.token_budget;
        // Decode rows first: one per sequence that has a sampled token to feed.
        for pass in [true, false] {
            for i in 0..self.running.len() {
                let sid = self.running[i];
                let Some(s) = self.seqs.get(&sid) else {
                    continue;
                };
                let pending = s.tokens.len() - s.computed;
                let decoding = s.computed >= s.n_prompt;
                if s.phase != Phase::Running || pending == 0 || decoding != pass || left == 0 {
                    continue;
                }
                let len = pending.min(left);
                let all = s.index == 0
                    && s.computed < s.n_prompt
                    && self.reqs.get(&s.req).is_some_and(|r| r.prompt_logits);
                let logits = match (all, s.computed + len == s.tokens.len()) {
                    (true, _) => LogitsMode::All,
                    (false, true) => LogitsMode::Last,
                    (false, false) => LogitsMode::None,
                };
                let item = StepItem {
                    seq: sid,
                    req: s.req,
                    index: s.index,
                    start: s.computed,
                    len,
                    logits,
                };
                if self.grow(sid, item.start + len).is_err() {
                    // Unreachable while the reservation holds; end the sequence, not the server.
                    self.end_seq(sid, FinishReason::ContextFull, true);
                    continue;
                }
                left -= len;
                plan.items.push(item);
            }
        }
        plan.finished = std::mem::take(&mut self.finished);
        plan.admitted = std::mem::take(&mut self.admitted);
        plan
    }

    fn grow(&mut self, sid: SeqId, positions: usize) -> Result<(), KvError> {
        let s = self
            .seqs
            .get_mut(&sid)
            .ok_or(KvError::OutOfBlocks { n_blocks: 0 })?;
        let before = s.table.blocks().len();
        self.blocks.reserve(&mut s.table, positions)?;
        let new = s.table.blocks().len() - before;
        debug_assert!(new <= s.budget, "sequence outgrew its reservation");
        s.budget = s.budget.saturating_sub(new);
        self.reserved = self.reserved.saturating_sub(new);
        Ok(())
    }

    fn expire(&mut self, now: Duration) {
        let ending: Vec<(RequestId, FinishReason)> = self
            .reqs
            .iter()
            .filter_map(|(&id, r)| {
                if r.cancelled {
                    Some((id, FinishReason::Cancelled))
                } else if r.deadline.is_some_and(|d| now >= d) {
                    Some((id, FinishReason::TimedOut))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in ending {
            let Some(r) = self.reqs.get(&id) else {
                continue;
            };
            if !r.admitted {
                self.queue.remove(&(255 - r.priority, r.order, id));
                let n = r.request.as_ref().map_or(1, |q| q.n);
                for index in 0..n {
                    self.finished.push((id, index, reason));
                }
                self.reqs.remove(&id);
                continue;
            }
            for sid in r.seqs.clone() {
                self.end_seq(sid, reason, true);
            }
        }
    }

    /// Starts the other sequences of a request once its first one has read the prompt.
    fn wake_siblings(&mut self) {
        for i in 0..self.running.len() {
            let sid = self.running[i];
            let Some(s) = self.seqs.get(&sid) else {
                continue;
            };
            if s.phase != Phase::AwaitLeader {
                continue;
            }
            let leader = self.reqs.get(&s.req).and_then(|r| r.seqs.first().copied());
            let ready = leader
                .and_then(|l| self.seqs.get(&l))
                .is_none_or(|l| l.computed >= l.n_prompt);
            if ready {
                self.start_seq(sid, true);
            }
        }
    }

    /// Admits waiting requests in priority order while sequence slots and blocks allow;
    /// returns when to call again if the queue delay holds them back.
    fn admit(&mut self, now: Duration) -> Option<Duration> {
        if self.running.is_empty() && !self.cfg.max_queue_delay.is_zero() {
            let oldest = self
                .queue
                .iter()
                .filter_map(|&(_, _, id)| self.reqs.get(&id).map(|r| r.arrival))
                .min();
            if let Some(t) = oldest {
                let due = t.saturating_add(self.cfg.max_queue_delay);
                if self.queue.len() < self.cfg.max_batch && now < due {
                    return Some(due);
                }
            }
        }
        while let Some(&(p, order, id)) = self.queue.first() {
            let Some(r) = self.reqs.get_mut(&id) else {
                self.queue.remove(&(p, order, id));
                continue;
            };
            let Some(q) = r.request.as_ref() else {
                self.queue.remove(&(p, order, id));
                continue;
            };
            let max_len = q
                .prompt
                .len()
                .saturating_add(q.max_new_tokens)
                .min(self.cfg.n_ctx);
            let per_seq = self.blocks.blocks_for(max_len);
            let free = self.blocks.available().saturating_sub(self.reserved);
            if self.running.len() + q.n > self.cfg.max_batch || free < per_seq * q.n {
                break;
            }
            self.queue.remove(&(p, order, id));
            let Some(q) = r.request.take() else {
                continue;
            };
            r.admitted = true;
            self.admitted.push((id, now.saturating_sub(r.arrival)));
            let prompt_logits = r.prompt_logits;
            let mut ids = Vec::with_capacity(q.n);
            for index in 0..q.n {
                let sid = self.next_id;
                self.next_id += 1;
                ids.push(sid);
                self.seqs.insert(
                    sid,
                    Seq {
                        req: id,
                        index,
                        tokens: q.prompt.clone(),
                        n_prompt: q.prompt.len(),
                        computed: 0,
                        cached: 0,
                        table: BlockTable::new(),
                        budget: per_seq,
                        max_new: q.max_new_tokens,
                        phase: Phase::AwaitLeader,
                    },
                );
                self.running.push(sid);
            }
            self.reserved += per_seq * q.n;
            r.seqs = ids.clone();
            self.start_seq(ids[0], !prompt_logits);
        }
        None
    }

    /// Records that the planned tokens of `plan` are now in the store (registering newly
    /// filled blocks in the prefix index). Call after the forward pass, before `sampled`.
    pub fn complete(&mut self, plan: &StepPlan) {
        for item in &plan.items {
            if let Some(s) = self.seqs.get_mut(&item.seq) {
                s.computed = s.computed.max(item.start + item.len);
                let n = s.computed.min(s.tokens.len());
                self.blocks.commit(&mut s.table, &s.tokens[..n]);
            }
        }
    }

    /// Checks the bookkeeping (tests): blocks reserved never exceed those available, and each
    /// running sequence's table covers exactly what it computed.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.blocks.check_invariants()?;
        if self.reserved > self.blocks.available() {
            return Err(format!(
                "{} blocks reserved but only {} available",
                self.reserved,
                self.blocks.available()
            ));
        }
        let budgets: usize = self.seqs.values().map(|s| s.budget).sum();
        if budgets != self.reserved {
            return Err(format!("budgets {budgets} != reserved {}", self.reserved));
        }
        if self.running.len() > self.cfg.max_batch || self.running.len() != self.seqs.len() {
            return Err("running set out of bounds".into());
        }
        Ok(())
    }
}
