//! `kiln perplexity`: llama-perplexity's protocol over a text file.

use crate::common::{load_engine, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_engine::PerplexityOptions;
use kiln_kvcache::KvDtype;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks (0 = all).
    #[arg(long, default_value_t = 0)]
    pub chunks: usize,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16", value_parser = crate::common::parse_kv)]
    pub kv_type: KvDtype,
}

pub fn main(args: PerplexityArgs) -> Result<()> {
    let kv = args.kv_type;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let engine = load_engine(&args.model)?;
    let tokens = engine.tokenizer().encode(&text, true, false);
    eprintln!(
        "kiln: {} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len() / args.ctx.max(1),
        args.ctx
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("perplexity {bar:30} {pos}/{len} chunks, {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let opts = PerplexityOptions {
        n_ctx: args.ctx,
        kv,
        max_chunks: args.chunks,
    };
    let report = engine.perplexity(&tokens, &opts, |done, total, ppl| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("PPL {ppl:.4}"));
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "kiln: {} chunks, {} scored tokens, {:.1} s ({:.1} tok/s)",
        report.n_chunks,
        report.n_scored,
        secs,
        (report.n_chunks * args.ctx) as f64 / secs
    );
    crate::common::print_stdout(&format!(
        "PPL = {:.4} +/- {:.5}\n",
        report.ppl, report.ppl_stderr
    ))
}
