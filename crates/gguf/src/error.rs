//! The crate's error type: every way reading or writing a GGUF file can fail, with the context
//! (key, tensor name, byte offset, sizes) needed to find the problem in the file.

use std::path::PathBuf;

/// Result alias used throughout `kiln-gguf`.
pub type Result<T> = std::result::Result<T, GgufError>;

/// Everything that can go wrong reading or writing GGUF.
///
/// Offsets are absolute byte positions in the file unless the field name says otherwise
/// (`offset` on tensor variants is relative to the data section, as in the file itself).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// An operating-system I/O error (opening, mapping, writing, renaming).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path where there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the bytes `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },

    /// The version field names a GGUF version this crate does not read (only 2 and 3 are read).
    #[error("unsupported GGUF version {version} (only versions 2 and 3 are supported)")]
    UnsupportedVersion {
        /// The version number found.
        version: u32,
    },

    /// The version field reads as 2 or 3 only when byte-swapped: a big-endian file.
    #[error(
        "big-endian GGUF file (version field {raw:#010x}); only little-endian files are supported"
    )]
    BigEndian {
        /// The raw version field as read little-endian.
        raw: u32,
    },

    /// The file ends before a fixed-size field is complete.
    #[error("file truncated while reading {what} at offset {offset}: need {needed} bytes, {available} left")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where the read started.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file at `offset`.
        available: u64,
    },

    /// A length or count (string length, array count, tensor or key count) is larger than the
    /// rest of the file could possibly hold.
    #[error("{what} at offset {offset} declares {count} items of at least {min_item_bytes} bytes, but only {available} bytes are left")]
    LengthTooLarge {
        /// What the length describes.
        what: String,
        /// Where the length field starts.
        offset: u64,
        /// The declared count.
        count: u64,
        /// The smallest number of bytes one item can occupy.
        min_item_bytes: u64,
        /// Bytes left in the file after the length field.
        available: u64,
    },

    /// A string (key, value or tensor name) is not valid UTF-8.
    #[error("invalid UTF-8 in {what} at offset {offset}")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Where the string's bytes start.
        offset: u64,
    },

    /// A metadata value has a type id outside 0..=12.
    #[error("unknown metadata value type {type_id} for key `{key}` at offset {offset}")]
    UnknownValueType {
        /// The key whose value (or array element type) is bad.
        key: String,
        /// The type id found.
        type_id: u32,
        /// Where the type id starts.
        offset: u64,
    },

    /// A bool value is neither 0 nor 1.
    #[error("invalid bool byte {byte} for key `{key}` at offset {offset}")]
    InvalidBool {
        /// The key holding the bool.
        key: String,
        /// The byte found.
        byte: u8,
        /// Where the byte is.
        offset: u64,
    },

    /// Arrays are nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("arrays nested deeper than {max} levels for key `{key}` at offset {offset}")]
    NestingTooDeep {
        /// The key holding the array.
        key: String,
        /// The maximum nesting depth allowed.
        max: usize,
        /// Where the too-deep array starts.
        offset: u64,
    },

    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },

    /// A required metadata key is absent.
    #[error("missing metadata key `{key}`")]
    MissingKey {
        /// The key looked up.
        key: String,
    },

    /// A metadata value has the wrong type for how it is used.
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    MetadataType {
        /// The key.
        key: String,
        /// What the caller needed.
        expected: &'static str,
        /// The value's actual type (see [`crate::Value::type_name`]).
        found: &'static str,
    },

    /// An array value given to the writer mixes element types.
    #[error("array for key `{key}` is not homogeneous: element {index} is {found}, element 0 is {expected}")]
    HeterogeneousArray {
        /// The key holding the array.
        key: String,
        /// The first element whose type differs.
        index: usize,
        /// Element 0's type.
        expected: &'static str,
        /// The differing element's type.
        found: &'static str,
    },

    /// `general.alignment` (or a writer alignment) is zero or not a power of two.
    #[error("invalid alignment {alignment}: must be a nonzero power of two")]
    BadAlignment {
        /// The alignment given.
        alignment: u64,
    },

    /// A tensor has zero or more than [`crate::MAX_DIMS`] dimensions.
    #[error("tensor `{tensor}` has {n_dims} dimensions; 1 to {max} are allowed")]
    BadDimCount {
        /// Tensor name.
        tensor: String,
        /// Dimension count found.
        n_dims: u64,
        /// The maximum allowed.
        max: usize,
    },

    /// A tensor has a zero-length dimension.
    #[error("tensor `{tensor}` has a zero-length dimension: {dims:?}")]
    ZeroDim {
        /// Tensor name.
        tensor: String,
        /// Its dimensions (ggml order).
        dims: Vec<u64>,
    },

    /// A tensor's element count or byte size does not fit in 64 bits.
    #[error("tensor `{tensor}` size overflows: dims {dims:?}")]
    SizeOverflow {
        /// Tensor name.
        tensor: String,
        /// Its dimensions (ggml order).
        dims: Vec<u64>,
    },

    /// A tensor's type id is not a known ggml type.
    #[error("tensor `{tensor}` has unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// Tensor name.
        tensor: String,
        /// The type id found.
        type_id: u32,
    },

    /// A tensor's row length is not a multiple of its type's block size.
    #[error("tensor `{tensor}` of type {ggml_type}: row length {row} is not a multiple of the block size {block_size}")]
    NotBlockMultiple {
        /// Tensor name.
        tensor: String,
        /// The type's ggml name.
        ggml_type: &'static str,
        /// `dims[0]`.
        row: u64,
        /// Elements per block of that type.
        block_size: usize,
    },

    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error("tensor `{tensor}` offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// Tensor name.
        tensor: String,
        /// Offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// A tensor's bytes extend past the end of the file.
    #[error("tensor `{tensor}` (offset {offset}, {n_bytes} bytes) extends past the end of the data section ({data_len} bytes)")]
    TensorOutOfBounds {
        /// Tensor name.
        tensor: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Bytes the tensor occupies.
        n_bytes: u64,
        /// Bytes in the data section.
        data_len: u64,
    },

    /// Two tensors have the same name.
    #[error("duplicate tensor name `{tensor}`")]
    DuplicateTensor {
        /// The repeated name.
        tensor: String,
    },

    /// Two tensors' byte ranges overlap.
    #[error("tensor `{first}` (offset {first_offset}, {first_bytes} bytes) overlaps tensor `{second}` (offset {second_offset})")]
    OverlappingTensors {
        /// The tensor with the lower offset.
        first: String,
        /// Its offset relative to the data section.
        first_offset: u64,
        /// Its size in bytes.
        first_bytes: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Its offset relative to the data section.
        second_offset: u64,
    },

    /// Data handed to the writer does not match the tensor's type and dimensions.
    #[error("tensor `{tensor}`: data is {actual} bytes, but type {ggml_type} with dims {dims:?} needs {expected}")]
    DataSizeMismatch {
        /// Tensor name.
        tensor: String,
        /// The type's ggml name.
        ggml_type: &'static str,
        /// Dimensions given (ggml order).
        dims: Vec<u64>,
        /// Bytes the type and dims need.
        expected: u64,
        /// Bytes given.
        actual: u64,
    },
}

impl GgufError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        GgufError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error on `path`.
    pub(crate) fn io_path(action: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        let path: PathBuf = path.to_path_buf();
        Self::io(format!("{action} {}", path.display()), source)
    }
}
