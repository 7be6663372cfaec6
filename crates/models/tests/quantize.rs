//! The whole-file quantization driver on tiny models written by kiln's own writer: metadata and
//! bytes kept, type rules, row-length exceptions, error fallback, importance matrices, and
//! hostile inputs that must fail cleanly without leaving any output file.

use kiln_gguf::{GgufFile, GgufWriter, Value};
use kiln_models::imatrix::Imatrix;
use kiln_models::quantize::{quantize_file, QuantizeError, QuantizeReport, QuantizeSpec};
use kiln_models::tiny::{write_tiny_llama, TinySpec};
use kiln_quant::QuantType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn spec(ty: QuantType) -> QuantizeSpec {
    QuantizeSpec {
        ty,
        tensor_types: Vec::new(),
        output_type: None,
        embedding_type: None,
        clip_percentile: None,
        max_tensor_error: None,
        threads: 2,
    }
}

fn write_model(dir: &Path, tiny: &TinySpec) -> PathBuf {
    let p = dir.join("in.gguf");
    std::fs::write(&p, write_tiny_llama(tiny).unwrap()).unwrap();
    p
}

fn run(
    input: &Path,
    output: &Path,
    s: &QuantizeSpec,
    m: Option<&Imatrix>,
) -> Result<QuantizeReport, QuantizeError> {
    quantize_file(input, output, s, m, None, |_, _, _| {})
}

/// Names of the directory's entries (to prove nothing partial was left behind).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn writer_reader_round_trip_keeps_every_byte_and_value() {
    let bytes = write_tiny_llama(&TinySpec::default()).unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    for t in f.tensors() {
        w.add_tensor_ref(t.name.clone(), t.ggml_type, &t.dims, f.tensor_data(t))
            .unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    let g = GgufFile::from_bytes(out).unwrap();
    assert_eq!(f.metadata(), g.metadata());
    assert_eq!(f.tensors().len(), g.tensors().len());
    for (a, b) in f.tensors().iter().zip(g.tensors()) {
        assert_eq!(
            (&a.name, &a.dims, a.ggml_type),
            (&b.name, &b.dims, b.ggml_type)
        );
        assert_eq!(f.tensor_data(a), g.tensor_data(b), "{}", a.name);
    }
}

#[test]
fn q8_0_keeps_metadata_and_small_tensors_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_model(dir.path(), &TinySpec::default());
    let output = dir.path().join("out.gguf");
    let r = run(&input, &output, &spec(QuantType::Q8_0), None).unwrap();
    let a = GgufFile::open(&input).unwrap();
    let b = GgufFile::open(&output).unwrap();
    for (k, v) in a.metadata() {
        if k != "general.file_type" {
            assert_eq!(b.get(k), Some(v), "{k}");
        }
    }
    assert_eq!(b.get("general.file_type"), Some(&Value::U32(7)));
    assert_eq!(r.file_type, 7);
    for t in a.tensors() {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!(u.dims, t.dims);
        if t.dims.len() == 1 || t.ggml_type.name() == "q8_0" {
            assert_eq!(
                a.tensor_data(t),
                b.tensor_data(u),
                "{} must be copied",
                t.name
            );
        } else {
            assert_eq!(u.ggml_type.name(), "q8_0", "{}", t.name);
        }
    }
    // Quantized sources are re-quantized and flagged; every tensor has an error row.
    assert!(!r.requantized.is_empty());
    assert_eq!(r.tensors.len(), a.tensors().len());
    for t in r
        .tensors
        .iter()
        .filter(|t| t.final_type == "q8_0" && t.source_type != "q8_0")
    {
        assert!(
            t.snr_db.is_some_and(|s| s > 25.0),
            "{}: {:?}",
            t.name,
            t.snr_db
        );
        assert!(t.rmse > 0.0 && t.max_abs_error >= t.rmse);
    }
    assert!(r.bytes_before > 0 && r.bytes_after > 0);
    kiln_models::Llama::load(Arc::new(b)).unwrap();
}

#[test]
fn rules_output_type_and_unsupported_row_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinySpec {
        n_embd: 64,
        n_ff: 128,
        n_head: 2,
        n_head_kv: 1,
        layer_types: vec![[QuantType::F16; 7]],
        embedding_type: QuantType::F16,
        ..TinySpec::default()
    };
    let input = write_model(dir.path(), &tiny);
    let output = dir.path().join("out.gguf");
    let mut s = spec(QuantType::Q4_K);
    s.tensor_types = vec![("ffn_down".into(), QuantType::Q8_0)];
    let r = run(&input, &output, &s, None).unwrap();
    for t in &r.tensors {
        if t.name.contains("ffn_down") {
            assert_eq!(t.final_type, "q8_0", "{}", t.name);
        } else if t.dims.len() == 2 {
            // Rows of 64 cannot hold 256-element super-blocks: kept, with a note.
            assert_eq!(t.final_type, "f16", "{}", t.name);
            assert!(
                t.note.as_deref().unwrap_or("").contains("not a multiple"),
                "{:?}",
                t.note
            );
        }
    }
    // The tied embedding table is the output: Q6_K by default for 4-bit targets.
    let emb = r
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(emb.requested_type, "q6_K");
}

