//! Writer → reader round trips: every metadata value type (nested arrays included), every
//! tensor byte, alignment handling, borrowed tensor data, atomic file writes and the writer's
//! own validation errors.

mod common;

use common::{same, Raw};
use kiln_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, TensorInfo, Value, ValueType};

fn all_value_kinds() -> Vec<(String, Value)> {
    let v = vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(65000)),
        ("i16", Value::I16(-30000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(-1.5e-7)),
        ("f32.nan", Value::F32(f32::from_bits(0x7fc0_1234))),
        ("f32.inf", Value::F32(f32::NEG_INFINITY)),
        ("bool.t", Value::Bool(true)),
        ("bool.f", Value::Bool(false)),
        ("string", Value::from("héllo ✓ wörld")),
        ("string.empty", Value::from("")),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(std::f64::consts::PI)),
        ("arr.u8", Value::from(vec![0u8, 1, 255])),
        ("arr.i8", Value::from(vec![-128i8, 127])),
        ("arr.u16", Value::from(vec![1u16, 65535])),
        ("arr.i16", Value::from(vec![-1i16, 2])),
        ("arr.u32", Value::from(vec![7u32; 5])),
        ("arr.i32", Value::from(vec![-7i32, 0, 7])),
        ("arr.f32", Value::from(vec![0.1f32, -0.0, 1e30])),
        ("arr.bool", Value::from(vec![true, false, true])),
        (
            "arr.str",
            Value::from(vec!["a", "", "<|im_start|>", "Ġthe"]),
        ),
        ("arr.u64", Value::from(vec![u64::MAX, 0])),
        ("arr.i64", Value::from(vec![i64::MIN, i64::MAX])),
        ("arr.f64", Value::from(vec![f64::MIN_POSITIVE, -2.5])),
        ("arr.empty", Value::Array(vec![])),
        (
            "arr.nested",
            Value::Array(vec![
                Value::from(vec![1u32, 2]),
                Value::from(vec!["x", "y", "z"]),
                Value::Array(vec![]),
                Value::Array(vec![Value::from(vec![true]), Value::Array(vec![])]),
            ]),
        ),
    ];
    v.into_iter()
        .map(|(k, v)| (format!("test.{k}"), v))
        .collect()
}

fn write_bytes(w: &GgufWriter<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out).expect("write_to");
    out
}

/// (name, type, dims) covering plain and block types and 1–4 dims.
fn tensor_specs() -> Vec<(&'static str, GgmlType, Vec<u64>)> {
    vec![
        ("t.f32", GgmlType::F32, vec![3, 5]),
        ("t.f16", GgmlType::F16, vec![7]),
        ("t.q4_0", GgmlType::Q4_0, vec![64, 3]),
        ("t.q4_1", GgmlType::Q4_1, vec![32, 2, 2]),
        ("t.q8_0", GgmlType::Q8_0, vec![96]),
        ("t.q6_k", GgmlType::Q6_K, vec![256, 2]),
        ("t.q4_k", GgmlType::Q4_K, vec![512, 1, 1, 2]),
        ("t.bf16", GgmlType::BF16, vec![1, 1, 1, 1]),
        ("t.i32", GgmlType::I32, vec![9]),
        ("t.iq4_nl", GgmlType::IQ4_NL, vec![32]),
    ]
}

fn expected_bytes(t: GgmlType, dims: &[u64]) -> usize {
    let rows: u64 = dims[1..].iter().product();
    (t.row_bytes(dims[0]).unwrap() * rows) as usize
}

fn sample_writer() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::from("llama"));
    for (k, v) in all_value_kinds() {
        w.add_metadata(k, v);
    }
    for (i, (name, t, dims)) in tensor_specs().into_iter().enumerate() {
        let data = common::pseudo_bytes(expected_bytes(t, &dims), i as u64);
        w.add_tensor(name, t, &dims, data).unwrap();
    }
    w
}

#[test]
fn every_value_type_and_tensor_byte_round_trips() {
    let w = sample_writer();
    let f = GgufFile::from_bytes(write_bytes(&w)).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.architecture().unwrap(), "llama");

    let expected = w.metadata();
    assert_eq!(f.metadata().len(), expected.len());
    for ((k1, v1), (k2, v2)) in f.metadata().iter().zip(expected) {
        assert_eq!(k1, k2, "metadata order");
        assert!(same(v1, v2), "{k1}: {v1:?} != {v2:?}");
        assert!(same(f.get(k1).unwrap(), v2));
    }

    let specs = tensor_specs();
    assert_eq!(f.tensors().len(), specs.len());
    for (i, (info, (name, t, dims))) in f.tensors().iter().zip(&specs).enumerate() {
        assert_eq!(info.name, *name, "tensor order");
        assert_eq!(info.ggml_type, *t);
        assert_eq!(&info.dims, dims);
        assert_eq!(info.n_elements(), dims.iter().product::<u64>());
        assert_eq!(info.n_bytes as usize, expected_bytes(*t, dims));
        assert_eq!(info.offset % 32, 0);
        let data = common::pseudo_bytes(expected_bytes(*t, dims), i as u64);
        assert_eq!(f.tensor_data(info), &data[..], "{name}");
        assert_eq!(f.tensor_bytes(name), Some(&data[..]));
        assert_eq!(f.tensor(name), Some(info));
    }
    assert!(f.tensor("missing").is_none());
    assert!(f.get("missing").is_none());
}

