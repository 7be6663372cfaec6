//! `QMatrix` (a weight matrix in ggml row layout) and `matmul`: every weight row dotted with
//! every activation row, work split over row chunks on the thread pool.

use crate::act::{ActBuf, ActType};
use crate::dispatch::{self, DotFn, DotRowsFn, DotWRowsFn};
use crate::error::QuantError;
use crate::types::QuantType;
use kiln_tensor::cpu::KernelChoice;
use kiln_tensor::ThreadPool;

/// Weight rows per unit of parallel work (16 f32 outputs fill one 64-byte line).
pub const ROW_CHUNK: usize = 16;

/// Below this many multiply-adds a matmul runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// A row-major weight matrix in ggml layout: `rows` rows (ggml `ne[1]`) of `cols` elements
/// (`ne[0]`), each row `ty.row_bytes(cols)` bytes, rows back to back. `data` may sit at any
/// address (GGUF tensors are used in place).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: QuantType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that `cols` is a whole number of blocks and `data` is exactly `rows` rows long.
    pub fn new(
        ty: QuantType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<QMatrix<'a>, QuantError> {
        let m = QMatrix {
            ty,
            rows,
            cols,
            data,
        };
        m.validate()?;
        Ok(m)
    }

    /// Re-checks the invariants `new` establishes (fields are public).
    pub fn validate(&self) -> Result<(), QuantError> {
        let expected =
            self.ty
                .row_bytes(self.cols)?
                .checked_mul(self.rows)
                .ok_or(QuantError::Overflow {
                    ty: self.ty,
                    rows: self.rows,
                    cols: self.cols,
                })?;
        if self.data.len() != expected {
            return Err(QuantError::Length {
                ty: self.ty,
                what: "weight matrix",
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// Bytes per row (saturating for impossible sizes; `validate` reports those).
    pub fn row_bytes(&self) -> usize {
        (self.cols / self.ty.block_size()).saturating_mul(self.ty.block_bytes())
    }

    /// The bytes of row `r`; empty when `r >= rows` or the data does not hold that row.
    pub fn row(&self, r: usize) -> &'a [u8] {
        if r >= self.rows {
            return &[];
        }
        let rb = self.row_bytes();
        let start = r.saturating_mul(rb);
        self.data
            .get(start..start.saturating_add(rb))
            .unwrap_or(&[])
    }
}

/// `out[t * w.rows + r] = dot(row r of w, activation row t)` for every activation row `t`,
/// with the process-wide kernel family (`KILN_KERNELS` honoured). `acts` must have been
/// prepared for `w.ty` with `w.cols` columns; `out.len() == acts.n_rows() * w.rows`.
pub fn matmul(
    pool: &ThreadPool,
    w: &QMatrix,
    acts: &ActBuf,
    out: &mut [f32],
) -> Result<(), QuantError> {
    matmul_with(kiln_tensor::cpu::kernel_choice(), pool, w, acts, out)
}

/// [`matmul`] with an explicit kernel family; an error if this CPU cannot run it.
pub fn matmul_with(
    choice: KernelChoice,
    pool: &ThreadPool,
    w: &QMatrix,
    acts: &ActBuf,
    out: &mut [f32],
) -> Result<(), QuantError> {
    dispatch::check_choice(choice)?;
    w.validate()?;
    if !check_args(w.ty, w.rows, w.cols, acts, out)? {
        return Ok(());
    }
    let n_act = acts.n_rows();
    let job = Job {
        dot: dispatch::dot_fn(choice, w.ty),
        dot_rows: dispatch::dot_rows_fn(choice, w.ty),
        dot_wrows: dispatch::dot_wrows_fn(choice, w.ty),
        w: *w,
        row_bytes: w.row_bytes(),
        acts: acts.bytes(),
        act_stride: acts.stride(),
        act_row_bytes: acts.act_type().row_bytes(w.cols).min(acts.stride()),
        n_act,
        out: OutPtr(out.as_mut_ptr()),
    };
    let work = w.rows.saturating_mul(w.cols).saturating_mul(n_act);
    let nth = pool.n_threads();
    if nth <= 1 || work < PARALLEL_MIN_WORK || w.rows <= ROW_CHUNK {
        job.rows(0, w.rows);
        return Ok(());
    }
    // Chunk boundaries fall where `out` starts a 64-byte line, so no two threads write the
    // same line of activation row 0 (of every row when `w.rows` is a multiple of 16).
    let addr = out.as_ptr() as usize;
    let shift = if addr.is_multiple_of(4) {
        ((64 - addr % 64) % 64) / 4
    } else {
        0
    };
    let target = w.rows.div_ceil(nth * 8);
    let chunk = target.div_ceil(ROW_CHUNK).max(1) * ROW_CHUNK;
    let n_chunks = w.rows.saturating_sub(shift).div_ceil(chunk).max(1);
    let bound = |c: usize| {
        if c == 0 {
            0
        } else if c >= n_chunks {
            w.rows
        } else {
            shift + c * chunk
        }
    };
    // Each thread takes its own consecutive chunks (see `ThreadPool::par_ranges`).
    pool.par_ranges(n_chunks, 1, |chunks, _| {
        job.rows(bound(chunks.start), bound(chunks.end))
    });
    Ok(())
}

/// Checks a matmul's activations and output against a `rows` × `cols` weight of type `ty`
/// (the contract of [`matmul`] and [`crate::matmul_packed`]); `Ok(false)` when there is
/// nothing to compute.
pub(crate) fn check_args(
    ty: QuantType,
    rows: usize,
    cols: usize,
    acts: &ActBuf,
    out: &[f32],
) -> Result<bool, QuantError> {
    let n_act = acts.n_rows();
    let expected_out = n_act.checked_mul(rows).ok_or(QuantError::Overflow {
        ty,
        rows: n_act,
        cols: rows,
    })?;
    if out.len() != expected_out {
        return Err(QuantError::Output {
            ty,
            act_rows: n_act,
            weight_rows: rows,
            got: out.len(),
        });
    }
    if n_act == 0 || rows == 0 {
        return Ok(false);
    }
    let expected = ActType::for_weight(ty);
    if acts.act_type() != expected {
        return Err(QuantError::ActivationType {
            weight: ty,
            expected,
            got: acts.act_type(),
        });
    }
    if acts.cols() != cols {
        return Err(QuantError::Cols {
            ty,
            weight_cols: cols,
            act_cols: acts.cols(),
        });
    }
    Ok(true)
}

/// The output pointer shared by the pool's threads; each writes only its own rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: threads write disjoint output elements (distinct weight rows), and the `&mut` borrow
// of the output outlives `ThreadPool::run`, which returns only after every thread finished.
unsafe impl Sync for OutPtr {}
// SAFETY: as above.
unsafe impl Send for OutPtr {}

/// Everything a thread needs to compute a range of weight rows.
struct Job<'a> {
    dot: DotFn,
    dot_rows: Option<DotRowsFn>,
    dot_wrows: Option<DotWRowsFn>,
    w: QMatrix<'a>,
    row_bytes: usize,
    acts: &'a [u8],
    act_stride: usize,
    act_row_bytes: usize,
    n_act: usize,
    out: OutPtr,
}

/// Rows (activation rows in prefill, weight rows in decode) one multi-row kernel call covers.
const TILE: usize = 4;

impl Job<'_> {
    /// Computes weight rows `r0..r1` against every activation row: each weight row is dotted
    /// with groups of up to four activation rows at once where a multi-row kernel exists, so
    /// its blocks are unpacked once per group.
    fn rows(&self, r0: usize, r1: usize) {
        let rows = self.w.rows;
        let r1 = r1.min(rows);
        if let (1, Some(dot_wrows)) = (self.n_act, self.dot_wrows) {
            self.rows_decode(dot_wrows, r0, r1);
            return;
        }
        let stride = self.act_stride;
        for r in r0..r1 {
            let Some(wr) = self
                .w
                .data
                .get(r * self.row_bytes..(r + 1) * self.row_bytes)
            else {
                continue;
            };
            let mut t = 0;
            if let Some(dot_rows) = self.dot_rows {
                while t + 1 < self.n_act {
                    let g = TILE.min(self.n_act - t);
                    let start = t * stride;
                    let end = start + (g - 1) * stride + self.act_row_bytes;
                    let Some(ar) = self.acts.get(start..end) else {
                        break;
                    };
                    let mut buf = [0.0f32; TILE];
                    // SAFETY: the caller checked CPU support for the kernel family; `wr` holds
                    // one weight row and `ar` holds `g` activation rows `stride` bytes apart.
                    unsafe { dot_rows(self.w.cols, wr, ar, stride, &mut buf[..g]) };
                    for (k, &v) in buf[..g].iter().enumerate() {
                        self.store(t + k, r, v);
                    }
                    t += g;
                }
            }
            for t in t..self.n_act {
                let start = t * stride;
                let Some(ar) = self.acts.get(start..start + self.act_row_bytes) else {
                    continue;
                };
                // SAFETY: the caller checked CPU support for the kernel family; `wr` and `ar`
                // each hold exactly `cols` elements.
                let v = unsafe { (self.dot)(self.w.cols, wr, ar) };
                self.store(t, r, v);
            }
        }
    }

    /// One activation row: weight rows `r0..r1` in groups of up to four, so each activation
    /// block is loaded once per group.
    fn rows_decode(&self, dot_wrows: DotWRowsFn, r0: usize, r1: usize) {
        let rb = self.row_bytes;
        let Some(ar) = self.acts.get(..self.act_row_bytes) else {
            return;
        };
        let mut r = r0;
        while r < r1 {
            let g = TILE.min(r1 - r);
            let Some(wr) = self.w.data.get(r * rb..(r + g) * rb) else {
                return;
            };
            let mut buf = [0.0f32; TILE];
            // SAFETY: the caller checked CPU support for the kernel family; `wr` holds `g`
            // weight rows `rb` bytes apart and `ar` one activation row of `cols` elements.
            unsafe { dot_wrows(self.w.cols, wr, rb, ar, &mut buf[..g]) };
            for (k, &v) in buf[..g].iter().enumerate() {
                self.store(0, r + k, v);
            }
            r += g;
        }
    }

    /// Writes the result for activation row `t`, weight row `r`.
    #[inline]
    fn store(&self, t: usize, r: usize, v: f32) {
        if t < self.n_act && r < self.w.rows {
            // SAFETY: `t < n_act` and `r < rows`, so the index is inside `out`, whose length
            // is `n_act * rows`; weight row `r` belongs to this thread alone.
            unsafe { *self.out.0.add(t * self.w.rows + r) = v };
        }
    }
}
