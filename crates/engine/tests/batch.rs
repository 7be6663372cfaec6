//! The batched path against the single-sequence one on tiny random models: a mixed batch
//! (prompt chunks and decode steps of different lengths, scattered block tables) gives the
//! same logits as each sequence alone; the batch engine generates what `generate` does, shares
//! prompt blocks through the prefix cache, streams stop strings correctly, cancels, and
//! returns every KV block.

use kiln_engine::{
    BatchConfig, BatchEngine, Engine, Event, FinishReason, GenerateOptions, Request, RequestId,
};
use kiln_gguf::GgufFile;
use kiln_kvcache::{BlockManager, BlockTable, KvDtype};
use kiln_models::tiny::{write_tiny_llama, TinySpec};
use kiln_models::{BatchSeq, ForwardScratch, LogitsMode};
use kiln_sampler::SamplingParams;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

/// Between two kiln runs that differ only in batching, results agree to float rounding
/// (multi-row and single-row matmul kernels sum in different orders).
const SAME_MATH_TOL: f32 = 1e-3;

fn engine(threads: usize) -> Arc<Engine> {
    let bytes = write_tiny_llama(&TinySpec::default()).expect("tiny model writes");
    let file = GgufFile::from_bytes(bytes).expect("tiny model parses");
    Arc::new(Engine::from_gguf(Arc::new(file), threads).expect("tiny model loads"))
}

fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + 11 + salt * 101) % 256)
        .collect()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Logits of every token of `toks` computed by the single-sequence path.
fn single(engine: &Engine, toks: &[u32], kv: KvDtype) -> Vec<f32> {
    let mut s = engine.new_session(0, kv).unwrap();
    let mut logits = Vec::new();
    engine
        .model()
        .forward(
            engine.pool(),
            s.state_mut(),
            toks,
            LogitsMode::All,
            &mut logits,
        )
        .unwrap();
    logits
}

#[test]
fn a_mixed_batch_equals_each_sequence_alone() {
    let engine = engine(2);
    let model = engine.model();
    let n_vocab = model.config().n_vocab;
    for kv in [KvDtype::F16, KvDtype::F32] {
        let bs = 16;
        let mut blocks = BlockManager::new(64, bs).unwrap();
        let mut store = model.new_store(bs, 64, kv).unwrap();
        let mut scratch = ForwardScratch::default();
        let mut logits = Vec::new();
        // Lengths chosen to straddle block boundaries; each sequence gets blocks interleaved
        // with the others' (allocation alternates), so tables are not contiguous.
        let seqs: Vec<Vec<u32>> = vec![tokens(37, 0), tokens(5, 1), tokens(50, 2)];
        let mut tables = vec![BlockTable::new(); 3];
        for round in 1..=4 {
            for (t, s) in tables.iter_mut().zip(&seqs) {
                blocks.reserve(t, (s.len() * round / 4).max(1)).unwrap();
            }
        }
        // Step 1: prefill the first 30 / all 4 / first 17 tokens in one batch.
        let cut = [30, 4, 17];
        let step1: Vec<BatchSeq> = (0..3)
            .map(|i| BatchSeq {
                tokens: &seqs[i][..cut[i]],
                pos0: 0,
                blocks: tables[i].blocks(),
                logits: LogitsMode::All,
            })
            .collect();
        model
            .forward_batch(engine.pool(), &mut store, &step1, &mut scratch, &mut logits)
            .unwrap();
        let first = logits.clone();
        // Step 2: the rest of sequence 0 (a prompt chunk), one decode token of sequence 1 and
        // the rest of sequence 2, asking for the last row / all rows / rows from index 3.
        let modes = [LogitsMode::Last, LogitsMode::All, LogitsMode::From(3)];
        let step2: Vec<BatchSeq> = (0..3)
            .map(|i| BatchSeq {
                tokens: &seqs[i][cut[i]..cut[i] + if i == 1 { 1 } else { seqs[i].len() - cut[i] }],
                pos0: cut[i],
                blocks: tables[i].blocks(),
                logits: modes[i],
            })
            .collect();
        model
            .forward_batch(engine.pool(), &mut store, &step2, &mut scratch, &mut logits)
            .unwrap();
        let refs: Vec<Vec<f32>> = seqs.iter().map(|s| single(&engine, s, kv)).collect();
        let row = |v: &[f32], r: usize| v[r * n_vocab..(r + 1) * n_vocab].to_vec();
        // Step 1 rows, sequence by sequence.
        let mut r = 0;
        for i in 0..3 {
            for t in 0..cut[i] {
                let d = max_rel_diff(&row(&first, r), &row(&refs[i], t));
                assert!(d < SAME_MATH_TOL, "{kv:?} step 1 seq {i} token {t}: {d}");
                r += 1;
            }
        }
        // Step 2 rows.
        let mut expected = Vec::new();
        expected.extend(row(&refs[0], seqs[0].len() - 1));
        expected.extend(row(&refs[1], 4));
        for t in cut[2] + 3..seqs[2].len() {
            expected.extend(row(&refs[2], t));
        }
        let d = max_rel_diff(&logits, &expected);
        assert!(d < SAME_MATH_TOL, "{kv:?} step 2: {d}");
    }
}

