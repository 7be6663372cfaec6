//! `GgufWriter`: builds a GGUF v3 file from metadata and tensors, validating everything the
//! reader would check, and writes it to any `Write` or atomically to a path.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::parse::{alignment_from, tensor_bytes, MAGIC};
use crate::types::GgmlType;
use crate::value::{Value, ValueType};
use crate::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH};

/// A tensor waiting to be written.
struct PendingTensor<'a> {
    name: String,
    ggml_type: GgmlType,
    dims: Vec<u64>,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF v3 file.
///
/// Metadata keeps insertion order; tensors are written in insertion order, each at the next
/// multiple of the alignment (32 unless `general.alignment` says otherwise). The lifetime `'a`
/// is that of tensor data added by reference ([`GgufWriter::add_tensor_ref`]), e.g. tensors
/// copied unchanged from a memory-mapped [`crate::GgufFile`]; it is `'static` when all data
/// is owned.
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<PendingTensor<'a>>,
    tensor_names: HashSet<String>,
}

impl<'a> GgufWriter<'a> {
    /// An empty writer: no metadata, no tensors, alignment 32.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the data alignment by setting `general.alignment` (as a `u32` when it fits, else a
    /// `u64`). It must be a nonzero power of two; that is checked when writing
    /// ([`GgufError::BadAlignment`]).
    pub fn set_alignment(&mut self, a: u64) {
        let value = u32::try_from(a).map_or(Value::U64(a), Value::U32);
        self.add_metadata(ALIGNMENT_KEY, value);
    }

