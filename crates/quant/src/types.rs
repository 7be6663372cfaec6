//! `QuantType`: the storage types kiln reads and writes, their ggml ids, names and block geometry,
//! plus the type-dispatched row quantize/dequantize entry points.

use crate::common::{blocks, blocks_mut_apply};
use crate::error::QuantError;
use crate::{float, q4_0, q4_1, q4_k, q6_k, q8_0};

/// A weight storage type with ggml's byte layout.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q4_K,
    Q6_K,
}

impl QuantType {
    /// Every supported type, in ggml id order.
    pub const ALL: [QuantType; 8] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
        QuantType::BF16,
    ];

    /// The type for a ggml `ggml_type` id, or `None` for ids kiln does not support.
    pub fn from_ggml_id(id: u32) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// ggml's `ggml_type` id.
    pub fn ggml_id(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q8_0 => 8,
            QuantType::Q4_K => 12,
            QuantType::Q6_K => 14,
            QuantType::BF16 => 30,
        }
    }

    /// ggml's type name (`"q4_K"`, `"bf16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "f32",
            QuantType::F16 => "f16",
            QuantType::BF16 => "bf16",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q4_K => "q4_K",
            QuantType::Q6_K => "q6_K",
        }
    }

    /// Parses a ggml type name, ignoring ASCII case.
    pub fn from_name(s: &str) -> Option<QuantType> {
        QuantType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// Elements per block (1 for the float types).
    pub fn block_size(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q8_0 => q8_0::QK8_0,
            QuantType::Q4_0 => q4_0::QK4_0,
            QuantType::Q4_1 => q4_1::QK4_1,
            QuantType::Q4_K | QuantType::Q6_K => crate::q8_k::QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q8_0 => std::mem::size_of::<q8_0::BlockQ8_0>(),
            QuantType::Q4_0 => std::mem::size_of::<q4_0::BlockQ4_0>(),
            QuantType::Q4_1 => std::mem::size_of::<q4_1::BlockQ4_1>(),
            QuantType::Q4_K => std::mem::size_of::<q4_k::BlockQ4_K>(),
            QuantType::Q6_K => std::mem::size_of::<q6_k::BlockQ6_K>(),
        }
    }

    /// Bytes of one row of `n` elements; an error when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize, QuantError> {
        let block = self.block_size();
        if !n.is_multiple_of(block) {
            return Err(QuantError::NotBlockMultiple { ty: self, n, block });
        }
        (n / block)
            .checked_mul(self.block_bytes())
            .ok_or(QuantError::Overflow {
                ty: self,
                rows: 1,
                cols: n,
            })
    }

    /// Whether this is a block-quantized type (not F32/F16/BF16).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks that `bytes` holds exactly `n` elements of `ty` (`n = values.len()`).
fn check_row(ty: QuantType, n: usize, bytes: usize, what: &'static str) -> Result<(), QuantError> {
    let expected = ty.row_bytes(n)?;
    if bytes != expected {
        return Err(QuantError::Length {
            ty,
            what,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Decodes `src` (ggml layout of `ty`) into `dst`; `dst.len()` is the element count and must be a
/// whole number of blocks, `src.len()` must be exactly `ty.row_bytes(dst.len())`.
/// `src` may be at any address (GGUF data is used in place).
pub fn dequantize_row(ty: QuantType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_row(ty, dst.len(), src.len(), "source")?;
    match ty {
        QuantType::F32 => float::dequantize_row_f32(&blocks(src), dst),
        QuantType::F16 => float::dequantize_row_f16(&blocks(src), dst),
        QuantType::BF16 => float::dequantize_row_bf16(&blocks(src), dst),
        QuantType::Q8_0 => q8_0::dequantize_row_q8_0(&blocks(src), dst),
        QuantType::Q4_0 => q4_0::dequantize_row_q4_0(&blocks(src), dst),
        QuantType::Q4_1 => q4_1::dequantize_row_q4_1(&blocks(src), dst),
        QuantType::Q4_K => q4_k::dequantize_row_q4_K(&blocks(src), dst),
        QuantType::Q6_K => q6_k::dequantize_row_q6_K(&blocks(src), dst),
    }
    Ok(())
}

/// Encodes `src` into `dst` in `ty`'s ggml layout with ggml's reference quantizers
/// (round-to-nearest; ggml's reference scale search for Q4_K/Q6_K). `src.len()` must be a whole
/// number of blocks and `dst.len()` exactly `ty.row_bytes(src.len())`.
pub fn quantize_row(ty: QuantType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_row(ty, src.len(), dst.len(), "destination")?;
    match ty {
        QuantType::F32 => blocks_mut_apply(dst, |b| float::quantize_row_f32(src, b)),
        QuantType::F16 => blocks_mut_apply(dst, |b| float::quantize_row_f16(src, b)),
        QuantType::BF16 => blocks_mut_apply(dst, |b| float::quantize_row_bf16(src, b)),
        QuantType::Q8_0 => blocks_mut_apply(dst, |b| q8_0::quantize_row_q8_0_ref(src, b)),
        QuantType::Q4_0 => blocks_mut_apply(dst, |b| q4_0::quantize_row_q4_0_ref(src, b)),
        QuantType::Q4_1 => blocks_mut_apply(dst, |b| q4_1::quantize_row_q4_1_ref(src, b)),
        QuantType::Q4_K => blocks_mut_apply(dst, |b| q4_k::quantize_row_q4_K_ref(src, b)),
        QuantType::Q6_K => blocks_mut_apply(dst, |b| q6_k::quantize_row_q6_K_ref(src, b)),
    }
    Ok(())
}
