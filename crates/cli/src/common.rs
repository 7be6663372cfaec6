//! Options shared by the model-running commands and how they become an `Engine`.

use anyhow::{Context, Result};
use clap::Args;
use kiln_engine::Engine;
use kiln_kvcache::KvDtype;
use kiln_sampler::SamplingParams;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file path or a known model name (see `kiln pull --list`); default: the default model.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ContextArgs {
    /// Context size in tokens (default: the model's training context).
    #[arg(long, short = 'c', default_value_t = 0)]
    pub ctx: usize,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16", value_parser = parse_kv)]
    pub kv_type: KvDtype,
}

/// Parses `--kv-type` (f16 or f32) for every command that takes it.
pub fn parse_kv(s: &str) -> Result<KvDtype, String> {
    KvDtype::from_name(s).ok_or_else(|| format!("unknown KV type {s:?} (use f16 or f32)"))
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    pub max_tokens: usize,
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens below P × the top probability (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for repeating recent tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (default: a fresh one, printed on stderr).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        let seed = self.seed.unwrap_or_else(fresh_seed);
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed,
            ..SamplingParams::default()
        }
    }
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Resolves `--model` to a file: an existing path, or a known model name pulled on demand.
pub fn resolve_model(model: Option<&str>) -> Result<PathBuf> {
    match model {
        Some(m) => {
            let p = PathBuf::from(m);
            if p.exists() {
                return Ok(p);
            }
            match crate::pull::find_known(m) {
                Some(known) => crate::pull::ensure(known),
                None => anyhow::bail!(
                    "{m}: no such file, and not a known model name (known: {})",
                    crate::pull::known_names()
                ),
            }
        }
        None => crate::pull::ensure(crate::pull::default_model()),
    }
}

pub fn load_engine(args: &ModelArgs) -> Result<Engine> {
    let path = resolve_model(args.model.as_deref())?;
    let start = std::time::Instant::now();
    let engine =
        Engine::load(&path, args.threads).with_context(|| format!("loading {}", path.display()))?;
    let c = engine.model().config();
    eprintln!(
        "kiln: {} ({}, {} layers, d_model {}, vocab {}) loaded in {:.0} ms; {} threads, {} kernels",
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        c.architecture,
        c.n_layer,
        c.n_embd,
        c.n_vocab,
        start.elapsed().as_secs_f64() * 1e3,
        engine.n_threads(),
        kiln_tensor::cpu::kernel_choice().name(),
    );
    Ok(engine)
}

/// Tokenizes a prompt the way the model expects: BOS only if the metadata asks for it and
/// the text does not already start with it; control tokens in the text are honoured.
pub fn encode_prompt(engine: &Engine, text: &str) -> Vec<u32> {
    engine.encode_prompt(text)
}

/// Writes `text` to stdout. A closed pipe (`kiln inspect … | head`) is not an error.
pub fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory that is renamed
/// over `path` at the end, so a failure never leaves a partial file (permissions 0666 minus
/// the umask, as a plainly created file, not the temporary file's private 0600).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `n` values of seeded uniform noise in [-1, 1) (xorshift64): the test signal of
/// `rt-bench --layer` (RTNeural's layer bench uses the same range) and of `quantize`'s INT8
/// error report.
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
