//! `kiln serve`: the OpenAI-compatible HTTP server (continuous batching, prefix and response
//! caches) on loopback unless told otherwise; stops accepting on Ctrl-C/SIGTERM and lets
//! in-flight requests finish for up to `--shutdown-timeout` seconds, then cancels the rest.

use crate::common::{load_engine, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use kiln_engine::BatchConfig;
use kiln_server::ServerConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences decoded together (the batch size of every step).
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Context per sequence in tokens.
    #[arg(long, short = 'c', default_value_t = 2048)]
    pub ctx: usize,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Read the API key from this file (first line).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Requests waiting beyond the running ones; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// While nothing runs, hold the first waiting request up to this many milliseconds for a
    /// fuller first batch (Triton's max queue delay; 0 = start at once).
    #[arg(long, default_value_t = 0)]
    pub max_queue_delay_ms: u64,
    /// Prompt tokens a step may add next to the decode rows (chunked prefill).
    #[arg(long, default_value_t = 256)]
    pub batch_tokens: usize,
    /// Response-cache capacity (entries; 0 disables).
    #[arg(long, default_value_t = 256)]
    pub cache_size: usize,
    /// Response-cache time to live in seconds.
    #[arg(long, default_value_t = 600)]
    pub cache_ttl: u64,
    /// End requests still queued or running after this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// After Ctrl-C/SIGTERM, how long in-flight requests may take to finish before they are
    /// cancelled and the server exits.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
}

pub fn main(args: ServeArgs) -> Result<()> {
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if api_key.as_deref() == Some("") {
        anyhow::bail!("the API key is empty");
    }
    let engine = Arc::new(load_engine(&args.model)?);
    let n_ctx = args.ctx.clamp(1, engine.model().config().n_ctx_train);
    let mut batch = BatchConfig::for_slots(args.parallel, n_ctx);
    batch.scheduler.max_queue = args.max_queue;
    batch.scheduler.token_budget = args.batch_tokens;
    batch.scheduler.max_queue_delay = Duration::from_millis(args.max_queue_delay_ms);
    let name = args
        .model
        .model
        .as_deref()
        .and_then(|m| {
            std::path::Path::new(m)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "kiln".into());
    let mut cfg = ServerConfig::new(name, n_ctx);
    cfg.api_key = api_key;
    cfg.cache_capacity = args.cache_size;
    cfg.cache_ttl = Duration::from_secs(args.cache_ttl);
    cfg.request_timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let state = kiln_server::start(engine, batch, cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        eprintln!(
            "kiln: serving on http://{bound} ({} parallel, ctx {n_ctx})",
            args.parallel
        );
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let server =
            axum::serve(listener, kiln_server::router(state)).with_graceful_shutdown(async move {
                shutdown().await;
                let _ = stopping_tx.send(true);
            });
        let grace = Duration::from_secs(args.shutdown_timeout);
        let deadline = async move {
            let _ = stopping.wait_for(|&s| s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = std::future::IntoFuture::into_future(server) => r.context("serving"),
            _ = deadline => {
                // Dropping the connections drops their event receivers; the engine cancels
                // those requests at its next step.
                eprintln!("kiln: shutdown timeout reached; cancelling the requests still running");
                Ok(())
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("kiln: shutting down; finishing in-flight requests");
}
