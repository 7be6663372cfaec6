//! `QuantError`: every way a quantization call can reject its input, with the sizes involved.

use crate::act::ActType;
use crate::types::QuantType;
use kiln_tensor::cpu::KernelChoice;

/// Errors from the quantization API. Variants carry the type and the lengths involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// A row length is not a whole number of blocks.
    #[error("{ty:?}: {n} elements is not a multiple of the block size {block}")]
    NotBlockMultiple {
        ty: QuantType,
        n: usize,
        block: usize,
    },
    /// A buffer has the wrong length for the elements it should hold.
    #[error("{ty:?}: {what} has {got} bytes/elements, expected {expected}")]
    Length {
        ty: QuantType,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A byte count does not fit in `usize`.
    #[error("{ty:?}: size of {rows} x {cols} overflows")]
    Overflow {
        ty: QuantType,
        rows: usize,
        cols: usize,
    },
    /// Activations were prepared for another weight type than the one they are used with.
    #[error("weights of type {weight:?} need {expected:?} activations, got {got:?}")]
    ActivationType {
        weight: QuantType,
        expected: ActType,
        got: ActType,
    },
    /// Activation row length and weight row length differ.
    #[error("{ty:?}: weight rows have {weight_cols} columns, activations have {act_cols}")]
    Cols {
        ty: QuantType,
        weight_cols: usize,
        act_cols: usize,
    },
    /// The output buffer does not hold `act_rows * weight_rows` values.
    #[error("{ty:?}: output has {got} values, expected {act_rows} x {weight_rows}")]
    Output {
        ty: QuantType,
        act_rows: usize,
        weight_rows: usize,
        got: usize,
    },
    /// A kernel family was requested that this CPU cannot run.
    #[error("kernel family {choice:?} is not supported by this CPU")]
    UnsupportedKernel { choice: KernelChoice },
}
