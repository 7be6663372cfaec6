//! Times tokenizer loading and encoding of a text file (default: Debian's GPL-3 text) with a
//! GGUF model's tokenizer.
//!
//! `cargo run --release -p kiln-tokenizer --example encode_bench -- MODEL.gguf [TEXT_FILE]`

use std::time::{Duration, Instant};

use kiln_gguf::GgufFile;
use kiln_tokenizer::Tokenizer;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or("usage: encode_bench MODEL.gguf [TEXT_FILE]")?;
    let text_path = args
        .next()
        .unwrap_or_else(|| "/usr/share/common-licenses/GPL-3".to_owned());
    let text = std::fs::read_to_string(&text_path)?;

    let file = GgufFile::open(model.as_ref())?;
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&file)?;
    let load = t0.elapsed();

    let mut times = Vec::new();
    let mut n_tokens = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let ids = tok.encode(&text, true, false);
        times.push(t.elapsed());
        n_tokens = ids.len();
    }
    let enc = median(times);
    let ids = tok.encode(&text, true, false);
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let s = tok.decode(&ids);
        times.push(t.elapsed());
        assert_eq!(s.len(), text.len());
    }
    let dec = median(times);
    println!(
        "{text_path}: {} bytes -> {n_tokens} tokens; tokenizer load {:.1} ms; encode median {:.2} ms ({:.1} MB/s); decode median {:.3} ms",
        text.len(),
        load.as_secs_f64() * 1e3,
        enc.as_secs_f64() * 1e3,
        text.len() as f64 / enc.as_secs_f64() / 1e6,
        dec.as_secs_f64() * 1e3,
    );
    Ok(())
}
