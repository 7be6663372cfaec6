//! `Linear`: y = W·x for one weight matrix in any supported storage type (f32, f16, quantized).
//!
//! Dense and quantized weights take the same path: the input is converted once into the
//! activation format the weight's kernel consumes (`LinearInput`), then one matmul runs.
//! Weights that multiply the same input (Q/K/V, gate/up) can be stacked into one `Linear`, so
//! one parallel matmul replaces several.

use crate::norm::RmsNorm;
use crate::NnError;
use kiln_quant::{ActBuf, ActType, PackedMatrix, QMatrix, QuantType};
use kiln_tensor::{SharedBytes, ThreadPool};
use std::sync::Arc;

/// A weight matrix of `out_features` rows by `in_features` columns in ggml row layout.
#[derive(Debug, Clone)]
pub struct Linear {
    name: String,
    /// The stacked weights' names and row counts, in row order (one entry when not stacked).
    parts: Vec<(String, usize)>,
    /// The weights in ggml layout; `None` once a packed copy replaced an owned buffer.
    weight: Option<SharedBytes>,
    weight_len: usize,
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
        let weight_len = weight.len();
        let weight = match packed {
            // The matmul reads only the packed copy from now on: give back what holds the
            // plain layout (a mapped file's pages, an owned buffer).
            Some(_) => {
                weight.release_resident();
                None
            }
            None => Some(weight),
        };
        Ok(Linear {
            parts: vec![(name.clone(), out_features)],
            name,
            weight,
            weight_len,
            ty,
            in_features,
            out_features,
            packed,
        })
    }

    /// One `Linear` computing every part of `parts` (name, weight bytes, rows) over the same
    /// input: the rows are stacked in order, so output row `t` holds part 0's outputs, then
    /// part 1's, and so on. All parts must share `ty` and `in_features`.
    pub fn stacked(
        name: impl Into<String>,
        parts: Vec<(String, SharedBytes, usize)>,
        ty: QuantType,
        in_features: usize,
    ) -> Result<Linear, NnError> {
        let name = name.into();
        let mut matrices = Vec::with_capacity(parts.len());
        for (part, weight, rows) in &parts {
            let m = QMatrix::new(ty, *rows, in_features, weight.as_slice()).map_err(|source| {
                NnError::Quant {
                    layer: part.clone(),
                    source,
                }
            })?;
            matrices.push(m);
        }
        let names: Vec<(String, usize)> = parts.iter().map(|(n, _, r)| (n.clone(), *r)).collect();
        let rows = names.iter().map(|(_, r)| r).sum();
        let weight_len = parts.iter().map(|(_, w, _)| w.len()).sum();
        let choice = kiln_tensor::cpu::kernel_choice();
        if let Some(packed) = PackedMatrix::pack_stacked(choice, &matrices) {
            parts.iter().for_each(|(_, w, _)| w.release_resident());
            return Ok(Linear {
                name,
                parts: names,
                weight: None,
                weight_len,
                ty,
                in_features,
                out_features: rows,
                packed: Some(Arc::new(packed)),
            });
        }
        // No packed layout for this type here: one plain copy of the stacked rows.
        let mut bytes = Vec::with_capacity(weight_len);
        for (_, weight, _) in &parts {
            bytes.extend_from_slice(weight.as_slice());
            weight.release_resident();
        }
        let mut linear = Linear::new(name, SharedBytes::from_vec(bytes), ty, in_features, rows)?;
        linear.parts = names;
        Ok(linear)
    }

    /// The names and row counts of the weights stacked in this layer, in row order.
    pub fn parts(&self) -> &[(String, usize)] {
        &self.parts
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
        self.weight_len
    }

    fn matrix(&self) -> Result<QMatrix<'_>, NnError> {
        let data = self.weight.as_ref().map_or(&[][..], |w| w.as_slice());
        QMatrix::new(self.ty, self.out_features, self.in_features, data)
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

    /// Rows currently held.
    pub fn n_rows(&self) -> usize {
        self.x.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Replaces the input with `x` (rows of `cols` values); keeps allocations.
    pub fn set(&mut self, x: &[f32], cols: usize) {
        self.x.clear();
        self.x.extend_from_slice(x);
        self.cols = cols;
        self.n_valid = 0;
    }

    /// The current input rows.
    pub fn rows(&self) -> &[f32] {
        &self.x
    }

    /// Replaces the input with `norm` applied to every row of `x` and quantizes it for
    /// weights of type `first` in the same pass over the rows (see [`LinearInput::set_rows`]).
    pub fn set_rms_norm(
        &mut self,
        x: &[f32],
        norm: &RmsNorm,
        first: QuantType,
    ) -> Result<(), NnError> {
        let d = norm.dim();
        if d == 0 || !x.len().is_multiple_of(d) {
            return Err(NnError::Shape {
                layer: "rms_norm".into(),
                expected: d,
                got: x.len(),
            });
        }
        self.set_rows(x.len() / d, d, first, "rms_norm", |t, row| {
            norm.row(&x[t * d..(t + 1) * d], row)
        })
    }

    /// Replaces the input with `n_rows` rows of `cols` values, each written by `fill(t, row)`
    /// and quantized for weights of type `first` right away, while it is in L1 (one pass over
    /// the rows instead of producing them, copying them in and quantizing in the first
    /// matmul, which then finds its input ready). `what` names the producer in errors.
    pub fn set_rows(
        &mut self,
        n_rows: usize,
        cols: usize,
        first: QuantType,
        what: &str,
        fill: impl FnMut(usize, &mut [f32]),
    ) -> Result<(), NnError> {
        self.set_with(n_rows, cols, first, |x, acts| {
            acts.prepare_and_quantize(first, x, cols, fill)
        })
        .map_err(|source| NnError::Quant {
            layer: what.to_owned(),
            source,
        })
    }

    /// Replaces the input with `n_rows` rows of `cols` values that `produce` writes together
    /// with their activations for weights of type `first` (for a producer that computes both
    /// at once, such as the fused gate/up pass).
    pub(crate) fn set_with(
        &mut self,
        n_rows: usize,
        cols: usize,
        first: QuantType,
        produce: impl FnOnce(&mut [f32], &mut ActBuf) -> Result<(), kiln_quant::QuantError>,
    ) -> Result<(), kiln_quant::QuantError> {
        self.x.resize(n_rows * cols, 0.0);
        self.cols = cols;
        if self.prepared.is_empty() {
            self.prepared.push((first, ActBuf::new()));
        }
        self.prepared[0].0 = first;
        self.n_valid = 0;
        produce(&mut self.x, &mut self.prepared[0].1)?;
        self.n_valid = 1;
        Ok(())
    }

    pub(crate) fn for_type(&mut self, ty: QuantType) -> Result<&ActBuf, kiln_quant::QuantError> {
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

/// Weights that multiply one input (Q, K and V; gate and up), with consecutive weights of the
/// same storage type stacked into one [`Linear`], so one parallel matmul computes them all.
#[derive(Debug, Clone)]
pub struct LinearSet {
    layers: Vec<Linear>,
    names: Vec<String>,
}

impl LinearSet {
    /// `parts`: (name, weight bytes, type, rows), each `in_features` wide, in output order.
    pub fn new(
        name: &str,
        parts: Vec<(String, SharedBytes, QuantType, usize)>,
        in_features: usize,
    ) -> Result<LinearSet, NnError> {
        let names = parts.iter().map(|p| p.0.clone()).collect();
        let mut layers = Vec::new();
        let mut run: Vec<(String, SharedBytes, usize)> = Vec::new();
        let mut run_ty = None;
        let flush = |run: &mut Vec<(String, SharedBytes, usize)>,
                     ty: Option<QuantType>,
                     layers: &mut Vec<Linear>|
         -> Result<(), NnError> {
            match (run.len(), ty) {
                (0, _) | (_, None) => {}
                (1, Some(ty)) => {
                    let (n, w, rows) = run.remove(0);
                    layers.push(Linear::new(n, w, ty, in_features, rows)?);
                }
                (_, Some(ty)) => {
                    let label = format!("{name} ({})", run.len());
                    layers.push(Linear::stacked(
                        label,
                        std::mem::take(run),
                        ty,
                        in_features,
                    )?);
                }
            }
            run.clear();
            Ok(())
        };
        for (n, w, ty, rows) in parts {
            if run_ty != Some(ty) {
                flush(&mut run, run_ty, &mut layers)?;
                run_ty = Some(ty);
            }
            run.push((n, w, rows));
        }
        flush(&mut run, run_ty, &mut layers)?;
        Ok(LinearSet { layers, names })
    }

    /// The weights' names in output order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The storage type of the first stacked weight (the first to read the input; F32 for an
    /// empty set).
    pub fn first_type(&self) -> QuantType {
        self.layers.first().map_or(QuantType::F32, Linear::ty)
    }

    /// The layers the weights were stacked into.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// Bytes of weight data read per full pass.
    pub fn weight_bytes(&self) -> usize {
        self.layers.iter().map(Linear::weight_bytes).sum()
    }

    /// Computes every weight over the prepared input: `outs[i]` receives weight `i`'s output
    /// (`n_rows * rows_i` values, rows of the input in order). `stack` is scratch.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        input: &mut LinearInput,
        stack: &mut Vec<f32>,
        outs: &mut [&mut [f32]],
    ) -> Result<(), NnError> {
        let mut part = 0;
        for layer in &self.layers {
            let n_parts = layer.parts().len();
            let targets = outs.get_mut(part..part + n_parts).ok_or(NnError::Shape {
                layer: layer.name().into(),
                expected: part + n_parts,
                got: 0,
            })?;
            if let [only] = targets {
                layer.forward(pool, input, only)?;
            } else {
                let n_rows = input.n_rows();
                let width = layer.out_features();
                stack.resize(n_rows * width, 0.0);
                layer.forward(pool, input, stack)?;
                let mut col = 0;
                for ((_, rows), out) in layer.parts().iter().zip(targets.iter_mut()) {
                    if out.len() != n_rows * rows {
                        return Err(NnError::Shape {
                            layer: layer.name().into(),
                            expected: n_rows * rows,
                            got: out.len(),
                        });
                    }
                    for (t, dst) in out.chunks_exact_mut(*rows).enumerate() {
                        dst.copy_from_slice(&stack[t * width + col..][..*rows]);
                    }
                    col += rows;
                }
            }
            part += n_parts;
        }
        Ok(())
    }
}
