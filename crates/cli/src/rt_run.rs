//! `kiln rt-run`: runs a real-time audio net (RTNeural JSON or rtnet GGUF) frame by frame over
//! the rows of a CSV file and writes one output row per frame.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_models::rtnet::csv::{format_row, parse_rows};
use kiln_models::rtnet::{report, RtNet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct RtRunArgs {
    /// The net: RTNeural JSON (Keras export or PyTorch state dict) or an rtnet GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Input CSV: one frame per row, comma-separated values.
    #[arg(long)]
    pub input: PathBuf,
    /// Output CSV (default: stdout). Written only when every frame ran.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Run with INT8 (Q8_0) weights (rows padded to whole 32-blocks where needed).
    #[arg(long)]
    pub int8: bool,
    /// Print the per-layer and output error of INT8 weights against f32 on these inputs
    /// (stderr).
    #[arg(long)]
    pub int8_report: bool,
}

pub fn main(args: RtRunArgs) -> Result<()> {
    let t0 = Instant::now();
    let mut net =
        RtNet::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let load = t0.elapsed();
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let rows = parse_rows(&text).with_context(|| format!("reading {}", args.input.display()))?;
    for (i, r) in rows.iter().enumerate() {
        if r.len() != net.in_size() {
            bail!(
                "{}: row {} has {} values, the net takes {} per frame",
                args.input.display(),
                i + 1,
                r.len(),
                net.in_size()
            );
        }
    }
    if args.int8_report {
        let rep = report::int8_report(&net, &rows)?;
        eprint!("{}", quant_table("INT8 (Q8_0)", &rep));
    }
    if args.int8 {
        net = net.to_q8_0();
    }
    eprintln!(
        "kiln: {} ({} layers, {} parameters, {} bytes) loaded in {:.2} ms",
        args.model.display(),
        net.layers().len(),
        net.n_params(),
        net.memory_bytes(),
        load.as_secs_f64() * 1e3
    );
    let mut out = String::new();
    net.reset();
    for r in &rows {
        format_row(net.forward(r), &mut out);
    }
    match &args.output {
        Some(path) => crate::common::write_atomic(path, out.as_bytes())?,
        None => {
            let mut so = std::io::stdout().lock();
            so.write_all(out.as_bytes()).context("writing stdout")?;
            so.flush().context("writing stdout")?;
        }
    }
    Ok(())
}

/// The per-layer error table of a converted net (`what`, e.g. "INT8 (Q8_0)") against its
/// f32 reference, with the output line.
pub fn quant_table(what: &str, rep: &report::QuantReport) -> String {
    let mut out = format!(
        "{what} vs f32 over {} frames:\n{:>5}  {:<16} {:<8} {:>12} {:>12} {:>12}\n",
        rep.frames, "layer", "type", "weights", "max_abs", "rms", "ref_rms"
    );
    for l in &rep.layers {
        let w = l.weight_type.map_or("-", |t| t.name());
        out += &format!(
            "{:>5}  {:<16} {:<8} {:>12.3e} {:>12.3e} {:>12.3e}\n",
            l.index, l.kind, w, l.error.max_abs, l.error.rms, l.error.ref_rms
        );
    }
    out += &format!(
        "output: max_abs {:.3e}, rms {:.3e} ({:.3}% of the reference rms); memory {} -> {} bytes\n",
        rep.output.max_abs,
        rep.output.rms,
        100.0 * rep.output.relative_rms(),
        rep.reference_bytes,
        rep.quantized_bytes
    );
    out
}
