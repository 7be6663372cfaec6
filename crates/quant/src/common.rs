//! Shared helpers: viewing byte buffers as block slices, ggml's rounding, f16 conversions.

use bytemuck::Pod;
use std::borrow::Cow;

/// Views `bytes` as a slice of `B` without copying when it is suitably aligned, else copies.
/// Trailing bytes that do not fill a whole `B` are ignored (callers check lengths first).
pub(crate) fn blocks<B: Pod>(bytes: &[u8]) -> Cow<'_, [B]> {
    let size = std::mem::size_of::<B>();
    let whole = bytes.len().checked_div(size).unwrap_or(0) * size;
    let bytes = &bytes[..whole];
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(copy_to_vec(bytes)),
    }
}

/// Copies whole `B`s out of `bytes` into an aligned vector.
fn copy_to_vec<B: Pod>(bytes: &[u8]) -> Vec<B> {
    let n = bytes.len() / std::mem::size_of::<B>().max(1);
    let mut v = vec![B::zeroed(); n];
    let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut v[..]);
    let len = dst.len();
    dst.copy_from_slice(&bytes[..len]);
    v
}

/// Runs `f` on `dst` viewed as a mutable slice of `B` (through a temporary copy when `dst` is
/// misaligned for `B`). Trailing bytes that do not fill a whole `B` are left alone.
pub(crate) fn blocks_mut_apply<B: Pod>(dst: &mut [u8], f: impl FnOnce(&mut [B])) {
    let size = std::mem::size_of::<B>();
    let whole = dst.len().checked_div(size).unwrap_or(0) * size;
    let dst = &mut dst[..whole];
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(s) => f(s),
        Err(_) => {
            let mut tmp: Vec<B> = copy_to_vec(dst);
            f(&mut tmp);
            dst.copy_from_slice(bytemuck::cast_slice(&tmp));
        }
    }
}

/// ggml's `nearest_int`: round half to even via the 1.5·2²³ trick. Exact for |x| < 2²²; other
/// inputs (never produced by the quantizers for finite data) give an unspecified value, no panic.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `roundf` (half away from zero), saturated to `i8` as the quantizers store it.
#[inline]
pub(crate) fn round_i8(x: f32) -> i8 {
    x.round() as i8
}

/// f16 bits to f32 (exact).
#[inline]
pub(crate) fn f16_to_f32(h: half::f16) -> f32 {
    h.to_f32()
}

/// f32 to f16, round to nearest even (what F16C and ggml's converters do).
#[inline]
pub(crate) fn f32_to_f16(x: f32) -> half::f16 {
    half::f16::from_f32(x)
}
