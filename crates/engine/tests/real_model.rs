//! Acceptance tests on the real SmolLM2-135M-Instruct Q4_1 model against llama.cpp's reference
//! outputs in ../shared/reference/llamacpp (prompt token ids, greedy continuations, perplexity).
//!
//! The model is fetched by the test script (`kiln pull`) before these run; a missing model is
//! a failure, not a skip.

use kiln_engine::{Engine, PerplexityOptions};
use kiln_kvcache::KvDtype;
use kiln_models::LogitsMode;
use std::path::PathBuf;

/// llama.cpp b4748, `llama-perplexity -c 512` on Debian's GPL-3 text (reference README).
const LLAMA_CPP_PPL_GPL3_CTX512: f64 = 18.3541;
/// The acceptance bound on perplexity: within 1% of llama.cpp.
const PPL_REL_TOL: f64 = 0.01;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_path() -> PathBuf {
    let path = std::env::var_os("KILN_TEST_MODEL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("KILN_MODELS_DIR")
                .map(|d| PathBuf::from(d).join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.exists(),
        "the real model is missing at {} — run `cargo run --release -p kiln-cli -- pull` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn engine() -> Engine {
    Engine::load(&model_path(), 2).expect("the real model loads")
}

struct Reference {
    name: String,
    prompt: String,
    prompt_ids: Vec<u32>,
    output_ids: Vec<u32>,
    output_text: String,
}

fn references() -> Vec<Reference> {
    let path = repo_root().join("../shared/reference/llamacpp/greedy.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .expect("id array")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON line");
            Reference {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                prompt: v["prompt"].as_str().expect("prompt").to_string(),
                prompt_ids: ids(&v["prompt_token_ids"]),
                output_ids: ids(&v["output_token_ids"]),
                output_text: v["output_text"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

#[test]
fn reference_prompts_tokenize_exactly_like_llama_cpp() {
    let engine = engine();
    let refs = references();
    assert!(!refs.is_empty());
    for r in &refs {
        let ids = engine.tokenizer().encode(&r.prompt, true, true);
        assert_eq!(ids, r.prompt_ids, "{}: prompt token ids", r.name);
        assert_eq!(
            engine.tokenizer().decode(&r.output_ids),
            r.output_text,
            "{}: decoded reference output",
            r.name
        );
    }
}

fn argmax_and_gap(logits: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    (best.0 as u32, best.1 - second)
}

#[test]
fn greedy_generation_agrees_with_llama_cpp() {
    let engine = engine();
    let n_vocab = engine.model().config().n_vocab;
    let mut agreements = Vec::new();
    for r in references() {
        let mut session = engine.new_session(1024, KvDtype::F16).unwrap();
        let mut logits = Vec::new();
        engine
            .model()
            .forward(
                engine.pool(),
                session.state_mut(),
                &r.prompt_ids,
                LogitsMode::Last,
                &mut logits,
            )
            .unwrap();
        let mut agree = 0;
        let mut parted = None;
        for &expected in &r.output_ids {
            let (tok, gap) = argmax_and_gap(&logits[..n_vocab]);
            if tok != expected {
                // Gap between kiln's choice and llama.cpp's choice.
                let gap_to_ref = logits[tok as usize] - logits[expected as usize];
                parted = Some((tok, expected, gap, gap_to_ref));
                break;
            }
            agree += 1;
            engine
                .model()
                .forward(
                    engine.pool(),
                    session.state_mut(),
                    &[tok],
                    LogitsMode::Last,
                    &mut logits,
                )
                .unwrap();
        }
        match parted {
            None => eprintln!("{}: all {} tokens agree", r.name, agree),
            Some((got, want, gap, gap_to_ref)) => eprintln!(
                "{}: {agree}/{} tokens agree; then kiln picks {got} over llama.cpp's {want} (top-2 gap {gap:.4}, logit({got}) - logit({want}) = {gap_to_ref:.4})",
                r.name,
                r.output_ids.len()
            ),
        }
        assert!(
            agree >= 4,
            "{}: only {agree} greedy tokens agree with llama.cpp",
            r.name
        );
        if let Some((_, _, _, gap_to_ref)) = parted {
            assert!(
                gap_to_ref < 0.5,
                "{}: kiln parts from llama.cpp at a large logit gap ({gap_to_ref}): not a near-tie",
                r.name
            );
        }
        agreements.push(agree);
    }
    agreements.sort_unstable();
    let n = agreements.len();
    let median = if n % 2 == 1 {
        agreements[n / 2] as f64
    } else {
        (agreements[n / 2 - 1] + agreements[n / 2]) as f64 / 2.0
    };
    eprintln!("median agreement {median} tokens ({agreements:?})");
    assert!(
        median >= 12.0,
        "median agreement {median} < 12 ({agreements:?})"
    );
}

#[test]
fn perplexity_on_gpl3_is_within_one_percent_of_llama_cpp() {
    let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .expect("Debian's /usr/share/common-licenses/GPL-3 (package base-files) is needed");
    let engine = engine();
    let tokens = engine.tokenizer().encode(&text, true, false);
    let report = engine
        .perplexity(
            &tokens,
            &PerplexityOptions {
                n_ctx: 512,
                kv: KvDtype::F16,
                max_chunks: 0,
            },
            |_, _, _| {},
        )
        .unwrap();
    eprintln!(
        "kiln PPL = {:.4} +/- {:.5} over {} tokens, {} chunks (llama.cpp {LLAMA_CPP_PPL_GPL3_CTX512})",
        report.ppl, report.ppl_stderr, report.n_tokens, report.n_chunks
    );
    assert_eq!(
        report.n_chunks, 14,
        "llama.cpp scores 14 chunks of this text"
    );
    let rel = (report.ppl - LLAMA_CPP_PPL_GPL3_CTX512).abs() / LLAMA_CPP_PPL_GPL3_CTX512;
    assert!(
        rel < PPL_REL_TOL,
        "PPL {} is {:.2}% from llama.cpp",
        report.ppl,
        rel * 100.0
    );
}

/// Logit error allowed between the batched and the single-sequence path, relative to the
/// largest logit: the same integer dot products; only float summation order may differ
/// (with the dispatched kernels they agree exactly).
const BATCH_REL_TOL: f32 = 1e-3;

#[test]
fn batched_forward_matches_single_sequences_on_the_reference_prompts() {
    use kiln_kvcache::{BlockManager, BlockTable};
    use kiln_models::{BatchSeq, ForwardScratch};
    let engine = engine();
    let model = engine.model();
    let n_vocab = model.config().n_vocab;
    let refs = references();
    let steps = 8;
    let bs = 16;
    let mut blocks = BlockManager::new(256, bs).unwrap();
    let mut store = model.new_store(bs, 256, KvDtype::F16).unwrap();
    let mut tables: Vec<BlockTable> = refs.iter().map(|_| BlockTable::new()).collect();
    for (t, r) in tables.iter_mut().zip(&refs) {
        blocks.reserve(t, r.prompt_ids.len() + steps).unwrap();
    }
    let mut scratch = ForwardScratch::default();
    let mut batched = Vec::new();
    // Every prompt prefilled together, then `steps` decode steps of all sequences together,
    // feeding llama.cpp's continuation tokens (fixed, so both paths see the same inputs).
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); refs.len()];
    for step in 0..=steps {
        let seqs: Vec<BatchSeq> = refs
            .iter()
            .zip(&tables)
            .map(|(r, t)| {
                let n = r.prompt_ids.len();
                let (tokens, pos0) = if step == 0 {
                    (&r.prompt_ids[..], 0)
                } else {
                    (&r.output_ids[step - 1..step], n + step - 1)
                };
                BatchSeq {
                    tokens,
                    pos0,
                    blocks: t.blocks(),
                    logits: LogitsMode::Last,
                }
            })
            .collect();
        model
            .forward_batch(engine.pool(), &mut store, &seqs, &mut scratch, &mut batched)
            .unwrap();
        for (i, row) in batched.chunks(n_vocab).enumerate() {
            rows[i].push(row.to_vec());
        }
    }
    for (i, r) in refs.iter().enumerate() {
        let mut session = engine.new_session(1024, KvDtype::F16).unwrap();
        let mut logits = Vec::new();
        for (step, want) in rows[i].iter().enumerate() {
            let tokens = if step == 0 {
                &r.prompt_ids[..]
            } else {
                &r.output_ids[step - 1..step]
            };
            model
                .forward(
                    engine.pool(),
                    session.state_mut(),
                    tokens,
                    LogitsMode::Last,
                    &mut logits,
                )
                .unwrap();
            let scale = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = logits
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err / scale < BATCH_REL_TOL,
                "{} step {step}: batched logits differ by {err} (scale {scale})",
                r.name
            );
        }
    }
}
