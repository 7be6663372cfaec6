//! The reference log-probabilities file of `kiln perplexity --save-logits` / `--kl-logits`:
//! every chunk's tokens and the log-softmax of each scored position, so that a quantized model
//! can be compared with its base without loading both.
//!
//! Layout (little-endian): magic `KILNLGT1`; `u32` version (1), `n_vocab`, `n_ctx`,
//! `n_chunks`, `first` (the first scored position), `u32` reserved (0); then per chunk the
//! `n_ctx` token ids (`u32`) followed by `n_ctx − 1 − first` rows of `n_vocab` f16 log-probs.
//! The reader checks the header against fixed bounds and the exact file size before reading a
//! row, reads one chunk at a time, and rejects non-finite or positive log-probs.

use crate::EngineError;
use half::f16;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KILNLGT1";
const VERSION: u32 = 1;
const HEADER: u64 = 32;
/// Largest vocabulary and context accepted from a file.
const MAX_VOCAB: u32 = 1 << 21;
const MAX_CTX: u32 = 1 << 20;
/// Largest chunk read into memory at once.
const MAX_CHUNK_BYTES: u64 = 1 << 30;

/// Shape of a logits file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogitsHeader {
    pub n_vocab: u32,
    pub n_ctx: u32,
    pub n_chunks: u32,
    pub first: u32,
}

impl LogitsHeader {
    /// Scored rows per chunk.
    pub fn rows(&self) -> u64 {
        u64::from(self.n_ctx).saturating_sub(1 + u64::from(self.first))
    }

    fn chunk_bytes(&self) -> Option<u64> {
        let rows = self
            .rows()
            .checked_mul(u64::from(self.n_vocab))?
            .checked_mul(2)?;
        rows.checked_add(u64::from(self.n_ctx) * 4)
    }

