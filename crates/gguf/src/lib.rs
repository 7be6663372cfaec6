//! kiln-gguf: the GGUF container — reading (memory-mapped, zero-copy, fully validated),
//! writing (v3, atomic), metadata values and ggml type geometry. No math.
//!
//! Layout of a GGUF v2/v3 file (all little-endian): magic `GGUF`, `u32` version, `u64` tensor
//! count, `u64` metadata count; the metadata key/value pairs; the tensor infos (name, dims in
//! ggml order, type, offset relative to the data section); padding to `general.alignment`
//! (default 32); the tensor data.
//!
//! ```
//! use kiln_gguf::{GgmlType, GgufFile, GgufWriter, Value};
//!
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", Value::from("llama"));
//! w.add_tensor("x", GgmlType::F32, &[2], vec![0u8; 8])?;
//! let mut bytes = Vec::new();
//! w.write_to(&mut bytes)?;
//!
//! let f = GgufFile::from_bytes(bytes)?;
//! assert_eq!(f.architecture()?, "llama");
//! let x = f.tensor("x").unwrap();
//! assert_eq!(f.tensor_data(x), &[0u8; 8]);
//! # Ok::<(), kiln_gguf::GgufError>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod file;
mod parse;
mod types;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use file::GgufFile;
pub use types::GgmlType;
pub use value::{Value, ValueType};
pub use writer::GgufWriter;

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Most dimensions a tensor may have (as in ggml).
pub const MAX_DIMS: usize = 4;

/// Deepest nesting of arrays inside a metadata value (an array of scalars is depth 1). Real
/// files use at most 2; the cap bounds the parser's recursion on hostile input.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// One tensor's entry in the file's tensor-info table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (row) dimension. 1 to
    /// [`MAX_DIMS`] entries, all nonzero (in a file that opened successfully).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data relative to the data section ([`GgufFile::data_offset`]).
    pub offset: u64,
    /// Size of the data in bytes: `ggml_type.row_bytes(dims[0]) * dims[1..].product()`.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of `dims`); saturates at `u64::MAX` for a hand-made info
    /// whose product overflows (never for one read from a file).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Number of rows (product of `dims[1..]`), saturating like [`TensorInfo::n_elements`].
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}
