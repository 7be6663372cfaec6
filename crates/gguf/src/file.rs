//! `GgufFile`: an opened, fully validated GGUF file (memory-mapped or owned bytes) with lookup
//! of metadata and tensors and zero-copy access to tensor data.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::parse::{parse, Parsed};
use crate::value::Value;
use crate::TensorInfo;

/// The bytes a `GgufFile` reads from.
enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF v2/v3 file.
///
/// Construction validates everything ([`GgufFile::open`] documents the checks), so every
/// accessor afterwards is infallible apart from lookups of keys that may be absent. Tensor data
/// is never copied: [`GgufFile::tensor_data`] returns a view into the map or buffer.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("bytes", &self.storage.bytes().len())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps the file at `path` read-only and parses it.
    ///
    /// Validation: magic `GGUF`; version 2 or 3 (v1 and big-endian files are rejected);
    /// every length and count checked against the bytes that remain before allocating; value
    /// types 0..=12, bools 0 or 1, UTF-8 strings, arrays nested at most
    /// [`crate::MAX_ARRAY_DEPTH`] deep; unique keys; `general.alignment` (default 32) a nonzero
    /// power of two; per tensor: unique name, 1..=[`crate::MAX_DIMS`] nonzero dims whose
    /// element count and byte size fit in 63 bits, a known type, row length a multiple of the
    /// type's block size, offset a multiple of the alignment, bytes inside the file and not
    /// overlapping any other tensor. Bytes after the last tensor are ignored.
    ///
    /// The map assumes nobody truncates or rewrites the file while it is open (see the SAFETY
    /// note in the source).
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| GgufError::io_path("opening", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::io_path("reading metadata of", path, e))?
            .len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; the parser reports it as truncated.
            return Self::from_bytes(Vec::new());
        }
        #[allow(unsafe_code)]
        // SAFETY: the map is read-only and we never create a mutable view of it. Mapping a file
        // is only sound while no one truncates or modifies it; like every mmap-based model
        // loader we assume model files are not changed while open (a truncation would raise
        // SIGBUS on access, a rewrite would change bytes we already validated).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| GgufError::io_path("memory-mapping", path, e))?;
        Self::from_storage(Storage::Mmap(map))
    }

    /// Parses a GGUF file held in memory, with the same validation as [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile> {
        let Parsed {
            version,
            metadata,
            key_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        } = parse(storage.bytes())?;
        Ok(GgufFile {
            storage,
            version,
            metadata,
            key_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata key/value pairs in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present (hash lookup).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'s Value) -> Option<T>,
    ) -> Result<T> {
        let v = self.require(key)?;
        f(v).ok_or_else(|| GgufError::MetadataType {
            key: key.to_owned(),
            expected,
            found: v.type_name(),
        })
    }

    /// `key` as an unsigned integer (any non-negative integer type, see [`Value::as_u64`]).
    /// Errors: [`GgufError::MissingKey`], [`GgufError::MetadataType`].
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "non-negative integer", Value::as_u64)
    }

    /// `key` as a signed integer (any integer type that fits, see [`Value::as_i64`]).
    /// Errors: [`GgufError::MissingKey`], [`GgufError::MetadataType`].
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.typed(key, "integer", Value::as_i64)
    }

    /// `key` as `f32` (floats and integers, see [`Value::as_f32`]).
    /// Errors: [`GgufError::MissingKey`], [`GgufError::MetadataType`].
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.typed(key, "number", Value::as_f32)
    }

    /// `key` as a bool. Errors: [`GgufError::MissingKey`], [`GgufError::MetadataType`].
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "bool", Value::as_bool)
    }

    /// `key` as a string. Errors: [`GgufError::MissingKey`], [`GgufError::MetadataType`].
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.typed(key, "string", Value::as_str)
    }

    /// `key` as an array. Errors: [`GgufError::MissingKey`], [`GgufError::MetadataType`].
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.typed(key, "array", Value::as_array)
    }

    /// `general.architecture` (e.g. `"llama"`), which prefixes the model's hyperparameter keys.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present (hash lookup).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// The `t.n_bytes` bytes of tensor `t`, zero-copy.
    ///
    /// `t` must come from this file's [`GgufFile::tensors`] (its bounds were checked at open);
    /// for any other `TensorInfo` whose range does not lie inside this file's data section the
    /// result is an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| Some((start, start.checked_add(t.n_bytes)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range
            .and_then(|r| self.storage.bytes().get(r))
            .unwrap_or(&[])
    }

    /// Tells the OS that this process no longer needs the resident pages of `t`'s data (for
    /// tensors the caller has copied, e.g. repacked, and will rarely read again): the pages
    /// leave this process's resident set, and a later read faults the same file bytes back in.
    /// A no-op for in-memory files and where the OS declines; only whole pages inside the
    /// tensor's range are released.
    pub fn release_tensor_pages(&self, t: &TensorInfo) {
        let Storage::Mmap(map) = &self.storage else {
            return;
        };
        let data = self.tensor_data(t);
        if data.is_empty() {
            return;
        }
        let base = map.as_ptr() as usize;
        let start = data.as_ptr() as usize - base;
        let end = start + data.len();
        const PAGE: usize = 4096;
        let (first, last) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
        if last <= first {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: the map is a read-only shared file mapping and we never write through it, so
        // MADV_DONTNEED only drops this process's references to clean page-cache pages: every
        // later read (through any live slice) faults the unchanged file bytes back in. The
        // range lies inside the map and is page-aligned.
        let result = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first)
        };
        // Declining only costs memory, never correctness.
        let _ = result;
    }

    /// The data of the tensor named `name`, if present.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    /// The alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section; tensor offsets are relative to it.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}
