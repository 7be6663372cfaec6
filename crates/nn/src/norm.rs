//! `RmsNorm`: root-mean-square normalisation with a learned per-channel scale.

use crate::NnError;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Vec<f32>, eps: f32) -> RmsNorm {
        RmsNorm { weight, eps }
    }

    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// Normalises one row (`x` and `out` of `dim()` values; the caller checks the lengths).
    pub fn row(&self, x: &[f32], out: &mut [f32]) {
        kiln_tensor::ops::rms_norm(x, &self.weight, self.eps, out);
    }

    /// Normalises every row of `x` (rows of `dim` values) into `out` (same shape).
    pub fn forward(&self, x: &[f32], out: &mut [f32]) -> Result<(), NnError> {
        let d = self.weight.len();
        if d == 0 || x.len() != out.len() || !x.len().is_multiple_of(d) {
            return Err(NnError::Shape {
                layer: "rms_norm".into(),
                expected: d,
                got: x.len(),
            });
        }
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            kiln_tensor::ops::rms_norm(xr, &self.weight, self.eps, or);
        }
        Ok(())
    }
}
