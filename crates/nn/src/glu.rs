//! `GateUp`: a SwiGLU feed-forward's gate and up projections and the SiLU·mul that turns them
//! into the down projection's input, in one parallel pass where the weights pack for it.
//!
//! Fused (both weights of one packable type, the down projection's activations in 32-value
//! blocks): gate and up are packed together in units of 32 rows each, and every pool thread
//! applies SiLU·mul to its own units and quantizes them for the down projection right after
//! their dot products, so nothing runs serially between the two matmuls. Otherwise: one
//! stacked [`LinearSet`] matmul, then SiLU·mul and quantization in one pass over the rows.
//! Both give the same bits.

use crate::linear::{LinearInput, LinearSet};
use crate::NnError;
use kiln_quant::{PackedMatrix, QMatrix, QuantType};
use kiln_tensor::{ops, SharedBytes, ThreadPool};
use std::sync::Arc;

/// One weight: its name, its bytes in ggml layout and its storage type.
pub type NamedWeight = (String, SharedBytes, QuantType);

/// The gate and up weights (`n_ff` rows of `in_features` values each) of one SwiGLU block.
#[derive(Debug, Clone)]
pub struct GateUp {
    name: String,
    names: [String; 2],
    n_ff: usize,
    weights: Weights,
}

#[derive(Debug, Clone)]
enum Weights {
    /// Packed by `PackedMatrix::pack_glu`; `ty` is both weights' type.
    Fused {
        packed: Arc<PackedMatrix>,
        ty: QuantType,
        weight_len: usize,
    },
    Split(LinearSet),
}

/// Scratch buffers of [`GateUp::forward`], kept between calls.
#[derive(Default)]
pub struct GateUpScratch {
    /// The fused matmul's output; the split path's gate outputs.
    gate: Vec<f32>,
    up: Vec<f32>,
    stack: Vec<f32>,
}

