//! End-to-end tests on tiny random models written by kiln's own GGUF writer: the forward pass
//! against a naive f64 reference, cache consistency, generation, chat prefix reuse, perplexity.

use kiln_engine::{Engine, EngineError, GenerateOptions, PerplexityOptions, StopReason};
use kiln_gguf::GgufFile;
use kiln_kvcache::KvDtype;
use kiln_models::tiny::{reference_logits, write_tiny_llama, TinySpec};
use kiln_models::LogitsMode;
use kiln_quant::QuantType;
use kiln_sampler::SamplingParams;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Logit error allowed against the f64 reference, relative to the largest reference logit:
/// activations are quantized to 8 bits before every quantized matmul, as in llama.cpp.
const ACT_QUANT_TOL: f32 = 0.04;
/// Between two kiln runs that differ only in batching, results agree to float rounding.
const SAME_MATH_TOL: f32 = 1e-3;

/// Relative logit difference allowed between two summation orders when activations are
/// re-quantized to 8 bits before every matmul (a few flipped rounding steps).
const REQUANT_TOL: f32 = 1e-2;

fn engine(spec: &TinySpec, threads: usize) -> Engine {
    let bytes = write_tiny_llama(spec).expect("tiny model writes");
    let file = GgufFile::from_bytes(bytes).expect("tiny model parses");
    Engine::from_gguf(Arc::new(file), threads).expect("tiny model loads")
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn prompt_tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 256).collect()
}

#[test]
fn forward_matches_naive_reference_for_every_weight_type() {
    for output_type in [None, Some(kiln_quant::QuantType::Q6_K)] {
        let spec = TinySpec {
            output_type,
            ..TinySpec::default()
        };
        let bytes = write_tiny_llama(&spec).unwrap();
        let file = GgufFile::from_bytes(bytes).unwrap();
        let tokens = prompt_tokens(19);
        let expected = reference_logits(&file, &tokens).expect("reference runs");
        let engine = Engine::from_gguf(Arc::new(file), 2).unwrap();
        let mut session = engine.new_session(0, KvDtype::F32).unwrap();
        let mut logits = Vec::new();
        let n_vocab = engine.model().config().n_vocab;
        engine
            .model()
            .forward(
                engine.pool(),
                session_state(&mut session),
                &tokens,
                LogitsMode::All,
                &mut logits,
            )
            .unwrap();
        assert_eq!(logits.len(), tokens.len() * n_vocab);
        for (t, row) in expected.iter().enumerate() {
            let got = &logits[t * n_vocab..(t + 1) * n_vocab];
            let d = max_rel_diff(got, row);
            assert!(d < ACT_QUANT_TOL, "token {t}: relative logit error {d}");
        }
    }
}

fn session_state(s: &mut kiln_engine::Session) -> &mut kiln_models::LlamaState {
    s.state_mut()
}

/// Decode (one row at a time, per-query attention) against prefill (query tiles): the same
/// math up to f32 summation order. With float weights that is all that differs; with
/// quantized weights the inputs of every matmul are re-quantized to 8 bits, so an order-level
/// difference can flip a rounding step of an activation (1/127 of its block's maximum).
#[test]
fn token_by_token_decode_matches_batched_prefill() {
    let float = TinySpec {
        embedding_type: QuantType::F32,
        layer_types: vec![[QuantType::F32; 7]; 2],
        ..TinySpec::default()
    };
    for (spec, tol) in [
        (float, SAME_MATH_TOL / 10.0),
        (TinySpec::default(), REQUANT_TOL),
    ] {
        decode_matches_prefill(&spec, tol);
    }
}

fn decode_matches_prefill(spec: &TinySpec, tol: f32) {
    for kv in [KvDtype::F32, KvDtype::F16] {
        let engine = engine(spec, 2);
        let tokens = prompt_tokens(150); // spans two prefill batches
        let mut logits = Vec::new();
        let mut batched = engine.new_session(0, kv).unwrap();
        engine
            .model()
            .forward(
                engine.pool(),
                session_state(&mut batched),
                &tokens,
                LogitsMode::Last,
                &mut logits,
            )
            .unwrap();
        let last_batched = logits.clone();
        let mut stepped = engine.new_session(0, kv).unwrap();
        for &t in &tokens {
            engine
                .model()
                .forward(
                    engine.pool(),
                    session_state(&mut stepped),
                    &[t],
                    LogitsMode::Last,
                    &mut logits,
                )
                .unwrap();
        }
        let d = max_rel_diff(&logits, &last_batched);
        assert!(
            d < tol,
            "{kv:?}: decode vs prefill differ by {d} (tolerance {tol})"
        );
    }
}

