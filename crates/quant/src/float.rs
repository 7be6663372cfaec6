//! The float storage types F32, F16 and BF16 (block size 1): row conversion and reference dots.
//!
//! As in ggml, F16 weights dot f16-rounded activations and BF16 weights dot bf16-rounded ones;
//! the reference dots accumulate in f64 like ggml's scalar `ggml_vec_dot_f16`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Copies `src` into `dst`.
pub fn quantize_row_f32(src: &[f32], dst: &mut [f32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = v;
    }
}

/// Rounds `src` to f16 (nearest even).
pub fn quantize_row_f16(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    dst[..n].convert_from_f32_slice(&src[..n]);
}

/// Rounds `src` to bf16 (nearest even; NaN stays NaN).
pub fn quantize_row_bf16(src: &[f32], dst: &mut [bf16]) {
    let n = src.len().min(dst.len());
    dst[..n].convert_from_f32_slice(&src[..n]);
}

/// Copies `src` into `dst`.
pub fn dequantize_row_f32(src: &[f32], dst: &mut [f32]) {
    quantize_row_f32(src, dst);
}

/// Widens f16 to f32 (exact).
pub fn dequantize_row_f16(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

/// Widens bf16 to f32 (exact).
pub fn dequantize_row_bf16(src: &[bf16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

/// Reference f32 dot (f64 accumulation).
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).map(|(&a, &b)| (a * b) as f64).sum::<f64>() as f32
}

/// Widens `x` and `y` chunk by chunk (exact) and sums the f32 products in f64.
fn widened_dot<T>(x: &[T], y: &[T], widen: impl Fn(&[T], &mut [f32])) -> f32 {
    const CHUNK: usize = 64;
    let mut a = [0.0f32; CHUNK];
    let mut b = [0.0f32; CHUNK];
    let mut sum = 0.0f64;
    for (xc, yc) in x.chunks(CHUNK).zip(y.chunks(CHUNK)) {
        let n = xc.len().min(yc.len());
        widen(&xc[..n], &mut a[..n]);
        widen(&yc[..n], &mut b[..n]);
        sum += a[..n]
            .iter()
            .zip(&b[..n])
            .map(|(&p, &q)| (p * q) as f64)
            .sum::<f64>();
    }
    sum as f32
}

/// Reference f16 dot: products in f32, accumulated in f64.
pub fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    widened_dot(x, y, |s, d| s.convert_to_f32_slice(d))
}

/// Reference bf16 dot: products in f32, accumulated in f64.
pub fn vec_dot_bf16(x: &[bf16], y: &[bf16]) -> f32 {
    widened_dot(x, y, |s, d| s.convert_to_f32_slice(d))
}
