//! kiln-kvcache: key/value memory for attention, stored in fixed-size blocks (f16 by default
//! or f32), with block tables per sequence and a prefix index that shares blocks between
//! sequences by reference count.
//!
//! Two halves that never touch each other's job: [`KvStore`] holds the numbers (grown with the
//! blocks actually written, so a large pool costs nothing until used), and [`BlockManager`] is
//! a plain state machine over block ids (reference counts, free list, prefix index with LRU
//! eviction, hit/miss counters) — no clock, no I/O, no tensor data.
#![forbid(unsafe_code)]

mod blocks;
mod store;

pub use blocks::{BlockId, BlockManager, BlockTable, PrefixStats};
pub use store::{KvLayer, KvStore};

use thiserror::Error;

/// Positions per block where the caller has no reason to choose: small enough that prefixes
/// are shared at a fine grain, large enough that a block table stays short.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KvError {
    #[error("position {pos} is outside the context of {n_ctx} tokens")]
    ContextFull { pos: usize, n_ctx: usize },
    #[error("KV row has {got} values, expected {expected}")]
    RowLength { got: usize, expected: usize },
    #[error("layer {layer} out of range ({n_layers} layers)")]
    Layer { layer: usize, n_layers: usize },
    #[error("block {block} slot {slot} is outside the pool of {n_blocks} blocks of {block_size}")]
    Block {
        block: usize,
        slot: usize,
        n_blocks: usize,
        block_size: usize,
    },
    #[error(
        "KV memory of {n_layers} layers × {n_positions} positions × {kv_dim} values is too large"
    )]
    TooLarge {
        n_layers: usize,
        n_positions: usize,
        kv_dim: usize,
    },
    #[error("all {n_blocks} KV blocks are in use")]
    OutOfBlocks { n_blocks: usize },
    #[error("block size must be at least 1")]
    ZeroBlockSize,
}

/// Element type of the stored keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F16,
    F32,
}

impl KvDtype {
    pub fn from_name(s: &str) -> Option<KvDtype> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(KvDtype::F16),
            "f32" => Some(KvDtype::F32),
            _ => None,
        }
    }

    /// The name `from_name` accepts ("f16", "f32").
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
        }
    }

    /// Bytes per stored value.
    pub fn element_bytes(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_round_trip() {
        for d in [KvDtype::F16, KvDtype::F32] {
            assert_eq!(KvDtype::from_name(d.name()), Some(d));
        }
        assert_eq!(KvDtype::F16.element_bytes(), 2);
        assert_eq!(KvDtype::from_name("q8"), None);
    }
}
