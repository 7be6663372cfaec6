//! `Sampler`: runs the sampling chain (penalties, top-k, temperature softmax, top-p, min-p,
//! seeded draw) over one step's logits, owning its RNG, penalty window and scratch space.

use crate::math::{exp_nonpositive, rank, sanitize};
use crate::penalty::{penalize, PenaltyWindow};
use crate::rng::Xoshiro256StarStar;
use crate::{SamplerError, SamplingParams};

/// One vocabulary entry while the chain runs: its id, its (sanitized, penalized) logit and its
/// unnormalized probability `exp((logit - max) / temperature)`.
#[derive(Clone, Copy, Debug)]
struct Cand {
    id: u32,
    logit: f32,
    weight: f64,
}

fn by_rank(a: &Cand, b: &Cand) -> std::cmp::Ordering {
    rank(a.logit, a.id, b.logit, b.id)
}

/// Top-p without `top_k` sorts the distribution in growing chunks, starting with this many
/// tokens, and stops as soon as the nucleus is complete.
const FIRST_TOP_P_CHUNK: usize = 64;

/// Extra room in the top-k buffer beyond `k`, so small `k` does not compact too often.
const TOP_K_SLACK: usize = 256;

/// Tokens per block in the top-k scan; a block is skipped when its maximum cannot enter.
const SCAN_BLOCK: usize = 64;

/// What the chain leaves for the final step.
enum Chain {
    /// No logits at all.
    Empty,
    /// A single certain token (greedy, or every logit `-inf`/NaN).
    Point(u32),
    /// `cand` holds the surviving tokens in a canonical order; the value is their total weight.
    Dist(f64),
}

/// Chooses next tokens from logits; one per sequence.
///
/// A plain state machine: the only state is the seeded RNG, the penalty window and reusable
/// scratch buffers (sized on the first call, not reallocated afterwards for the same
/// vocabulary). Same parameters, same accepted tokens and same logits give the same tokens
/// on every run and platform: the draw uses [`Xoshiro256StarStar`], the probabilities use an
/// `exp` built from basic IEEE operations, and candidates are always walked in a canonical
/// order (by logit then id, or by id) that does not depend on the sort algorithm.
///
/// Odd logits never panic: NaN counts as `-inf`, `+inf` as the largest finite `f32` (several
/// `+inf` tokens share the mass), and when every logit is `-inf`/NaN the result is token 0.
/// Empty logits give token 0 from [`sample`](Self::sample) and an empty list from
/// [`candidates`](Self::candidates).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256StarStar,
    window: PenaltyWindow,
    /// Sanitized, penalized logits, indexed by token id.
    work: Vec<f32>,
    /// Unnormalized probabilities indexed by token id (only when no top-k applies).
    weights: Vec<f64>,
    /// Candidates still in the running; see [`Chain::Dist`].
    cand: Vec<Cand>,
}

impl Sampler {
    /// A sampler with an empty history and its RNG seeded from `params.seed`.
    ///
    /// Fails with [`SamplerError::InvalidParameter`] when `params` does not
    /// [`validate`](SamplingParams::validate).
    pub fn new(params: SamplingParams) -> Result<Sampler, SamplerError> {
        params.validate()?;
        Ok(Sampler {
            rng: Xoshiro256StarStar::seed_from_u64(params.seed),
            window: PenaltyWindow::new(params.repeat_last_n),
            work: Vec::new(),
            weights: Vec::new(),
            cand: Vec::new(),
            params,
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token id from raw logits (`logits.len()` = vocabulary size).
    ///
    /// Applies, in order: penalties from the accepted history, top-k, temperature-scaled
    /// softmax, top-p, min-p, then a draw from the seeded RNG (see [`SamplingParams`] for how
    /// this order relates to llama.cpp's); with `temperature == 0` it
    /// returns the argmax of the penalized logits (ties: lowest id) instead. Every call with
    /// `temperature > 0` consumes exactly one RNG draw, whatever the logits; greedy calls
    /// consume none. Does not record the token: call [`accept`](Self::accept) for that.
    ///
    /// Returns 0 for empty logits and when every logit is `-inf` or NaN.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let u = if self.params.temperature > 0.0 {
            self.rng.next_f64()
        } else {
            0.0
        };
        match self.run_chain(logits) {
            Chain::Empty => 0,
            Chain::Point(token) => token,
            Chain::Dist(total) => {
                let target = u * total;
                let mut cum = 0.0;
                for c in &self.cand {
                    cum += c.weight;
                    if cum > target {
                        return c.id;
                    }
                }
                // Only reachable when rounding puts `target` at `total`.
                self.cand.last().map_or(0, |c| c.id)
            }
        }
    }

    /// Records a token (prompt or generated) in the penalty history; only the last
    /// `repeat_last_n` accepted tokens are kept. Ids outside the vocabulary are remembered
    /// but penalize nothing.
    pub fn accept(&mut self, token: u32) {
        self.window.push(token);
    }

    /// [`accept`](Self::accept)s each token in order, e.g. a whole prompt.
    pub fn accept_all(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.window.push(t);
        }
    }

