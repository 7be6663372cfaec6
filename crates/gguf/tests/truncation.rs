//! Truncated files: cut at every byte of a small file, and around every section boundary of a
//! larger one, opening gives `Err` (never a panic) until the last tensor's data is complete.

mod common;

use common::{kv_len, tensor_info_len};
use kiln_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};

fn bytes_of(w: &GgufWriter<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

/// End of the last tensor's data: every shorter prefix must fail to open.
fn data_end(f: &GgufFile) -> usize {
    f.tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap_or(0) as usize
}

#[test]
fn every_byte_of_a_small_file() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::from("llama"));
    w.add_metadata("a.u8", Value::U8(1));
    w.add_metadata("a.f64", Value::F64(2.0));
    w.add_metadata("a.bool", Value::Bool(true));
    w.add_metadata("a.arr", Value::from(vec!["x", "yz"]));
    w.add_metadata(
        "a.nested",
        Value::Array(vec![Value::from(vec![1i16]), Value::Array(vec![])]),
    );
    w.add_tensor("t0", GgmlType::F32, &[3], vec![9; 12])
        .unwrap();
    w.add_tensor("t1", GgmlType::Q8_0, &[32], vec![7; 34])
        .unwrap();
    let full = bytes_of(&w);
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let end = data_end(&f);
    assert!(end < full.len(), "trailing padding exists");
    for len in 0..end {
        let r = GgufFile::from_bytes(full[..len].to_vec());
        assert!(r.is_err(), "prefix of {len} bytes opened");
    }
    // Trailing padding after the last tensor is optional.
    for len in end..=full.len() {
        let g = GgufFile::from_bytes(full[..len].to_vec()).unwrap();
        assert_eq!(g.tensor_bytes("t1").unwrap(), &[7; 34]);
    }
}

#[test]
fn truncation_errors_are_specific() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::from("value"));
    w.add_tensor("t", GgmlType::F32, &[8], vec![1; 32]).unwrap();
    let full = bytes_of(&w);
    // Inside the header.
    assert!(matches!(
        GgufFile::from_bytes(full[..6].to_vec()),
        Err(GgufError::Truncated { .. })
    ));
    // Inside the tensor data.
    assert!(matches!(
        GgufFile::from_bytes(full[..full.len() - 1].to_vec()),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
}

#[test]
fn around_every_section_boundary_of_a_larger_file() {
    let vocab: Vec<String> = (0..5000).map(|i| format!("tok{i}")).collect();
    let scores: Vec<f32> = (0..5000).map(|i| i as f32 * 0.5).collect();
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::from("llama")),
        ("llama.block_count".into(), Value::U32(2)),
        ("tokenizer.ggml.tokens".into(), Value::from(vocab)),
        ("tokenizer.ggml.scores".into(), Value::from(scores)),
        ("general.alignment".into(), Value::U32(64)),
    ];
    let tensors: Vec<(&str, GgmlType, Vec<u64>)> = vec![
        ("token_embd.weight", GgmlType::Q8_0, vec![64, 100]),
        ("blk.0.attn_q.weight", GgmlType::Q4_1, vec![64, 64]),
        ("output_norm.weight", GgmlType::F32, vec![64]),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &metadata {
        w.add_metadata(k.clone(), v.clone());
    }
    for (i, (name, t, dims)) in tensors.iter().enumerate() {
        let n = t.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
        w.add_tensor(*name, *t, dims, common::pseudo_bytes(n as usize, i as u64))
            .unwrap();
    }
    let full = bytes_of(&w);
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let end = data_end(&f);

    // Section boundaries computed independently of the writer.
    let mut boundaries = vec![0usize, 4, 8, 16, 24];
    let mut pos = 24;
    for (k, v) in &metadata {
        boundaries.push(pos + 8); // after the key length
        boundaries.push(pos + 8 + k.len()); // after the key
        boundaries.push(pos + 8 + k.len() + 4); // after the type id
        pos += kv_len(k, v);
        boundaries.push(pos);
    }
    for (name, _, dims) in &tensors {
        pos += tensor_info_len(name, dims.len());
        boundaries.push(pos);
    }
    assert_eq!(pos.next_multiple_of(64) as u64, f.data_offset());
    boundaries.push(f.data_offset() as usize);
    for t in f.tensors() {
        let start = (f.data_offset() + t.offset) as usize;
        boundaries.push(start);
        boundaries.push(start + t.n_bytes as usize);
    }

    for b in boundaries {
        for len in b.saturating_sub(2)..=b + 2 {
            if len > full.len() {
                continue;
            }
            let r = GgufFile::from_bytes(full[..len].to_vec());
            if len < end {
                assert!(r.is_err(), "prefix of {len} bytes (boundary {b}) opened");
            } else {
                assert!(r.is_ok(), "full data present at {len} bytes");
            }
        }
    }
}
