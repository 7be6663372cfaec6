//! `kiln perplexity`: llama-perplexity's protocol over a text file.

use crate::common::{load_engine, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_engine::{KlReference, LogitsReader, PerplexityOptions};
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
    /// Compare with this (base) model run on the same chunks: KL divergence, same top token,
    /// PPL ratio.
    #[arg(long, conflicts_with = "kl_logits")]
    pub kl_reference: Option<PathBuf>,
    /// Save this model's log-probabilities of every scored position to FILE (for --kl-logits).
    #[arg(long)]
    pub save_logits: Option<PathBuf>,
    /// Compare with log-probabilities saved earlier by --save-logits.
    #[arg(long)]
    pub kl_logits: Option<PathBuf>,
}

pub fn main(args: PerplexityArgs) -> Result<()> {
    let kv = args.kv_type;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if let Some(d) = args
        .save_logits
        .as_ref()
        .and_then(|p| p.parent())
        .filter(|d| !d.as_os_str().is_empty())
    {
        if !d.is_dir() {
            anyhow::bail!("--save-logits: directory {} does not exist", d.display());
        }
    }
    let engine = load_engine(&args.model)?;
    let base = match &args.kl_reference {
        Some(p) => Some(load_engine(&ModelArgs {
            model: Some(p.display().to_string()),
            threads: args.model.threads,
        })?),
        None => None,
    };
    let reference = match (&base, &args.kl_logits) {
        (Some(b), _) => Some(KlReference::Model(b)),
        (None, Some(p)) => Some(KlReference::Logits(
            LogitsReader::open(p).with_context(|| format!("--kl-logits {}", p.display()))?,
        )),
        (None, None) => None,
    };
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
    let (report, kl) = engine.perplexity_gated(
        &tokens,
        &opts,
        reference,
        args.save_logits.as_deref(),
        |done, total, ppl| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("PPL {ppl:.4}"));
        },
    )?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "kiln: {} chunks, {} scored tokens, {:.1} s ({:.1} tok/s)",
        report.n_chunks,
        report.n_scored,
        secs,
        (report.n_chunks * args.ctx) as f64 / secs
    );
    // The PPL line stays last (scripts read it); the quality gates come before it.
    let mut out = String::new();
    if let Some(k) = kl {
        out.push_str(&format!(
            "reference PPL = {:.4}, PPL ratio = {:.5}\nKL divergence: mean {:.6}, median {:.6}, p99 {:.6}, max {:.6} ({} positions)\nsame top token: {:.3}%\n",
            k.reference_ppl,
            k.ppl_ratio,
            k.mean,
            k.median,
            k.p99,
            k.max,
            k.n,
            100.0 * k.same_top
        ));
    }
    out.push_str(&format!(
        "PPL = {:.4} +/- {:.5}\n",
        report.ppl, report.ppl_stderr
    ));
    crate::common::print_stdout(&out)
}
