//! Property tests of the scheduler as a plain state machine, driven by a fake model that
//! samples random tokens: budgets are never exceeded, every admitted request finishes exactly
//! once per sequence (done, cancelled or timed out), and block reference counts return to zero.

use kiln_engine::{FinishReason, Scheduler, SchedulerConfig, SeqRequest, SubmitError};
use kiln_kvcache::BlockManager;
use kiln_models::LogitsMode;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const BS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        prompt: Vec<u32>,
        n: usize,
        max_new: usize,
        priority: u8,
        timeout: Option<u64>,
        prompt_logits: bool,
    },
    Cancel(usize),
    Step {
        dt: u64,
        stop_roll: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (
            proptest::collection::vec(0u32..3, 1..30),
            1usize..4,
            0usize..10,
            0u8..3,
            proptest::option::of(1u64..40),
            any::<bool>(),
        )
            .prop_map(|(prompt, n, max_new, priority, timeout, prompt_logits)| Op::Submit {
                prompt,
                n,
                max_new,
                priority,
                timeout,
                prompt_logits,
            }),
        1 => any::<usize>().prop_map(Op::Cancel),
        6 => (0u64..4, any::<u8>()).prop_map(|(dt, stop_roll)| Op::Step { dt, stop_roll }),
    ]
}

fn config() -> impl Strategy<Value = (SchedulerConfig, usize)> {
    (
        1usize..6,
        1usize..20,
        1usize..8,
        8usize..64,
        0u64..3,
        4usize..40,
    )
        .prop_map(
            |(max_batch, token_budget, max_queue, n_ctx, delay, n_blocks)| {
                (
                    SchedulerConfig {
                        max_batch,
                        token_budget,
                        max_queue,
                        max_queue_delay: Duration::from_millis(delay),
                        n_ctx,
                        retry_after: Duration::from_millis(5),
                    },
                    n_blocks,
                )
            },
        )
}

struct Harness {
    sched: Scheduler,
    now: Duration,
    max_new: HashMap<u64, usize>,
    n: HashMap<u64, usize>,
    ends: HashMap<(u64, usize), Vec<FinishReason>>,
    rng: u64,
}

impl Harness {
    fn step(&mut self, dt: u64, stop_roll: u8) -> Result<(), TestCaseError> {
        self.now += Duration::from_millis(dt);
        let plan = self.sched.schedule(self.now);
        let cfg = self.sched.config().clone();
        let rows: usize = plan.items.iter().map(|i| i.len).sum();
        prop_assert!(
            rows <= cfg.token_budget,
            "{} rows > budget {}",
            rows,
            cfg.token_budget
        );
        prop_assert!(plan.items.len() <= cfg.max_batch);
        let mut seen = std::collections::HashSet::new();
        for item in &plan.items {
            prop_assert!(seen.insert(item.seq), "a sequence twice in one step");
            prop_assert!(item.len > 0);
            let (tokens, blocks) = self.sched.seq(item.seq).expect("planned sequence exists");
            prop_assert!(item.start + item.len <= tokens.len());
            prop_assert!(blocks.len() * BS >= item.start + item.len);
            prop_assert!(item.start + item.len <= cfg.n_ctx);
        }
        for &(req, index, reason) in &plan.finished {
            self.ends.entry((req, index)).or_default().push(reason);
        }
        self.sched.complete(&plan);
        for item in &plan.items {
            let (tokens, _) = self.sched.seq(item.seq).expect("still there");
            if item.start + item.len != tokens.len() || item.logits == LogitsMode::None {
                continue;
            }
            let (n_prompt, _) = self.sched.prompt_info(item.seq).expect("info");
            let generated = tokens.len() - n_prompt;
            let key = (item.req, item.index);
            if generated >= self.max_new[&item.req] {
                self.sched.finish(item.seq, FinishReason::Length);
                self.ends.entry(key).or_default().push(FinishReason::Length);
                continue;
            }
            self.rng = self
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (self.rng >> 56) as u8 % 16 == stop_roll % 16 {
                self.sched.finish(item.seq, FinishReason::Stop);
                self.ends.entry(key).or_default().push(FinishReason::Stop);
                continue;
            }
            let token = ((self.rng >> 33) % 3) as u32;
            if let Some(r) = self.sched.sampled(item.seq, token) {
                self.ends.entry(key).or_default().push(r);
            }
        }
        self.sched.check_invariants().map_err(TestCaseError::fail)?;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_keeps_budgets_and_finishes_everything(
        (cfg, n_blocks) in config(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let blocks = BlockManager::new(n_blocks, BS).unwrap();
        let mut h = Harness {
            sched: Scheduler::new(cfg, blocks),
            now: Duration::ZERO,
            max_new: HashMap::new(),
            n: HashMap::new(),
            ends: HashMap::new(),
            rng: 1,
        };
        let mut ids = Vec::new();
        for op in ops {
            match op {
                Op::Submit { prompt, n, max_new, priority, timeout, prompt_logits } => {
                    let req = SeqRequest {
                        prompt,
                        n,
                        max_new_tokens: max_new,
                        priority,
                        timeout: timeout.map(Duration::from_millis),
                        prompt_logits,
                    };
                    match h.sched.submit(req, h.now) {
                        Ok(id) => {
                            ids.push(id);
                            h.max_new.insert(id, max_new);
                            h.n.insert(id, n);
                        }
                        Err(SubmitError::QueueFull { retry_after, .. }) => {
                            prop_assert_eq!(retry_after, Duration::from_millis(5));
                            prop_assert!(h.sched.stats().waiting >= h.sched.config().max_queue);
                        }
                        Err(_) => {}
                    }
                }
                Op::Cancel(i) if !ids.is_empty() => {
                    h.sched.cancel(ids[i % ids.len()]);
                }
                Op::Step { dt, stop_roll } => h.step(dt, stop_roll)?,
                _ => {}
            }
        }
        // Drain: with time moving on, everything admitted must finish.
        let mut steps = 0;
        while !h.sched.is_idle() {
            h.step(1, 0)?;
            steps += 1;
            prop_assert!(steps < 5000, "scheduler did not drain");
        }
        for &id in &ids {
            for index in 0..h.n[&id] {
                let ends = h.ends.get(&(id, index)).cloned().unwrap_or_default();
                prop_assert_eq!(ends.len(), 1, "request {} seq {}: {:?}", id, index, ends);
            }
        }
        let stats = h.sched.stats();
        prop_assert_eq!(stats.blocks_in_use, 0);
        prop_assert_eq!(stats.running + stats.waiting, 0);
        prop_assert!(h.sched.block_manager().n_blocks() == n_blocks);
    }
}
