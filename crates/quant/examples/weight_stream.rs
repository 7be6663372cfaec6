//! How fast the packed kernels stream a model's worth of weights from memory, with nothing else
//! running: the matrices of SmolLM2-135M (30 layers of Q/K/V, output projection, gate/up and
//! down, then the 49152-row output head) packed once and multiplied by one activation row
//! each, back to back, as single-token decode does, next to the bandwidth probe of
//! `kiln bench`. Decode's end-to-end utilisation mixes the kernels with attention, norms and
//! hand-offs; this isolates the kernels' own stream, so a kernel change can be judged in
//! seconds (alternate builds, quote medians: the machine's bandwidth drifts).
//!
//! `cargo run --release -p kiln-quant --example weight_stream -- [THREADS] [q8_0|q4_0|q4_1]`

use kiln_quant::{matmul_packed, quantize_row, ActBuf, PackedMatrix, QMatrix, QuantType};
use kiln_tensor::{cpu::kernel_choice, membench::ReadProbe, ThreadPool};
use std::time::Instant;

/// SmolLM2-135M's matrices in decode order: (rows, cols) per layer, and the output head.
const LAYER: [(usize, usize); 4] = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
const LAYERS: usize = 30;
const HEAD: (usize, usize) = (49152, 576);
const ROUNDS: usize = 8;
const PASSES_PER_ROUND: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let ty = match args.next().as_deref().unwrap_or("q8_0") {
        "q8_0" => QuantType::Q8_0,
        "q4_0" => QuantType::Q4_0,
        "q4_1" => QuantType::Q4_1,
        other => return Err(format!("unknown type {other} (q8_0, q4_0 or q4_1)").into()),
    };
    let choice = kernel_choice();
    if !PackedMatrix::supports(choice, ty) {
        return Err(format!("no packed {ty:?} kernel for {choice:?} on this CPU").into());
    }
    let shapes = (0..LAYERS).flat_map(|_| LAYER).chain([HEAD]);
    let mut matrices = Vec::new();
    let mut bytes = 0;
    for (m, (rows, cols)) in shapes.enumerate() {
        // Every row alike: the values do not change how fast the weights stream.
        let row: Vec<f32> = (0..cols)
            .map(|c| ((m * 7 + c * 13) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let mut row_q = vec![0u8; ty.block_bytes() * cols / ty.block_size()];
        quantize_row(ty, &row, &mut row_q)?;
        let data = row_q.repeat(rows);
        let packed = PackedMatrix::pack(choice, &QMatrix::new(ty, rows, cols, &data)?)
            .ok_or("packing failed")?;
        bytes += packed.byte_len();
        matrices.push(packed);
    }
    let x: Vec<f32> = (0..1536).map(|i| (i % 101) as f32 / 50.0 - 1.0).collect();
    let mut narrow = ActBuf::new();
    narrow.quantize(ty, &x[..576], 576)?;
    let mut wide = ActBuf::new();
    wide.quantize(ty, &x, 1536)?;
    let mut out = vec![0f32; HEAD.0];
    let pool = ThreadPool::new(threads);
    // Sized and measured as `kiln bench` does it: the limit for this working set.
    let probe = ReadProbe::for_working_set(bytes);
    println!(
        "{ty:?}, {threads} thread(s), {:.1} MB of packed weights per pass",
        bytes as f64 / 1e6
    );
    for round in 0..ROUNDS {
        let bandwidth = probe.measure(&pool, ReadProbe::WORKING_SET_PASSES);
        let start = Instant::now();
        for _ in 0..PASSES_PER_ROUND {
            for w in &matrices {
                let acts = if w.cols() == 576 { &narrow } else { &wide };
                matmul_packed(&pool, w, acts, &mut out[..w.rows()])?;
            }
        }
        let pass = start.elapsed().as_secs_f64() / PASSES_PER_ROUND as f64;
        let rate = bytes as f64 / pass;
        println!(
            "round {round}: {:.2} ms per pass, {:.1} GB/s; probe {:.1} GB/s; {:.0}%",
            pass * 1e3,
            rate / 1e9,
            bandwidth / 1e9,
            100.0 * rate / bandwidth
        );
    }
    Ok(())
}