#[test]
fn max_tensor_error_falls_back_to_higher_precision() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinySpec {
        layer_types: vec![[QuantType::F32; 7]],
        embedding_type: QuantType::F32,
        ..TinySpec::default()
    };
    let input = write_model(dir.path(), &tiny);
    let output = dir.path().join("out.gguf");
    let mut s = spec(QuantType::Q4_0);
    let loose = run(&input, &output, &s, None).unwrap();
    assert!(loose.fallbacks.is_empty());
    let worst = loose
        .tensors
        .iter()
        .filter(|t| t.final_type == "q4_0")
        .map(|t| t.weighted_error)
        .fold(0.0, f64::max);
    assert!(worst > 0.0);
    // A bound below Q4_0's error but above Q8_0's moves every Q4_0 tensor up the ladder.
    s.max_tensor_error = Some(worst * 0.5);
    let strict = run(&input, &output, &s, None).unwrap();
    assert!(!strict.fallbacks.is_empty());
    for t in strict.tensors.iter().filter(|t| t.requested_type == "q4_0") {
        assert_ne!(t.final_type, "q4_0", "{}", t.name);
        assert!(t.weighted_error <= worst * 0.5, "{}", t.name);
        assert!(t.note.as_deref().unwrap_or("").contains("max-tensor-error"));
    }
    assert!(strict.bytes_after > loose.bytes_after);
}

#[test]
fn importance_matrix_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinySpec {
        layer_types: vec![[QuantType::F32; 7]],
        ..TinySpec::default()
    };
    let input = write_model(dir.path(), &tiny);
    let output = dir.path().join("out.gguf");
    let mut m = Imatrix::default();
    let x: Vec<f32> = (0..256).map(|i| (i % 7) as f32).collect();
    m.accumulate("blk.0.attn_q.weight", &x, 256).unwrap();
    let r = run(&input, &output, &spec(QuantType::Q4_0), Some(&m)).unwrap();
    let q = r
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert!(q.used_imatrix);
    let k = r
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .unwrap();
    assert!(!k.used_imatrix);
    assert!(k
        .note
        .as_deref()
        .unwrap_or("")
        .contains("no importance-matrix entry"));
    // An entry whose width does not match the tensor is an error, and nothing is written.
    std::fs::remove_file(&output).unwrap();
    let mut bad = Imatrix::default();
    bad.accumulate("blk.0.attn_q.weight", &[1.0; 32], 32)
        .unwrap();
    let e = run(&input, &output, &spec(QuantType::Q4_0), Some(&bad)).unwrap_err();
    assert!(e.to_string().contains("blk.0.attn_q.weight"), "{e}");
    assert!(!output.exists());
}

#[test]
fn hostile_inputs_fail_cleanly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_model(dir.path(), &TinySpec::default());
    let output = dir.path().join("out.gguf");
    let before = entries(dir.path());

    let mut s = spec(QuantType::Q4_0);
    s.tensor_types = vec![("no_such_tensor".into(), QuantType::Q8_0)];
    let e = run(&input, &output, &s, None).unwrap_err();
    assert!(matches!(e, QuantizeError::Rule { .. }), "{e}");
    s.tensor_types = vec![("(".into(), QuantType::Q8_0)];
    assert!(matches!(
        run(&input, &output, &s, None),
        Err(QuantizeError::Rule { .. })
    ));

    let not_gguf = dir.path().join("text.gguf");
    std::fs::write(&not_gguf, b"this is not a model").unwrap();
    let e = run(&not_gguf, &output, &spec(QuantType::Q4_0), None).unwrap_err();
    assert!(e.to_string().contains("GGUF"), "{e}");
    std::fs::remove_file(&not_gguf).unwrap();

    let missing = dir.path().join("no/such/dir/out.gguf");
    let e = run(&input, &missing, &spec(QuantType::Q4_0), None).unwrap_err();
    assert!(matches!(e, QuantizeError::OutputDir { .. }), "{e}");

    let mut s = spec(QuantType::Q4_0);
    s.clip_percentile = Some(0.0);
    assert!(run(&input, &output, &s, None).is_err());

    assert_eq!(
        entries(dir.path()),
        before,
        "no partial or temporary file left"
    );
}