/// Steps `be` until idle; returns every event by request.
fn drain(be: &mut BatchEngine, now: &mut Duration) -> HashMap<RequestId, Vec<Event>> {
    let mut by_req: HashMap<RequestId, Vec<Event>> = HashMap::new();
    let mut steps = 0;
    while !be.is_idle() {
        *now += Duration::from_millis(1);
        let out = be.step(*now).unwrap();
        for e in out.events {
            let req = match &e {
                Event::PromptLogprobs { req, .. }
                | Event::Token { req, .. }
                | Event::Finished { req, .. } => *req,
            };
            by_req.entry(req).or_default().push(e);
        }
        steps += 1;
        assert!(steps < 10_000, "batch engine did not finish");
    }
    by_req
}

fn generated(events: &[Event], index: usize) -> (Vec<u32>, String, Option<(FinishReason, usize)>) {
    let mut toks = Vec::new();
    let mut text = String::new();
    let mut end = None;
    for e in events {
        match e {
            Event::Token {
                index: i,
                token,
                text: t,
                ..
            } if *i == index => {
                toks.push(*token);
                text.push_str(t);
            }
            Event::Finished {
                index: i,
                reason,
                text: t,
                usage,
                ..
            } if *i == index => {
                text.push_str(t);
                end = Some((*reason, usage.completion_tokens));
            }
            _ => {}
        }
    }
    (toks, text, end)
}

