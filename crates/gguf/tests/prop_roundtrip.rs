//! Property tests: random metadata (every type, nested homogeneous arrays) and random tensors
//! survive writer → reader unchanged; random corruption of a valid file never panics.

mod common;

use common::same;
use kiln_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
    ]
    .boxed()
}

/// An array whose elements all share one scalar type.
fn scalar_array() -> BoxedStrategy<Value> {
    fn arr<T: std::fmt::Debug + 'static>(
        s: impl Strategy<Value = T> + 'static,
        f: fn(T) -> Value,
    ) -> BoxedStrategy<Value> {
        prop::collection::vec(s, 0..8)
            .prop_map(move |v| Value::Array(v.into_iter().map(f).collect()))
            .boxed()
    }
    prop_oneof![
        arr(any::<u8>(), Value::U8),
        arr(any::<i8>(), Value::I8),
        arr(any::<u16>(), Value::U16),
        arr(any::<i16>(), Value::I16),
        arr(any::<u32>(), Value::U32),
        arr(any::<i32>(), Value::I32),
        arr(any::<u32>(), |b| Value::F32(f32::from_bits(b))),
        arr(any::<bool>(), Value::Bool),
        arr(".{0,6}", Value::String),
        arr(any::<u64>(), Value::U64),
        arr(any::<i64>(), Value::I64),
        arr(any::<u64>(), |b| Value::F64(f64::from_bits(b))),
    ]
    .boxed()
}

/// Arrays of scalars, or arrays of such arrays, up to 4 levels deep.
fn array() -> BoxedStrategy<Value> {
    scalar_array()
        .prop_recursive(3, 64, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
        .boxed()
}

fn value() -> BoxedStrategy<Value> {
    prop_oneof![3 => scalar(), 2 => array()].boxed()
}

/// Unique keys: an index prefix keeps random suffixes from colliding.
fn metadata() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(("[a-z_.]{0,10}", value()), 0..12).prop_map(|kvs| {
        kvs.into_iter()
            .enumerate()
            .map(|(i, (k, v))| (format!("k{i}.{k}"), v))
            .collect()
    })
}

/// (type, dims, data) with dims[0] a multiple of the block size.
fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, Vec<u8>)> {
    (
        prop::sample::select(GgmlType::ALL.to_vec()),
        1u64..3,
        prop::collection::vec(1u64..4, 0..4),
        any::<u64>(),
    )
        .prop_map(|(t, blocks, rest, seed)| {
            let mut dims = vec![blocks * t.block_size() as u64];
            dims.extend(rest);
            let n = t.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
            (t, dims, common::pseudo_bytes(n as usize, seed))
        })
}

fn alignment() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(prop::sample::select(vec![1u64, 2, 8, 32, 64, 256]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_files_round_trip(
        kvs in metadata(),
        tensors in prop::collection::vec(tensor(), 0..5),
        align in alignment(),
    ) {
        let mut w = GgufWriter::new();
        for (k, v) in &kvs {
            w.add_metadata(k.clone(), v.clone());
        }
        if let Some(a) = align {
            w.set_alignment(a);
        }
        for (i, (t, dims, data)) in tensors.iter().enumerate() {
            w.add_tensor(format!("t{i}"), *t, dims, data.clone()).unwrap();
        }
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();

        prop_assert_eq!(f.alignment(), align.unwrap_or(32));
        prop_assert_eq!(f.metadata().len(), w.metadata().len());
        for ((k1, v1), (k2, v2)) in f.metadata().iter().zip(w.metadata()) {
            prop_assert_eq!(k1, k2);
            prop_assert!(same(v1, v2), "{}: {:?} != {:?}", k1, v1, v2);
        }
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for (info, (t, dims, data)) in f.tensors().iter().zip(&tensors) {
            prop_assert_eq!(info.ggml_type, *t);
            prop_assert_eq!(&info.dims, dims);
            prop_assert_eq!(f.tensor_data(info), &data[..]);
        }
    }

    #[test]
    fn corrupted_files_never_panic(
        kvs in metadata(),
        tensors in prop::collection::vec(tensor(), 0..3),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut w = GgufWriter::new();
        for (k, v) in kvs {
            w.add_metadata(k, v);
        }
        for (i, (t, dims, data)) in tensors.into_iter().enumerate() {
            w.add_tensor(format!("t{i}"), t, &dims, data).unwrap();
        }
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        // Corrupt, then also cut: either may open or fail, but must return.
        let cut_len = cut.index(bytes.len() + 1);
        let _ = GgufFile::from_bytes(bytes[..cut_len].to_vec());
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            for t in f.tensors() {
                prop_assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
            }
        }
    }
}
