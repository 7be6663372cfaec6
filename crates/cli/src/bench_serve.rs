//! `kiln bench-serve`: load for any OpenAI-compatible server (kiln serve, llama-server, …).
//! At each concurrency level it keeps that many streaming completions in flight until the
//! level's requests are done, and reports percentiles of time to first token, inter-token
//! latency and end-to-end latency, aggregate generated tokens/s and failures; JSON with
//! `--output` (which `kiln compare` reads). Plain `http://` only.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (https is not supported).
    #[arg(long)]
    pub url: String,
    /// Clients in flight, one level after another.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Approximate prompt length in tokens (synthetic text, different for every request).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated per request (`ignore_eos` is sent so every request runs to it).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Model name for the request body (default: the first id of GET /v1/models).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub api_key: Option<String>,
    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// Where requests go.
#[derive(Debug, Clone)]
struct Target {
    /// host:port to connect to.
    addr: String,
    /// Path prefix before `/v1/...` (empty or e.g. `/api`).
    prefix: String,
    api_key: Option<String>,
    timeout: Duration,
}

/// What one request measured.
#[derive(Debug, Clone, Default)]
struct Sample {
    status: u16,
    ttft: Option<f64>,
    gaps: Vec<f64>,
    e2e: f64,
    completion_tokens: usize,
    error: Option<String>,
}

/// Bounds on what the client buffers from a server.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 64 << 20;

pub fn main(args: BenchServeArgs) -> Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs positive values");
    }
    if args.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let target = parse_url(&args.url, args.api_key.clone(), args.timeout)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(args, target))?;
    crate::common::print_stdout(&table(&report))?;
    Ok(())
}

fn parse_url(url: &str, api_key: Option<String>, timeout: u64) -> Result<Target> {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => bail!("https is not supported: {url}"),
        None => bail!("the URL must start with http:// (got {url})"),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        bail!("no host in {url}");
    }
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let prefix = path.trim_end_matches('/');
    let prefix = prefix
        .strip_suffix("v1")
        .unwrap_or(prefix)
        .trim_end_matches('/');
    Ok(Target {
        addr,
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        },
        api_key,
        timeout: Duration::from_secs(timeout.max(1)),
    })
}

async fn run(args: BenchServeArgs, target: Target) -> Result<Value> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => first_model(&target).await?,
    };
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut levels = Vec::new();
    for &c in &args.concurrency {
        let bar = indicatif::ProgressBar::new(args.requests as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "bench-serve c={msg} [{bar:30}] {pos}/{len} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(c.to_string());
        let next = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..c {
            let (next, target, model, bar) = (
                Arc::clone(&next),
                target.clone(),
                model.clone(),
                bar.clone(),
            );
            let (n, pt, mt) = (args.requests, args.prompt_tokens, args.max_tokens);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let body = json!({"model": model, "prompt": prompt(run_id, c, i, pt),
                        "max_tokens": mt, "temperature": 0, "stream": true, "ignore_eos": true,
                        "stream_options": {"include_usage": true}});
                    out.push(one_request(&target, &body).await);
                    bar.inc(1);
                }
                out
            }));
        }
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await.context("a client task failed")?);
        }
        let wall = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        levels.push(summarize(c, wall, &samples));
    }
    let report = json!({
        "kind": "bench-serve",
        "url": args.url,
        "model": model,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "requests_per_level": args.requests,
        "levels": levels,
    });
    if let Some(path) = &args.output {
        crate::common::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(report)
}

/// About `tokens` tokens of text unique to (run, level, request), so no cache answers it,
/// not even one warmed by an earlier run against the same server.
fn prompt(run: u64, level: usize, i: usize, tokens: usize) -> String {
    const WORDS: [&str; 16] = [
        "river", "stone", "lamp", "garden", "copper", "window", "forest", "signal", "harbor",
        "valley", "paper", "engine", "meadow", "silver", "bridge", "planet",
    ];
    let mut s = format!("Request {run:x}-{level}-{i}:");
    let mut x =
        (run ^ (level as u64 * 1_000_003 + i as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..tokens.saturating_sub(6) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(' ');
        s.push_str(WORDS[(x % 16) as usize]);
    }
    s
}

async fn first_model(t: &Target) -> Result<String> {
    let path = format!("{}/v1/models", t.prefix);
    let (status, body) = tokio::time::timeout(t.timeout, simple_get(t, &path))
        .await
        .context("GET /v1/models timed out")??;
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: Value = serde_json::from_slice(&body).context("GET /v1/models: not JSON")?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .context("GET /v1/models listed no model; pass --model")
}

fn request_head(t: &Target, method: &str, path: &str, len: usize) -> String {
    let auth = t
        .api_key
        .as_ref()
        .map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {len}\r\n{auth}Connection: close\r\n\r\n",
        t.addr
    )
}

