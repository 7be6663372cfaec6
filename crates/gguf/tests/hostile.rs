//! Hand-crafted hostile files: each malformation gives its own specific `GgufError` (never a
//! panic, hang or outsized allocation), with the offending key or tensor named.

mod common;

use common::Raw;
use kiln_gguf::{GgufError, GgufFile, MAX_ARRAY_DEPTH};

fn open(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("hostile file opened: {f:?}"),
        Err(e) => {
            // Every error renders a message.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

/// A one-tensor file: F32 tensor `w` of `dims` at data offset `offset`, with `data` bytes.
fn one_tensor(dims: &[u64], type_id: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 0);
    r.tensor_info("w", dims, type_id, offset)
        .pad_to(32)
        .zeros(data);
    r.done()
}

#[test]
fn valid_baseline_opens() {
    // The helpers produce valid files when nothing is wrong, so each failure below is caused
    // by the one thing the test changes.
    let f = GgufFile::from_bytes(one_tensor(&[8], 0, 0, 32)).unwrap();
    assert_eq!(f.tensors()[0].n_bytes, 32);
}

#[test]
fn wrong_magic() {
    let mut b = one_tensor(&[8], 0, 0, 32);
    b[..4].copy_from_slice(b"GGML");
    assert!(matches!(open(b), GgufError::BadMagic { found } if &found == b"GGML"));
}

#[test]
fn wrong_versions() {
    for v in [0u32, 1, 4, 0xFFFF_FFFF] {
        let mut b = one_tensor(&[8], 0, 0, 32);
        b[4..8].copy_from_slice(&v.to_le_bytes());
        match open(b) {
            GgufError::UnsupportedVersion { version } => assert_eq!(version, v),
            e => panic!("{v}: {e:?}"),
        }
    }
    let e = open(Raw::header(1, 0, 0).done());
    assert!(e.to_string().contains("version 1"), "{e}");
}

#[test]
fn big_endian_file() {
    let mut b = one_tensor(&[8], 0, 0, 32);
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(open(b), GgufError::BigEndian { .. }));
}

#[test]
fn truncated_header() {
    match open(b"GGUF\x03\x00\x00\x00\x01".to_vec()) {
        GgufError::Truncated {
            what,
            offset: 8,
            needed: 8,
            available: 1,
        } => assert!(what.contains("tensor count")),
        e => panic!("{e:?}"),
    }
}

#[test]
fn tensor_data_past_end_of_file() {
    match open(one_tensor(&[8], 0, 0, 31)) {
        GgufError::TensorOutOfBounds {
            tensor,
            offset: 0,
            n_bytes: 32,
            data_len: 31,
        } => assert_eq!(tensor, "w"),
        e => panic!("{e:?}"),
    }
    // An offset near u64::MAX must not wrap around.
    let e = open(one_tensor(&[8], 0, u64::MAX - 31, 64));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e:?}");
}

#[test]
fn too_many_or_zero_dims() {
    let e = open(one_tensor(&[1, 1, 1, 1, 8], 0, 0, 32));
    assert!(
        matches!(e, GgufError::BadDimCount { n_dims: 5, .. }),
        "{e:?}"
    );
    let e = open(one_tensor(&[], 0, 0, 32));
    assert!(
        matches!(e, GgufError::BadDimCount { n_dims: 0, .. }),
        "{e:?}"
    );
    // A huge dimension count must not be trusted for allocation either.
    let mut r = Raw::header(3, 1, 0);
    r.str("w").u32(u32::MAX).zeros(64);
    let e = open(r.done());
    assert!(matches!(e, GgufError::BadDimCount { .. }), "{e:?}");
}

