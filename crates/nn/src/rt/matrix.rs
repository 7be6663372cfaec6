//! `RtMatrix`: one weight matrix of a real-time layer, f32 or Q8_0, with its own scratch, so a
//! matrix-vector product never allocates.

use super::RtError;
use kiln_quant::QuantType;
use kiln_tensor::matvec::{
    matvec, matvec_packed, matvec_packed_sum, pack_cols, packed_get, packed_len, PANEL,
};

/// How the weights are stored.
#[derive(Debug, Clone)]
enum Store {
    /// Row-major `[rows][cols]`: a dot per output, for a few long rows.
    Rows(Vec<f32>),
    /// [`pack_cols`] layout, one packed matrix per segment of `seg` rows (grouped convolutions
    /// compute each group's rows on their own): one vector FMA per input and 16 outputs.
    Packed { data: Vec<f32>, seg: usize },
    /// Q8_0 rows in ggml layout, each padded with zero weights to a whole number of 32-blocks
    /// (`stored_cols`); `xq` is the quantized input row, `xp` the input padded with zeros to
    /// that length (empty when no padding is needed), `tmp` the product before it is added
    /// (`matvec_add`).
    Q8_0 {
        data: Vec<u8>,
        xq: Vec<u8>,
        xp: Vec<f32>,
        tmp: Vec<f32>,
    },
}

/// Whether a dot per output row beats the packed columns for this shape. A dot costs its
/// 16-wide FMAs, about 8 instructions of horizontal sum, and a scalar FMA chain (4 cycles a
/// step) over the `cols % 16` tail; a packed pass costs one FMA per input and 16-row panel
/// (one panel keeps four chains in flight, so that is also its latency floor). Row dots win
/// only for a few long rows (a 512→1 output layer; at 24→1 packed was 10% faster).
fn dots_win(rows: usize, cols: usize) -> bool {
    rows * (cols / 16 + 4 * (cols % 16) + 8) < cols * rows.div_ceil(16)
}

/// Where a gate matrix's products go: its rows form `blocks` equal gate blocks, and block `b`
/// lands at `b · stride` of the output (`stride` a whole number of 16-row panels, the rows in
/// between zero), so each gate starts on a vector the product stored whole; or, when all the
/// gates fit one panel, `stride` is the gate size and the panel is padded to 16 rows, so the
/// product is one whole vector.
#[derive(Debug, Clone, Copy)]
struct Lanes {
    blocks: usize,
    stride: usize,
}

impl Lanes {
    fn out_len(self) -> usize {
        (self.blocks * self.stride).next_multiple_of(PANEL)
    }
}