async fn connect(t: &Target) -> Result<TcpStream> {
    TcpStream::connect(&t.addr)
        .await
        .with_context(|| format!("connecting to {}", t.addr))
}

async fn simple_get(t: &Target, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = connect(t).await?;
    s.write_all(request_head(t, "GET", path, 0).as_bytes())
        .await?;
    let mut r = Response::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        r.feed(&buf[..n])?;
    }
    Ok((r.status.unwrap_or(0), r.body))
}

/// An HTTP/1.1 response read incrementally: head, then the body with chunking removed.
#[derive(Default)]
struct Response {
    raw: Vec<u8>,
    status: Option<u16>,
    chunked: bool,
    body: Vec<u8>,
}

impl Response {
    /// Takes more bytes from the socket; body bytes accumulate in `body`.
    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        self.raw.extend_from_slice(bytes);
        if self.status.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.raw.len() > MAX_HEAD {
                    bail!("response head over {MAX_HEAD} bytes");
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .context("malformed status line")?;
            self.status = Some(status);
            self.chunked = head.contains("transfer-encoding: chunked");
            self.raw.drain(..end + 4);
        }
        if !self.chunked {
            self.body.append(&mut self.raw);
        } else {
            while let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size_text = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .with_context(|| format!("bad chunk size {size_text:?}"))?;
                if self.raw.len() < eol + 2 + size + 2 {
                    break;
                }
                self.body
                    .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
                self.raw.drain(..eol + 2 + size + 2);
            }
        }
        if self.body.len() > MAX_BODY {
            bail!("response body over {MAX_BODY} bytes");
        }
        Ok(())
    }
}

async fn one_request(t: &Target, body: &Value) -> Sample {
    let start = Instant::now();
    let mut sample = match tokio::time::timeout(t.timeout, stream_request(t, body, start)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => Sample {
            error: Some(format!("{e:#}")),
            ..Sample::default()
        },
        Err(_) => Sample {
            error: Some(format!("no answer within {:?}", t.timeout)),
            ..Sample::default()
        },
    };
    sample.e2e = start.elapsed().as_secs_f64();
    sample
}

async fn stream_request(t: &Target, body: &Value, start: Instant) -> Result<Sample> {
    let payload = body.to_string();
    let path = format!("{}/v1/completions", t.prefix);
    let mut s = connect(t).await?;
    s.write_all(request_head(t, "POST", &path, payload.len()).as_bytes())
        .await?;
    s.write_all(payload.as_bytes()).await?;
    let mut r = Response::default();
    let mut sample = Sample::default();
    let mut buf = vec![0u8; 16 << 10];
    let mut consumed = 0;
    let mut last: Option<Instant> = None;
    let mut chunks = 0usize;
    let mut done = false;
    while !done {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        r.feed(&buf[..n])?;
        let now = Instant::now();
        // Complete SSE lines received so far.
        while let Some(eol) = r.body[consumed..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&r.body[consumed..consumed + eol]).into_owned();
            consumed += eol + 1;
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                done = true;
                break;
            }
            let v: Value = serde_json::from_str(data).context("a stream chunk is not JSON")?;
            if let Some(e) = v.get("error") {
                bail!("the stream ended with an error: {e}");
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                sample.completion_tokens = n as usize;
            }
            let text = v["choices"][0]["text"]
                .as_str()
                .or_else(|| v["choices"][0]["delta"]["content"].as_str())
                .unwrap_or("");
            if !text.is_empty() {
                chunks += 1;
                match last {
                    None => sample.ttft = Some((now - start).as_secs_f64()),
                    Some(prev) => sample.gaps.push((now - prev).as_secs_f64()),
                }
                last = Some(now);
            }
        }
    }
    sample.status = r.status.unwrap_or(0);
    if sample.status != 200 {
        let text = String::from_utf8_lossy(&r.body).into_owned();
        bail!(
            "status {}: {}",
            sample.status,
            text.chars().take(200).collect::<String>()
        );
    }
    if sample.completion_tokens == 0 {
        sample.completion_tokens = chunks;
    }
    Ok(sample)
}

