//! `Embedding`: token id → row of a (possibly quantized) table, dequantized to f32.

use crate::NnError;
use kiln_quant::QuantType;
use kiln_tensor::SharedBytes;

#[derive(Debug, Clone)]
pub struct Embedding {
    table: SharedBytes,
    ty: QuantType,
    dim: usize,
    n_vocab: usize,
    row_bytes: usize,
}

impl Embedding {
    /// `table` holds `n_vocab` rows of `dim` values of type `ty`.
    pub fn new(
        table: SharedBytes,
        ty: QuantType,
        dim: usize,
        n_vocab: usize,
    ) -> Result<Embedding, NnError> {
        let quant_err = |source| NnError::Quant {
            layer: "embedding".into(),
            source,
        };
        let row_bytes = ty.row_bytes(dim).map_err(quant_err)?;
        let expected = row_bytes.saturating_mul(n_vocab);
        if table.len() != expected {
            return Err(NnError::Shape {
                layer: "embedding".into(),
                expected,
                got: table.len(),
            });
        }
        Ok(Embedding {
            table,
            ty,
            dim,
            n_vocab,
            row_bytes,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Writes the embedding of `id` into `out` (`dim` values).
    pub fn lookup(&self, id: u32, out: &mut [f32]) -> Result<(), NnError> {
        let i = id as usize;
        if i >= self.n_vocab {
            return Err(NnError::TokenOutOfRange {
                id,
                n_vocab: self.n_vocab,
            });
        }
        let row = &self.table.as_slice()[i * self.row_bytes..(i + 1) * self.row_bytes];
        kiln_quant::dequantize_row(self.ty, row, out).map_err(|source| NnError::Quant {
            layer: "embedding".into(),
            source,
        })
    }
}
