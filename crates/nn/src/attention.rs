//! Causal grouped-query attention reading keys and values through block tables, straight from
//! the f16 (or f32) KV store: each key/value row is widened in registers as it is used, and
//! softmax runs online over tiles of positions, so a call converts nothing in bulk and
//! allocates nothing however long the context.
//!
//! With an f16 cache the query and the (unnormalized) attention weights are rounded to f16
//! before they meet the cached keys and values, as ggml's f16 paths do, so results track
//! llama.cpp closely.

use crate::NnError;
use half::f16;
use kiln_kvcache::{BlockId, KvLayer};
use kiln_tensor::ops::tile::{QueryTile, CHUNK, LANES};
use kiln_tensor::{ops, ThreadPool};
use std::cell::RefCell;

/// Largest head size supported (a query head and its accumulator live on the stack).
pub const MAX_HEAD_DIM: usize = 512;

/// Largest block size attention works with (one block's scores live on the stack).
pub const MAX_BLOCK_SIZE: usize = 256;

/// Sequences with at least this many queries per KV head (rows × group) use query tiles.
const TILE_MIN_QUERIES: usize = 8;

/// Head layout of one attention block.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

/// One sequence's rows in a batched attention call: `n_rows` consecutive query rows at
/// positions `pos0..pos0 + n_rows`, whose keys and values (those positions included) are
/// already written in the blocks of `blocks` (position `p` in `blocks[p / block_size]`).
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq<'a> {
    pub blocks: &'a [BlockId],
    pub pos0: usize,
    pub n_rows: usize,
}

/// Element types the store may hold, read a block of rows at a time (row `r` of a block at
/// `r * stride + offset`), so one kernel dispatch covers a whole block.
trait KvElem: Copy + Send + Sync {
    fn dot_rows(q: &[f32], data: &[Self], stride: usize, offset: usize, out: &mut [f32]);
    /// `acc += Σ_r w[r] · row r`; `part` is scratch of `acc`'s length.
    fn add_weighted_rows(
        w: &[f32],
        data: &[Self],
        stride: usize,
        offset: usize,
        acc: &mut [f32],
        part: &mut [f32],
    );
    /// Rows `r < n` of `data` (at `r * stride + offset`, `hd` values each) as f32 into `dst`
    /// (`n * hd` values, row after row).
    fn widen(data: &[Self], stride: usize, offset: usize, n: usize, hd: usize, dst: &mut [f32]);
    /// Whether operands meeting this cache are rounded to it first (f16).
    const ROUND: bool;
}

impl KvElem for f16 {
    fn dot_rows(q: &[f32], data: &[f16], stride: usize, offset: usize, out: &mut [f32]) {
        ops::dot_rows_f16(q, data, stride, offset, out)
    }
    fn add_weighted_rows(
        w: &[f32],
        data: &[f16],
        stride: usize,
        offset: usize,
        acc: &mut [f32],
        _part: &mut [f32],
    ) {
        ops::add_weighted_rows_f16(w, data, stride, offset, acc)
    }
    fn widen(data: &[f16], stride: usize, offset: usize, n: usize, hd: usize, dst: &mut [f32]) {
        for (r, d) in dst.chunks_exact_mut(hd).take(n).enumerate() {
            ops::f16_to_f32(&data[r * stride + offset..][..hd], d);
        }
    }
    const ROUND: bool = true;
}

impl KvElem for f32 {
    fn dot_rows(q: &[f32], data: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
        ops::dot_rows(q, data, stride, offset, out)
    }
    fn add_weighted_rows(
        w: &[f32],
        data: &[f32],
        stride: usize,
        offset: usize,
        acc: &mut [f32],
        part: &mut [f32],
    ) {
        ops::weighted_rows(w, data, stride, offset, part);
        ops::add_in_place(acc, part);
    }
    fn widen(data: &[f32], stride: usize, offset: usize, n: usize, hd: usize, dst: &mut [f32]) {
        for (r, d) in dst.chunks_exact_mut(hd).take(n).enumerate() {
            d.copy_from_slice(&data[r * stride + offset..][..hd]);
        }
    }
    const ROUND: bool = false;
}