#[test]
fn batch_engine_generates_what_generate_does_and_reuses_prefixes() {
    let engine = engine(2);
    let mut cfg = BatchConfig::for_slots(4, 256);
    cfg.scheduler.token_budget = 24; // forces chunked prefill
    let mut be = BatchEngine::new(Arc::clone(&engine), cfg).unwrap();
    let system = tokens(40, 7);
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|i| {
            let mut p = system.clone();
            p.extend(tokens(3 + 9 * i, i as u32));
            p
        })
        .collect();
    let mut now = Duration::ZERO;
    let ids: Vec<RequestId> = prompts
        .iter()
        .map(|p| be.submit(Request::greedy(p.clone(), 12), now).unwrap())
        .collect();
    let events = drain(&mut be, &mut now);
    for (p, id) in prompts.iter().zip(&ids) {
        let mut s = engine.new_session(0, KvDtype::F16).unwrap();
        let mut text = String::new();
        let want = engine
            .generate(
                &mut s,
                p,
                &GenerateOptions {
                    max_tokens: 12,
                    sampling: SamplingParams::greedy(),
                },
                |t| {
                    text.push_str(t);
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
        let (toks, got_text, end) = generated(&events[id], 0);
        assert_eq!(toks, want.tokens, "request {id}");
        assert_eq!(got_text, text, "request {id}");
        let (reason, n) = end.expect("finished");
        assert_eq!(n, toks.len());
        assert!(matches!(reason, FinishReason::Length | FinishReason::Stop));
    }
    let stats = be.stats();
    assert_eq!(stats.scheduler.blocks_in_use, 0);
    // Requests admitted after the first one read the 40-token system prompt find its two
    // full blocks in the prefix cache.
    assert!(stats.scheduler.prefix.hits >= 2, "{stats:?}");

    // A later request with the same prompt computes only the tail.
    let before = be.stats().tokens_computed;
    let id = be
        .submit(Request::greedy(prompts[5].clone(), 1), now)
        .unwrap();
    let events = drain(&mut be, &mut now);
    let usage = events[&id].iter().find_map(|e| match e {
        Event::Finished { usage, .. } => Some(*usage),
        _ => None,
    });
    let usage = usage.expect("finished");
    assert_eq!(usage.prompt_tokens, prompts[5].len());
    assert_eq!(usage.cached_tokens, (prompts[5].len() - 1) / 16 * 16);
    assert_eq!(
        be.stats().tokens_computed - before,
        (prompts[5].len() - usage.cached_tokens) as u64
    );
}

#[test]
fn n_sequences_share_the_prompt_and_seeds_differ() {
    let engine = engine(2);
    let mut be = BatchEngine::new(Arc::clone(&engine), BatchConfig::for_slots(4, 256)).unwrap();
    let mut req = Request::greedy(tokens(37, 3), 10);
    req.n = 3;
    req.sampling = SamplingParams {
        temperature: 30.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 11,
        ..SamplingParams::default()
    };
    req.logprobs = Some(2);
    let mut now = Duration::ZERO;
    let id = be.submit(req, now).unwrap();
    let events = drain(&mut be, &mut now);
    let outs: Vec<_> = (0..3).map(|i| generated(&events[&id], i)).collect();
    for (toks, _, end) in &outs {
        assert!(end.is_some());
        assert!(!toks.is_empty());
    }
    assert_ne!(
        outs[0].0, outs[1].0,
        "different seeds should differ at temperature 30"
    );
    // Two of the prompt's full blocks were shared by the second and third sequences.
    assert_eq!(be.stats().scheduler.prefix.hits, 4);
    let lp = events[&id].iter().find_map(|e| match e {
        Event::Token { logprob, .. } => logprob.clone(),
        _ => None,
    });
    let lp = lp.expect("logprobs requested");
    assert_eq!(lp.top.len(), 2);
    assert!(lp.logprob <= 0.0 && lp.top[0].1 >= lp.top[1].1);
    assert_eq!(be.stats().scheduler.blocks_in_use, 0);
}

#[test]
fn prompt_logprobs_match_single_sequence_scoring() {
    let engine = engine(1);
    let mut cfg = BatchConfig::for_slots(2, 256);
    cfg.scheduler.token_budget = 8; // the prompt arrives in chunks
    let mut be = BatchEngine::new(Arc::clone(&engine), cfg).unwrap();
    let prompt = tokens(21, 5);
    let mut req = Request::greedy(prompt.clone(), 0);
    req.prompt_logprobs = true;
    req.logprobs = Some(1);
    let mut now = Duration::ZERO;
    let id = be.submit(req, now).unwrap();
    let events = drain(&mut be, &mut now);
    let lps = events[&id]
        .iter()
        .find_map(|e| match e {
            Event::PromptLogprobs { logprobs, .. } => Some(logprobs.clone()),
            _ => None,
        })
        .expect("prompt logprobs");
    assert_eq!(lps.len(), prompt.len());
    assert!(lps[0].is_none());
    let all = single(&engine, &prompt, KvDtype::F16);
    let n_vocab = engine.model().config().n_vocab;
    for (p, lp) in lps.iter().enumerate().skip(1) {
        let lp = lp.as_ref().expect("logprob");
        assert_eq!(lp.token, prompt[p]);
        let want = kiln_sampler::log_softmax_at(&all[(p - 1) * n_vocab..p * n_vocab], prompt[p]);
        assert!(
            (lp.logprob - want).abs() < 1e-2,
            "token {p}: {} vs {want}",
            lp.logprob
        );
    }
    let (toks, _, end) = generated(&events[&id], 0);
    assert!(toks.is_empty());
    assert_eq!(end.map(|e| e.0), Some(FinishReason::Length));
}

#[test]
fn cancel_and_timeout_free_blocks_and_a_full_queue_rejects() {
    let engine = engine(1);
    let mut cfg = BatchConfig::for_slots(1, 128);
    cfg.scheduler.max_queue = 1;
    let mut be = BatchEngine::new(Arc::clone(&engine), cfg).unwrap();
    let mut now = Duration::ZERO;
    let a = be.submit(Request::greedy(tokens(20, 1), 50), now).unwrap();
    be.step(now).unwrap(); // a runs (the queue is empty again)
    let mut timed = Request::greedy(tokens(20, 2), 50);
    timed.timeout = Some(Duration::from_millis(5));
    let b = be.submit(timed, now).unwrap(); // waits: max_batch 1
    let full = be.submit(Request::greedy(tokens(5, 3), 5), now);
    assert!(matches!(
        full,
        Err(kiln_engine::EngineError::Submit(
            kiln_engine::SubmitError::QueueFull { .. }
        ))
    ));
    assert!(be.stats().scheduler.blocks_in_use > 0);
    assert!(be.cancel(a));
    now += Duration::from_millis(10);
    let out = be.step(now).unwrap();
    let reasons: Vec<(RequestId, FinishReason)> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Finished { req, reason, .. } => Some((*req, *reason)),
            _ => None,
        })
        .collect();
    assert!(reasons.contains(&(a, FinishReason::Cancelled)));
    assert!(reasons.contains(&(b, FinishReason::TimedOut)));
    assert_eq!(be.stats().scheduler.blocks_in_use, 0);
    assert!(be.is_idle());
}

