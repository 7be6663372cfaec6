//! x86-64 SIMD kernels (AVX2+FMA+F16C, AVX-512 F/BW/VL, AVX-512 VNNI), selected at run time.
//!
//! Every kernel is an `unsafe fn` with `#[target_feature]`; the dispatcher hands them out only
//! after `check_choice` confirmed the CPU supports the family. Kernels read blocks through raw
//! pointers, but only within the whole blocks both input slices hold.

mod act;
mod avx2;
mod avx2_k;
mod avx512;
mod avx512_k;
pub(crate) mod packed;
mod rows;

use crate::act::ActType;
use crate::dispatch::{ActQuantFn, DotFn, DotRowsFn, DotWRowsFn};
use crate::types::QuantType;
use kiln_tensor::cpu::KernelChoice;

/// The SIMD dot kernel for `ty` in family `choice`, if there is one.
pub(crate) fn dot_fn(choice: KernelChoice, ty: QuantType) -> Option<DotFn> {
    use QuantType as T;
    let f: DotFn = match (choice, ty) {
        (KernelChoice::Generic, _) => return None,
        (KernelChoice::Avx2, T::F32) => avx2::dot_f32,
        (KernelChoice::Avx2, T::F16) => avx2::dot_f16,
        (KernelChoice::Avx2, T::BF16) => avx2::dot_bf16,
        (KernelChoice::Avx2, T::Q8_0) => avx2::dot_q8_0,
        (KernelChoice::Avx2, T::Q4_0) => avx2::dot_q4_0,
        (KernelChoice::Avx2, T::Q4_1) => avx2::dot_q4_1,
        (KernelChoice::Avx2, T::Q4_K) => avx2_k::dot_q4_k,
        (KernelChoice::Avx2, T::Q6_K) => avx2_k::dot_q6_k,
        (KernelChoice::Avx512 | KernelChoice::Avx512Vnni, T::F32) => avx512::dot_f32,
        (KernelChoice::Avx512 | KernelChoice::Avx512Vnni, T::F16) => avx512::dot_f16,
        (KernelChoice::Avx512 | KernelChoice::Avx512Vnni, T::BF16) => avx512::dot_bf16,
        (KernelChoice::Avx512, T::Q8_0) => avx512::dot_q8_0,
        (KernelChoice::Avx512, T::Q4_0) => avx512::dot_q4_0,
        (KernelChoice::Avx512, T::Q4_1) => avx512::dot_q4_1,
        (KernelChoice::Avx512, T::Q4_K) => avx512_k::dot_q4_k,
        (KernelChoice::Avx512, T::Q6_K) => avx512_k::dot_q6_k,
        (KernelChoice::Avx512Vnni, T::Q8_0) => avx512::dot_q8_0_vnni,
        (KernelChoice::Avx512Vnni, T::Q4_0) => avx512::dot_q4_0_vnni,
        (KernelChoice::Avx512Vnni, T::Q4_1) => avx512::dot_q4_1_vnni,
        (KernelChoice::Avx512Vnni, T::Q4_K) => avx512_k::dot_q4_k_vnni,
        (KernelChoice::Avx512Vnni, T::Q6_K) => avx512_k::dot_q6_k_vnni,
    };
    Some(f)
}

/// The multi-row SIMD kernel for `ty` in family `choice`, if there is one.
pub(crate) fn dot_rows_fn(choice: KernelChoice, ty: QuantType) -> Option<DotRowsFn> {
    use QuantType as T;
    let f: DotRowsFn = match (choice, ty) {
        (KernelChoice::Avx2, T::Q4_0) => rows::rows_q4_0_avx2,
        (KernelChoice::Avx2, T::Q4_1) => rows::rows_q4_1_avx2,
        (KernelChoice::Avx2, T::Q8_0) => rows::rows_q8_0_avx2,
        (KernelChoice::Avx512, T::Q4_0) => rows::rows_q4_0_512,
        (KernelChoice::Avx512, T::Q4_1) => rows::rows_q4_1_512,
        (KernelChoice::Avx512, T::Q8_0) => rows::rows_q8_0_512,
        (KernelChoice::Avx512Vnni, T::Q4_0) => rows::rows_q4_0_512_vnni,
        (KernelChoice::Avx512Vnni, T::Q4_1) => rows::rows_q4_1_512_vnni,
        (KernelChoice::Avx512Vnni, T::Q8_0) => rows::rows_q8_0_512_vnni,
        _ => return None,
    };
    Some(f)
}

/// The multi-weight-row (decode) SIMD kernel for `ty` in family `choice`, if there is one.
pub(crate) fn dot_wrows_fn(choice: KernelChoice, ty: QuantType) -> Option<DotWRowsFn> {
    use QuantType as T;
    let f: DotWRowsFn = match (choice, ty) {
        (KernelChoice::Avx512, T::Q4_0) => rows::wrows_q4_0_512,
        (KernelChoice::Avx512, T::Q4_1) => rows::wrows_q4_1_512,
        (KernelChoice::Avx512, T::Q8_0) => rows::wrows_q8_0_512,
        (KernelChoice::Avx512Vnni, T::Q4_0) => rows::wrows_q4_0_512_vnni,
        (KernelChoice::Avx512Vnni, T::Q4_1) => rows::wrows_q4_1_512_vnni,
        (KernelChoice::Avx512Vnni, T::Q8_0) => rows::wrows_q8_0_512_vnni,
        _ => return None,
    };
    Some(f)
}

/// The SIMD activation quantizer for `ty` in family `choice`, if there is one.
pub(crate) fn act_quant_fn(choice: KernelChoice, ty: ActType) -> Option<ActQuantFn> {
    let f: ActQuantFn = match (choice, ty) {
        (KernelChoice::Generic, _) => return None,
        (_, ActType::F32 | ActType::BF16) => return None,
        (KernelChoice::Avx2, ActType::F16) => act::quantize_f16_avx2,
        (KernelChoice::Avx2, ActType::Q8_0) => act::quantize_q8_0_avx2,
        (KernelChoice::Avx2, ActType::Q8_1) => act::quantize_q8_1_avx2,
        (KernelChoice::Avx2, ActType::Q8_K) => act::quantize_q8_k_avx2,
        (_, ActType::F16) => act::quantize_f16_avx512,
        (_, ActType::Q8_0) => act::quantize_q8_0_avx512,
        (_, ActType::Q8_1) => act::quantize_q8_1_avx512,
        (_, ActType::Q8_K) => act::quantize_q8_k_avx512,
    };
    Some(f)
}

/// Number of whole blocks both slices hold, capped at `n / block` elements: the most a kernel
/// may touch.
#[inline(always)]
fn whole_blocks(
    n: usize,
    block: usize,
    w: &[u8],
    w_bytes: usize,
    a: &[u8],
    a_bytes: usize,
) -> usize {
    (n / block).min(w.len() / w_bytes).min(a.len() / a_bytes)
}

/// Reads a little-endian f16 at `p` and widens it (F16C).
///
/// # Safety
/// `p` must be valid for reading 2 bytes; the CPU must support F16C.
#[inline(always)]
unsafe fn load_f16(p: *const u8) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 2 readable bytes at `p`.
    let bits = unsafe { std::ptr::read_unaligned(p as *const u16) };
    // SAFETY: F16C is enabled in every caller (all SIMD families require it).
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))) }
}

/// Reads a little-endian f32 at `p`.
///
/// # Safety
/// `p` must be valid for reading 4 bytes.
#[inline(always)]
unsafe fn load_f32(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    unsafe { std::ptr::read_unaligned(p as *const f32) }
}