/// Nearest-rank percentiles (milliseconds) of `v`.
fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let i = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i] * 1e5).round() / 1e2
    };
    json!({"p50": at(50.0), "p95": at(95.0), "p99": at(99.0), "max": at(100.0)})
}

fn summarize(concurrency: usize, wall: f64, samples: &[Sample]) -> Value {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let rejected = samples
        .iter()
        .filter(|s| {
            s.error
                .as_deref()
                .is_some_and(|e| e.starts_with("status 429"))
        })
        .count();
    let errors: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.error.as_deref())
        .take(3)
        .collect();
    let generated: usize = ok.iter().map(|s| s.completion_tokens).sum();
    json!({
        "concurrency": concurrency,
        "requests": samples.len(),
        "ok": ok.len(),
        "failed": samples.len() - ok.len(),
        "rejected_429": rejected,
        "first_errors": errors,
        "wall_s": wall,
        "completion_tokens": generated,
        "gen_tokens_per_s": generated as f64 / wall.max(1e-9),
        "requests_per_s": ok.len() as f64 / wall.max(1e-9),
        "ttft_ms": percentiles(ok.iter().filter_map(|s| s.ttft).collect()),
        "itl_ms": percentiles(ok.iter().flat_map(|s| s.gaps.iter().copied()).collect()),
        "e2e_ms": percentiles(ok.iter().map(|s| s.e2e).collect()),
    })
}

fn table(report: &Value) -> String {
    let mut s = String::from(
        "| conc | ok/req | gen tok/s | TTFT p50/p95/p99 ms | ITL p50/p95/p99 ms | E2E p50/p95/p99 ms |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let p = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            format!("{} / {} / {}", v["p50"], v["p95"], v["p99"])
        }
    };
    for l in report["levels"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {}/{} | {:.1} | {} | {} | {} |\n",
            l["concurrency"],
            l["ok"],
            l["requests"],
            l["gen_tokens_per_s"].as_f64().unwrap_or(0.0),
            p(&l["ttft_ms"]),
            p(&l["itl_ms"]),
            p(&l["e2e_ms"]),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_clearly() {
        let t = parse_url("http://127.0.0.1:8080", None, 5).unwrap();
        assert_eq!((t.addr.as_str(), t.prefix.as_str()), ("127.0.0.1:8080", ""));
        let t = parse_url("http://localhost/v1/", None, 5).unwrap();
        assert_eq!((t.addr.as_str(), t.prefix.as_str()), ("localhost:80", ""));
        let t = parse_url("http://h:1/api/v1", None, 5).unwrap();
        assert_eq!(t.prefix, "/api");
        assert!(parse_url("https://h", None, 5).is_err());
        assert!(parse_url("ftp://h", None, 5).is_err());
        assert!(parse_url("http:///x", None, 5).is_err());
    }

    #[test]
    fn chunked_bodies_are_reassembled_across_reads() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut r = Response::default();
        for piece in raw.chunks(7) {
            r.feed(piece).unwrap();
        }
        assert_eq!(r.status, Some(200));
        assert_eq!(r.body, b"hello world");
        let mut bad = Response::default();
        assert!(bad
            .feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank_and_ordered() {
        let v = percentiles((1..=100).map(|i| i as f64 / 1000.0).collect());
        assert_eq!(v["p50"], 50.0);
        assert_eq!(v["p95"], 95.0);
        assert_eq!(v["p99"], 99.0);
        assert_eq!(v["max"], 100.0);
        assert!(percentiles(Vec::new()).is_null());
    }

    #[test]
    fn prompts_differ_per_request_and_have_about_the_asked_length() {
        let (a, b) = (prompt(7, 4, 0, 64), prompt(7, 4, 1, 64));
        assert_ne!(a, b);
        assert_ne!(a, prompt(8, 4, 0, 64), "another run, another prompt");
        assert_eq!(a.split_whitespace().count(), 2 + 58);
    }
}
