//! Calibration and the KL-divergence quality gates on tiny random models: the importance matrix
//! covers every matmul weight, a model compared with itself has zero divergence, saved logits
//! give the same answer as a live reference, and hostile logits files fail with clear errors.

use kiln_engine::{CalibrateOptions, Engine, KlReference, LogitsReader, PerplexityOptions};
use kiln_gguf::GgufFile;
use kiln_kvcache::KvDtype;
use kiln_models::tiny::{write_tiny_llama, TinySpec};
use kiln_quant::QuantType;
use std::sync::Arc;

fn engine(spec: &TinySpec) -> Engine {
    let file = GgufFile::from_bytes(write_tiny_llama(spec).unwrap()).unwrap();
    Engine::from_gguf(Arc::new(file), 2).unwrap()
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 256).collect()
}

fn ppl_opts() -> PerplexityOptions {
    PerplexityOptions {
        n_ctx: 32,
        kv: KvDtype::F32,
        max_chunks: 0,
    }
}

#[test]
fn calibration_covers_every_matmul_weight() {
    let spec = TinySpec::default();
    let e = engine(&spec);
    let opts = CalibrateOptions {
        n_ctx: 16,
        max_chunks: 3,
        kv: KvDtype::F32,
        dataset: "seeded".into(),
    };
    let m = e.calibrate(&tokens(100), &opts, |_, _| {}).unwrap();
    assert_eq!(m.entries.len(), 7 * spec.n_layer);
    assert_eq!((m.chunk_count, m.chunk_size), (3, 16));
    for (name, entry) in &m.entries {
        assert_eq!(entry.count, 48.0, "{name}");
        let want = if name.contains("ffn_down") {
            spec.n_ff
        } else {
            spec.n_embd
        };
        assert_eq!(entry.sums.len(), want, "{name}");
        assert!(entry.sums.iter().all(|&s| s.is_finite() && s >= 0.0));
        assert!(entry.sums.iter().any(|&s| s > 0.0), "{name}");
    }
    // Q, K and V read the same normalized input.
    assert_eq!(
        m.entries["blk.1.attn_q.weight"],
        m.entries["blk.1.attn_v.weight"]
    );
    assert!(e.calibrate(&tokens(10), &opts, |_, _| {}).is_err());
}

#[test]
fn kl_against_itself_is_zero_and_against_a_coarser_model_is_not() {
    let spec = TinySpec::default();
    let base = engine(&spec);
    let toks = tokens(100);
    let (p, kl) = base
        .perplexity_gated(
            &toks,
            &ppl_opts(),
            Some(KlReference::Model(&base)),
            None,
            |_, _, _| {},
        )
        .unwrap();
    let kl = kl.unwrap();
    assert!(kl.mean.abs() < 1e-6, "{kl:?}");
    assert_eq!(kl.same_top, 1.0);
    assert!((kl.ppl_ratio - 1.0).abs() < 1e-9);
    assert!((kl.reference_ppl - p.ppl).abs() < 1e-6 * p.ppl);
    assert_eq!(kl.n, p.n_scored);

    let coarse = engine(&TinySpec {
        layer_types: vec![[QuantType::Q4_0; 7]],
        ..spec
    });
    let (_, kl) = coarse
        .perplexity_gated(
            &toks,
            &ppl_opts(),
            Some(KlReference::Model(&base)),
            None,
            |_, _, _| {},
        )
        .unwrap();
    let kl = kl.unwrap();
    // Random tiny models are nearly one-hot, so the divergence is small but not zero, and the
    // perplexities differ.
    assert!(kl.mean > 0.0 && kl.p99 >= kl.median, "{kl:?}");
    assert!((kl.ppl_ratio - 1.0).abs() > 1e-6, "{kl:?}");
}

#[test]
fn saved_logits_match_a_live_reference_and_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let base = engine(&spec);
    let other = engine(&TinySpec {
        layer_types: vec![[QuantType::Q8_0; 7]],
        ..spec
    });
    let toks = tokens(100);
    let path = dir.path().join("base.logits");
    let (p0, none) = base
        .perplexity_gated(&toks, &ppl_opts(), None, Some(&path), |_, _, _| {})
        .unwrap();
    assert!(none.is_none());
    let reader = LogitsReader::open(&path).unwrap();
    let (_, from_file) = other
        .perplexity_gated(
            &toks,
            &ppl_opts(),
            Some(KlReference::Logits(reader)),
            None,
            |_, _, _| {},
        )
        .unwrap();
    let (_, live) = other
        .perplexity_gated(
            &toks,
            &ppl_opts(),
            Some(KlReference::Model(&base)),
            None,
            |_, _, _| {},
        )
        .unwrap();
    let (f, l) = (from_file.unwrap(), live.unwrap());
    // The file stores f16 log-probs: the two agree to f16 rounding.
    assert!(
        (f.mean - l.mean).abs() <= 0.05 * l.mean + 1e-4,
        "{f:?} vs {l:?}"
    );
    assert!((f.reference_ppl - p0.ppl).abs() < 0.01 * p0.ppl);
    assert_eq!(f.n, l.n);

    // A different text is detected.
    let reader = LogitsReader::open(&path).unwrap();
    let shifted: Vec<u32> = toks.iter().map(|t| (t + 1) % 256).collect();
    let e = other
        .perplexity_gated(
            &shifted,
            &ppl_opts(),
            Some(KlReference::Logits(reader)),
            None,
            |_, _, _| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("differs"), "{e}");

    // Truncated, padded and foreign files are rejected before any row is read.
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.logits");
    for (what, b) in [
        ("truncated", bytes[..bytes.len() - 1].to_vec()),
        ("padded", [bytes.clone(), vec![0]].concat()),
        ("header only", bytes[..20].to_vec()),
        (
            "magic",
            [b"NOTKILN!".to_vec(), bytes[8..].to_vec()].concat(),
        ),
    ] {
        std::fs::write(&bad, b).unwrap();
        let e = LogitsReader::open(&bad)
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert!(e.to_string().contains("logits file"), "{what}: {e}");
    }
    // A huge vocabulary in the header is refused before any allocation.
    let mut b = bytes.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&bad, b).unwrap();
    assert!(LogitsReader::open(&bad).is_err());
    // A run longer than the file is refused at its first chunk.
    let reader = LogitsReader::open(&path).unwrap();
    let e = other
        .perplexity_gated(
            &tokens(200),
            &ppl_opts(),
            Some(KlReference::Logits(reader)),
            None,
            |_, _, _| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("chunks"), "{e}");
    // Another context size is refused.
    let reader = LogitsReader::open(&path).unwrap();
    let opts = PerplexityOptions {
        n_ctx: 16,
        ..ppl_opts()
    };
    assert!(other
        .perplexity_gated(
            &toks,
            &opts,
            Some(KlReference::Logits(reader)),
            None,
            |_, _, _| {}
        )
        .is_err());

    // Saving into a missing directory fails and leaves nothing.
    let missing = dir.path().join("nope/base.logits");
    assert!(base
        .perplexity_gated(&toks, &ppl_opts(), None, Some(&missing), |_, _, _| {})
        .is_err());
    assert!(!missing.exists());
}
