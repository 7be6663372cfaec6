//! `KvStore`: the key and value numbers of every layer, laid out as `n_blocks` blocks of
//! `block_size` positions × `kv_dim` values; a sequence addresses its positions through a
//! block table (position `p` lives in block `table[p / block_size]`, slot `p % block_size`).

use crate::{BlockId, KvDtype, KvError};
use half::f16;

#[derive(Debug, Clone)]
enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Rows {
    fn new(dtype: KvDtype) -> Rows {
        match dtype {
            KvDtype::F16 => Rows::F16(Vec::new()),
            KvDtype::F32 => Rows::F32(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::F16(v) => v.len(),
            Rows::F32(v) => v.len(),
        }
    }

    fn ensure(&mut self, n: usize) {
        match self {
            Rows::F16(v) if v.len() < n => v.resize(n, f16::ZERO),
            Rows::F32(v) if v.len() < n => v.resize(n, 0.0),
            _ => {}
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Rows::F16(v) => kiln_tensor::ops::f32_to_f16(src, &mut v[at..at + src.len()]),
            Rows::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }
}

/// The keys and values of one layer, every block back to back (`kv_dim` values per position).
#[derive(Debug, Clone, Copy)]
pub enum KvLayer<'a> {
    F16 { keys: &'a [f16], values: &'a [f16] },
    F32 { keys: &'a [f32], values: &'a [f32] },
}

impl KvLayer<'_> {
    /// Values stored (keys and values each); rows past this were never written.
    pub fn len(&self) -> usize {
        match self {
            KvLayer::F16 { keys, .. } => keys.len(),
            KvLayer::F32 { keys, .. } => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Block-structured KV memory for every layer; memory grows with the highest block written.
#[derive(Debug, Clone)]
pub struct KvStore {
    n_layers: usize,
    kv_dim: usize,
    block_size: usize,
    n_blocks: usize,
    dtype: KvDtype,
    keys: Vec<Rows>,
    values: Vec<Rows>,
}

impl KvStore {
    /// An empty store of `n_blocks` blocks of `block_size` positions. Fails if the whole pool
    /// would not be addressable.
    pub fn new(
        n_layers: usize,
        kv_dim: usize,
        block_size: usize,
        n_blocks: usize,
        dtype: KvDtype,
    ) -> Result<KvStore, KvError> {
        if block_size == 0 {
            return Err(KvError::ZeroBlockSize);
        }
        let n_positions = n_blocks.saturating_mul(block_size);
        let total = n_layers
            .checked_mul(n_positions)
            .and_then(|v| v.checked_mul(kv_dim))
            .and_then(|v| v.checked_mul(8));
        if total.is_none_or(|t| t > isize::MAX as usize) || n_blocks > BlockId::MAX as usize {
            return Err(KvError::TooLarge {
                n_layers,
                n_positions,
                kv_dim,
            });
        }
        Ok(KvStore {
            n_layers,
            kv_dim,
            block_size,
            n_blocks,
            dtype,
            keys: (0..n_layers).map(|_| Rows::new(dtype)).collect(),
            values: (0..n_layers).map(|_| Rows::new(dtype)).collect(),
        })
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Bytes currently allocated for keys and values.
    pub fn allocated_bytes(&self) -> usize {
        let elem = self.dtype.element_bytes();
        self.keys
            .iter()
            .chain(&self.values)
            .map(|r| r.len() * elem)
            .sum()
    }

    /// Bytes one position takes over all layers (keys and values).
    pub fn bytes_per_position(&self) -> usize {
        2 * self.n_layers * self.kv_dim * self.dtype.element_bytes()
    }

    /// Stores the key and value rows (`kv_dim` each) of `slot` in `block` of `layer`.
    pub fn write(
        &mut self,
        layer: usize,
        block: BlockId,
        slot: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KvError> {
        if layer >= self.n_layers {
            return Err(KvError::Layer {
                layer,
                n_layers: self.n_layers,
            });
        }
        let b = block as usize;
        if b >= self.n_blocks || slot >= self.block_size {
            return Err(KvError::Block {
                block: b,
                slot,
                n_blocks: self.n_blocks,
                block_size: self.block_size,
            });
        }
        for row in [k, v] {
            if row.len() != self.kv_dim {
                return Err(KvError::RowLength {
                    got: row.len(),
                    expected: self.kv_dim,
                });
            }
        }
        let block_values = self.block_size * self.kv_dim;
        let needed = (b + 1) * block_values;
        self.keys[layer].ensure(needed);
        self.values[layer].ensure(needed);
        let at = b * block_values + slot * self.kv_dim;
        self.keys[layer].write(at, k);
        self.values[layer].write(at, v);
        Ok(())
    }

    /// Keys and values of `layer` (every block written so far).
    pub fn layer(&self, layer: usize) -> Result<KvLayer<'_>, KvError> {
        match (self.keys.get(layer), self.values.get(layer)) {
            (Some(Rows::F16(keys)), Some(Rows::F16(values))) => Ok(KvLayer::F16 { keys, values }),
            (Some(Rows::F32(keys)), Some(Rows::F32(values))) => Ok(KvLayer::F32 { keys, values }),
            _ => Err(KvError::Layer {
                layer,
                n_layers: self.n_layers,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_their_block_and_slot() {
        for dtype in [KvDtype::F16, KvDtype::F32] {
            let mut s = KvStore::new(2, 4, 16, 8, dtype).unwrap();
            assert_eq!(s.allocated_bytes(), 0);
            s.write(1, 3, 5, &[1.0, 2.0, 3.0, 4.0], &[-1.0, -2.0, -3.0, -4.0])
                .unwrap();
            let at = (3 * 16 + 5) * 4;
            match s.layer(1).unwrap() {
                KvLayer::F16 { keys, values } => {
                    assert_eq!(keys[at + 2].to_f32(), 3.0);
                    assert_eq!(values[at + 3].to_f32(), -4.0);
                }
                KvLayer::F32 { keys, values } => {
                    assert_eq!(keys[at + 2], 3.0);
                    assert_eq!(values[at + 3], -4.0);
                }
            }
            // Only blocks up to the highest one written are allocated.
            assert_eq!(s.allocated_bytes(), 2 * 4 * 16 * 4 * dtype.element_bytes());
            assert_eq!(s.layer(0).unwrap().len(), 0);
        }
    }

    #[test]
    fn rejects_bad_addresses_and_rows() {
        let mut s = KvStore::new(1, 2, 4, 2, KvDtype::F16).unwrap();
        let ok = [0.0; 2];
        assert!(matches!(
            s.write(0, 2, 0, &ok, &ok),
            Err(KvError::Block { .. })
        ));
        assert!(matches!(
            s.write(0, 0, 4, &ok, &ok),
            Err(KvError::Block { .. })
        ));
        assert!(matches!(
            s.write(1, 0, 0, &ok, &ok),
            Err(KvError::Layer { .. })
        ));
        assert!(matches!(
            s.write(0, 0, 0, &[0.0; 3], &ok),
            Err(KvError::RowLength { .. })
        ));
        assert!(s.layer(1).is_err());
        assert!(KvStore::new(usize::MAX, 2, 2, 2, KvDtype::F32).is_err());
        assert!(KvStore::new(1, 2, 0, 2, KvDtype::F32).is_err());
    }
}