#[test]
fn zero_length_dimension() {
    match open(one_tensor(&[8, 0], 0, 0, 32)) {
        GgufError::ZeroDim { tensor, dims } => {
            assert_eq!(tensor, "w");
            assert_eq!(dims, [8, 0]);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn overflowing_element_counts() {
    for dims in [
        vec![1 << 32, 1 << 32],
        vec![u64::MAX, 2],
        vec![1 << 62, 4],
        vec![1 << 21, 1 << 21, 1 << 21],
    ] {
        let e = open(one_tensor(&dims, 0, 0, 32));
        assert!(
            matches!(e, GgufError::SizeOverflow { .. }),
            "{dims:?}: {e:?}"
        );
    }
    // Element count fits but the byte size does not (f32 is 4 bytes per element).
    let e = open(one_tensor(&[1 << 62], 0, 0, 32));
    assert!(matches!(e, GgufError::SizeOverflow { .. }), "{e:?}");
}

#[test]
fn absurd_string_lengths() {
    // Key length.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(16);
    let e = open(r.done());
    assert!(
        matches!(
            e,
            GgufError::LengthTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e:?}"
    );
    // String value length just one byte more than what remains.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(5).bytes(b"abcd");
    match open(r.done()) {
        GgufError::LengthTooLarge {
            what,
            count: 5,
            available: 4,
            ..
        } => assert!(what.contains("`k`"), "{what}"),
        e => panic!("{e:?}"),
    }
    // Tensor name length.
    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 40).zeros(64);
    let e = open(r.done());
    assert!(matches!(e, GgufError::LengthTooLarge { .. }), "{e:?}");
}

#[test]
fn absurd_array_lengths() {
    for (elem_type, min) in [(0u32, 1u64), (6, 4), (8, 8), (9, 12), (12, 8)] {
        let mut r = Raw::header(3, 0, 1);
        r.str("arr")
            .u32(9)
            .u32(elem_type)
            .u64(u64::MAX / 2)
            .zeros(100);
        match open(r.done()) {
            GgufError::LengthTooLarge {
                what,
                min_item_bytes,
                ..
            } => {
                assert!(what.contains("`arr`"));
                assert_eq!(min_item_bytes, min);
            }
            e => panic!("{elem_type}: {e:?}"),
        }
    }
    // A count that fits exactly is fine: 100 u8s.
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(0).u64(100).zeros(100);
    let f = GgufFile::from_bytes(r.done()).unwrap();
    assert_eq!(f.get_array("arr").unwrap().len(), 100);
}

#[test]
fn absurd_header_counts() {
    let e = open(Raw::header(3, u64::MAX, 0).done());
    assert!(matches!(e, GgufError::LengthTooLarge { .. }), "{e:?}");
    let e = open(Raw::header(3, 0, u64::MAX).done());
    assert!(matches!(e, GgufError::LengthTooLarge { .. }), "{e:?}");
    let mut r = Raw::header(3, 1_000_000, 0);
    r.zeros(1000);
    let e = open(r.done());
    assert!(matches!(e, GgufError::LengthTooLarge { .. }), "{e:?}");
}

#[test]
fn nesting_depth_is_capped() {
    let nested = |levels: usize| {
        let mut r = Raw::header(3, 0, 1);
        r.str("deep").u32(9);
        for _ in 0..levels - 1 {
            r.u32(9).u64(1);
        }
        r.u32(0).u64(0);
        r.done()
    };
    let f = GgufFile::from_bytes(nested(MAX_ARRAY_DEPTH)).unwrap();
    assert!(f.get("deep").is_some());
    match open(nested(MAX_ARRAY_DEPTH + 1)) {
        GgufError::NestingTooDeep { key, max, .. } => {
            assert_eq!(key, "deep");
            assert_eq!(max, MAX_ARRAY_DEPTH);
        }
        e => panic!("{e:?}"),
    }
    // Deep nesting declared but the file is short: still an error, no recursion blow-up.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..10_000 {
        r.u32(9).u64(1);
    }
    let e = open(r.done());
    assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e:?}");
}

#[test]
fn unknown_tensor_types() {
    for id in [4u32, 5, 31, 36, 40, 1000, u32::MAX] {
        match open(one_tensor(&[32], id, 0, 128)) {
            GgufError::UnknownTensorType { tensor, type_id } => {
                assert_eq!(tensor, "w");
                assert_eq!(type_id, id);
            }
            e => panic!("{id}: {e:?}"),
        }
    }
}

#[test]
fn unknown_value_types() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).zeros(8);
    match open(r.done()) {
        GgufError::UnknownValueType {
            key,
            type_id: 13,
            offset,
        } => {
            assert_eq!(key, "k");
            assert_eq!(offset, 24 + 8 + 1);
        }
        e => panic!("{e:?}"),
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(99).u64(0);
    let e = open(r.done());
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 99, .. }),
        "{e:?}"
    );
}

