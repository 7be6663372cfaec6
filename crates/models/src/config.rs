//! Llama-family hyper-parameters read from GGUF metadata (`{arch}.*` keys).

use crate::ModelError;
use kiln_gguf::GgufFile;

/// Everything the llama forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rope_dims: usize,
    pub rope_freq_base: f32,
    pub rms_eps: f32,
}

/// Architectures whose GGUF layout is the llama one (same tensor names and RoPE layout).
const LLAMA_LIKE: &[&str] = &["llama"];

/// Upper bound on any single dimension read from metadata; rejects absurd files early.
const MAX_DIM: u64 = 1 << 24;

impl LlamaConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let arch = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::MissingKey {
                key: "general.architecture".into(),
            })?
            .to_string();
        if !LLAMA_LIKE.contains(&arch.as_str()) {
            return Err(ModelError::UnsupportedArchitecture(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let uint = |k: &str| -> Result<Option<usize>, ModelError> {
            let name = key(k);
            match file.get(&name) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(x) if x > 0 && x <= MAX_DIM => Ok(Some(x as usize)),
                    _ => Err(ModelError::BadKey {
                        key: name,
                        problem: format!("expected a positive integer ≤ {MAX_DIM}"),
                    }),
                },
            }
        };
        let required = |k: &str| -> Result<usize, ModelError> {
            uint(k)?.ok_or_else(|| ModelError::MissingKey { key: key(k) })
        };
        let float = |k: &str, default: f32| -> Result<f32, ModelError> {
            let name = key(k);
            match file.get(&name) {
                None => Ok(default),
                Some(v) => {
                    v.as_f32()
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .ok_or(ModelError::BadKey {
                            key: name,
                            problem: "expected a positive number".into(),
                        })
                }
            }
        };
        let n_embd = required("embedding_length")?;
        let n_head = required("attention.head_count")?;
        let n_head_kv = uint("attention.head_count_kv")?.unwrap_or(n_head);
        if n_embd % n_head != 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::BadKey {
                key: key("attention.head_count"),
                problem: format!(
                    "{n_head} heads / {n_head_kv} KV heads do not divide embedding {n_embd}"
                ),
            });
        }
        let head_dim = uint("attention.key_length")?.unwrap_or(n_embd / n_head);
        let rope_dims = uint("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(ModelError::BadKey {
                key: key("rope.dimension_count"),
                problem: format!("{rope_dims} must be even and at most the head size {head_dim}"),
            });
        }
        if let Some(t) = file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            if t != "none" {
                return Err(ModelError::Unsupported(format!(
                    "RoPE scaling {t:?} is not supported yet"
                )));
            }
        }
        let n_vocab = match uint("vocab_size")? {
            Some(v) => v,
            None => file
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: "token_embd.weight".into(),
                })?,
        };
        Ok(LlamaConfig {
            n_vocab,
            n_ctx_train: required("context_length")?,
            n_embd,
            n_layer: required("block_count")?,
            n_ff: required("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dims,
            rope_freq_base: float("rope.freq_base", 10000.0)?,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            architecture: arch,
        })
    }
}
