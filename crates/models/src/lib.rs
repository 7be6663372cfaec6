//! kiln-models: architectures built from `nn` layers — configuration from GGUF metadata,
//! weight-name mapping and the forward pass.
#![forbid(unsafe_code)]

pub mod config;
pub mod imatrix;
pub mod llama;
pub mod observe;
pub mod quantize;
pub mod rtnet;
pub mod tiny;
pub mod weights;

pub use config::LlamaConfig;
pub use llama::{BatchSeq, ForwardScratch, Llama, LlamaState, LogitsMode};
pub use observe::MatmulObserver;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::GgufError),
    #[error(transparent)]
    Nn(#[from] kiln_nn::NnError),
    #[error(transparent)]
    Kv(#[from] kiln_kvcache::KvError),
    #[error("metadata key {key} is missing")]
    MissingKey { key: String },
    #[error("metadata key {key}: {problem}")]
    BadKey { key: String, problem: String },
    #[error("tensor {name} is missing")]
    MissingTensor { name: String },
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        got: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor {name} has type {ty}, which kiln cannot compute with")]
    UnsupportedType { name: String, ty: String },
    #[error("architecture {0:?} is not supported (supported: llama)")]
    UnsupportedArchitecture(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the sequence would reach {needed} tokens but the context holds {n_ctx}")]
    ContextOverflow { needed: usize, n_ctx: usize },
}
