//! kiln-quant: ggml-compatible block formats, quantize/dequantize, and quantized dot/matmul kernels.
//!
//! Byte layouts match ggml exactly so GGUF tensors are used in place. Every format keeps a scalar
//! reference (`vec_dot_*`, `quantize_row_*_ref`, `dequantize_row_*`); SIMD variants for AVX2 and
//! AVX-512 (VNNI where present) are chosen at run time and tested against that reference.
//!
//! The weight/activation pairings follow ggml so results match llama.cpp: Q4_0 and Q8_0 weights
//! dot Q8_0 activations, Q4_1 dots Q8_1, Q4_K and Q6_K dot Q8_K, F16 dots f16-rounded
//! activations, BF16 dots bf16, F32 dots f32.
//!
//! Kernel families per weight type (`KernelChoice`; `KILN_KERNELS=generic` forces the reference):
//!
//! | type | generic | avx2 | avx512 | avx512vnni | multi-row (prefill) |
//! |---|---|---|---|---|---|
//! | Q4_0, Q4_1, Q8_0 | ✓ | ✓ | ✓ | ✓ (`vpdpbusd`) | avx2, avx512, avx512vnni |
//! | Q4_K, Q6_K | ✓ | ✓ | ✓ | ✓ (`vpdpwssd`) | — |
//! | F32, F16, BF16 | ✓ | ✓ | ✓ | (= avx512) | — |
//!
//! Activation quantizers (Q8_0, Q8_1, Q8_K, f16) have AVX2 and AVX-512 versions that produce
//! exactly the reference bytes. Batched activation rows give bit-identical results to one row
//! at a time in every family, so decode and prefill agree exactly.

mod act;
mod common;
mod dispatch;
mod error;
pub mod float;
mod matmul;
mod packed;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
mod q8_matvec;
mod quality;
mod search;
mod types;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use act::{dequantize_act_row, ActBuf, ActType};
pub use common::nearest_int;
pub use error::QuantError;
pub use kiln_tensor::cpu::KernelChoice;
pub use matmul::{matmul, matmul_with, QMatrix, ROW_CHUNK};
pub use packed::{glu_fits, matmul_packed, matmul_packed_glu, PackedMatrix, GLU_UNIT, GROUP_ROWS};
pub use q8_matvec::{q8_0_matvec, q8_0_matvec_with, q8_0_scratch_bytes};
pub use quality::ErrorStats;
pub use search::{clip_threshold, quantize_row_searched, SearchOptions};
pub use types::{dequantize_row, quantize_row, QuantType};

/// Dot product of one weight row (`w`, `ty` layout, `n` elements) with one activation row
/// already in `ty`'s activation format (`a`), using kernel family `choice`.
/// Mostly for tests and benches; `matmul` is the production entry point.
pub fn vec_dot(
    choice: KernelChoice,
    ty: QuantType,
    n: usize,
    w: &[u8],
    a: &[u8],
) -> Result<f32, QuantError> {
    dispatch::vec_dot_checked(choice, ty, n, w, a)
}
