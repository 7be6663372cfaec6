//! Criterion bench of the f32 kernels on SmolLM2-135M shapes (d_model 576, d_ff 1536, 9 query
//! heads / 3 KV heads of 64, 512 cached positions): RMSNorm, softmax, SiLU·mul, RoPE, and the
//! attention kernels (f32 rows, the f16 rows the KV cache stores, and the 16-query tile that
//! prefill uses); and the real-time audio nets' kernels at RTNeural's benchmark sizes: the
//! packed-column matrix-vector product of a dense and an LSTM layer (`elements` = FMAs) and the
//! LSTM and GRU state updates. Each is reported as bytes/s and elements/s under the kernel family
//! `kernel_choice()` picks; run once plainly and once with `KILN_KERNELS=generic` to put every
//! SIMD build beside the scalar reference (the family is part of every benchmark id).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_tensor::ops;
use std::time::Duration;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Registers `f` under `name` with byte and element throughputs.
fn case(c: &mut Criterion, name: &str, bytes: usize, elems: usize, mut f: impl FnMut()) {
    let family = kiln_tensor::cpu::kernel_choice().name();
    for (unit, tp) in [
        ("bytes", Throughput::Bytes(bytes as u64)),
        ("elements", Throughput::Elements(elems as u64)),
    ] {
        let mut g = c.benchmark_group(format!("{name}/{unit}"));
        g.throughput(tp);
        g.sample_size(20);
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(1));
        g.bench_function(BenchmarkId::from_parameter(family), |b| b.iter(&mut f));
        g.finish();
    }
}

fn bench(c: &mut Criterion) {
    let (d, ff, hd, kvd, n_pos) = (576usize, 1536usize, 64usize, 192usize, 512usize);

    let x = values(d, 1);
    let w = values(d, 2);
    let mut out = vec![0.0; d];
    case(c, "rms_norm 576", 3 * 4 * d, d, || {
        ops::rms_norm(black_box(&x), &w, 1e-5, &mut out);
    });

    let scores = values(n_pos, 3);
    let mut s = scores.clone();
    case(c, "softmax 512", 2 * 4 * n_pos, n_pos, || {
        s.copy_from_slice(&scores);
        ops::softmax_in_place(black_box(&mut s));
    });

    let up = values(ff, 4);
    let gate0 = values(ff, 5);
    let mut hidden = vec![0.0; ff];
    case(c, "silu_mul 1536", 3 * 4 * ff, ff, || {
        ops::silu_mul(black_box(&gate0), &up, &mut hidden);
    });

    let rope = ops::Rope::new(hd, hd, 100_000.0);
    let mut q = values(9 * hd, 6);
    case(c, "rope 9x64", 2 * 4 * 9 * hd, 9 * hd, || {
        rope.apply(black_box(&mut q), 300);
    });

    // One head's scores over 512 cached keys, then its weighted sum of 512 values.
    let keys = values(n_pos * kvd, 7);
    let qh = values(hd, 8);
    let mut sc = vec![0.0; n_pos];
    case(c, "dot_rows 512x64", 4 * n_pos * hd, n_pos * hd, || {
        ops::dot_rows(black_box(&qh), &keys, kvd, hd, &mut sc);
    });
    let mut o = vec![0.0; hd];
    case(
        c,
        "weighted_rows 512x64",
        4 * n_pos * hd,
        n_pos * hd,
        || {
            ops::weighted_rows(black_box(&sc), &keys, kvd, hd, &mut o);
        },
    );

    // The same over an f16 cache, one 16-position block at a time as decode reads it.
    let block = 16;
    let keys16: Vec<half::f16> = keys.iter().map(|&v| half::f16::from_f32(v)).collect();
    let mut sc16 = vec![0.0; block];
    case(
        c,
        "dot_rows_f16 512x64 (blocks of 16)",
        2 * n_pos * hd,
        n_pos * hd,
        || {
            for b in 0..n_pos / block {
                ops::dot_rows_f16(
                    black_box(&qh),
                    &keys16,
                    kvd,
                    b * block * kvd + hd,
                    &mut sc16,
                );
            }
        },
    );
    let w16 = values(block, 9);
    case(
        c,
        "add_weighted_rows_f16 512x64 (blocks of 16)",
        2 * n_pos * hd,
        n_pos * hd,
        || {
            for b in 0..n_pos / block {
                ops::add_weighted_rows_f16(
                    black_box(&w16),
                    &keys16,
                    kvd,
                    b * block * kvd + hd,
                    &mut o,
                );
            }
        },
    );

    // Prefill: 15 queries (5 rows x 3 heads of a KV head) attend to 512 positions in chunks.
    let queries: Vec<Vec<f32>> = (0..15).map(|i| values(hd, 10 + i)).collect();
    let kv_k: Vec<f32> = values(n_pos * hd, 30);
    let kv_v: Vec<f32> = values(n_pos * hd, 31);
    let mut tile = ops::tile::QueryTile::new(hd);
    let chunk = ops::tile::CHUNK;
    case(
        c,
        "query_tile 15q x 512 positions",
        2 * 4 * n_pos * hd,
        15 * n_pos * hd,
        || {
            tile.reset(queries.iter().map(|q| (q.as_slice(), n_pos)), 0.125);
            for p in (0..n_pos).step_by(chunk) {
                let r = p * hd..(p + chunk) * hd;
                tile.attend(p, black_box(&kv_k[r.clone()]), &kv_v[r], false);
            }
        },
    );

    // Real-time nets: an LSTM 16→16 step's two gate products in one pass (64 gate rows over
    // 16 inputs and 16 recurrent values), a dense 16→16 and a 4-unit LSTM's (gate rows on
    // 16-row panels, as the layer stores them).
    use kiln_tensor::matvec::{matvec_packed_sum, pack_cols};
    for (name, rows, cols) in [
        ("matvec_packed lstm 16x16 (64x16 + 64x16)", 64usize, 16usize),
        ("matvec_packed dense 16x16", 16, 16),
        ("matvec_packed lstm 4x4 (64x4 + 64x4)", 64, 4),
    ] {
        let two = name.starts_with("matvec_packed lstm");
        let w1 = pack_cols(&values(rows * cols, 40), rows, cols);
        let w2 = pack_cols(&values(rows * cols, 41), rows, cols);
        let (x1, x2, bias) = (values(cols, 42), values(cols, 43), values(rows, 44));
        let mut y = vec![0.0; rows];
        let terms = if two { 2 } else { 1 };
        case(
            c,
            name,
            terms * 4 * rows * cols,
            terms * rows * cols,
            || {
                let both = [(&w1[..], &x1[..]), (&w2[..], &x2[..])];
                matvec_packed_sum(black_box(&both[..terms]), &bias, &mut y);
            },
        );
    }
    for units in [4usize, 16, 24] {
        let gates = values(4 * 16usize.max(units.next_multiple_of(16)), 50);
        let stride = gates.len() / 4;
        let (mut cs, mut hs) = (values(units, 51), values(units, 52));
        case(
            c,
            &format!("lstm_update {units} units"),
            4 * 6 * units,
            units,
            || {
                kiln_tensor::rnn_cell::lstm_update(black_box(&gates), stride, &mut cs, &mut hs);
            },
        );
        let (gi, gh) = (&gates[..3 * stride], &gates[stride..]);
        let mut h = values(units, 53);
        case(
            c,
            &format!("gru_update {units} units"),
            4 * 7 * units,
            units,
            || {
                kiln_tensor::rnn_cell::gru_update(black_box(gi), gh, stride, &mut h);
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
