//! kiln-tensor: CPU feature detection, the worker thread pool and f32/f16 kernels shared by every crate.
pub mod alloc_count;
pub mod bytes;
pub mod cpu;
pub mod matvec;
pub mod membench;
pub mod ops;
pub mod pool;
pub mod rnn_cell;
mod simd512;
pub mod stream;

pub use bytes::{ByteSource, SharedBytes};
pub use cpu::{features, CpuFeatures, KernelChoice};
pub use pool::ThreadPool;