#[test]
fn stop_strings_end_generation_before_the_stop_text() {
    let engine = engine(1);
    let mut be = BatchEngine::new(Arc::clone(&engine), BatchConfig::for_slots(2, 256)).unwrap();
    let prompt = tokens(9, 4);
    let mut now = Duration::ZERO;
    let id = be.submit(Request::greedy(prompt.clone(), 30), now).unwrap();
    let events = drain(&mut be, &mut now);
    let (_, text, _) = generated(&events[&id], 0);
    // Stop at a piece of the unconstrained output (a char boundary past its start).
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    if chars.len() < 4 {
        return; // the tiny model ended at once; nothing to cut
    }
    let (at, _) = chars[chars.len() / 2];
    let stop: String = text[at..].chars().take(2).collect();
    let first = text.find(&stop).expect("present");
    let mut req = Request::greedy(prompt, 30);
    req.stop = vec![stop];
    let id = be.submit(req, now).unwrap();
    let events = drain(&mut be, &mut now);
    let (_, cut, end) = generated(&events[&id], 0);
    assert_eq!(cut, text[..first]);
    assert_eq!(end.map(|e| e.0), Some(FinishReason::Stop));
}

#[test]
fn the_batch_engine_can_move_to_a_serving_thread() {
    fn send<T: Send>() {}
    send::<BatchEngine>();
    send::<Event>();
}

#[test]
fn chat_turns_prefill_only_what_is_new() {
    let engine = engine(1);
    let mut be = BatchEngine::new(Arc::clone(&engine), BatchConfig::for_slots(2, 256)).unwrap();
    let mut now = Duration::ZERO;
    let mut conversation = tokens(21, 9);
    for turn in 0..4 {
        let id = be
            .submit(Request::greedy(conversation.clone(), 7), now)
            .unwrap();
        let events = drain(&mut be, &mut now);
        let (reply, _, end) = generated(&events[&id], 0);
        let usage = events[&id]
            .iter()
            .find_map(|e| match e {
                Event::Finished { usage, .. } => Some(*usage),
                _ => None,
            })
            .expect("finished");
        if turn > 0 {
            // Everything the previous turn computed (its prompt and all but its last sampled
            // token), in whole blocks, comes from the prefix cache.
            assert!(usage.cached_tokens > 0, "turn {turn}: {usage:?}");
        }
        assert!(end.is_some());
        let computed = conversation.len() + reply.len() - 1;
        conversation.extend(&reply);
        conversation.extend(tokens(5, turn + 20));
        // What the next turn may reuse: whole blocks of what was computed, within its prompt.
        let reusable = computed.min(conversation.len() - 1) / 16 * 16;
        let id = be
            .submit(Request::greedy(conversation.clone(), 1), now)
            .unwrap();
        let events = drain(&mut be, &mut now);
        let next = events[&id]
            .iter()
            .find_map(|e| match e {
                Event::Finished { usage, .. } => Some(*usage),
                _ => None,
            })
            .expect("finished");
        assert_eq!(next.cached_tokens, reusable, "turn {turn}");
        // Drop the probe's reply from the conversation: the next turn continues from here.
    }
    assert_eq!(be.stats().scheduler.blocks_in_use, 0);
}

