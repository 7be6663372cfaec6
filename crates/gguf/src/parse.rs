//! The GGUF parser: a bounds-checked little-endian cursor over the file bytes and the
//! validation of header, metadata, tensor infos and tensor placement. Every length is checked
//! against the bytes that remain before anything is allocated from it.

use std::collections::HashMap;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Value, ValueType};
use crate::{TensorInfo, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS};

/// The bytes every GGUF file starts with.
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";

/// Fewest bytes one tensor info occupies: empty name (8), n_dims (4), one dim (8), type (4),
/// offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;

/// Fewest bytes one key/value pair occupies: empty key (8), type (4), smallest value (1).
const MIN_KV_BYTES: usize = 8 + 4 + 1;

/// Where a read happens, formatted into error messages only when an error occurs.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Header(&'static str),
    Key(u64),
    KeyType(&'a str),
    Value(&'a str),
    TensorName(u64),
    Tensor(&'a str, &'static str),
}

impl Ctx<'_> {
    fn describe(self) -> String {
        match self {
            Ctx::Header(field) => format!("header {field}"),
            Ctx::Key(i) => format!("metadata key #{i}"),
            Ctx::KeyType(key) => format!("value type of key `{key}`"),
            Ctx::Value(key) => format!("value of key `{key}`"),
            Ctx::TensorName(i) => format!("name of tensor #{i}"),
            Ctx::Tensor(name, field) => format!("{field} of tensor `{name}`"),
        }
    }
}

/// A little-endian reader over a byte slice that never reads past its end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize, ctx: Ctx<'_>) -> Result<&'a [u8]> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| GgufError::Truncated {
                what: ctx.describe(),
                offset: self.offset(),
                needed: n as u64,
                available: self.remaining() as u64,
            })?;
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, ctx: Ctx<'_>) -> Result<[u8; N]> {
        let bytes = self.bytes(N, ctx)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, ctx: Ctx<'_>) -> Result<u32> {
        self.array(ctx).map(u32::from_le_bytes)
    }

    fn u64(&mut self, ctx: Ctx<'_>) -> Result<u64> {
        self.array(ctx).map(u64::from_le_bytes)
    }

    /// Reads a `u64` count of items each at least `min_item` bytes long and checks that the
    /// rest of the file can hold them, so the count is safe to allocate for.
    fn count(&mut self, min_item: usize, ctx: Ctx<'_>) -> Result<usize> {
        let offset = self.offset();
        let count = self.u64(ctx)?;
        let available = self.remaining();
        usize::try_from(count)
            .ok()
            .filter(|&n| {
                n.checked_mul(min_item)
                    .is_some_and(|need| need <= available)
            })
            .ok_or_else(|| GgufError::LengthTooLarge {
                what: ctx.describe(),
                offset,
                count,
                min_item_bytes: min_item as u64,
                available: available as u64,
            })
    }

    fn string(&mut self, ctx: Ctx<'_>) -> Result<String> {
        let len = self.count(1, ctx)?;
        let offset = self.offset();
        let bytes = self.bytes(len, ctx)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: ctx.describe(),
                offset,
            }),
        }
    }
}

/// Everything the header, metadata and tensor infos say, validated against the file size.
pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

