//! Test helpers: a seeded generator and named tolerances.

#![allow(dead_code)]

use kiln_quant::{KernelChoice, QuantType};

/// SplitMix64: tiny, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Roughly normal (sum of uniforms), scaled; with occasional outliers like real weights.
    pub fn weight(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        let outlier = if self.next_u64().is_multiple_of(97) {
            6.0
        } else {
            1.0
        };
        s * scale * outlier
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.weight(scale)).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// How closely two results must agree.
#[derive(Clone, Copy, Debug)]
pub enum Tol {
    /// Bit-identical.
    Exact,
    /// Same math, different f32 summation order: |a − b| ≤ 1e-5·scale.
    Close,
    /// Rounding of a `bits`-bit quantizer: |a − b| ≤ 2^(1−bits)·scale.
    Quant(u32),
}

impl Tol {
    pub fn bound(self, scale: f64) -> f64 {
        match self {
            Tol::Exact => 0.0,
            Tol::Close => 1e-5 * scale,
            Tol::Quant(bits) => 2f64.powi(1 - bits as i32) * scale,
        }
    }

    /// Panics with `what` when `got` and `want` differ by more than the tolerance.
    pub fn check(self, got: f32, want: f32, scale: f64, what: &str) {
        match self {
            Tol::Exact => assert!(
                got.to_bits() == want.to_bits(),
                "{what}: got {got}, want exactly {want}"
            ),
            _ => {
                let err = (got as f64 - want as f64).abs();
                let bound = self.bound(scale);
                assert!(
                    err <= bound,
                    "{what}: got {got}, want {want} (err {err:.3e} > {self:?} bound {bound:.3e})"
                );
            }
        }
    }
}

/// Every kernel family the running CPU supports (generic first).
pub fn choices() -> Vec<KernelChoice> {
    kiln_tensor::cpu::features().supported_choices()
}

/// Quantizes `rows` rows of `x` into `ty`.
pub fn quantize_matrix(ty: QuantType, x: &[f32], cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).unwrap();
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let mut out = vec![0u8; rb * rows];
    for (src, dst) in x
        .chunks_exact(cols.max(1))
        .zip(out.chunks_exact_mut(rb.max(1)))
    {
        kiln_quant::quantize_row(ty, src, dst).unwrap();
    }
    out
}

/// Dequantizes a row.
pub fn dequant(ty: QuantType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    kiln_quant::dequantize_row(ty, bytes, &mut out).unwrap();
    out
}

/// Σ|a·b| in f64: the natural scale for dot-product rounding errors.
pub fn abs_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum()
}

/// Σ a·b in f64.
pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}