    fn file_bytes(&self) -> Option<u64> {
        self.chunk_bytes()?
            .checked_mul(u64::from(self.n_chunks))?
            .checked_add(HEADER)
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> EngineError {
    EngineError::Invalid(format!(
        "{}: not a usable kiln logits file: {}",
        path.display(),
        problem.into()
    ))
}

fn io(path: &Path, what: &str, e: std::io::Error) -> EngineError {
    EngineError::Invalid(format!("{what} {}: {e}", path.display()))
}

/// Writes a logits file atomically: a temporary file next to the target, renamed on
/// [`LogitsWriter::finish`]; dropped unfinished, it leaves nothing behind.
pub struct LogitsWriter {
    path: PathBuf,
    header: LogitsHeader,
    tmp: BufWriter<tempfile::NamedTempFile>,
    chunks: u32,
}

impl LogitsWriter {
    pub fn create(path: &Path, header: LogitsHeader) -> Result<LogitsWriter, EngineError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        #[cfg(unix)]
        {
            // 0666 minus the umask, as a plainly created file, not tempfile's private 0600.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder
            .tempfile_in(dir)
            .map_err(|e| io(dir, "creating a temporary file in", e))?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp);
        let mut h = Vec::with_capacity(HEADER as usize);
        h.extend_from_slice(MAGIC);
        for v in [
            VERSION,
            header.n_vocab,
            header.n_ctx,
            header.n_chunks,
            header.first,
            0,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&h).map_err(|e| io(path, "writing", e))?;
        Ok(LogitsWriter {
            path: path.to_owned(),
            header,
            tmp: w,
            chunks: 0,
        })
    }

    /// Appends one chunk: its tokens and its scored rows of log-probs.
    pub fn write_chunk(&mut self, tokens: &[u32], logprobs: &[f32]) -> Result<(), EngineError> {
        let h = self.header;
        if tokens.len() != h.n_ctx as usize
            || logprobs.len() as u64 != h.rows() * u64::from(h.n_vocab)
            || self.chunks >= h.n_chunks
        {
            return Err(EngineError::Invalid(format!(
                "logits chunk of {} tokens and {} values does not fit the header {h:?}",
                tokens.len(),
                logprobs.len()
            )));
        }
        let mut buf = Vec::with_capacity(tokens.len() * 4 + logprobs.len() * 2);
        for t in tokens {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        for &v in logprobs {
            // -inf (an impossible token) is stored as the most negative finite f16.
            buf.extend_from_slice(&f16::from_f32(v.max(f16::MIN.to_f32())).to_le_bytes());
        }
        self.tmp
            .write_all(&buf)
            .map_err(|e| io(&self.path, "writing", e))?;
        self.chunks += 1;
        Ok(())
    }

    /// Checks that every chunk was written, syncs and renames the file into place.
    pub fn finish(self) -> Result<(), EngineError> {
        if self.chunks != self.header.n_chunks {
            return Err(EngineError::Invalid(format!(
                "{}: {} of {} chunks written",
                self.path.display(),
                self.chunks,
                self.header.n_chunks
            )));
        }
        let tmp = self
            .tmp
            .into_inner()
            .map_err(|e| io(&self.path, "writing", e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io(&self.path, "syncing", e))?;
        tmp.persist(&self.path)
            .map_err(|e| io(&self.path, "renaming into", e.error))?;
        Ok(())
    }
}

/// Reads a logits file chunk by chunk after validating its header and size.
pub struct LogitsReader {
    path: PathBuf,
    header: LogitsHeader,
    r: BufReader<std::fs::File>,
    next: u32,
    raw: Vec<u8>,
}

impl LogitsReader {
    pub fn open(path: &Path) -> Result<LogitsReader, EngineError> {
        let f = std::fs::File::open(path).map_err(|e| io(path, "opening", e))?;
        let len = f
            .metadata()
            .map_err(|e| io(path, "reading metadata of", e))?
            .len();
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut h = [0u8; HEADER as usize];
        if len < HEADER {
            return Err(bad(path, format!("{len} bytes is shorter than the header")));
        }
        r.read_exact(&mut h).map_err(|e| io(path, "reading", e))?;
        if &h[..8] != MAGIC {
            return Err(bad(path, "wrong magic"));
        }
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if word(8) != VERSION {
            return Err(bad(
                path,
                format!("version {} (expected {VERSION})", word(8)),
            ));
        }
        let header = LogitsHeader {
            n_vocab: word(12),
            n_ctx: word(16),
            n_chunks: word(20),
            first: word(24),
        };
        if header.n_vocab == 0 || header.n_vocab > MAX_VOCAB {
            return Err(bad(path, format!("vocabulary size {}", header.n_vocab)));
        }
        if header.n_ctx < 4 || header.n_ctx > MAX_CTX || header.rows() == 0 {
            return Err(bad(
                path,
                format!(
                    "context {} with first scored position {}",
                    header.n_ctx, header.first
                ),
            ));
        }
        if header.n_chunks == 0 {
            return Err(bad(path, "no chunks"));
        }
        match header.chunk_bytes() {
            Some(b) if b <= MAX_CHUNK_BYTES => {}
            _ => return Err(bad(path, "chunks larger than 1 GiB")),
        }
        let expected = header
            .file_bytes()
            .ok_or_else(|| bad(path, "size overflows"))?;
        if expected != len {
            return Err(bad(
                path,
                format!("{len} bytes, but the header describes {expected} (truncated or padded)"),
            ));
        }
        Ok(LogitsReader {
            path: path.to_owned(),
            header,
            r,
            next: 0,
            raw: Vec::new(),
        })
    }

    pub fn header(&self) -> LogitsHeader {
        self.header
    }

    /// Reads the next chunk: checks its tokens equal `tokens` and fills `logprobs` with its
    /// rows (`rows × n_vocab` values).
    pub fn read_chunk(
        &mut self,
        tokens: &[u32],
        logprobs: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let h = self.header;
        if self.next >= h.n_chunks {
            return Err(bad(
                &self.path,
                format!("it holds only {} chunks", h.n_chunks),
            ));
        }
        let n_bytes = h.chunk_bytes().unwrap_or(0) as usize;
        self.raw.resize(n_bytes, 0);
        self.r
            .read_exact(&mut self.raw)
            .map_err(|e| io(&self.path, "reading", e))?;
        let chunk = self.next;
        self.next += 1;
        let (tok_bytes, rows) = self.raw.split_at(h.n_ctx as usize * 4);
        let file_tokens = tok_bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if tokens.len() != h.n_ctx as usize {
            return Err(bad(
                &self.path,
                format!(
                    "its chunks have {} tokens, this run {}",
                    h.n_ctx,
                    tokens.len()
                ),
            ));
        }
        if let Some(pos) = file_tokens.zip(tokens).position(|(a, &b)| a != b) {
            return Err(bad(
                &self.path,
                format!("chunk {chunk} differs from this text at token {pos} (another text or tokenizer)"),
            ));
        }
        logprobs.clear();
        logprobs.reserve(rows.len() / 2);
        for b in rows.chunks_exact(2) {
            let v = f16::from_le_bytes([b[0], b[1]]).to_f32();
            if !v.is_finite() || v > 1e-2 {
                return Err(bad(&self.path, format!("chunk {chunk} holds log-prob {v}")));
            }
            logprobs.push(v);
        }
        Ok(())
    }
}
