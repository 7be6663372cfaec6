//! kiln-nn: layers with no model knowledge — Linear (dense or quantized), Embedding, RMSNorm,
//! SwiGLU gate/up, grouped-query attention through KV block tables.
#![forbid(unsafe_code)]

pub mod attention;
pub mod embedding;
pub mod glu;
pub mod linear;
pub mod norm;
pub mod rt;

pub use attention::{Attention, AttnSeq};
pub use embedding::Embedding;
pub use glu::{GateUp, GateUpScratch};
pub use linear::{Linear, LinearInput, LinearSet};
pub use norm::RmsNorm;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NnError {
    #[error("{layer}: {source}")]
    Quant {
        layer: String,
        #[source]
        source: kiln_quant::QuantError,
    },
    #[error(transparent)]
    Kv(#[from] kiln_kvcache::KvError),
    #[error("{layer}: expected {expected} values, got {got}")]
    Shape {
        layer: String,
        expected: usize,
        got: usize,
    },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
}