/// Parses and validates a whole GGUF file held in `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array(Ctx::Header("magic"))?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(Ctx::Header("version"))?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(GgufError::BigEndian { raw: v }),
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let n_tensors = c.u64(Ctx::Header("tensor count"))?;
    let n_kv = c.u64(Ctx::Header("metadata count"))?;
    // Both sections follow; checking each against all remaining bytes is loose but enough to
    // make the counts safe to allocate for.
    check_count(&c, n_kv, MIN_KV_BYTES, 16, "metadata count")?;
    check_count(&c, n_tensors, MIN_TENSOR_INFO_BYTES, 8, "tensor count")?;

    let (metadata, key_index) = parse_metadata(&mut c, n_kv)?;
    let alignment = match key_index
        .get(crate::ALIGNMENT_KEY)
        .and_then(|&i| metadata.get(i))
    {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => alignment_from(v)?,
    };
    let (tensors, tensor_index) = parse_tensor_infos(&mut c, n_tensors, alignment)?;

    let data_offset = c
        .offset()
        .checked_next_multiple_of(alignment)
        .ok_or(GgufError::BadAlignment { alignment })?;
    let data_len = (buf.len() as u64).saturating_sub(data_offset);
    check_placement(&tensors, data_len)?;

    Ok(Parsed {
        version,
        metadata,
        key_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

/// Validates `general.alignment`: any non-negative integer type that is a nonzero power of two.
pub(crate) fn alignment_from(v: &Value) -> Result<u64> {
    let a = v.as_u64().ok_or_else(|| GgufError::MetadataType {
        key: crate::ALIGNMENT_KEY.to_owned(),
        expected: "unsigned integer",
        found: v.type_name(),
    })?;
    if a.is_power_of_two() {
        Ok(a)
    } else {
        Err(GgufError::BadAlignment { alignment: a })
    }
}

fn check_count(c: &Cursor<'_>, count: u64, min_item: usize, offset: u64, what: &str) -> Result<()> {
    let available = c.remaining() as u64;
    let fits = count
        .checked_mul(min_item as u64)
        .is_some_and(|need| need <= available);
    if fits {
        Ok(())
    } else {
        Err(GgufError::LengthTooLarge {
            what: format!("header {what}"),
            offset,
            count,
            min_item_bytes: min_item as u64,
            available,
        })
    }
}

type Metadata = (Vec<(String, Value)>, HashMap<String, usize>);

fn parse_metadata(c: &mut Cursor<'_>, n_kv: u64) -> Result<Metadata> {
    // `check_count` bounded n_kv by the file size, so these capacities are proportionate.
    let cap = usize::try_from(n_kv).unwrap_or(0);
    let mut metadata = Vec::with_capacity(cap);
    let mut index = HashMap::with_capacity(cap);
    for i in 0..n_kv {
        let key = c.string(Ctx::Key(i))?;
        let type_offset = c.offset();
        let type_id = c.u32(Ctx::KeyType(&key))?;
        let ty = value_type(type_id, &key, type_offset)?;
        let value = parse_value(c, ty, &key, 0)?;
        if index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, index))
}

fn value_type(type_id: u32, key: &str, offset: u64) -> Result<ValueType> {
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        type_id,
        offset,
    })
}

/// Parses one value of type `ty`; `depth` is the number of arrays already entered.
fn parse_value(c: &mut Cursor<'_>, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
    let ctx = Ctx::Value(key);
    Ok(match ty {
        ValueType::U8 => Value::U8(u8::from_le_bytes(c.array(ctx)?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(c.array(ctx)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(ctx)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(ctx)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(ctx)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(ctx)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(ctx)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(ctx)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(ctx)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(ctx)?)),
        ValueType::Bool => {
            let offset = c.offset();
            let [byte] = c.array(ctx)?;
            Value::Bool(bool_from(byte, key, offset)?)
        }
        ValueType::String => Value::String(c.string(ctx)?),
        ValueType::Array => parse_array(c, key, depth + 1)?,
    })
}

fn bool_from(byte: u8, key: &str, offset: u64) -> Result<bool> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::InvalidBool {
            key: key.to_owned(),
            byte,
            offset,
        }),
    }
}

/// Parses an array body (element type, count, elements) at nesting level `depth` (1-based).
fn parse_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Value> {
    let start = c.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
            offset: start,
        });
    }
    let ctx = Ctx::Value(key);
    let elem = value_type(c.u32(ctx)?, key, start)?;
    let count = c.count(elem.min_size(), ctx)?;
    let items = match elem.fixed_size() {
        // Fixed-size elements: one bounds check for the whole array, then a tight decode loop.
        Some(size) => {
            let bytes_offset = c.offset();
            let bytes = c.bytes(count * size, ctx)?;
            decode_fixed(elem, bytes, key, bytes_offset)?
        }
        None => {
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(parse_value(c, elem, key, depth)?);
            }
            items
        }
    };
    Ok(Value::Array(items))
}

