//! Single-thread, allocation-free INT8 matrix-vector product for the real-time nets: Q8_0
//! weight rows times one f32 input, quantized into a caller-owned Q8_0 scratch row.
//!
//! This is the decode path of `matmul` without the thread pool and without `ActBuf`'s
//! growable storage, so a real-time forward pass never allocates, locks or wakes a thread.
//! It reuses the Q8_0 kernels of every family (scalar reference, AVX2, AVX-512, VNNI).

use crate::act::ActType;
use crate::dispatch;
use crate::error::QuantError;
use crate::types::QuantType;
use kiln_tensor::cpu::KernelChoice;

/// Bytes of the Q8_0 scratch row `q8_0_matvec` needs for `cols` inputs.
pub fn q8_0_scratch_bytes(cols: usize) -> usize {
    ActType::Q8_0.row_bytes(cols)
}

/// `y[r] = Σ_i W[r][i] · x[i]` for Q8_0 weights `w` (`y.len()` rows of `cols` values, rows back
/// to back, `cols` a multiple of 32), with the process-wide kernel family. `xq` is scratch of
/// [`q8_0_scratch_bytes`]`(cols)` bytes. Errors only on mismatched lengths.
pub fn q8_0_matvec(
    w: &[u8],
    cols: usize,
    x: &[f32],
    xq: &mut [u8],
    y: &mut [f32],
) -> Result<(), QuantError> {
    run(kiln_tensor::cpu::kernel_choice(), w, cols, x, xq, y)
}

/// [`q8_0_matvec`] with an explicit kernel family (tests compare families); an error if this
/// CPU cannot run it.
pub fn q8_0_matvec_with(
    choice: KernelChoice,
    w: &[u8],
    cols: usize,
    x: &[f32],
    xq: &mut [u8],
    y: &mut [f32],
) -> Result<(), QuantError> {
    dispatch::check_choice(choice)?;
    run(choice, w, cols, x, xq, y)
}

fn run(
    choice: KernelChoice,
    w: &[u8],
    cols: usize,
    x: &[f32],
    xq: &mut [u8],
    y: &mut [f32],
) -> Result<(), QuantError> {
    let ty = QuantType::Q8_0;
    let rb = ty.row_bytes(cols)?;
    let expect = |what, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(QuantError::Length {
                ty,
                what,
                expected,
                got,
            })
        }
    };
    expect("weight matrix", rb.saturating_mul(y.len()), w.len())?;
    expect("input", cols, x.len())?;
    expect("scratch row", q8_0_scratch_bytes(cols), xq.len())?;
    let quantize = dispatch::act_quant_fn(choice, ActType::Q8_0);
    // SAFETY: `choice` is supported (kernel_choice() or check_choice); `xq` holds exactly the
    // Q8_0 bytes of `cols` values, which `x` holds.
    unsafe { quantize(x, xq) };
    if let Some(wrows) = dispatch::dot_wrows_fn(choice, ty) {
        let mut r = 0;
        while r < y.len() {
            let g = 4.min(y.len() - r);
            // SAFETY: as above; `w[r*rb..]` holds `g` rows of `rb` bytes, `xq` one row.
            unsafe { wrows(cols, &w[r * rb..(r + g) * rb], rb, xq, &mut y[r..r + g]) };
            r += g;
        }
    } else {
        let dot = dispatch::dot_fn(choice, ty);
        for (r, o) in y.iter_mut().enumerate() {
            // SAFETY: as above; each slice holds exactly `cols` elements.
            *o = unsafe { dot(cols, &w[r * rb..(r + 1) * rb], xq) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8_0::{quantize_row_q8_0_ref, BlockQ8_0};

    fn seeded(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_family_matches_the_reference_and_f32() {
        for rows in [0, 1, 3, 4, 5, 9] {
            for cols in [0, 32, 64, 96, 256] {
                let wf = seeded(rows * cols, (rows * 1000 + cols) as u64);
                let mut blocks = vec![BlockQ8_0::default(); rows * cols / 32];
                quantize_row_q8_0_ref(&wf, &mut blocks);
                let w: Vec<u8> = bytemuck::cast_slice(&blocks).to_vec();
                let x = seeded(cols, 5);
                let mut xq = vec![0u8; q8_0_scratch_bytes(cols)];
                let mut want = vec![0.0; rows];
                q8_0_matvec_with(KernelChoice::Generic, &w, cols, &x, &mut xq, &mut want).unwrap();
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|i| wf[r * cols + i] * x[i]).sum();
                    // Two 8-bit roundings: error well under 2% of the row's magnitude.
                    assert!((want[r] - exact).abs() <= 0.02 * (cols as f32).sqrt() + 1e-6);
                }
                for choice in kiln_tensor::cpu::features().supported_choices() {
                    let mut y = vec![0.0; rows];
                    q8_0_matvec_with(choice, &w, cols, &x, &mut xq, &mut y).unwrap();
                    for r in 0..rows {
                        assert!(
                            (y[r] - want[r]).abs() <= 1e-4 * (1.0 + want[r].abs()),
                            "{choice:?} rows={rows} cols={cols}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let w = vec![0u8; 34];
        let mut xq = vec![0u8; 34];
        let mut y = [0.0];
        assert!(q8_0_matvec(&w, 32, &[0.0; 31], &mut xq, &mut y).is_err());
        assert!(q8_0_matvec(&w, 33, &[0.0; 33], &mut xq, &mut y).is_err());
        assert!(q8_0_matvec(&w, 32, &[0.0; 32], &mut xq, &mut [0.0; 2]).is_err());
        assert!(q8_0_matvec(&w, 32, &[0.0; 32], &mut xq, &mut y).is_ok());
    }
}