#[test]
fn invalid_bools() {
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(7).u8(2);
    assert!(matches!(
        open(r.done()),
        GgufError::InvalidBool { byte: 2, .. }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(9).u32(7).u64(3).bytes(&[1, 0, 7]);
    match open(r.done()) {
        GgufError::InvalidBool {
            key,
            byte: 7,
            offset,
        } => {
            assert_eq!(key, "b");
            assert_eq!(offset, 24 + 9 + 4 + 12 + 2);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn misaligned_tensor_offset() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor_info("a", &[4], 0, 0)
        .tensor_info("b", &[4], 0, 16)
        .pad_to(32)
        .zeros(64);
    match open(r.done()) {
        GgufError::MisalignedTensor {
            tensor,
            offset: 16,
            alignment: 32,
        } => assert_eq!(tensor, "b"),
        e => panic!("{e:?}"),
    }
    // With general.alignment = 16 the same layout is valid.
    let mut r = Raw::header(3, 2, 1);
    r.kv_u32("general.alignment", 16)
        .tensor_info("a", &[4], 0, 0)
        .tensor_info("b", &[4], 0, 16)
        .pad_to(16)
        .zeros(32);
    let f = GgufFile::from_bytes(r.done()).unwrap();
    assert_eq!(f.alignment(), 16);
}

#[test]
fn bad_alignment_values() {
    for a in [0u32, 3, 24, 100] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        assert!(
            matches!(open(r.done()), GgufError::BadAlignment { alignment } if alignment == u64::from(a))
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", "32");
    assert!(matches!(open(r.done()), GgufError::MetadataType { .. }));
}

#[test]
fn duplicate_tensor_names() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor_info("w", &[8], 0, 0)
        .tensor_info("w", &[8], 0, 32)
        .pad_to(32)
        .zeros(64);
    match open(r.done()) {
        GgufError::DuplicateTensor { tensor } => assert_eq!(tensor, "w"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn duplicate_keys() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("general.x", 1).kv_str("general.x", "again");
    match open(r.done()) {
        GgufError::DuplicateKey { key } => assert_eq!(key, "general.x"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn invalid_utf8_strings() {
    let bad: &[u8] = &[b'a', 0xFF, 0xFE];
    // In a key.
    let mut r = Raw::header(3, 0, 1);
    r.str_bytes(bad).u32(4).u32(0);
    match open(r.done()) {
        GgufError::InvalidUtf8 { what, offset: 32 } => assert!(what.contains("key"), "{what}"),
        e => panic!("{e:?}"),
    }
    // In a value.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).str_bytes(bad);
    assert!(matches!(open(r.done()), GgufError::InvalidUtf8 { what, .. } if what.contains("`k`")));
    // In an array element.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(8).u64(2).str("ok").str_bytes(bad);
    assert!(matches!(open(r.done()), GgufError::InvalidUtf8 { .. }));
    // In a tensor name.
    let mut r = Raw::header(3, 1, 0);
    r.str_bytes(bad)
        .u32(1)
        .u64(8)
        .u32(0)
        .u64(0)
        .pad_to(32)
        .zeros(32);
    assert!(
        matches!(open(r.done()), GgufError::InvalidUtf8 { what, .. } if what.contains("tensor"))
    );
}

#[test]
fn overlapping_tensors() {
    // `a` is 64 bytes at 0, `b` starts at 32: aligned, in bounds, but overlapping.
    let mut r = Raw::header(3, 2, 0);
    r.tensor_info("a", &[16], 0, 0)
        .tensor_info("b", &[8], 0, 32)
        .pad_to(32)
        .zeros(64);
    match open(r.done()) {
        GgufError::OverlappingTensors {
            first,
            second,
            first_offset: 0,
            first_bytes: 64,
            second_offset: 32,
        } => assert_eq!((first.as_str(), second.as_str()), ("a", "b")),
        e => panic!("{e:?}"),
    }
    // Same offset, listed in reverse file order.
    let mut r = Raw::header(3, 2, 0);
    r.tensor_info("a", &[8], 0, 32)
        .tensor_info("b", &[8], 0, 32)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(
        open(r.done()),
        GgufError::OverlappingTensors { .. }
    ));
}

#[test]
fn dims_not_multiple_of_block_size() {
    // Q4_0 (id 2) needs rows in multiples of 32; Q6_K (id 14) in multiples of 256.
    match open(one_tensor(&[48, 2], 2, 0, 128)) {
        GgufError::NotBlockMultiple {
            tensor,
            ggml_type: "q4_0",
            row: 48,
            block_size: 32,
        } => assert_eq!(tensor, "w"),
        e => panic!("{e:?}"),
    }
    let e = open(one_tensor(&[128], 14, 0, 256));
    assert!(
        matches!(
            e,
            GgufError::NotBlockMultiple {
                block_size: 256,
                ..
            }
        ),
        "{e:?}"
    );
}