    /// The alignment the file will be written with: `general.alignment` if set, else 32.
    /// Errors if `general.alignment` is not a non-negative integer that is a power of two.
    pub fn alignment(&self) -> Result<u64> {
        match self.key_index.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(&i) => match self.metadata.get(i) {
                Some((_, v)) => alignment_from(v),
                None => Ok(DEFAULT_ALIGNMENT),
            },
        }
    }

    /// Sets `key` to `value`. A key already present keeps its position and gets the new value.
    /// Arrays must be homogeneous and nested at most [`crate::MAX_ARRAY_DEPTH`] deep; that is
    /// checked when writing.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.key_index.get(&key) {
            Some(&i) => {
                if let Some(slot) = self.metadata.get_mut(i) {
                    slot.1 = value;
                }
            }
            None => {
                self.key_index.insert(key.clone(), self.metadata.len());
                self.metadata.push((key, value));
            }
        }
    }

    /// The metadata set so far, in insertion order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Adds a tensor that owns its data.
    ///
    /// `dims` are in ggml order (`dims[0]` is the row length). Errors: 1 to
    /// [`crate::MAX_DIMS`] dims, none zero ([`GgufError::BadDimCount`],
    /// [`GgufError::ZeroDim`]); `dims[0]` a multiple of the type's block size
    /// ([`GgufError::NotBlockMultiple`]); sizes fit ([`GgufError::SizeOverflow`]);
    /// `data.len() == ggml_type.row_bytes(dims[0]) * dims[1..].product()`
    /// ([`GgufError::DataSizeMismatch`]); a new name ([`GgufError::DuplicateTensor`]).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> Result<()> {
        self.add_tensor_cow(name, ggml_type, dims, Cow::Owned(data))
    }

    /// Adds a tensor whose data is borrowed for `'a` (no copy until it is written). Same
    /// checks as [`GgufWriter::add_tensor`].
    pub fn add_tensor_ref(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        data: &'a [u8],
    ) -> Result<()> {
        self.add_tensor_cow(name, ggml_type, dims, Cow::Borrowed(data))
    }

    /// Adds a tensor with owned or borrowed data. Same checks as [`GgufWriter::add_tensor`].
    pub fn add_tensor_cow(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        data: Cow<'a, [u8]>,
    ) -> Result<()> {
        let name = name.into();
        let expected = tensor_bytes(&name, ggml_type, dims)?;
        if data.len() as u64 != expected {
            return Err(GgufError::DataSizeMismatch {
                tensor: name,
                ggml_type: ggml_type.name(),
                dims: dims.to_vec(),
                expected,
                actual: data.len() as u64,
            });
        }
        if self.tensor_names.contains(&name) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        self.tensor_names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            ggml_type,
            dims: dims.to_vec(),
            data,
        });
        Ok(())
    }

    /// Number of tensors added so far.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Writes the complete file to `w` (buffered internally). Validates metadata (alignment,
    /// homogeneous arrays, nesting depth) before writing any byte; after that only I/O errors
    /// ([`GgufError::Io`]) can occur.
    pub fn write_to<W: Write>(&self, w: W) -> Result<()> {
        let alignment = self.alignment()?;
        for (key, value) in &self.metadata {
            validate_value(key, value, 0)?;
        }
        let header = self.header(alignment)?;
        let io = |e| GgufError::io("writing GGUF", e);
        let mut w = std::io::BufWriter::with_capacity(1 << 20, w);
        w.write_all(&header).map_err(io)?;
        let zeros = vec![0u8; usize::try_from(alignment).unwrap_or(0).min(1 << 16)];
        for t in &self.tensors {
            w.write_all(&t.data).map_err(io)?;
            let pad = padding(t.data.len() as u64, alignment);
            write_zeros(&mut w, &zeros, pad).map_err(io)?;
        }
        w.flush().map_err(io)
    }

    /// Writes the file to `path` atomically: into a temporary file in the same directory,
    /// synced, then renamed over `path`. On error no file is left behind and an existing file
    /// at `path` is untouched.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".kiln-gguf-").suffix(".tmp");
        #[cfg(unix)]
        {
            // Like a plainly created file (0666 minus the umask), not tempfile's private 0600:
            // the result is a model others may need to read.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder
            .tempfile_in(dir)
            .map_err(|e| GgufError::io_path("creating temporary file in", dir, e))?;
        self.write_to(tmp.as_file_mut())?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| GgufError::io_path("syncing temporary file for", path, e))?;
        tmp.persist(path)
            .map_err(|e| GgufError::io_path("renaming temporary file to", path, e.error))?;
        Ok(())
    }

    /// Serializes header, metadata, tensor infos and the padding up to the data section.
    fn header(&self, alignment: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = offset
                .checked_add(t.data.len() as u64)
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or_else(|| GgufError::SizeOverflow {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
        }
        let pad = padding(out.len() as u64, alignment);
        out.resize(out.len() + pad as usize, 0);
        Ok(out)
    }
}

/// Bytes of zero padding after `len` bytes to reach a multiple of `alignment`.
fn padding(len: u64, alignment: u64) -> u64 {
    len.next_multiple_of(alignment) - len
}

fn write_zeros(w: &mut impl Write, zeros: &[u8], mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let chunk = zeros.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        if chunk == 0 {
            return Err(std::io::Error::other("empty padding buffer"));
        }
        w.write_all(&zeros[..chunk])?;
        n -= chunk as u64;
    }
    Ok(())
}

/// Checks that arrays are homogeneous and nested at most `MAX_ARRAY_DEPTH` deep.
fn validate_value(key: &str, value: &Value, depth: usize) -> Result<()> {
    let Value::Array(items) = value else {
        return Ok(());
    };
    if depth + 1 > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
            offset: 0,
        });
    }
    let Some(first) = items.first() else {
        return Ok(());
    };
    let expected = first.value_type();
    for (index, item) in items.iter().enumerate() {
        if item.value_type() != expected {
            return Err(GgufError::HeterogeneousArray {
                key: key.to_owned(),
                index,
                expected: expected.name(),
                found: item.type_name(),
            });
        }
        validate_value(key, item, depth + 1)?;
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the payload of `value` (without its leading type id).
fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            let elem = items.first().map_or(ValueType::U8, Value::value_type);
            out.extend_from_slice(&elem.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}
