//! kiln-kvcache: per-layer key/value memory for attention, stored as f16 (default) or f32.
//!
//! Memory grows with the positions actually written (in steps of `GROW_POSITIONS`), so a
//! large context limit costs nothing until it is used.
#![forbid(unsafe_code)]

use half::f16;
use thiserror::Error;

/// Positions added at a time when the cache grows.
const GROW_POSITIONS: usize = 256;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KvError {
    #[error("position {pos} is outside the context of {n_ctx} tokens")]
    ContextFull { pos: usize, n_ctx: usize },
    #[error("KV row has {got} values, expected {expected}")]
    RowLength { got: usize, expected: usize },
    #[error("layer {layer} out of range ({n_layers} layers)")]
    Layer { layer: usize, n_layers: usize },
    #[error("KV cache of {n_layers} layers × {n_ctx} positions × {kv_dim} values is too large")]
    TooLarge {
        n_layers: usize,
        n_ctx: usize,
        kv_dim: usize,
    },
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
            Rows::F16(v) => {
                for (d, &s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(s);
                }
            }
            Rows::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }

    fn read(&self, from: usize, out: &mut [f32]) {
        match self {
            Rows::F16(v) => {
                use half::slice::HalfFloatSliceExt;
                v[from..from + out.len()].convert_to_f32_slice(out);
            }
            Rows::F32(v) => out.copy_from_slice(&v[from..from + out.len()]),
        }
    }
}

/// Keys and values of one sequence for every layer: `n_ctx` positions of `kv_dim` values.
#[derive(Debug, Clone)]
pub struct KvCache {
    n_layers: usize,
    n_ctx: usize,
    kv_dim: usize,
    dtype: KvDtype,
    keys: Vec<Rows>,
    values: Vec<Rows>,
    len: usize,
}

impl KvCache {
    /// An empty cache. Fails if the full context would not be addressable.
    pub fn new(
        n_layers: usize,
        n_ctx: usize,
        kv_dim: usize,
        dtype: KvDtype,
    ) -> Result<KvCache, KvError> {
        let total = n_layers
            .checked_mul(n_ctx)
            .and_then(|v| v.checked_mul(kv_dim))
            .and_then(|v| v.checked_mul(8));
        if total.is_none_or(|t| t > isize::MAX as usize) {
            return Err(KvError::TooLarge {
                n_layers,
                n_ctx,
                kv_dim,
            });
        }
        Ok(KvCache {
            n_layers,
            n_ctx,
            kv_dim,
            dtype,
            keys: (0..n_layers).map(|_| Rows::new(dtype)).collect(),
            values: (0..n_layers).map(|_| Rows::new(dtype)).collect(),
            len: 0,
        })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Number of positions holding valid keys and values (the next position to write).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets positions `n..` (keeps the memory).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Marks positions `..n` valid after every layer has written them.
    pub fn set_len(&mut self, n: usize) -> Result<(), KvError> {
        if n > self.n_ctx {
            return Err(KvError::ContextFull {
                pos: n,
                n_ctx: self.n_ctx,
            });
        }
        self.len = n;
        Ok(())
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

    /// Stores the key and value rows (`kv_dim` each) of position `pos` in `layer`.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<(), KvError> {
        self.check_layer(layer)?;
        if pos >= self.n_ctx {
            return Err(KvError::ContextFull {
                pos,
                n_ctx: self.n_ctx,
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
        let needed = (pos + 1).div_ceil(GROW_POSITIONS) * GROW_POSITIONS;
        let needed = needed.min(self.n_ctx) * self.kv_dim;
        self.keys[layer].ensure(needed);
        self.values[layer].ensure(needed);
        self.keys[layer].write(pos * self.kv_dim, k);
        self.values[layer].write(pos * self.kv_dim, v);
        Ok(())
    }

    /// Copies keys and values of positions `0..n_pos` of `layer` into f32 buffers of
    /// `n_pos * kv_dim` values each. The positions must have been written.
    pub fn read(
        &self,
        layer: usize,
        n_pos: usize,
        keys: &mut [f32],
        values: &mut [f32],
    ) -> Result<(), KvError> {
        self.check_layer(layer)?;
        let n = n_pos * self.kv_dim;
        if n > self.keys[layer].len() || keys.len() != n || values.len() != n {
            return Err(KvError::RowLength {
                got: keys.len().min(values.len()),
                expected: n,
            });
        }
        self.keys[layer].read(0, keys);
        self.values[layer].read(0, values);
        Ok(())
    }

    fn check_layer(&self, layer: usize) -> Result<(), KvError> {
        if layer >= self.n_layers {
            return Err(KvError::Layer {
                layer,
                n_layers: self.n_layers,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        for dtype in [KvDtype::F16, KvDtype::F32] {
            let mut c = KvCache::new(2, 600, 4, dtype).unwrap();
            for pos in 0..300 {
                let k = [pos as f32, 1.0, 2.0, 3.0];
                let v = [0.5, pos as f32, -1.0, 0.25];
                c.write(1, pos, &k, &v).unwrap();
            }
            c.set_len(300).unwrap();
            let mut k = vec![0.0; 300 * 4];
            let mut v = vec![0.0; 300 * 4];
            c.read(1, 300, &mut k, &mut v).unwrap();
            assert_eq!(k[299 * 4], 299.0);
            assert_eq!(v[299 * 4 + 1], 299.0);
            assert!(c.allocated_bytes() > 0);
        }
    }

    #[test]
    fn rejects_out_of_context_and_bad_rows() {
        let mut c = KvCache::new(1, 8, 2, KvDtype::F16).unwrap();
        assert!(matches!(
            c.write(0, 8, &[0.0; 2], &[0.0; 2]),
            Err(KvError::ContextFull { .. })
        ));
        assert!(matches!(
            c.write(0, 0, &[0.0; 3], &[0.0; 2]),
            Err(KvError::RowLength { .. })
        ));
        assert!(matches!(
            c.write(1, 0, &[0.0; 2], &[0.0; 2]),
            Err(KvError::Layer { .. })
        ));
        assert!(KvCache::new(usize::MAX, 2, 2, KvDtype::F32).is_err());
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in [KvDtype::F16, KvDtype::F32] {
            assert_eq!(KvDtype::from_name(d.name()), Some(d));
        }
        assert_eq!(KvDtype::F16.element_bytes(), 2);
        assert_eq!(KvDtype::from_name("q8"), None);
    }

    #[test]
    fn memory_grows_with_use_only() {
        let mut c = KvCache::new(1, 100_000, 64, KvDtype::F16).unwrap();
        assert_eq!(c.allocated_bytes(), 0);
        c.write(0, 0, &[1.0; 64], &[1.0; 64]).unwrap();
        assert_eq!(c.allocated_bytes(), 2 * 256 * 64 * 2);
    }
}