#[test]
fn logits_from_an_index_are_the_tail_of_all_logits() {
    let engine = engine(&TinySpec::default(), 2);
    let n_vocab = engine.model().config().n_vocab;
    let tokens = prompt_tokens(150); // spans two prefill batches
    let run = |mode: LogitsMode| {
        let mut s = engine.new_session(0, KvDtype::F16).unwrap();
        let mut logits = Vec::new();
        engine
            .model()
            .forward(
                engine.pool(),
                session_state(&mut s),
                &tokens,
                mode,
                &mut logits,
            )
            .unwrap();
        logits
    };
    let all = run(LogitsMode::All);
    for k in [0, 1, 75, 128, 130, 149, 150, 400] {
        let tail = run(LogitsMode::From(k));
        let skip = k.min(tokens.len()) * n_vocab;
        assert_eq!(tail, all[skip..], "From({k})");
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let tokens = prompt_tokens(40);
    let mut results = Vec::new();
    for threads in [1, 2, 3] {
        let engine = engine(&TinySpec::default(), threads);
        let mut s = engine.new_session(0, KvDtype::F16).unwrap();
        let mut logits = Vec::new();
        engine
            .model()
            .forward(
                engine.pool(),
                session_state(&mut s),
                &tokens,
                LogitsMode::All,
                &mut logits,
            )
            .unwrap();
        results.push(logits);
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

fn opts(max_tokens: usize, sampling: SamplingParams) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling,
    }
}

#[test]
fn seeded_generation_is_reproducible_and_respects_max_tokens() {
    let engine = engine(&TinySpec::default(), 2);
    let prompt = prompt_tokens(8);
    // A random tiny model is very peaked; a high temperature makes the seed matter.
    let sampling = SamplingParams {
        temperature: 30.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 7,
        ..SamplingParams::default()
    };
    let run = |seed: u64| {
        let mut s = engine.new_session(0, KvDtype::F16).unwrap();
        let mut text = String::new();
        let stats = engine
            .generate(
                &mut s,
                &prompt,
                &opts(
                    20,
                    SamplingParams {
                        seed,
                        ..sampling.clone()
                    },
                ),
                |p| {
                    text.push_str(p);
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
        (stats, text)
    };
    let (a, text_a) = run(7);
    let (b, text_b) = run(7);
    let (c, _) = run(8);
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(text_a, text_b);
    assert_ne!(
        a.tokens, c.tokens,
        "a different seed should change a 20-token sample"
    );
    assert!(a.generated_tokens <= 20);
    if a.stop == StopReason::MaxTokens {
        assert_eq!(a.generated_tokens, 20);
    }
}

#[test]
fn callback_can_cancel_generation() {
    let engine = engine(&TinySpec::default(), 1);
    let mut s = engine.new_session(0, KvDtype::F16).unwrap();
    let mut calls = 0;
    let stats = engine
        .generate(
            &mut s,
            &prompt_tokens(4),
            &opts(50, SamplingParams::greedy()),
            |_| {
                calls += 1;
                ControlFlow::Break(())
            },
        )
        .unwrap();
    assert!(matches!(
        stats.stop,
        StopReason::Cancelled | StopReason::EndOfGeneration
    ));
    assert!(calls <= 2);
}

#[test]
fn prompt_longer_than_context_is_a_clear_error() {
    let engine = engine(&TinySpec::default(), 1);
    let mut s = engine.new_session(16, KvDtype::F16).unwrap();
    let err = engine
        .generate(
            &mut s,
            &prompt_tokens(17),
            &opts(4, SamplingParams::greedy()),
            |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::PromptTooLong {
            prompt: 17,
            n_ctx: 16
        }
    ));
    assert!(err.to_string().contains("context"));
    // Generation stops cleanly when the context fills up.
    let stats = engine
        .generate(
            &mut s,
            &prompt_tokens(14),
            &opts(100, SamplingParams::greedy()),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert!(matches!(
        stats.stop,
        StopReason::ContextFull | StopReason::EndOfGeneration
    ));
    assert!(s.tokens().len() <= 16);
}

#[test]
fn a_continued_conversation_reuses_the_cached_prefix() {
    let engine = engine(&TinySpec::default(), 2);
    let mut s = engine.new_session(0, KvDtype::F16).unwrap();
    let first = prompt_tokens(30);
    let stats1 = engine
        .generate(&mut s, &first, &opts(5, SamplingParams::greedy()), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(stats1.cached_tokens, 0);
    let mut second = s.tokens().to_vec();
    second.extend(prompt_tokens(10));
    let stats2 = engine
        .generate(&mut s, &second, &opts(5, SamplingParams::greedy()), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(
        stats2.cached_tokens >= 30,
        "cached {}",
        stats2.cached_tokens
    );
    assert_eq!(stats2.prompt_tokens + stats2.cached_tokens, second.len());

    // The reused cache gives the same greedy continuation as a fresh session.
    let mut fresh = engine.new_session(0, KvDtype::F16).unwrap();
    let stats3 = engine
        .generate(
            &mut fresh,
            &second,
            &opts(5, SamplingParams::greedy()),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(stats2.tokens, stats3.tokens);
}

#[test]
fn perplexity_of_a_tiny_model_is_finite_and_follows_the_protocol() {
    let engine = engine(&TinySpec::default(), 2);
    let tokens: Vec<u32> = (0..300u32).map(|i| (i * 7919) % 256).collect();
    let mut seen = Vec::new();
    let report = engine
        .perplexity(
            &tokens,
            &PerplexityOptions {
                n_ctx: 64,
                kv: KvDtype::F16,
                max_chunks: 0,
            },
            |done, total, _| seen.push((done, total)),
        )
        .unwrap();
    assert_eq!(report.n_chunks, 4);
    assert_eq!(report.n_scored, 4 * 31);
    assert_eq!(seen.last(), Some(&(4, 4)));
    assert!(report.ppl.is_finite() && report.ppl > 1.0);
    assert!(report.ppl_stderr > 0.0);
    let too_short = engine.perplexity(
        &tokens[..50],
        &PerplexityOptions {
            n_ctx: 64,
            kv: KvDtype::F16,
            max_chunks: 0,
        },
        |_, _, _| {},
    );
    assert!(too_short.is_err());
}
