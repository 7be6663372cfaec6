//! Aggregate decode throughput of batched forward passes: `cargo run --release -p kiln-engine
//! --example batch_decode -- MODEL.gguf [threads] [n_gen] [batch sizes, comma-separated]`.
//! Prints tokens/s over all sequences for each batch size (batch 1 is single-stream decode).

use kiln_engine::Engine;
use kiln_kvcache::KvDtype;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .ok_or("usage: batch_decode MODEL.gguf [threads] [n_gen] [sizes]")?,
    );
    let threads: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    let n_gen: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let sizes: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,4,8,16".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let engine = Engine::load(&model, threads)?;
    engine.time_batched_decode(1, 8, KvDtype::F16)?; // warm-up
    for n in sizes {
        let t = engine.time_batched_decode(n, n_gen, KvDtype::F16)?;
        let tps = (n * n_gen) as f64 / t.as_secs_f64();
        println!(
            "batch {n:3}: {tps:8.1} tokens/s aggregate ({:.1} per sequence)",
            tps / n as f64
        );
    }
    Ok(())
}