#[test]
fn file_round_trip_through_mmap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let w = sample_writer();
    w.write_file(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let g = GgufFile::from_bytes(write_bytes(&w)).unwrap();
    assert_eq!(f.as_bytes(), g.as_bytes());
    assert_eq!(f.tensors(), g.tensors());
    // Only the target file is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn typed_getters_name_the_key() {
    let f = GgufFile::from_bytes(write_bytes(&sample_writer())).unwrap();
    assert_eq!(f.get_u64("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("test.u8").unwrap(), 200);
    assert_eq!(f.get_i64("test.i64").unwrap(), i64::MIN);
    assert_eq!(f.get_f32("test.f64").unwrap(), std::f64::consts::PI as f32);
    assert_eq!(f.get_f32("test.u16").unwrap(), 65000.0);
    assert!(f.get_bool("test.bool.t").unwrap());
    assert_eq!(f.get_str("test.string").unwrap(), "héllo ✓ wörld");
    assert_eq!(f.get_array("test.arr.u32").unwrap().len(), 5);
    match f.get_u64("test.i32") {
        Err(GgufError::MetadataType { key, found, .. }) => {
            assert_eq!(key, "test.i32");
            assert_eq!(found, "i32");
        }
        other => panic!("{other:?}"),
    }
    match f.get_str("nope.key") {
        Err(e @ GgufError::MissingKey { .. }) => assert!(e.to_string().contains("nope.key")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.get_f32("test.string"),
        Err(GgufError::MetadataType {
            expected: "number",
            found: "string",
            ..
        })
    ));
}

#[test]
fn add_metadata_replaces_and_keeps_order() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U32(1));
    w.add_metadata("b", Value::U32(2));
    w.add_metadata("a", Value::from("one"));
    let f = GgufFile::from_bytes(write_bytes(&w)).unwrap();
    let keys: Vec<_> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(f.get_str("a").unwrap(), "one");
}

#[test]
fn custom_alignment_is_honoured() {
    for align in [1u64, 8, 64, 4096] {
        let mut w = GgufWriter::new();
        w.set_alignment(align);
        w.add_tensor("a", GgmlType::F16, &[3], vec![1; 6]).unwrap();
        w.add_tensor("b", GgmlType::F32, &[5], vec![2; 20]).unwrap();
        let bytes = write_bytes(&w);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), align);
        assert_eq!(f.get_u64("general.alignment").unwrap(), align);
        assert_eq!(f.data_offset() % align, 0);
        for t in f.tensors() {
            assert_eq!(t.offset % align, 0);
        }
        assert_eq!(f.tensor_bytes("a").unwrap(), &[1; 6]);
        assert_eq!(f.tensor_bytes("b").unwrap(), &[2; 20]);
    }
    // Setting the key directly works too.
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::U32(16));
    assert_eq!(w.alignment().unwrap(), 16);
}

#[test]
fn borrowed_tensor_data_round_trips() {
    let src = GgufFile::from_bytes(write_bytes(&sample_writer())).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k.clone(), v.clone());
    }
    for t in src.tensors() {
        w.add_tensor_ref(t.name.clone(), t.ggml_type, &t.dims, src.tensor_data(t))
            .unwrap();
    }
    assert_eq!(w.tensor_count(), src.tensors().len());
    let copy = write_bytes(&w);
    assert_eq!(
        copy,
        src.as_bytes(),
        "copying a file reproduces it byte for byte"
    );
}

#[test]
fn empty_file_round_trips() {
    let w = GgufWriter::new();
    let bytes = write_bytes(&w);
    assert_eq!(bytes.len(), 32, "24-byte header padded to 32");
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
    assert!(matches!(
        f.architecture(),
        Err(GgufError::MissingKey { .. })
    ));
}

#[test]
fn version_2_is_read() {
    let mut r = Raw::header(2, 1, 1);
    r.kv_str("general.architecture", "llama")
        .tensor_info("w", &[4], 0, 0)
        .pad_to(32)
        .bytes(&1.0f32.to_le_bytes())
        .bytes(&2.0f32.to_le_bytes())
        .bytes(&3.0f32.to_le_bytes())
        .bytes(&4.0f32.to_le_bytes());
    let f = GgufFile::from_bytes(r.done()).unwrap();
    assert_eq!(f.version(), 2);
    let t = f.tensor("w").unwrap();
    assert_eq!(f.tensor_data(t).len(), 16);
    assert_eq!(&f.tensor_data(t)[4..8], &2.0f32.to_le_bytes());
}

