//! `kiln calibrate`: runs a model over a calibration text and writes its importance matrix
//! (llama.cpp's imatrix GGUF layout).

use crate::common::{load_engine, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_engine::CalibrateOptions;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The calibration text (should not be the text you evaluate on).
    #[arg(long)]
    pub text: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Use at most this many chunks (0 = all).
    #[arg(long, default_value_t = 0)]
    pub chunks: usize,
    /// Where to write the importance matrix (GGUF).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

pub fn main(args: CalibrateArgs) -> Result<()> {
    if let Some(d) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !d.is_dir() {
            bail!("output directory {} does not exist", d.display());
        }
    }
    let bytes =
        std::fs::read(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let engine = load_engine(&args.model)?;
    let tokens = engine.tokenizer().encode(&text, true, false);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("calibrate {bar:30} {pos}/{len} chunks ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let opts = CalibrateOptions {
        n_ctx: args.ctx,
        max_chunks: args.chunks,
        kv: kiln_kvcache::KvDtype::F16,
        dataset: args.text.file_name().map_or_else(
            || args.text.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    };
    let start = std::time::Instant::now();
    let m = engine.calibrate(&tokens, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    m.save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "kiln: {} tokens, {} chunks of {}, {} weights, {:.1} s; wrote {}",
        tokens.len(),
        m.chunk_count,
        m.chunk_size,
        m.entries.len(),
        start.elapsed().as_secs_f64(),
        args.output.display()
    );
    Ok(())
}
