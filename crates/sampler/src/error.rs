//! The sampler's error type: parameter values that no sampling chain can honour.

/// Why a [`SamplingParams`](crate::SamplingParams) value was rejected.
///
/// Sampling itself never fails (odd logits have documented fallbacks); only building a
/// [`Sampler`](crate::Sampler) from invalid parameters does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// A parameter is NaN, infinite, or outside its allowed range.
    #[error("invalid sampling parameter `{name}` = {value}: expected {expected}")]
    InvalidParameter {
        /// The field name in [`SamplingParams`](crate::SamplingParams), e.g. `"top_p"`.
        name: &'static str,
        /// The rejected value.
        value: f32,
        /// The allowed range, in words, e.g. `"a finite value in (0, 1]"`.
        expected: &'static str,
    },
}
