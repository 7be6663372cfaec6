//! `RtMatrix`: one weight matrix of a real-time layer, f32 or Q8_0, with its own scratch, so a
//! matrix-vector product never allocates.

use super::RtError;
use kiln_quant::QuantType;
use kiln_tensor::matvec::{matvec, matvec_cols};

/// How the weights are stored.
#[derive(Debug, Clone)]
enum Store {
    /// Row-major `[rows][cols]` (rows are long enough for a vectorized dot).
    Rows(Vec<f32>),
    /// Column-major `[cols][rows]`: chosen for narrow matrices (few inputs), where an axpy per
    /// input vectorizes over the outputs instead.
    Cols(Vec<f32>),
    /// Q8_0 rows in ggml layout; `xq` is the quantized input row.
    Q8_0 { data: Vec<u8>, xq: Vec<u8> },
}

/// Up to this many inputs a matrix is stored column-major: an axpy per input then costs no
/// horizontal sums, which dominate row dots this short (LSTM 16→16: 4x faster).
const NARROW: usize = 32;

/// A `rows × cols` weight matrix (`y = W·x`, logical layout `[out][in]`).
#[derive(Debug, Clone)]
pub struct RtMatrix {
    rows: usize,
    cols: usize,
    store: Store,
}

impl RtMatrix {
    /// From row-major f32 values `[rows][cols]`; `what` names the matrix in errors.
    pub fn from_rows(rows: usize, cols: usize, w: Vec<f32>, what: &str) -> Result<Self, RtError> {
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(RtError::shape(
                what,
                format!("{} weights for a {rows}x{cols} matrix", w.len()),
            ));
        }
        let store = if cols <= NARROW {
            let mut t = vec![0.0; w.len()];
            for r in 0..rows {
                for i in 0..cols {
                    t[i * rows + r] = w[r * cols + i];
                }
            }
            Store::Cols(t)
        } else {
            Store::Rows(w)
        };
        Ok(RtMatrix { rows, cols, store })
    }

    /// From Q8_0 rows in ggml layout (`cols` a multiple of 32).
    pub fn from_q8_0(rows: usize, cols: usize, data: Vec<u8>, what: &str) -> Result<Self, RtError> {
        let rb = QuantType::Q8_0
            .row_bytes(cols)
            .map_err(|e| RtError::shape(what, e.to_string()))?;
        if rb.checked_mul(rows) != Some(data.len()) {
            return Err(RtError::shape(
                what,
                format!("{} bytes for a {rows}x{cols} Q8_0 matrix", data.len()),
            ));
        }
        let xq = vec![0u8; kiln_quant::q8_0_scratch_bytes(cols)];
        Ok(RtMatrix {
            rows,
            cols,
            store: Store::Q8_0 { data, xq },
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Storage type of the weights.
    pub fn ty(&self) -> QuantType {
        match self.store {
            Store::Q8_0 { .. } => QuantType::Q8_0,
            _ => QuantType::F32,
        }
    }

    /// Whether Q8_0 can hold this matrix (rows a whole number of 32-blocks).
    pub fn can_q8_0(&self) -> bool {
        self.cols > 0 && self.cols.is_multiple_of(32)
    }

    /// The weights as row-major f32 (dequantized if Q8_0).
    pub fn to_rows(&self) -> Vec<f32> {
        match &self.store {
            Store::Rows(w) => w.clone(),
            Store::Cols(t) => {
                let mut w = vec![0.0; t.len()];
                for r in 0..self.rows {
                    for i in 0..self.cols {
                        w[r * self.cols + i] = t[i * self.rows + r];
                    }
                }
                w
            }
            Store::Q8_0 { data, .. } => {
                let mut w = vec![0.0; self.rows * self.cols];
                // The length was checked when the matrix was built.
                let _ = kiln_quant::dequantize_row(QuantType::Q8_0, data, &mut w);
                w
            }
        }
    }

    /// The Q8_0 version of this matrix (None when the row length is not a multiple of 32).
    pub fn to_q8_0(&self) -> Option<RtMatrix> {
        if !self.can_q8_0() {
            return None;
        }
        if let Store::Q8_0 { .. } = self.store {
            return Some(self.clone());
        }
        let rb = QuantType::Q8_0.row_bytes(self.cols).ok()?;
        let mut data = vec![0u8; rb * self.rows];
        kiln_quant::quantize_row(QuantType::Q8_0, &self.to_rows(), &mut data).ok()?;
        RtMatrix::from_q8_0(self.rows, self.cols, data, "").ok()
    }

    /// The stored weight bytes, f32 little-endian or Q8_0 blocks, row-major.
    pub fn raw_bytes(&self) -> Vec<u8> {
        match &self.store {
            Store::Q8_0 { data, .. } => data.clone(),
            _ => self
                .to_rows()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        }
    }

    /// Heap bytes held (weights plus scratch).
    pub fn memory_bytes(&self) -> usize {
        match &self.store {
            Store::Rows(w) | Store::Cols(w) => w.len() * 4,
            Store::Q8_0 { data, xq } => data.len() + xq.len(),
        }
    }

    /// `y = W·x` (`x.len() == cols`, `y.len() == rows`).
    pub fn matvec(&mut self, x: &[f32], y: &mut [f32]) {
        self.matvec_rows(0, x, y);
    }

    /// `y = W[r0 .. r0 + y.len()]·x`: a block of output rows (grouped convolutions).
    /// Panics on shapes the layer's constructor ruled out.
    pub fn matvec_rows(&mut self, r0: usize, x: &[f32], y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(
            x.len() == cols && r0 + y.len() <= rows,
            "RtMatrix: bad shapes"
        );
        match &mut self.store {
            Store::Rows(w) => {
                y.fill(0.0);
                matvec(&w[r0 * cols..], cols, x, y);
            }
            Store::Cols(t) => {
                y.fill(0.0);
                if cols > 0 {
                    matvec_cols(&t[r0..], rows, x, y);
                }
            }
            Store::Q8_0 { data, xq } => {
                let rb = data.len() / rows.max(1);
                let w = &data[r0 * rb..(r0 + y.len()) * rb];
                if kiln_quant::q8_0_matvec(w, cols, x, xq, y).is_err() {
                    // Unreachable: the constructor checked every length.
                    y.fill(f32::NAN);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_and_round_trip() {
        for (rows, cols) in [(3, 1), (8, 15), (5, 16), (7, 64)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.3).sin()).collect();
            let mut m = RtMatrix::from_rows(rows, cols, w.clone(), "m").unwrap();
            assert_eq!(m.to_rows(), w);
            let mut y = vec![1.0; rows];
            m.matvec(&x, &mut y);
            for r in 0..rows {
                let want: f32 = (0..cols).map(|i| w[r * cols + i] * x[i]).sum();
                assert!((y[r] - want).abs() < 1e-4);
            }
            if rows > 2 {
                let mut y2 = vec![0.0; 2];
                m.matvec_rows(1, &x, &mut y2);
                assert!((y2[0] - y[1]).abs() < 1e-5 && (y2[1] - y[2]).abs() < 1e-5);
            }
            if let Some(mut q) = m.to_q8_0() {
                let mut yq = vec![0.0; rows];
                q.matvec(&x, &mut yq);
                for r in 0..rows {
                    assert!((yq[r] - y[r]).abs() < 0.05 * (1.0 + y[r].abs()));
                }
            }
        }
        assert!(RtMatrix::from_rows(2, 3, vec![0.0; 5], "bad").is_err());
    }
}
