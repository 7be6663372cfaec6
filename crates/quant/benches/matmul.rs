//! Criterion bench of `matmul_with` per kernel family on the SmolLM2-135M shapes, single thread:
//! the 576×1536 (rows×cols) Q4_1 FFN-down matrix and the 49152×576 Q8_0 tied embedding/output
//! matrix (plus Q4_0, Q8_0, Q4_K, Q6_K and F16 at 576×1536), with
//! 1 activation row (decode) and 64 (prefill). Each case is reported twice: as weight bytes/s
//! and as multiply-adds (elements) per second. Every kernel family the CPU runs is listed,
//! the scalar reference (`generic`) included, and where a family has a packed layout for the
//! type (`PackedMatrix`) its packed kernel is listed beside it as `packed-<family>`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_quant::{matmul_packed, matmul_with, ActBuf, PackedMatrix, QMatrix, QuantType};
use kiln_tensor::ThreadPool;
use std::time::Duration;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn quantize(ty: QuantType, rows: usize, cols: usize) -> Vec<u8> {
    let x = values(rows * cols, 1);
    let Ok(rb) = ty.row_bytes(cols) else {
        return Vec::new();
    };
    let mut out = vec![0u8; rows * rb];
    for (src, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        kiln_quant::quantize_row(ty, src, dst).unwrap_or(());
    }
    out
}

fn bench(c: &mut Criterion) {
    let pool = ThreadPool::new(1);
    let shapes = [
        ("q4_1 576x1536", QuantType::Q4_1, 576, 1536),
        ("q8_0 49152x576", QuantType::Q8_0, 49152, 576),
        ("q4_0 576x1536", QuantType::Q4_0, 576, 1536),
        ("q8_0 576x1536", QuantType::Q8_0, 576, 1536),
        ("q4_k 576x1536", QuantType::Q4_K, 576, 1536),
        ("q6_k 576x1536", QuantType::Q6_K, 576, 1536),
        ("f16 576x1536", QuantType::F16, 576, 1536),
    ];
    for (name, ty, rows, cols) in shapes {
        let data = quantize(ty, rows, cols);
        let Ok(w) = QMatrix::new(ty, rows, cols, &data) else {
            continue;
        };
        for n_act in [1usize, 64] {
            let mut acts = ActBuf::new();
            if acts.quantize(ty, &values(n_act * cols, 2), cols).is_err() {
                continue;
            }
            let mut out = vec![0.0f32; n_act * rows];
            for (unit, tp) in [
                ("bytes", Throughput::Bytes(data.len() as u64)),
                (
                    "elements",
                    Throughput::Elements((rows * cols * n_act) as u64),
                ),
            ] {
                let mut g = c.benchmark_group(format!("{name}/{n_act}/{unit}"));
                g.throughput(tp);
                g.sample_size(10);
                g.warm_up_time(Duration::from_millis(500));
                g.measurement_time(Duration::from_secs(2));
                for choice in kiln_tensor::cpu::features().supported_choices() {
                    g.bench_function(BenchmarkId::from_parameter(choice.name()), |b| {
                        b.iter(|| {
                            matmul_with(choice, &pool, &w, &acts, &mut out).unwrap_or(());
                            black_box(&out);
                        })
                    });
                    let Some(p) = PackedMatrix::pack(choice, &w) else {
                        continue;
                    };
                    let id = format!("packed-{}", choice.name());
                    g.bench_function(BenchmarkId::from_parameter(id), |b| {
                        b.iter(|| {
                            matmul_packed(&pool, &p, &acts, &mut out).unwrap_or(());
                            black_box(&out);
                        })
                    });
                }
                g.finish();
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