#[test]
fn empty_array_is_written_as_u8_array() {
    let mut w = GgufWriter::new();
    w.add_metadata("e", Value::Array(vec![]));
    let bytes = write_bytes(&w);
    // magic, version, counts (24) + key (8 + 1) + type (4) → element type id follows.
    assert_eq!(&bytes[37..41], &ValueType::U8.id().to_le_bytes());
}

#[test]
fn foreign_tensor_info_gives_empty_slice() {
    let f = GgufFile::from_bytes(write_bytes(&sample_writer())).unwrap();
    let bogus = TensorInfo {
        name: "bogus".into(),
        dims: vec![u64::MAX, 2],
        ggml_type: GgmlType::F32,
        offset: u64::MAX - 3,
        n_bytes: 100,
    };
    assert!(f.tensor_data(&bogus).is_empty());
    assert_eq!(bogus.n_elements(), u64::MAX);
}

#[test]
fn writer_rejects_bad_tensors() {
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.add_tensor("a", GgmlType::F32, &[4], vec![0; 15]),
        Err(GgufError::DataSizeMismatch {
            expected: 16,
            actual: 15,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("a", GgmlType::Q4_0, &[48], vec![0; 27]),
        Err(GgufError::NotBlockMultiple {
            row: 48,
            block_size: 32,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("a", GgmlType::F32, &[1, 1, 1, 1, 1], vec![0; 4]),
        Err(GgufError::BadDimCount { n_dims: 5, .. })
    ));
    assert!(matches!(
        w.add_tensor("a", GgmlType::F32, &[], vec![]),
        Err(GgufError::BadDimCount { n_dims: 0, .. })
    ));
    assert!(matches!(
        w.add_tensor("a", GgmlType::F32, &[4, 0], vec![]),
        Err(GgufError::ZeroDim { .. })
    ));
    assert!(matches!(
        w.add_tensor("a", GgmlType::F32, &[1 << 32, 1 << 32], vec![]),
        Err(GgufError::SizeOverflow { .. })
    ));
    w.add_tensor("a", GgmlType::F32, &[1], vec![0; 4]).unwrap();
    match w.add_tensor("a", GgmlType::F32, &[1], vec![0; 4]) {
        Err(GgufError::DuplicateTensor { tensor }) => assert_eq!(tensor, "a"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn writer_rejects_bad_metadata_before_writing() {
    let mut w = GgufWriter::new();
    w.add_metadata("mixed", Value::Array(vec![Value::U32(1), Value::I32(2)]));
    let mut out = Vec::new();
    match w.write_to(&mut out) {
        Err(GgufError::HeterogeneousArray { key, index: 1, .. }) => assert_eq!(key, "mixed"),
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty(), "nothing written on validation error");

    let mut deep = Value::Array(vec![]);
    for _ in 0..kiln_gguf::MAX_ARRAY_DEPTH {
        deep = Value::Array(vec![deep]);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("deep", deep);
    assert!(matches!(
        w.write_to(Vec::new()),
        Err(GgufError::NestingTooDeep { .. })
    ));

    for bad in [0u64, 24, 1 << 40 | 1] {
        let mut w = GgufWriter::new();
        w.set_alignment(bad);
        assert!(matches!(
            w.write_to(Vec::new()),
            Err(GgufError::BadAlignment { alignment }) if alignment == bad
        ));
    }
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::from("32"));
    assert!(matches!(
        w.write_to(Vec::new()),
        Err(GgufError::MetadataType { .. })
    ));
}

#[test]
fn write_file_leaves_nothing_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    std::fs::write(&path, b"old contents").unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata("mixed", Value::Array(vec![Value::U8(1), Value::Bool(true)]));
    assert!(w.write_file(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old contents");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let missing_dir = dir.path().join("no/such/dir/out.gguf");
    assert!(matches!(
        GgufWriter::new().write_file(&missing_dir),
        Err(GgufError::Io { .. })
    ));
}

#[test]
fn writer_output_is_bit_exact() {
    // An independent encoding of a tiny file, byte for byte.
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::U32(7));
    w.add_tensor("t", GgmlType::F32, &[2], vec![1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("k", 7)
        .tensor_info("t", &[2], 0, 0)
        .pad_to(32)
        .bytes(&[1, 2, 3, 4, 5, 6, 7, 8])
        .pad_to(32);
    assert_eq!(write_bytes(&w), r.done());
}

#[test]
fn open_reports_missing_file_with_path() {
    let err = GgufFile::open(std::path::Path::new("/definitely/not/here.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        err.to_string().contains("/definitely/not/here.gguf"),
        "{err}"
    );
}

#[test]
fn open_empty_file_is_truncated_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gguf");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&path),
        Err(GgufError::Truncated { .. })
    ));
}