    /// The tokens the penalties currently look at, oldest first.
    pub fn history(&self) -> impl Iterator<Item = u32> + '_ {
        self.window.tokens()
    }

    /// Clears the penalty history and re-seeds the RNG from `params.seed`, so the sampler
    /// behaves exactly as when it was new.
    pub fn reset(&mut self) {
        self.window.clear();
        self.rng = Xoshiro256StarStar::seed_from_u64(self.params.seed);
    }

    /// The distribution [`sample`](Self::sample) would draw from: `(token, probability)` for
    /// every token that survives the chain, probabilities summing to 1, sorted by descending
    /// probability (ties: lower id first). Consumes no randomness.
    ///
    /// Greedy gives `[(argmax, 1.0)]`; all-`-inf` logits give `[(0, 1.0)]`; empty logits give
    /// an empty list.
    pub fn candidates(&mut self, logits: &[f32]) -> Vec<(u32, f32)> {
        match self.run_chain(logits) {
            Chain::Empty => Vec::new(),
            Chain::Point(token) => vec![(token, 1.0)],
            Chain::Dist(total) => {
                let mut kept = self.cand.clone();
                kept.sort_unstable_by(by_rank);
                kept.iter()
                    .map(|c| (c.id, (c.weight / total) as f32))
                    .collect()
            }
        }
    }

    /// Runs every stage except the draw, leaving survivors in `self.cand`.
    fn run_chain(&mut self, logits: &[f32]) -> Chain {
        if logits.is_empty() {
            return Chain::Empty;
        }
        self.load(logits);
        if self.params.temperature == 0.0 {
            return Chain::Point(argmax(&self.work));
        }

        let min_p = f64::from(self.params.min_p);
        let k = self.params.top_k;
        let sorted = k > 0 && k < self.work.len();
        let total = if sorted {
            // Top-k skips -inf tokens, so an empty result means every logit is -inf.
            self.select_top_k(k);
            let Some(max) = self.cand.first().map(|c| c.logit) else {
                return Chain::Point(0);
            };
            let total = self.weigh_candidates(max);
            // Zero weights (from underflow) can never be drawn; the max token has weight
            // exactly 1, so something always survives.
            self.cand.retain(|c| c.weight > 0.0 && c.weight >= min_p);
            total
        } else {
            let max = block_max(&self.work);
            if max == f32::NEG_INFINITY {
                return Chain::Point(0);
            }
            self.weigh_vocabulary(max, min_p)
        };
        if self.params.top_p < 1.0 {
            // Min-p keeps a most-probable prefix and top-p keeps another; their intersection
            // is the same whichever runs first, as long as top-p measures mass against the
            // pre-min-p `total`. Running min-p first shrinks what top-p has to sort.
            let target = f64::from(self.params.top_p) * total;
            if sorted {
                if let Ok(cut) = self.nucleus_cut(0, self.cand.len(), target, 0.0) {
                    self.cand.truncate(cut);
                }
            } else {
                self.top_p_partial(target);
            }
        }
        Chain::Dist(sum_in_lanes(self.cand.iter().map(|c| c.weight)))
    }

    /// Fills `work` with the sanitized logits and applies the penalties.
    fn load(&mut self, logits: &[f32]) {
        self.work.clear();
        self.work.extend(logits.iter().map(|&l| sanitize(l)));
        let p = &self.params;
        if !p.penalties_active() {
            return;
        }
        for &(token, count) in self.window.counts() {
            if let Some(l) = self.work.get_mut(token as usize) {
                let v = penalize(
                    *l,
                    count,
                    p.repeat_penalty,
                    p.presence_penalty,
                    p.frequency_penalty,
                );
                *l = sanitize(v);
            }
        }
    }

    /// Puts the `k` best tokens of `work` (`0 < k < work.len()`) into `cand`, sorted.
    ///
    /// One pass with a rising threshold: tokens are buffered only when they beat the current
    /// k-th best, and the buffer is cut back to `k` by partial selection when it fills. Ties
    /// stay exact because tokens arrive in id order: a later token equal to the threshold
    /// ranks below every kept one. `-inf` tokens are skipped outright, as they would get
    /// weight 0 anyway.
    fn select_top_k(&mut self, k: usize) {
        let capacity = k.saturating_mul(2).max(k + TOP_K_SLACK);
        self.cand.clear();
        let mut threshold = f32::NEG_INFINITY;
        let mut base = 0u32;
        for block in self.work.chunks(SCAN_BLOCK) {
            // Most blocks hold nothing above the threshold; a branch-free block maximum
            // (vectorized) rejects them without a per-token branch.
            if block_max(block) > threshold {
                for (id, &logit) in (base..).zip(block) {
                    if logit <= threshold {
                        continue;
                    }
                    self.cand.push(Cand {
                        id,
                        logit,
                        weight: 0.0,
                    });
                    if self.cand.len() == capacity {
                        self.cand.select_nth_unstable_by(k - 1, by_rank);
                        self.cand.truncate(k);
                        threshold = self.cand[k - 1].logit;
                    }
                }
            }
            base += block.len() as u32;
        }
        if self.cand.len() > k {
            self.cand.select_nth_unstable_by(k - 1, by_rank);
            self.cand.truncate(k);
        }
        self.cand.sort_unstable_by(by_rank);
    }

    /// Sets every candidate's weight to `exp((logit - max) / temperature)`; returns their sum.
    fn weigh_candidates(&mut self, max: f32) -> f64 {
        let t = f64::from(self.params.temperature);
        let max = f64::from(max);
        for c in &mut self.cand {
            c.weight = exp_nonpositive((f64::from(c.logit) - max) / t);
        }
        sum_in_lanes(self.cand.iter().map(|c| c.weight))
    }

    /// Weighs the whole vocabulary (a contiguous loop the compiler vectorizes) and puts the
    /// tokens passing min-p with a non-zero weight into `cand`, in id order. Returns the sum
    /// of all weights, which top-p measures its mass against.
    fn weigh_vocabulary(&mut self, max: f32, min_p: f64) -> f64 {
        let t = f64::from(self.params.temperature);
        let max = f64::from(max);
        self.weights.clear();
        self.weights.extend(
            self.work
                .iter()
                .map(|&l| exp_nonpositive((f64::from(l) - max) / t)),
        );
        self.cand.clear();
        for (id, (&logit, &weight)) in (0u32..).zip(self.work.iter().zip(&self.weights)) {
            if weight > 0.0 && weight >= min_p {
                self.cand.push(Cand { id, logit, weight });
            }
        }
        sum_in_lanes(self.weights.iter().copied())
    }

    /// Walks the sorted range `cand[start..end]`, adding weights to `cum` (the mass before
    /// `start`). Returns `Ok(cut)` when the mass reaches `target` at index `cut - 1`,
    /// otherwise `Err(cum)` with the mass through `end`.
    fn nucleus_cut(
        &self,
        start: usize,
        end: usize,
        target: f64,
        mut cum: f64,
    ) -> Result<usize, f64> {
        for (i, c) in self.cand[start..end].iter().enumerate() {
            cum += c.weight;
            if cum >= target {
                return Ok(start + i + 1);
            }
        }
        Err(cum)
    }

    /// Top-p over an unsorted `cand`: sorts only as far as needed, selecting and sorting the
    /// next best chunk (doubling in size) until the nucleus mass is reached.
    fn top_p_partial(&mut self, target: f64) {
        let mut start = 0;
        let mut chunk = FIRST_TOP_P_CHUNK;
        let mut cum = 0.0;
        while start < self.cand.len() {
            let rest = &mut self.cand[start..];
            let m = chunk.min(rest.len());
            if m < rest.len() {
                rest.select_nth_unstable_by(m - 1, by_rank);
            }
            rest[..m].sort_unstable_by(by_rank);
            let end = start + m;
            match self.nucleus_cut(start, end, target, cum) {
                Ok(cut) => {
                    self.cand.truncate(cut);
                    return;
                }
                Err(c) => cum = c,
            }
            start = end;
            chunk = chunk.saturating_mul(2);
        }
    }
}

/// The first index holding the largest value (greedy's tie rule: lowest id); 0 when every
/// value is `-inf`. Values are sanitized (no NaN).
fn argmax(values: &[f32]) -> u32 {
    let max = block_max(values);
    values.iter().position(|&v| v == max).unwrap_or(0) as u32
}

/// The largest of sanitized `values` (`-inf` when empty), in a form the compiler vectorizes.
fn block_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        max = if v > max { v } else { max };
    }
    max
}

/// Sum with a fixed association: value `i` goes to partial sum `i % 4`, and the partial sums
/// are combined as `(s0 + s1) + (s2 + s3)`. The grouping depends only on the order of the
/// values (canonical here), never on the platform, and avoids one long serial add chain.
fn sum_in_lanes(values: impl Iterator<Item = f64>) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut lane = 0;
    for v in values {
        acc[lane] += v;
        lane = (lane + 1) % 4;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}