/// Decodes `bytes` as consecutive fixed-size values of type `elem`.
fn decode_fixed(elem: ValueType, bytes: &[u8], key: &str, offset: u64) -> Result<Vec<Value>> {
    fn map<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        bytes
            .chunks_exact(N)
            .map(|chunk| {
                let mut a = [0u8; N];
                a.copy_from_slice(chunk);
                f(a)
            })
            .collect()
    }
    Ok(match elem {
        ValueType::U8 => bytes.iter().map(|&b| Value::U8(b)).collect(),
        ValueType::I8 => map(bytes, |a| Value::I8(i8::from_le_bytes(a))),
        ValueType::U16 => map(bytes, |a| Value::U16(u16::from_le_bytes(a))),
        ValueType::I16 => map(bytes, |a| Value::I16(i16::from_le_bytes(a))),
        ValueType::U32 => map(bytes, |a| Value::U32(u32::from_le_bytes(a))),
        ValueType::I32 => map(bytes, |a| Value::I32(i32::from_le_bytes(a))),
        ValueType::F32 => map(bytes, |a| Value::F32(f32::from_le_bytes(a))),
        ValueType::U64 => map(bytes, |a| Value::U64(u64::from_le_bytes(a))),
        ValueType::I64 => map(bytes, |a| Value::I64(i64::from_le_bytes(a))),
        ValueType::F64 => map(bytes, |a| Value::F64(f64::from_le_bytes(a))),
        ValueType::Bool => bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| bool_from(b, key, offset + i as u64).map(Value::Bool))
            .collect::<Result<_>>()?,
        // Not fixed-size; `parse_array` never routes them here.
        ValueType::String | ValueType::Array => Vec::new(),
    })
}

type Tensors = (Vec<TensorInfo>, HashMap<String, usize>);

fn parse_tensor_infos(c: &mut Cursor<'_>, n_tensors: u64, alignment: u64) -> Result<Tensors> {
    // `check_count` bounded n_tensors by the file size.
    let cap = usize::try_from(n_tensors).unwrap_or(0);
    let mut tensors = Vec::with_capacity(cap);
    let mut index = HashMap::with_capacity(cap);
    for i in 0..n_tensors {
        let name = c.string(Ctx::TensorName(i))?;
        let n_dims = c.u32(Ctx::Tensor(&name, "dimension count"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                n_dims: n_dims.into(),
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(Ctx::Tensor(&name, "dimensions"))?);
        }
        let type_id = c.u32(Ctx::Tensor(&name, "type"))?;
        let offset = c.u64(Ctx::Tensor(&name, "offset"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.clone(),
            type_id,
        })?;
        let n_bytes = tensor_bytes(&name, ggml_type, &dims)?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: name,
                offset,
                alignment,
            });
        }
        if index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }
    Ok((tensors, index))
}

/// Validates `dims` for `ggml_type` and returns the tensor's size in bytes: dims nonzero, the
/// element count and byte size fit in `u64`, the row length a multiple of the block size.
pub(crate) fn tensor_bytes(name: &str, ggml_type: GgmlType, dims: &[u64]) -> Result<u64> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: dims.len() as u64,
            max: MAX_DIMS,
        });
    }
    if dims.contains(&0) {
        return Err(GgufError::ZeroDim {
            tensor: name.to_owned(),
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::SizeOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    // ggml keeps element counts in int64_t, so stay within i64 as well as u64.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(overflow)?;
    let row = dims[0];
    let block_size = ggml_type.block_size();
    if !row.is_multiple_of(block_size as u64) {
        return Err(GgufError::NotBlockMultiple {
            tensor: name.to_owned(),
            ggml_type: ggml_type.name(),
            row,
            block_size,
        });
    }
    let rows = n_elements / row;
    ggml_type
        .row_bytes(row)
        .and_then(|rb| rb.checked_mul(rows))
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(overflow)
}

/// Checks that every tensor lies inside the data section and that no two overlap.
fn check_placement(tensors: &[TensorInfo], data_len: u64) -> Result<()> {
    for t in tensors {
        let in_bounds = t
            .offset
            .checked_add(t.n_bytes)
            .is_some_and(|end| end <= data_len);
        if !in_bounds {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                n_bytes: t.n_bytes,
                data_len,
            });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // In bounds, so `a.offset + a.n_bytes` cannot overflow.
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError::OverlappingTensors {
                first: a.name.clone(),
                first_offset: a.offset,
                first_bytes: a.n_bytes,
                second: b.name.clone(),
                second_offset: b.offset,
            });
        }
    }
    Ok(())
}