impl GateUp {
    /// Checks both weights and packs them together when the process-wide kernel family can,
    /// they share a type, and a down projection of `down_ty` can take its input in 32-value
    /// blocks; otherwise keeps them as a [`LinearSet`].
    pub fn new(
        name: &str,
        gate: NamedWeight,
        up: NamedWeight,
        in_features: usize,
        n_ff: usize,
        down_ty: QuantType,
    ) -> Result<GateUp, NnError> {
        let names = [gate.0.clone(), up.0.clone()];
        let choice = kiln_tensor::cpu::kernel_choice();
        fn matrix(w: &NamedWeight, rows: usize, cols: usize) -> Result<QMatrix<'_>, NnError> {
            QMatrix::new(w.2, rows, cols, w.1.as_slice()).map_err(|source| NnError::Quant {
                layer: w.0.clone(),
                source,
            })
        }
        if gate.2 == up.2 && kiln_quant::glu_fits(down_ty) {
            let (g, u) = (
                matrix(&gate, n_ff, in_features)?,
                matrix(&up, n_ff, in_features)?,
            );
            let packed = PackedMatrix::pack_glu(choice, &g, &u);
            if let Some(packed) = packed {
                let weight_len = gate.1.len() + up.1.len();
                // The matmul reads only the packed copy: give back the plain layout's pages.
                gate.1.release_resident();
                up.1.release_resident();
                return Ok(GateUp {
                    name: name.to_owned(),
                    names,
                    n_ff,
                    weights: Weights::Fused {
                        packed: Arc::new(packed),
                        ty: gate.2,
                        weight_len,
                    },
                });
            }
        }
        let parts = [gate, up].map(|(n, w, ty)| (n, w, ty, n_ff)).into();
        Ok(GateUp {
            name: name.to_owned(),
            names,
            n_ff,
            weights: Weights::Split(LinearSet::new(name, parts, in_features)?),
        })
    }

    /// The gate's and the up weight's names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether gate and up run as one fused pass.
    pub fn is_fused(&self) -> bool {
        matches!(self.weights, Weights::Fused { .. })
    }

    /// The weight type the input is read as first (what to prepare it for).
    pub fn first_type(&self) -> QuantType {
        match &self.weights {
            Weights::Fused { ty, .. } => *ty,
            Weights::Split(set) => set.first_type(),
        }
    }

    /// Bytes of weight data read per full pass.
    pub fn weight_bytes(&self) -> usize {
        match &self.weights {
            Weights::Fused { weight_len, .. } => *weight_len,
            Weights::Split(set) => set.weight_bytes(),
        }
    }

    /// Sets `out` to `silu(gate · x) · (up · x)` for every row `x` of `input` (rows of
    /// `n_ff` values), prepared for a down projection of type `down_ty`.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        input: &mut LinearInput,
        scratch: &mut GateUpScratch,
        out: &mut LinearInput,
        down_ty: QuantType,
    ) -> Result<(), NnError> {
        let (n, ff) = (input.n_rows(), self.n_ff);
        let err = |source| NnError::Quant {
            layer: self.name.clone(),
            source,
        };
        match &self.weights {
            Weights::Fused { packed, ty, .. } => {
                let acts = input.for_type(*ty).map_err(err)?;
                out.set_with(n, ff, down_ty, |x, x_acts| {
                    kiln_quant::matmul_packed_glu(
                        pool,
                        packed,
                        acts,
                        &mut scratch.gate,
                        down_ty,
                        x,
                        x_acts,
                    )
                })
                .map_err(err)
            }
            Weights::Split(set) => {
                let GateUpScratch { gate, up, stack } = scratch;
                gate.resize(n * ff, 0.0);
                up.resize(n * ff, 0.0);
                set.forward(pool, input, stack, &mut [&mut gate[..], &mut up[..]])?;
                out.set_rows(n, ff, down_ty, &self.name, |t, row| {
                    let r = t * ff..(t + 1) * ff;
                    ops::silu_mul(&gate[r.clone()], &up[r], row)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Linear;

    fn weight(name: &str, ty: QuantType, rows: usize, cols: usize, seed: u64) -> NamedWeight {
        let rb = ty.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rb * rows];
        for (r, dst) in bytes.chunks_exact_mut(rb).enumerate() {
            let row: Vec<f32> = (0..cols)
                .map(|i| {
                    let h =
                        (((r * cols + i) as u64 + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40;
                    (h % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            kiln_quant::quantize_row(ty, &row, dst).unwrap();
        }
        (name.to_owned(), SharedBytes::from_vec(bytes), ty)
    }

    #[test]
    fn fused_and_split_passes_give_the_down_projection_the_same_input() {
        let (d, ff, n_rows) = (64, 256, 3);
        let pool = ThreadPool::new(2);
        let x: Vec<f32> = (0..n_rows * d)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for ty in [
            QuantType::Q4_0,
            QuantType::Q4_1,
            QuantType::Q8_0,
            QuantType::F16,
        ] {
            for down_ty in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q6_K] {
                let gate = weight("gate", ty, ff, d, 1);
                let up = weight("up", ty, ff, d, 2);
                let glu = GateUp::new("ffn", gate.clone(), up.clone(), d, ff, down_ty).unwrap();
                let packs = PackedMatrix::supports(kiln_tensor::cpu::kernel_choice(), ty);
                assert_eq!(
                    glu.is_fused(),
                    packs && down_ty != QuantType::Q6_K,
                    "{ty:?}"
                );
                assert_eq!(glu.names().collect::<Vec<_>>(), ["gate", "up"]);
                assert_eq!(glu.weight_bytes(), gate.1.len() + up.1.len());

                let mut input = LinearInput::new();
                input.set(&x, d);
                let mut out = LinearInput::new();
                let mut scratch = GateUpScratch::default();
                glu.forward(&pool, &mut input, &mut scratch, &mut out, down_ty)
                    .unwrap();

                // Reference: each projection on its own, then SiLU·mul.
                let mut want = vec![0.0; n_rows * ff];
                let mut g = vec![0.0; n_rows * ff];
                let mut u = vec![0.0; n_rows * ff];
                let (gl, ul) = [gate, up]
                    .map(|(n, w, t)| Linear::new(n, w, t, d, ff).unwrap())
                    .into();
                let mut plain = LinearInput::new();
                plain.set(&x, d);
                gl.forward(&pool, &mut plain, &mut g).unwrap();
                ul.forward(&pool, &mut plain, &mut u).unwrap();
                for t in 0..n_rows {
                    let r = t * ff..(t + 1) * ff;
                    ops::silu_mul(&g[r.clone()], &u[r.clone()], &mut want[r]);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(out.rows()), bits(&want), "{ty:?} -> {down_ty:?}");

                // The prepared activations are those the down projection would make itself.
                let (n, w, t) = weight("down", down_ty, 16, ff, 3);
                let down = Linear::new(n, w, t, ff, 16).unwrap();
                let (mut y, mut y_want) = (vec![0.0; n_rows * 16], vec![0.0; n_rows * 16]);
                down.forward(&pool, &mut out, &mut y).unwrap();
                let mut fresh = LinearInput::new();
                fresh.set(&want, ff);
                down.forward(&pool, &mut fresh, &mut y_want).unwrap();
                assert_eq!(bits(&y), bits(&y_want), "{ty:?} -> {down_ty:?}");
            }
        }
    }
}
