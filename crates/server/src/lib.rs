//! kiln-server: HTTP only — OpenAI-compatible routes over the engine's `BatchEngine`
//! (completions, chat completions, streaming as server-sent events, models, health, metrics),
//! errors in OpenAI's JSON shape, the API key, and the response cache in front of the engine.
#![forbid(unsafe_code)]

mod histogram;
pub mod openai;
mod routes;
pub mod worker;

pub use openai::{ApiError, Limits};
pub use routes::router;

use kiln_engine::{
    BatchConfig, BatchEngine, BatchStats, Engine, EngineError, Event, ResponseCache,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server enforces and advertises.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The id `/v1/models` lists; requests naming another model get 404.
    pub model_name: String,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub limits: Limits,
    pub cache_capacity: usize,
    pub cache_ttl: Duration,
    /// Requests still queued or running this long after submission are ended: 408 in
    /// OpenAI's error shape, or an error chunk ending the stream.
    pub request_timeout: Option<Duration>,
}

impl ServerConfig {
    pub fn new(model_name: impl Into<String>, n_ctx: usize) -> ServerConfig {
        ServerConfig {
            model_name: model_name.into(),
            api_key: None,
            max_body_bytes: 1 << 20,
            limits: Limits {
                max_tokens: n_ctx,
                max_n: 8,
                max_top_logprobs: 20,
                default_max_tokens: 256,
                max_prompts: 16,
            },
            cache_capacity: 256,
            cache_ttl: Duration::from_secs(600),
            request_timeout: None,
        }
    }
}

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub ok: AtomicU64,
    pub client_errors: AtomicU64,
    pub rejected: AtomicU64,
    pub server_errors: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
}

/// Shared by every handler.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub cfg: ServerConfig,
    commands: Mutex<mpsc::Sender<worker::Command>>,
    pub stats: Arc<Mutex<BatchStats>>,
    pub cache: Mutex<ResponseCache<String, Vec<Event>>>,
    pub counters: Counters,
    pub latencies: histogram::Latencies,
    start: Instant,
    seeds: AtomicU64,
    /// Cleared when the engine thread ends (it only does so once the state is dropped, or
    /// if it panicked): `/health` and `/ready` report it.
    engine_alive: Arc<AtomicBool>,
    /// The engine's queue bound: `/ready` reports not ready while it is reached.
    max_queue: usize,
}

impl AppState {
    /// Time since the server started (the clock the caches and the engine are given).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn send(&self, c: worker::Command) -> bool {
        self.commands
            .lock()
            .map(|tx| tx.send(c).is_ok())
            .unwrap_or(false)
    }

    pub fn engine_alive(&self) -> bool {
        self.engine_alive.load(Ordering::Relaxed)
    }

    /// Why the server would refuse new work now (`None`: ready).
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.engine_alive() {
            return Some("the engine thread is not running");
        }
        let waiting = self.stats.lock().map_or(0, |s| s.scheduler.waiting);
        (waiting >= self.max_queue).then_some("the request queue is full")
    }

    /// A seed for a request that named none (different for every request).
    fn fresh_seed(&self) -> u64 {
        let n = self.seeds.fetch_add(1, Ordering::Relaxed);
        (self.start.elapsed().as_nanos() as u64) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Starts the engine thread and returns the state the router serves from. The engine thread
/// ends when the state is dropped and the last request finished.
pub fn start(
    engine: Arc<Engine>,
    batch: BatchConfig,
    cfg: ServerConfig,
) -> Result<Arc<AppState>, EngineError> {
    let max_queue = batch.scheduler.max_queue;
    let be = BatchEngine::new(Arc::clone(&engine), batch)?;
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(be.stats()));
    let worker_stats = Arc::clone(&stats);
    let engine_alive = Arc::new(AtomicBool::new(true));
    let alive = worker::Alive(Arc::clone(&engine_alive));
    std::thread::Builder::new()
        .name("kiln-engine".into())
        .spawn(move || {
            let _alive = alive;
            worker::run(be, rx, worker_stats)
        })
        .map_err(|e| EngineError::Invalid(format!("cannot start the engine thread: {e}")))?;
    Ok(Arc::new(AppState {
        engine,
        cache: Mutex::new(ResponseCache::new(cfg.cache_capacity, cfg.cache_ttl)),
        cfg,
        commands: Mutex::new(tx),
        stats,
        counters: Counters::default(),
        latencies: histogram::Latencies::default(),
        start: Instant::now(),
        seeds: AtomicU64::new(1),
        engine_alive,
        max_queue,
    }))
}