impl Attention {
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// For the query rows `q` of every sequence in `seqs` (rows of `q_dim`, sequences back to
    /// back), attends over each sequence's positions `0..=pos` in `kv` (one layer of a store
    /// with `block_size`-position blocks) and writes `out` (same shape as `q`).
    pub fn forward(
        &self,
        pool: &ThreadPool,
        kv: KvLayer<'_>,
        block_size: usize,
        seqs: &[AttnSeq<'_>],
        q: &[f32],
        out: &mut [f32],
    ) -> Result<(), NnError> {
        let (qd, kvd, hd) = (self.q_dim(), self.kv_dim(), self.head_dim);
        let n_rows: usize = seqs.iter().map(|s| s.n_rows).sum();
        let shape_err = |expected: usize, got: usize| NnError::Shape {
            layer: "attention".into(),
            expected,
            got,
        };
        if hd == 0
            || hd > MAX_HEAD_DIM
            || self.n_head_kv == 0
            || block_size == 0
            || block_size > MAX_BLOCK_SIZE
        {
            return Err(shape_err(MAX_HEAD_DIM, hd));
        }
        if q.len() != n_rows * qd || out.len() != q.len() {
            return Err(shape_err(n_rows * qd, q.len()));
        }
        // Every block a row reads must exist in the store, so the kernels index freely.
        let stored_blocks = kv.len() / (block_size * kvd);
        for s in seqs {
            let needed = (s.pos0 + s.n_rows).div_ceil(block_size);
            let table = s.blocks.get(..needed).ok_or(NnError::Shape {
                layer: "attention block table".into(),
                expected: needed,
                got: s.blocks.len(),
            })?;
            if let Some(&b) = table.iter().find(|&&b| b as usize >= stored_blocks) {
                return Err(NnError::Shape {
                    layer: "attention block (not written)".into(),
                    expected: stored_blocks,
                    got: b as usize,
                });
            }
        }
        match kv {
            KvLayer::F16 { keys, values } => {
                self.run(pool, keys, values, block_size, seqs, q, out);
            }
            KvLayer::F32 { keys, values } => {
                self.run(pool, keys, values, block_size, seqs, q, out);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run<T: KvElem>(
        &self,
        pool: &ThreadPool,
        keys: &[T],
        values: &[T],
        block_size: usize,
        seqs: &[AttnSeq<'_>],
        q: &[f32],
        out: &mut [f32],
    ) {
        let (qd, kvd, hd) = (self.q_dim(), self.kv_dim(), self.head_dim);
        let group = (self.n_head / self.n_head_kv).max(1);
        let scale = 1.0 / (hd as f32).sqrt();
        // Sequences with enough rows (prefill chunks) go through query tiles; the others
        // (decode rows) one query at a time.
        let tile_rows = LANES / group;
        let use_tile = |s: &AttnSeq| tile_rows > 0 && s.n_rows * group >= TILE_MIN_QUERIES;
        if seqs.iter().any(&use_tile) {
            self.run_tiles(pool, keys, values, block_size, seqs, q, out, use_tile);
            if seqs.iter().all(use_tile) {
                return;
            }
        }
        pool.par_chunks_mut(out, hd, |chunk, o| {
            let (row, h) = (chunk / self.n_head, chunk % self.n_head);
            // The sequence this row belongs to (batches hold few sequences).
            let (mut seq, mut first) = (&seqs[0], 0);
            for s in seqs {
                if row < first + s.n_rows {
                    seq = s;
                    break;
                }
                first += s.n_rows;
            }
            if use_tile(seq) {
                return;
            }
            let n_pos = seq.pos0 + (row - first) + 1;
            let kvh = (h / group).min(self.n_head_kv - 1);
            let blocks = &seq.blocks[..n_pos.div_ceil(block_size)];
            ROW_SCRATCH.with(|cell| {
                let mut guard = cell.borrow_mut();
                let RowScratch {
                    q: qh,
                    scores,
                    acc,
                    part,
                } = &mut *guard;
                qh.clear();
                qh.extend_from_slice(&q[row * qd + h * hd..row * qd + (h + 1) * hd]);
                if T::ROUND {
                    ops::round_to_f16_in_place(qh);
                }
                // Two passes over the blocks: every score first, so the softmax is one
                // vectorized exp over the whole context (no per-block rescaling), then the
                // weighted values.
                scores.resize(n_pos, 0.0);
                for (bi, &b) in blocks.iter().enumerate() {
                    let n = block_size.min(n_pos - bi * block_size);
                    let base = b as usize * block_size * kvd + kvh * hd;
                    T::dot_rows(qh, keys, kvd, base, &mut scores[bi * block_size..][..n]);
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
                if !max.is_finite() {
                    o.fill(0.0);
                    return;
                }
                let sum = ops::exp::exp_shifted_sum(scores, scale, max);
                if T::ROUND {
                    ops::round_to_f16_in_place(scores);
                }
                acc.clear();
                acc.resize(hd, 0.0);
                part.resize(hd, 0.0);
                for (bi, &b) in blocks.iter().enumerate() {
                    let n = block_size.min(n_pos - bi * block_size);
                    let base = b as usize * block_size * kvd + kvh * hd;
                    T::add_weighted_rows(
                        &scores[bi * block_size..][..n],
                        values,
                        kvd,
                        base,
                        acc,
                        part,
                    );
                }
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                for (d, &a) in o.iter_mut().zip(acc.iter()) {
                    *d = a * inv;
                }
            });
        });
    }
}

impl Attention {
    /// Attention for the rows of the sequences `use_tile` selects: work items of up to
    /// `LANES / group` consecutive rows × one KV head, all their queries in one [`QueryTile`],
    /// so every key and value row is widened once per item and every score is a vector op.
    #[allow(clippy::too_many_arguments)]
    fn run_tiles<T: KvElem>(
        &self,
        pool: &ThreadPool,
        keys: &[T],
        values: &[T],
        block_size: usize,
        seqs: &[AttnSeq<'_>],
        q: &[f32],
        out: &mut [f32],
        use_tile: impl Fn(&AttnSeq) -> bool + Sync,
    ) {
        let (qd, kvd, hd) = (self.q_dim(), self.kv_dim(), self.head_dim);
        let n_kv = self.n_head_kv;
        let group = (self.n_head / n_kv).max(1);
        let tile_rows = (LANES / group).max(1);
        // (sequence, first row of the batch, first position, rows)
        let mut tiles = Vec::new();
        let mut first = 0;
        for (si, s) in seqs.iter().enumerate() {
            if use_tile(s) {
                let mut r = 0;
                while r < s.n_rows {
                    let n = tile_rows.min(s.n_rows - r);
                    tiles.push((si, first + r, s.pos0 + r, n));
                    r += n;
                }
            }
            first += s.n_rows;
        }
        let item_len = tile_rows * group * hd;
        let mut tmp = vec![0f32; tiles.len() * n_kv * item_len];
        let scale = 1.0 / (hd as f32).sqrt();
        pool.par_chunks_mut(&mut tmp, item_len, |item, o| {
            let ((si, row0, pos0, n_rows), kvh) = (tiles[item / n_kv], item % n_kv);
            TILE_SCRATCH.with(|cell| {
                let mut scratch = cell.borrow_mut();
                let (tile, buf) = &mut *scratch;
                if tile.as_ref().is_none_or(|t| t.head_dim() != hd) {
                    *tile = Some(QueryTile::new(hd));
                }
                let Some(tile) = tile.as_mut() else { return };
                let m = n_rows * group;
                buf.resize((m + 2 * CHUNK) * hd, 0.0);
                let (qs, kv_buf) = buf.split_at_mut(m * hd);
                for (j, qj) in qs.chunks_exact_mut(hd).enumerate() {
                    let (r, h) = (j / group, kvh * group + j % group);
                    qj.copy_from_slice(&q[(row0 + r) * qd + h * hd..][..hd]);
                    if T::ROUND {
                        ops::round_to_f16_in_place(qj);
                    }
                }
                let limits = (0..m).map(|j| pos0 + j / group + 1);
                tile.reset(qs.chunks_exact(hd).zip(limits), scale);
                let (kbuf, vbuf) = kv_buf.split_at_mut(CHUNK * hd);
                let blocks = seqs[si].blocks;
                let n_pos = pos0 + n_rows;
                let mut p0 = 0;
                while p0 < n_pos {
                    let (bi, off) = (p0 / block_size, p0 % block_size);
                    let n = CHUNK.min(block_size - off).min(n_pos - p0);
                    let base = (blocks[bi] as usize * block_size + off) * kvd + kvh * hd;
                    T::widen(keys, kvd, base, n, hd, &mut kbuf[..n * hd]);
                    T::widen(values, kvd, base, n, hd, &mut vbuf[..n * hd]);
                    tile.attend(p0, &kbuf[..n * hd], &vbuf[..n * hd], T::ROUND);
                    p0 += n;
                }
                tile.finish(m, |lane, vals| {
                    for (d, v) in o[lane * hd..(lane + 1) * hd].iter_mut().zip(vals) {
                        *d = v;
                    }
                });
            });
        });
        // Each item holds rows × (the heads of one KV group, contiguous in a row).
        for (item, o) in tmp.chunks_exact(item_len).enumerate() {
            let ((_, row0, _, n_rows), kvh) = (tiles[item / n_kv], item % n_kv);
            for r in 0..n_rows {
                let dst = &mut out[(row0 + r) * qd + kvh * group * hd..][..group * hd];
                dst.copy_from_slice(&o[r * group * hd..][..group * hd]);
            }
        }
    }
}

/// Per-thread buffers of the one-query-at-a-time path, reused across calls.
#[derive(Default)]
struct RowScratch {
    q: Vec<f32>,
    /// One score (then softmax weight) per visible position.
    scores: Vec<f32>,
    acc: Vec<f32>,
    part: Vec<f32>,
}

thread_local! {
    static ROW_SCRATCH: RefCell<RowScratch> = RefCell::new(RowScratch::default());
    /// Per-thread query tile and query/key/value buffers of `run_tiles`, reused across calls.
    static TILE_SCRATCH: RefCell<(Option<QueryTile>, Vec<f32>)> =
        const { RefCell::new((None, Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_kvcache::{KvDtype, KvStore};

    /// Straightforward two-pass softmax attention in f64 over rows read back from the store.
    fn naive(att: &Attention, rows_k: &[Vec<f32>], rows_v: &[Vec<f32>], q: &[f32]) -> Vec<f32> {
        let hd = att.head_dim;
        let group = att.n_head / att.n_head_kv;
        let mut out = vec![0f32; att.q_dim()];
        for h in 0..att.n_head {
            let kvh = h / group;
            let qh = &q[h * hd..(h + 1) * hd];
            let s: Vec<f64> = rows_k
                .iter()
                .map(|k| {
                    let d: f64 = (0..hd).map(|i| qh[i] as f64 * k[kvh * hd + i] as f64).sum();
                    d / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for i in 0..hd {
                let v: f64 = e
                    .iter()
                    .zip(rows_v)
                    .map(|(w, v)| w * v[kvh * hd + i] as f64)
                    .sum();
                out[h * hd + i] = (v / z) as f32;
            }
        }
        out
    }

    /// Rows added to the prefill sequence (before its last three) so that it takes the
    /// query-tile path (rows × group ≥ TILE_MIN_QUERIES).
    const PREFILL_EXTRA: usize = 10;

    #[test]
    fn paged_attention_matches_naive_for_both_dtypes_and_ragged_batches() {
        // Three query heads per KV head: query tiles of five rows, so the prefill sequence
        // below spans several tiles, the last one partial.
        let att = Attention {
            n_head: 6,
            n_head_kv: 2,
            head_dim: 24,
        };
        let (bs, kvd, qd) = (8, att.kv_dim(), att.q_dim());
        let pool = ThreadPool::new(2);
        let val = |i: usize, salt: f32| ((i as f32) * 0.37 + salt).sin();
        for dtype in [KvDtype::F32, KvDtype::F16] {
            // Two sequences with scattered, non-monotonic block tables.
            let lens = [70usize, 9];
            let tables: [Vec<BlockId>; 2] = [vec![11, 3, 7, 0, 9, 1, 12, 4, 14], vec![6, 2]];
            let mut store = KvStore::new(1, kvd, bs, 16, dtype).unwrap();
            let mut rows = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
            for (s, &len) in lens.iter().enumerate() {
                for p in 0..len {
                    let k: Vec<f32> = (0..kvd).map(|i| val(i * 31 + p, s as f32)).collect();
                    let v: Vec<f32> = (0..kvd).map(|i| val(i * 17 + p, 1.0 + s as f32)).collect();
                    let b = tables[s][p / bs];
                    store.write(0, b, p % bs, &k, &v).unwrap();
                    let round = |x: Vec<f32>| match dtype {
                        KvDtype::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
                        KvDtype::F32 => x,
                    };
                    rows[s].0.push(round(k));
                    rows[s].1.push(round(v));
                }
            }
            // Sequence 0 is a 3-row prefill chunk ending at its last position, sequence 1 a
            // single decode row.
            let seqs = [
                AttnSeq {
                    blocks: &tables[0],
                    pos0: 67 - PREFILL_EXTRA,
                    n_rows: 3 + PREFILL_EXTRA,
                },
                AttnSeq {
                    blocks: &tables[1],
                    pos0: 8,
                    n_rows: 1,
                },
            ];
            let q: Vec<f32> = (0..(4 + PREFILL_EXTRA) * qd)
                .map(|i| val(i, 3.0) * 2.0)
                .collect();
            let mut out = vec![0f32; q.len()];
            att.forward(&pool, store.layer(0).unwrap(), bs, &seqs, &q, &mut out)
                .unwrap();
            let tol = match dtype {
                KvDtype::F32 => 1e-5,
                KvDtype::F16 => 5e-3,
            };
            let mut cases: Vec<(usize, usize, usize)> = (0..3 + PREFILL_EXTRA)
                .map(|r| (0, r, 68 - PREFILL_EXTRA + r))
                .collect();
            cases.push((1, 3 + PREFILL_EXTRA, 9));
            for (s, row, n_pos) in cases {
                let want = naive(
                    &att,
                    &rows[s].0[..n_pos],
                    &rows[s].1[..n_pos],
                    &q[row * qd..(row + 1) * qd],
                );
                let got = &out[row * qd..(row + 1) * qd];
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err < tol, "{dtype:?} row {row}: error {err}");
            }
            // Decode rows over contexts of several blocks, one of them ending on a block
            // boundary.
            for n_pos in [32, 33, 70] {
                let one = [AttnSeq {
                    blocks: &tables[0],
                    pos0: n_pos - 1,
                    n_rows: 1,
                }];
                let q1 = &q[..qd];
                let mut o = vec![0f32; qd];
                att.forward(&pool, store.layer(0).unwrap(), bs, &one, q1, &mut o)
                    .unwrap();
                let want = naive(&att, &rows[0].0[..n_pos], &rows[0].1[..n_pos], q1);
                let err = o
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err < tol, "{dtype:?} decode over {n_pos}: error {err}");
            }
            // A table that does not cover the rows is an error, not a panic.
            let short = [AttnSeq {
                blocks: &tables[1][..1],
                pos0: 8,
                n_rows: 1,
            }];
            let mut o = vec![0f32; qd];
            assert!(att
                .forward(&pool, store.layer(0).unwrap(), bs, &short, &q[..qd], &mut o)
                .is_err());
        }
    }
}
