//! Integration tests for kiln-quant: formats, kernels (every supported family vs the scalar
//! reference) and the threaded matmul.

mod common;
mod formats;
mod kernels;
mod matmul;
mod packed;
mod search;
