//! `Linear`: y = W·x for one weight matrix in any supported storage type (f32, f16, quantized).
//!
//! Dense and quantized weights take the same path: the input is converted once into the
//! activation format the weight's kernel consumes (`LinearInput`), then one matmul runs.

use crate::NnError;
use kiln_quant::{ActBuf, ActType, PackedMatrix, QMatrix, QuantType};
use kiln_tensor::{SharedBytes, ThreadPool};
use std::sync::Arc;

/// A weight matrix of `out_features` rows by `in_features` columns in ggml row layout.
#[derive(Debug, Clone)]
pub struct Linear {
    name: String,
    weight: SharedBytes,
    ty: QuantType,
    in_features: usize,
    out_features: usize,
    /// The weights repacked for this CPU's kernels, where the kernel family has a packed
    /// layout for `ty` (the matmul then reads only these).
    packed: Option<Arc<PackedMatrix>>,
}

impl Linear {
    /// Checks that `weight` holds exactly `out_features` rows of `in_features` values of `ty`,
    /// and repacks them when the process-wide kernel family has a packed layout for `ty`.
    pub fn new(
        name: impl Into<String>,
        weight: SharedBytes,
        ty: QuantType,
        in_features: usize,
        out_features: usize,
    ) -> Result<Linear, NnError> {
        let name = name.into();
        let matrix =
            QMatrix::new(ty, out_features, in_features, weight.as_slice()).map_err(|source| {
                NnError::Quant {
                    layer: name.clone(),
                    source,
                }
            })?;
        let packed = PackedMatrix::pack(kiln_tensor::cpu::kernel_choice(), &matrix).map(Arc::new);
        if packed.is_some() {
            // The matmul reads only the packed copy from now on.
            weight.release_resident();
        }
        Ok(Linear {
            name,
            weight,
            ty,
            in_features,
            out_features,
            packed,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ty(&self) -> QuantType {
        self.ty
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Bytes of weight data this layer reads per full pass.
    pub fn weight_bytes(&self) -> usize {
        self.weight.len()
    }

    fn matrix(&self) -> Result<QMatrix<'_>, NnError> {
        QMatrix::new(
            self.ty,
            self.out_features,
            self.in_features,
            self.weight.as_slice(),
        )
        .map_err(|source| self.err(source))
    }

    fn err(&self, source: kiln_quant::QuantError) -> NnError {
        NnError::Quant {
            layer: self.name.clone(),
            source,
        }
    }

    /// `out[t][o] = Σ_i W[o][i] · x[t][i]` for every row `t` of the prepared input;
    /// `out` holds `input.n_rows() * out_features` values.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        input: &mut LinearInput,
        out: &mut [f32],
    ) -> Result<(), NnError> {
        let acts = input.for_type(self.ty).map_err(|s| self.err(s))?;
        let expected = acts.n_rows() * self.out_features;
        if out.len() != expected || acts.cols() != self.in_features {
            return Err(NnError::Shape {
                layer: self.name.clone(),
                expected,
                got: out.len(),
            });
        }
        match &self.packed {
            Some(p) => kiln_quant::matmul_packed(pool, p, acts, out),
            None => kiln_quant::matmul(pool, &self.matrix()?, acts, out),
        }
        .map_err(|s| self.err(s))
    }
}

/// Activations (rows of f32) prepared lazily for each weight type that reads them, so that
/// Q, K and V (or gate and up) quantize their shared input once.
#[derive(Default)]
pub struct LinearInput {
    x: Vec<f32>,
    cols: usize,
    prepared: Vec<(QuantType, ActBuf)>,
    n_valid: usize,
}

impl LinearInput {
    pub fn new() -> LinearInput {
        LinearInput::default()
    }

    /// Replaces the input with `x` (rows of `cols` values); keeps allocations.
    pub fn set(&mut self, x: &[f32], cols: usize) {
        self.x.clear();
        self.x.extend_from_slice(x);
        self.cols = cols;
        self.n_valid = 0;
    }

    fn for_type(&mut self, ty: QuantType) -> Result<&ActBuf, kiln_quant::QuantError> {
        // Weight types that consume the same activation format (Q4_0 and Q8_0 both read
        // Q8_0) share one quantization of the input.
        let wanted = ActType::for_weight(ty);
        let found = self.prepared[..self.n_valid]
            .iter()
            .position(|(t, _)| ActType::for_weight(*t) == wanted);
        let idx = match found {
            Some(i) => i,
            None => {
                if self.n_valid == self.prepared.len() {
                    self.prepared.push((ty, ActBuf::new()));
                }
                let i = self.n_valid;
                self.prepared[i].0 = ty;
                self.prepared[i].1.quantize(ty, &self.x, self.cols)?;
                self.n_valid += 1;
                i
            }
        };
        Ok(&self.prepared[idx].1)
    }
}