/// A `rows × cols` weight matrix (`y = W·x`, logical layout `[out][in]`).
#[derive(Debug, Clone)]
pub struct RtMatrix {
    rows: usize,
    cols: usize,
    store: Store,
    lanes: Option<Lanes>,
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
        let store = if dots_win(rows, cols) {
            Store::Rows(w)
        } else {
            Store::Packed {
                data: pack_cols(&w, rows, cols),
                seg: rows,
            }
        };
        Ok(RtMatrix {
            rows,
            cols,
            store,
            lanes: None,
        })
    }

    /// The same matrix with its rows read as `blocks` gate blocks (an LSTM's 4, a GRU's 3),
    /// each placed at a multiple of a 16-row stride in the product ([`RtMatrix::out_len`]
    /// values): the recurrent cell then loads every gate as vectors the product stored whole,
    /// which the CPU forwards from its store buffer instead of waiting for a cache write (the
    /// 4-unit LSTM's gate loads had been half its time). Unchanged when the blocks are
    /// already whole panels.
    pub fn with_gate_lanes(self, blocks: usize, what: &str) -> Result<RtMatrix, RtError> {
        if blocks == 0 || !self.rows.is_multiple_of(blocks) {
            return Err(RtError::shape(
                what,
                format!("{} rows do not split into {blocks} gates", self.rows),
            ));
        }
        let (u, cols) = (self.rows / blocks, self.cols);
        // All gates within one vector (a 4-unit LSTM): keep them packed together, padded to
        // one whole panel, and the cell takes them apart in registers.
        let stride = if self.rows <= PANEL {
            u
        } else {
            u.next_multiple_of(PANEL)
        };
        if self.lanes.is_some() || (self.rows.is_multiple_of(PANEL) && stride == u) {
            return Ok(self);
        }
        let lanes = Lanes { blocks, stride };
        if let Store::Q8_0 { .. } = self.store {
            return Ok(RtMatrix {
                lanes: Some(lanes),
                ..self
            });
        }
        let w = self.to_rows();
        let mut padded = vec![0.0; lanes.out_len() * cols];
        for b in 0..blocks {
            padded[b * stride * cols..][..u * cols].copy_from_slice(&w[b * u * cols..][..u * cols]);
        }
        let data = pack_cols(&padded, lanes.out_len(), cols);
        Ok(RtMatrix {
            store: Store::Packed {
                data,
                seg: lanes.out_len(),
            },
            lanes: Some(lanes),
            ..self
        })
    }

    /// Where gate block `b` of `blocks` starts in the product: at `b` times this.
    pub fn gate_stride(&self, blocks: usize) -> usize {
        self.lanes.map_or(self.rows / blocks.max(1), |l| l.stride)
    }

    /// Values in this matrix's product: `rows`, or with gate lanes `blocks · stride` rounded
    /// up to a whole panel.
    #[inline]
    pub fn out_len(&self) -> usize {
        self.lanes.map_or(self.rows, |l| l.out_len())
    }

    /// Places `v` (`rows` values in gate-block order) at this matrix's output positions,
    /// zeros in between (a bias in the product's layout).
    pub fn spread(&self, v: &[f32]) -> Vec<f32> {
        match self.lanes {
            None => v.to_vec(),
            Some(l) => {
                let u = self.rows / l.blocks;
                let mut out = vec![0.0; self.out_len()];
                for (b, chunk) in v.chunks(u.max(1)).take(l.blocks).enumerate() {
                    out[b * l.stride..][..chunk.len()].copy_from_slice(chunk);
                }
                out
            }
        }
    }

    /// The same matrix prepared for [`RtMatrix::matvec_rows`] on consecutive blocks of `seg`
    /// rows (a grouped convolution's groups). `rows` must be a multiple of `seg`.
    pub fn with_row_segments(self, seg: usize, what: &str) -> Result<RtMatrix, RtError> {
        if seg == 0 || !self.rows.is_multiple_of(seg) || self.lanes.is_some() {
            return Err(RtError::shape(
                what,
                format!("{} rows do not split into groups of {seg}", self.rows),
            ));
        }
        let store = match self.store {
            Store::Packed { .. } if seg != self.rows => {
                let w = self.to_rows();
                let data = w
                    .chunks(seg * self.cols.max(1))
                    .take(self.rows / seg)
                    .flat_map(|s| pack_cols(s, seg, self.cols))
                    .collect();
                Store::Packed { data, seg }
            }
            other => other,
        };
        Ok(RtMatrix { store, ..self })
    }

    /// From Q8_0 rows in ggml layout, each row [`q8_0_row_len`]`(cols)` values long (the
    /// columns past `cols` are padding and should hold zeros).
    pub fn from_q8_0(rows: usize, cols: usize, data: Vec<u8>, what: &str) -> Result<Self, RtError> {
        if cols == 0 {
            return Err(RtError::shape(
                what,
                "a Q8_0 matrix needs at least one column",
            ));
        }
        let stored = q8_0_row_len(cols);
        let rb = QuantType::Q8_0
            .row_bytes(stored)
            .map_err(|e| RtError::shape(what, e.to_string()))?;
        if rb.checked_mul(rows) != Some(data.len()) {
            return Err(RtError::shape(
                what,
                format!("{} bytes for a {rows}x{cols} Q8_0 matrix", data.len()),
            ));
        }
        let xq = vec![0u8; kiln_quant::q8_0_scratch_bytes(stored)];
        Ok(RtMatrix {
            rows,
            cols,
            store: Store::Q8_0 {
                data,
                xq,
                xp: vec![0.0; if stored == cols { 0 } else { stored }],
                tmp: vec![0.0; rows],
            },
            lanes: None,
        })
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
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

    /// Values per stored row: `cols`, or for Q8_0 `cols` rounded up to a whole 32-block.
    pub fn stored_cols(&self) -> usize {
        match self.store {
            Store::Q8_0 { .. } => q8_0_row_len(self.cols),
            _ => self.cols,
        }
    }

    /// The weights as row-major f32 (dequantized if Q8_0).
    pub fn to_rows(&self) -> Vec<f32> {
        match &self.store {
            Store::Rows(w) => w.clone(),
            Store::Packed { data, seg } => {
                let (cols, seg) = (self.cols, *seg);
                let mut w = vec![0.0; self.rows * cols];
                let u = self
                    .lanes
                    .map_or(self.rows, |l| self.rows / l.blocks)
                    .max(1);
                let stride = self.lanes.map_or(u, |l| l.stride);
                for r in 0..self.rows {
                    // Row r of gate block r / u is stored row (r / u)·stride + r % u.
                    let sr = (r / u) * stride + r % u;
                    let s = &data[(sr / seg) * packed_len(seg, cols)..];
                    for i in 0..cols {
                        w[r * cols + i] = packed_get(s, seg, cols, sr % seg, i);
                    }
                }
                w
            }
            Store::Q8_0 { data, .. } => {
                let stored = q8_0_row_len(self.cols);
                let mut padded = vec![0.0; self.rows * stored];
                // The length was checked when the matrix was built.
                let _ = kiln_quant::dequantize_row(QuantType::Q8_0, data, &mut padded);
                padded
                    .chunks_exact(stored)
                    .flat_map(|r| &r[..self.cols])
                    .copied()
                    .collect()
            }
        }
    }

    /// The Q8_0 version of this matrix, rows padded with zeros to whole 32-blocks (`None` for a
    /// matrix without columns).
    pub fn to_q8_0(&self) -> Option<RtMatrix> {
        if self.cols == 0 {
            return None;
        }
        if let Store::Q8_0 { .. } = self.store {
            return Some(self.clone());
        }
        let stored = q8_0_row_len(self.cols);
        let mut padded = vec![0.0; self.rows * stored];
        for (dst, src) in padded
            .chunks_exact_mut(stored)
            .zip(self.to_rows().chunks_exact(self.cols))
        {
            dst[..self.cols].copy_from_slice(src);
        }
        let rb = QuantType::Q8_0.row_bytes(stored).ok()?;
        let mut data = vec![0u8; rb * self.rows];
        kiln_quant::quantize_row(QuantType::Q8_0, &padded, &mut data).ok()?;
        let q = RtMatrix::from_q8_0(self.rows, self.cols, data, "").ok()?;
        Some(RtMatrix {
            lanes: self.lanes,
            ..q
        })
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
            Store::Rows(w) | Store::Packed { data: w, .. } => w.len() * 4,
            Store::Q8_0 {
                data, xq, xp, tmp, ..
            } => data.len() + xq.len() + (xp.len() + tmp.len()) * 4,
        }
    }

    /// `y = W·x` (`x.len() == cols`, `y.len() == out_len()`).
    pub fn matvec(&mut self, x: &[f32], y: &mut [f32]) {
        self.matvec_bias(x, &[], y);
    }

    /// `y = bias + W·x` (`bias` empty for none, else `out_len()` long, like `y`). Packed
    /// matrices start their accumulators from the bias, so it costs no pass of its own.
    #[inline]
    pub fn matvec_bias(&mut self, x: &[f32], bias: &[f32], y: &mut [f32]) {
        assert!(
            bias.is_empty() || bias.len() == y.len(),
            "RtMatrix: bias length"
        );
        if let Some(p) = self.whole_packed() {
            assert!(
                x.len() == self.cols && y.len() == self.out_len(),
                "RtMatrix: bad shapes"
            );
            return matvec_packed_sum(&[(p, x)], bias, y);
        }
        start_from(bias, y);
        self.matvec_add(x, y);
    }

    /// [`RtMatrix::matvec_bias`] for consecutive frames: frame `f` reads
    /// `xs[f·step .. f·step + cols]` (`step == cols` for frames back to back, less for a
    /// convolution's overlapping windows) and writes frame `f` of `ys` (`out_len()` values
    /// each), exactly as one call would; a packed matrix picks its kernel once for the block.
    pub fn matvec_bias_frames(&mut self, xs: &[f32], step: usize, bias: &[f32], ys: &mut [f32]) {
        let (cols, rows) = (self.cols, self.out_len());
        let n = ys.len() / rows.max(1);
        assert!(
            step > 0 && ys.len() == n * rows && (n == 0 || xs.len() >= (n - 1) * step + cols),
            "RtMatrix: frame shapes"
        );
        if let Some(p) = self.whole_packed() {
            return kiln_tensor::matvec::matvec_packed_frames(p, (cols, rows), xs, step, bias, ys);
        }
        for (f, y) in ys.chunks_exact_mut(rows).enumerate() {
            self.matvec_bias(&xs[f * step..f * step + cols], bias, y);
        }
    }

    /// `y = bias + A·xa + B·xb` for two matrices of the same rows and output layout (an LSTM's
    /// input and recurrent weights): one pass and one store when both are packed.
    pub fn matvec2_bias(
        a: &mut RtMatrix,
        xa: &[f32],
        b: &mut RtMatrix,
        xb: &[f32],
        bias: &[f32],
        y: &mut [f32],
    ) {
        if let (Some(pa), Some(pb)) = (a.whole_packed(), b.whole_packed()) {
            assert!(
                xa.len() == a.cols
                    && xb.len() == b.cols
                    && y.len() == a.out_len()
                    && b.out_len() == a.out_len(),
                "RtMatrix: bad shapes"
            );
            assert!(
                bias.is_empty() || bias.len() == y.len(),
                "RtMatrix: bias length"
            );
            return matvec_packed_sum(&[(pa, xa), (pb, xb)], bias, y);
        }
        a.matvec_bias(xa, bias, y);
        b.matvec_add(xb, y);
    }

    /// Whether the matrix is packed as one segment (the layout `matvec_bias_frames` runs in
    /// one kernel call).
    pub fn is_packed_whole(&self) -> bool {
        self.whole_packed().is_some()
    }

    /// The packed weights when the matrix is packed as one segment.
    #[inline]
    fn whole_packed(&self) -> Option<&[f32]> {
        match &self.store {
            Store::Packed { data, seg } if *seg == self.out_len() => Some(data),
            _ => None,
        }
    }

    /// `y += W·x` (`x.len() == cols`, `y.len() == out_len()`): a bias or a second matrix's
    /// product already in `y` costs no extra pass. Panics on shapes the layer's constructor
    /// ruled out.
    pub fn matvec_add(&mut self, x: &[f32], y: &mut [f32]) {
        let cols = self.cols;
        assert!(
            x.len() == cols && y.len() == self.out_len(),
            "RtMatrix: bad shapes"
        );
        let lanes = self.lanes;
        match &mut self.store {
            Store::Rows(w) => matvec(w, cols, x, y),
            Store::Packed { data, seg } => {
                let n = packed_len(*seg, cols);
                for (s, ys) in y.chunks_mut((*seg).max(1)).enumerate() {
                    matvec_packed(&data[s * n..], x, ys);
                }
            }
            Store::Q8_0 { data, xq, xp, tmp } => {
                let (x, stored) = padded_input(x, xp);
                if kiln_quant::q8_0_matvec(data, stored, x, xq, tmp).is_err() {
                    // Unreachable: the constructor checked every length.
                    tmp.fill(f32::NAN);
                }
                let (u, stride) = match lanes {
                    Some(l) => (self.rows / l.blocks, l.stride),
                    None => (self.rows, self.rows),
                };
                for (ys, ts) in y.chunks_mut(stride.max(1)).zip(tmp.chunks(u.max(1))) {
                    for (o, &t) in ys.iter_mut().zip(ts) {
                        *o += t;
                    }
                }
            }
        }
    }

    /// `y = bias + W[r0 .. r0 + y.len()]·x` (`bias` empty for none, else `y.len()` long): one
    /// group's block of output rows (grouped convolutions; a packed matrix must have been
    /// split with [`RtMatrix::with_row_segments`] into segments of `y.len()` rows, and `r0`
    /// must start one). Panics on shapes the layer's constructor ruled out.
    pub fn matvec_rows(&mut self, r0: usize, x: &[f32], bias: &[f32], y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(
            x.len() == cols
                && r0 + y.len() <= rows
                && (bias.is_empty() || bias.len() == y.len())
                && self.lanes.is_none(),
            "RtMatrix: bad shapes"
        );
        match &mut self.store {
            Store::Packed { data, seg } => {
                assert!(
                    y.len() == *seg && r0.is_multiple_of(*seg),
                    "RtMatrix: rows not a packed segment"
                );
                let p = &data[(r0 / *seg) * packed_len(*seg, cols)..];
                matvec_packed_sum(&[(p, x)], bias, y);
            }
            Store::Rows(w) => {
                start_from(bias, y);
                matvec(&w[r0 * cols..], cols, x, y);
            }
            Store::Q8_0 { data, xq, xp, tmp } => {
                let rb = data.len() / rows.max(1);
                let w = &data[r0 * rb..(r0 + y.len()) * rb];
                let t = &mut tmp[..y.len()];
                let (x, stored) = padded_input(x, xp);
                if kiln_quant::q8_0_matvec(w, stored, x, xq, t).is_err() {
                    // Unreachable: the constructor checked every length.
                    t.fill(f32::NAN);
                }
                start_from(bias, y);
                for (o, &v) in y.iter_mut().zip(t.iter()) {
                    *o += v;
                }
            }
        }
    }
}

