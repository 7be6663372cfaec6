//! Run-time kernel selection: maps (kernel family, type) to the dot and activation-quantization
//! functions, checking once that the CPU supports the family.

use crate::act::ActType;
use crate::common::{blocks, blocks_mut_apply};
use crate::error::QuantError;
use crate::types::QuantType;
use crate::{float, q4_0, q4_1, q4_k, q6_k, q8_0, q8_1, q8_k};
use kiln_tensor::cpu::KernelChoice;

/// Dot of one weight row with one activation row of `n` elements. Callers guarantee that the
/// CPU supports the kernel's family; kernels only read within the slices they are given and
/// compute over the whole blocks both slices hold.
pub(crate) type DotFn = unsafe fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// Dot of one weight row with `out.len()` (1–4) activation rows stored `stride` bytes apart in
/// `a`, written to `out`. Same requirements as [`DotFn`].
pub(crate) type DotRowsFn = unsafe fn(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]);

/// Dot of `out.len()` (1–4) weight rows stored `row_bytes` apart in `w` with one activation row
/// `a`, written to `out`. Same requirements as [`DotFn`].
pub(crate) type DotWRowsFn =
    unsafe fn(n: usize, w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]);

/// Quantizes one activation row into its format; `dst` holds exactly the row's bytes.
pub(crate) type ActQuantFn = unsafe fn(src: &[f32], dst: &mut [u8]);

/// An error unless this CPU runs kernel family `choice`.
pub(crate) fn check_choice(choice: KernelChoice) -> Result<(), QuantError> {
    if kiln_tensor::cpu::features().supports(choice) {
        Ok(())
    } else {
        Err(QuantError::UnsupportedKernel { choice })
    }
}

macro_rules! generic_dot {
    ($name:ident, $wb:ty, $ab:ty, $f:path) => {
        fn $name(_n: usize, w: &[u8], a: &[u8]) -> f32 {
            $f(&blocks::<$wb>(w), &blocks::<$ab>(a))
        }
    };
}

generic_dot!(dot_f32, f32, f32, float::vec_dot_f32);
generic_dot!(dot_f16, half::f16, half::f16, float::vec_dot_f16);
generic_dot!(dot_bf16, half::bf16, half::bf16, float::vec_dot_bf16);
generic_dot!(
    dot_q8_0,
    q8_0::BlockQ8_0,
    q8_0::BlockQ8_0,
    q8_0::vec_dot_q8_0_q8_0
);
generic_dot!(
    dot_q4_0,
    q4_0::BlockQ4_0,
    q8_0::BlockQ8_0,
    q4_0::vec_dot_q4_0_q8_0
);
generic_dot!(
    dot_q4_1,
    q4_1::BlockQ4_1,
    q8_1::BlockQ8_1,
    q4_1::vec_dot_q4_1_q8_1
);
generic_dot!(
    dot_q4_k,
    q4_k::BlockQ4_K,
    q8_k::BlockQ8_K,
    q4_k::vec_dot_q4_K_q8_K
);
generic_dot!(
    dot_q6_k,
    q6_k::BlockQ6_K,
    q8_k::BlockQ8_K,
    q6_k::vec_dot_q6_K_q8_K
);

/// The scalar reference dot for weights of type `ty`.
pub(crate) fn generic_dot_fn(ty: QuantType) -> DotFn {
    match ty {
        QuantType::F32 => dot_f32,
        QuantType::F16 => dot_f16,
        QuantType::BF16 => dot_bf16,
        QuantType::Q8_0 => dot_q8_0,
        QuantType::Q4_0 => dot_q4_0,
        QuantType::Q4_1 => dot_q4_1,
        QuantType::Q4_K => dot_q4_k,
        QuantType::Q6_K => dot_q6_k,
    }
}

/// The dot kernel for weights of type `ty` in family `choice`.
pub(crate) fn dot_fn(choice: KernelChoice, ty: QuantType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = crate::x86::dot_fn(choice, ty) {
        return f;
    }
    let _ = choice;
    generic_dot_fn(ty)
}

/// The multi-row kernel for weights of type `ty` in family `choice`, where one exists (the
/// matmul falls back to one dot per activation row otherwise).
pub(crate) fn dot_rows_fn(choice: KernelChoice, ty: QuantType) -> Option<DotRowsFn> {
    #[cfg(target_arch = "x86_64")]
    {
        crate::x86::dot_rows_fn(choice, ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (choice, ty);
        None
    }
}

/// The multi-weight-row (decode) kernel for `ty` in family `choice`, where one exists.
pub(crate) fn dot_wrows_fn(choice: KernelChoice, ty: QuantType) -> Option<DotWRowsFn> {
    #[cfg(target_arch = "x86_64")]
    {
        crate::x86::dot_wrows_fn(choice, ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (choice, ty);
        None
    }
}

fn act_f32(src: &[f32], dst: &mut [u8]) {
    blocks_mut_apply(dst, |b| float::quantize_row_f32(src, b));
}
fn act_f16(src: &[f32], dst: &mut [u8]) {
    blocks_mut_apply(dst, |b| float::quantize_row_f16(src, b));
}
fn act_bf16(src: &[f32], dst: &mut [u8]) {
    blocks_mut_apply(dst, |b| float::quantize_row_bf16(src, b));
}
fn act_q8_0(src: &[f32], dst: &mut [u8]) {
    blocks_mut_apply(dst, |b| q8_0::quantize_row_q8_0_ref(src, b));
}
fn act_q8_1(src: &[f32], dst: &mut [u8]) {
    blocks_mut_apply(dst, |b| q8_1::quantize_row_q8_1_ref(src, b));
}
fn act_q8_k(src: &[f32], dst: &mut [u8]) {
    blocks_mut_apply(dst, |b| q8_k::quantize_row_q8_K_ref(src, b));
}

/// The scalar reference activation quantizer for format `ty`.
pub(crate) fn generic_act_quant_fn(ty: ActType) -> ActQuantFn {
    match ty {
        ActType::F32 => act_f32,
        ActType::F16 => act_f16,
        ActType::BF16 => act_bf16,
        ActType::Q8_0 => act_q8_0,
        ActType::Q8_1 => act_q8_1,
        ActType::Q8_K => act_q8_k,
    }
}

/// The activation quantizer for format `ty` in family `choice` (same bytes in every family).
pub(crate) fn act_quant_fn(choice: KernelChoice, ty: ActType) -> ActQuantFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = crate::x86::act_quant_fn(choice, ty) {
        return f;
    }
    let _ = choice;
    generic_act_quant_fn(ty)
}

/// Validated single dot product (see [`crate::vec_dot`]).
pub(crate) fn vec_dot_checked(
    choice: KernelChoice,
    ty: QuantType,
    n: usize,
    w: &[u8],
    a: &[u8],
) -> Result<f32, QuantError> {
    check_choice(choice)?;
    let wb = ty.row_bytes(n)?;
    if w.len() != wb {
        return Err(QuantError::Length {
            ty,
            what: "weight row",
            expected: wb,
            got: w.len(),
        });
    }
    let act = ActType::for_weight(ty);
    let ab = act.checked_row_bytes(n).ok_or(QuantError::Overflow {
        ty,
        rows: 1,
        cols: n,
    })?;
    if a.len() != ab {
        return Err(QuantError::Length {
            ty,
            what: "activation row",
            expected: ab,
            got: a.len(),
        });
    }
    let f = dot_fn(choice, ty);
    // SAFETY: `check_choice` verified CPU support; both slices hold exactly `n` elements.
    Ok(unsafe { f(n, w, a) })
}