/// The finish reasons and completion counts of every sequence of `events`.
fn endings(events: &[Event]) -> Vec<(FinishReason, usize, Option<Duration>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Finished {
                reason,
                usage,
                queue_time,
                ..
            } => Some((*reason, usage.completion_tokens, *queue_time)),
            _ => None,
        })
        .collect()
}

#[test]
fn ignore_eos_runs_every_sequence_to_max_tokens() {
    let engine = engine(1);
    let eog = engine.tokenizer().eog_ids().to_vec();
    assert!(
        !eog.is_empty(),
        "the tiny model has an end-of-generation token"
    );
    let run = |ignore_eos: bool| {
        let mut be = BatchEngine::new(Arc::clone(&engine), BatchConfig::for_slots(4, 256)).unwrap();
        let mut req = Request::greedy(tokens(8, 4), 200);
        // Nearly uniform sampling over the vocabulary: an end token comes up within a few
        // hundred draws unless it is masked.
        req.sampling = SamplingParams {
            temperature: 50.0,
            seed: 7,
            ..SamplingParams::greedy()
        };
        req.n = 4;
        req.ignore_eos = ignore_eos;
        let mut now = Duration::ZERO;
        let id = be.submit(req, now).unwrap();
        let events = drain(&mut be, &mut now).remove(&id).unwrap();
        let sampled_eog = events
            .iter()
            .any(|e| matches!(e, Event::Token { token, .. } if eog.contains(token)));
        (endings(&events), sampled_eog)
    };
    let (free, free_eog) = run(false);
    assert!(
        free_eog
            && free
                .iter()
                .any(|&(r, n, _)| r == FinishReason::Stop && n < 200),
        "precondition: without the flag some sequence samples an end token ({free:?})"
    );
    let (forced, forced_eog) = run(true);
    assert!(!forced_eog, "an end token was sampled despite ignore_eos");
    assert_eq!(forced.len(), 4);
    for (reason, n, _) in forced {
        assert_eq!((reason, n), (FinishReason::Length, 200));
    }
}

#[test]
fn finished_events_carry_the_time_spent_queued() {
    let engine = engine(1);
    let mut be = BatchEngine::new(Arc::clone(&engine), BatchConfig::for_slots(1, 128)).unwrap();
    let mut now = Duration::ZERO;
    let a = be.submit(Request::greedy(tokens(10, 1), 4), now).unwrap();
    let b = be.submit(Request::greedy(tokens(10, 2), 4), now).unwrap();
    let mut c_req = Request::greedy(tokens(10, 3), 4);
    c_req.timeout = Some(Duration::from_micros(1500));
    let c = be.submit(c_req, now).unwrap();
    let events = drain(&mut be, &mut now);
    // One slot: `a` starts at the first step (1 ms), `b` only after `a` finished; `c` times
    // out while still waiting, so it was never admitted.
    let qa = endings(&events[&a])[0].2.expect("a was admitted");
    let qb = endings(&events[&b])[0].2.expect("b was admitted");
    assert_eq!(qa, Duration::from_millis(1));
    assert!(qb > qa, "b waited for a: {qb:?} vs {qa:?}");
    assert_eq!(
        endings(&events[&c]),
        vec![(FinishReason::TimedOut, 0, None)]
    );
}
