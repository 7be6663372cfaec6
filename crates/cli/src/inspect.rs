//! `kiln inspect`: a GGUF file's metadata, tensors, parameter count and bytes per type.

use crate::common::resolve_model;
use anyhow::{Context, Result};
use clap::Args;
use kiln_gguf::{GgufFile, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A GGUF file or a known model name.
    pub model: String,
    /// Print every element of long arrays.
    #[arg(long)]
    pub full: bool,
}

/// Array elements shown before eliding.
const ARRAY_PREVIEW: usize = 8;

pub fn main(args: InspectArgs) -> Result<()> {
    let path = resolve_model(Some(&args.model))?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = String::new();
    writeln!(out, "file: {}", path.display())?;
    writeln!(
        out,
        "GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        file.version(),
        file.metadata().len(),
        file.tensors().len(),
        file.alignment(),
        file.data_offset()
    )?;
    writeln!(out, "\nmetadata:")?;
    for (key, value) in file.metadata() {
        writeln!(out, "  {key} = {}", show(value, args.full))?;
    }
    writeln!(out, "\ntensors:")?;
    let mut by_type: BTreeMap<&str, (u64, u64, usize)> = BTreeMap::new();
    let mut params = 0u64;
    for t in file.tensors() {
        let n = t.n_elements();
        params += n;
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += n;
        e.1 += t.n_bytes;
        e.2 += 1;
        writeln!(
            out,
            "  {:<32} {:<6} {:?}",
            t.name,
            t.ggml_type.name(),
            t.dims
        )?;
    }
    writeln!(out, "\nparameters: {params} ({:.1} M)", params as f64 / 1e6)?;
    writeln!(out, "bytes per type:")?;
    for (ty, (n, bytes, count)) in by_type {
        writeln!(
            out,
            "  {ty:<6} {count:>4} tensors {n:>12} elements {bytes:>12} bytes ({:.2} bits/weight)",
            bytes as f64 * 8.0 / n.max(1) as f64
        )?;
    }
    crate::common::print_stdout(&out)
}

fn show(v: &Value, full: bool) -> String {
    match v {
        Value::String(s) => format!("{:?}", truncate(s, if full { usize::MAX } else { 200 })),
        Value::Array(items) => {
            let shown = if full {
                items.len()
            } else {
                items.len().min(ARRAY_PREVIEW)
            };
            let mut parts: Vec<String> = items[..shown].iter().map(|i| show(i, full)).collect();
            if shown < items.len() {
                parts.push(format!("… ({} items)", items.len()));
            }
            format!("[{}]", parts.join(", "))
        }
        Value::Bool(b) => b.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        other => other
            .as_i64()
            .map(|i| i.to_string())
            .or_else(|| other.as_u64().map(|u| u.to_string()))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