/// Values per stored Q8_0 row of a matrix with `cols` columns: whole 32-blocks.
pub fn q8_0_row_len(cols: usize) -> usize {
    cols.next_multiple_of(32)
}

/// `x` as the Q8_0 kernel's input row: itself when no padding is kept (`xp` empty), else
/// copied into `xp`, whose tail stays zero. Returns the row and its length.
fn padded_input<'a>(x: &'a [f32], xp: &'a mut [f32]) -> (&'a [f32], usize) {
    if xp.is_empty() {
        (x, x.len())
    } else {
        xp[..x.len()].copy_from_slice(x);
        (xp, xp.len())
    }
}

/// `y = bias`, or zeros when `bias` is empty.
fn start_from(bias: &[f32], y: &mut [f32]) {
    if bias.is_empty() {
        y.fill(0.0);
    } else {
        y.copy_from_slice(bias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_and_round_trip() {
        for (rows, cols) in [
            (3, 1),
            (8, 15),
            (5, 16),
            (7, 64),
            (1, 24),
            (2, 64),
            (70, 20),
        ] {
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
            // Grouped use: every segment of `seg` rows on its own.
            let seg = if rows % 2 == 0 { 2 } else { 1 };
            let mut ms = m.clone().with_row_segments(seg, "m").unwrap();
            assert_eq!(ms.to_rows(), w);
            for r0 in (0..rows).step_by(seg) {
                let mut y2 = vec![7.0; seg];
                ms.matvec_rows(r0, &x, &[], &mut y2);
                for k in 0..seg {
                    assert!((y2[k] - y[r0 + k]).abs() < 1e-5, "rows={rows} r={}", r0 + k);
                }
            }
            let mut acc = vec![1.0; rows];
            m.matvec_add(&x, &mut acc);
            for r in 0..rows {
                assert!((acc[r] - 1.0 - y[r]).abs() < 1e-4);
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

    #[test]
    fn gate_lanes_place_each_gate_on_a_panel_and_keep_the_logical_rows() {
        for (u, cols) in [(4, 4), (3, 4), (24, 1), (5, 40)] {
            let rows = 4 * u;
            let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.9).cos()).collect();
            let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.01).collect();
            let mut plain = RtMatrix::from_rows(rows, cols, w.clone(), "m").unwrap();
            let mut want = vec![0.0; rows];
            plain.matvec_bias(&x, &bias, &mut want);
            let laned = plain.clone().with_gate_lanes(4, "m").unwrap();
            // Gates within one panel stay back to back; larger ones start on panels.
            let stride = laned.gate_stride(4);
            let want_stride = if rows <= 16 {
                u
            } else {
                u.next_multiple_of(16)
            };
            assert_eq!(stride, want_stride, "u={u}");
            let out_len = (4 * stride).next_multiple_of(16);
            assert_eq!(laned.out_len(), out_len);
            assert_eq!(laned.to_rows(), w);
            for mut m in [laned.clone(), laned.to_q8_0().unwrap()] {
                assert_eq!(m.out_len(), out_len);
                let mut y = vec![f32::NAN; m.out_len()];
                m.matvec_bias(&x, &m.spread(&bias), &mut y);
                let tol = if m.ty() == QuantType::Q8_0 {
                    0.05
                } else {
                    1e-5
                };
                for b in 0..4 {
                    for k in 0..u {
                        let (g, e) = (y[b * stride + k], want[b * u + k]);
                        assert!((g - e).abs() <= tol * (1.0 + e.abs()), "u={u} b={b} k={k}");
                    }
                    assert!(y[b * stride + u..(b + 1) * stride]
                        .iter()
                        .all(|&v| v == 0.0));
                }
                assert!(y[4 * stride..].iter().all(|&v| v == 0.0), "u={u}");
            }
        }
        assert!(RtMatrix::from_rows(6, 2, vec![0.0; 12], "m")
            .unwrap()
            .with_gate_lanes(4, "m")
            .is_err());
    }
}
