//! The HTTP routes: authentication, body parsing, submitting to the engine thread, replies as
//! JSON or server-sent events, the response cache, `/v1/models`, `/health` (liveness), `/ready`
//! (readiness), `/metrics`.

use crate::histogram::Timer;
use crate::openai::{self, ApiError, ChatBody, Choice, Common, CompletionBody, PromptPart};
use crate::worker::Command;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use kiln_engine::{
    is_deterministic, ChatMessage, ChatTemplate, EngineError, Event, Request, RequestId,
    SubmitError,
};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Every route of the server over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// One structured line per request on stderr: method, path, status, milliseconds to the
/// response head (a stream's body continues after it).
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let t = std::time::Instant::now();
    let r = next.run(req).await;
    eprintln!(
        "{}",
        json!({"method": method.as_str(), "path": path, "status": r.status().as_u16(),
               "ms": (t.elapsed().as_secs_f64() * 1e3 * 10.0).round() / 10.0})
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = (status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

fn count(st: &AppState, r: &Result<Response, ApiError>) {
    let c = &st.counters;
    let which = match r {
        Ok(_) => &c.ok,
        Err(e) if e.status == 429 => &c.rejected,
        Err(e) if e.status < 500 => &c.client_errors,
        Err(_) => &c.server_errors,
    };
    which.fetch_add(1, Ordering::Relaxed);
}

fn check_auth(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &st.cfg.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        return Ok(());
    }
    Err(ApiError {
        status: 401,
        kind: "invalid_request_error",
        message: "invalid or missing API key".into(),
        param: None,
        retry_after: None,
    })
}

fn check_model(st: &AppState, c: &Common) -> Result<(), ApiError> {
    match &c.model {
        Some(m) if m != &st.cfg.model_name => Err(ApiError {
            status: 404,
            kind: "invalid_request_error",
            message: format!(
                "the model `{m}` does not exist (this server has `{}`)",
                st.cfg.model_name
            ),
            param: Some("model"),
            retry_after: None,
        }),
        _ => Ok(()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<(T, Value), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    let t = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::invalid(format!("invalid request: {e}"), None))?;
    Ok((t, v))
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Submit(SubmitError::QueueFull { retry_after, .. }) => ApiError {
            status: 429,
            kind: "rate_limit_error",
            message: "the request queue is full; retry later".into(),
            param: None,
            retry_after: Some(retry_after.as_secs().max(1)),
        },
        EngineError::Submit(s) => ApiError::invalid(s.to_string(), None),
        EngineError::Sampler(s) => ApiError::invalid(s.to_string(), None),
        EngineError::Invalid(s) => ApiError::invalid(s, None),
        other => ApiError {
            status: 500,
            kind: "server_error",
            message: other.to_string(),
            param: None,
            retry_after: None,
        },
    }
}

/// Where a request's events come from: the engine, or the response cache. Events leave with
/// request-wide choice indices (`prompt * n + index`) and, in `PromptLogprobs`, the prompt's
/// number as `req`, so the cache stores and replays them as they were sent.
enum Source {
    Live {
        rx: mpsc::UnboundedReceiver<Event>,
        /// Engine request id → prompt number.
        prompts: Vec<RequestId>,
        n: usize,
    },
    Replay(VecDeque<Event>),
}

impl Source {
    async fn next(&mut self) -> Option<Event> {
        match self {
            Source::Live { rx, prompts, n } => {
                let mut e = rx.recv().await?;
                let prompt_of = |id: &RequestId| prompts.iter().position(|p| p == id).unwrap_or(0);
                match &mut e {
                    Event::PromptLogprobs { req, .. } => *req = prompt_of(req) as RequestId,
                    Event::Token { req, index, .. } | Event::Finished { req, index, .. } => {
                        *index += prompt_of(req) * *n;
                    }
                }
                Some(e)
            }
            Source::Replay(q) => q.pop_front(),
        }
    }
}

/// Submits every engine request of `job` on one event channel (or finds the whole job in the
/// response cache). If one is refused, those already submitted are cancelled.
async fn submit(st: &AppState, job: &Job) -> Result<Source, ApiError> {
    if let Some(k) = &job.key {
        let hit = st.cache.lock().ok().and_then(|mut c| c.get(k, st.now()));
        if let Some(events) = hit {
            return Ok(Source::Replay(events.into()));
        }
    }
    let unavailable = || ApiError {
        status: 503,
        kind: "server_error",
        message: "the engine is not running".into(),
        param: None,
        retry_after: None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut prompts = Vec::with_capacity(job.reqs.len());
    for req in &job.reqs {
        let (reply, answer) = oneshot::channel();
        let sent = st.send(Command::Submit {
            req: req.clone(),
            events: tx.clone(),
            reply,
        });
        let r = if sent {
            match answer.await {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => Err(engine_error(e)),
                Err(_) => Err(unavailable()),
            }
        } else {
            Err(unavailable())
        };
        match r {
            Ok(id) => prompts.push(id),
            Err(e) => {
                for &id in &prompts {
                    st.send(Command::Cancel(id));
                }
                return Err(e);
            }
        }
    }
    Ok(Source::Live {
        rx,
        prompts,
        n: job.n,
    })
}

/// Everything the two endpoints share once the body is understood.
struct Job {
    /// One engine request per prompt.
    reqs: Vec<Request>,
    /// Choices per prompt.
    n: usize,
    stream: bool,
    include_usage: bool,
    key: Option<String>,
    chat: bool,
    want_logprobs: bool,
    /// Completions `echo`: each prompt's text, put before its choices' text.
    echo: Option<Vec<String>>,
}

impl Job {
    fn choices(&self) -> usize {
        self.reqs.len() * self.n
    }

    fn echo_of(&self, choice: usize) -> &str {
        self.echo
            .as_ref()
            .and_then(|e| e.get(choice / self.n.max(1)))
            .map_or("", String::as_str)
    }
}

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = completions_inner(&st, &headers, &body).await;
    count(&st, &r);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn completions_inner(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    check_auth(st, headers)?;
    let (b, raw): (CompletionBody, Value) = parse(body)?;
    check_model(st, &b.common)?;
    let parts = b.prompt.parts(st.cfg.limits.max_prompts)?;
    let top = b.logprobs;
    if top.is_some_and(|k| k > st.cfg.limits.max_top_logprobs) {
        return Err(ApiError::invalid("logprobs is too large", Some("logprobs")));
    }
    let mut prompts = Vec::with_capacity(parts.len());
    let mut texts = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            PromptPart::Text(s) => {
                prompts.push(st.engine.encode_prompt(&s));
                texts.push(s);
            }
            PromptPart::Tokens(t) => {
                texts.push(st.engine.tokenizer().decode(&t));
                prompts.push(t);
            }
        }
    }
    let job = job(
        st,
        &b.common,
        prompts,
        raw,
        false,
        top,
        b.echo && top.is_some(),
    )?;
    let job = Job {
        echo: b.echo.then_some(texts),
        ..job
    };
    run(st, job).await
}

async fn chat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = chat_inner(&st, &headers, &body).await;
    count(&st, &r);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    check_auth(st, headers)?;
    let (b, raw): (ChatBody, Value) = parse(body)?;
    check_model(st, &b.common)?;
    if b.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let top = b.logprobs.then(|| b.top_logprobs.unwrap_or(0));
    if top.is_some_and(|k| k > st.cfg.limits.max_top_logprobs) {
        return Err(ApiError::invalid(
            "top_logprobs is too large",
            Some("top_logprobs"),
        ));
    }
    let messages: Vec<ChatMessage> = b
        .messages
        .iter()
        .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
        .collect();
    let text = ChatTemplate::from_tokenizer(st.engine.tokenizer())
        .render(&messages, true)
        .map_err(|e| ApiError::invalid(format!("chat template: {e}"), Some("messages")))?;
    let tokens = st.engine.encode_prompt(&text);
    let job = job(st, &b.common, vec![tokens], raw, true, top, false)?;
    run(st, job).await
}

fn job(
    st: &AppState,
    c: &Common,
    prompts: Vec<Vec<u32>>,
    raw: Value,
    chat: bool,
    logprobs: Option<usize>,
    prompt_logprobs: bool,
) -> Result<Job, ApiError> {
    let (max_tokens, n) = openai::counts(c, &st.cfg.limits)?;
    let sampling = openai::sampling(c, st.fresh_seed())?;
    if prompts.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    // The canonical body (keys sorted by serde_json's map) keys the response cache; `stream`
    // and `stream_options` do not change the events, so streamed replays share the entry.
    let key = is_deterministic(sampling.temperature, c.seed.is_some()).then(|| {
        let mut v = raw;
        if let Some(o) = v.as_object_mut() {
            o.remove("stream");
            o.remove("stream_options");
        }
        format!("{}:{}", if chat { "chat" } else { "text" }, v)
    });
    let reqs = prompts
        .into_iter()
        .map(|prompt| Request {
            prompt,
            sampling: sampling.clone(),
            max_tokens,
            stop: openai::stops(c),
            logprobs,
            prompt_logprobs,
            n,
            priority: c.priority.unwrap_or(0),
            timeout: st.cfg.request_timeout,
            ignore_eos: c.ignore_eos,
        })
        .collect();
    Ok(Job {
        reqs,
        n,
        stream: c.stream,
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
        key,
        chat,
        want_logprobs: logprobs.is_some(),
        echo: None,
    })
}

fn created() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ended_early() -> ApiError {
    ApiError {
        status: 500,
        kind: "server_error",
        message: "the engine ended the request early".into(),
        param: None,
        retry_after: None,
    }
}

async fn run(st: &Arc<AppState>, job: Job) -> Result<Response, ApiError> {
    let mut timer = Timer::new(job.choices(), job.n);
    let mut source = submit(st, &job).await?;
    let id = format!(
        "{}-{}",
        if job.chat { "chatcmpl" } else { "cmpl" },
        st.fresh_seed()
    );
    if job.stream {
        return Ok(stream_response(Arc::clone(st), job, source, id, timer).into_response());
    }
    let mut events = Vec::new();
    let mut finished = 0;
    while finished < job.choices() {
        let e = source.next().await.ok_or_else(ended_early)?;
        if let Event::Finished { reason, .. } = &e {
            if let Some(err) = openai::failure(*reason) {
                // Dropping `source` cancels whatever else of the request still runs.
                return Err(err);
            }
            finished += 1;
        }
        timer.on_event(&e, &st.latencies);
        events.push(e);
    }
    timer.done(&st.latencies);
    let (choices, prompt_lp) = openai::collect(&events, job.choices());
    finish_bookkeeping(st, &job, &choices, &events);
    let model = st.cfg.model_name.clone();
    let usage = openai::usage_json(&choices, job.n);
    let body = if job.chat {
        let ch: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": if job.want_logprobs { openai::chat_logprobs(&st.engine, &c.logprobs) } else { Value::Null },
                    "finish_reason": c.finish.and_then(openai::finish_reason),
                })
            })
            .collect();
        json!({"id": id, "object": "chat.completion", "created": created(), "model": model,
               "choices": ch, "usage": usage})
    } else {
        let ch: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let logprobs = if job.want_logprobs {
                    let mut all: Vec<_> = match &job.echo {
                        Some(_) => prompt_lp
                            .get(i / job.n)
                            .cloned()
                            .flatten()
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    all.extend(c.logprobs.iter().cloned().map(Some));
                    openai::completion_logprobs(&st.engine, &all, 0)
                } else {
                    Value::Null
                };
                json!({"index": i, "text": format!("{}{}", job.echo_of(i), c.text),
                       "logprobs": logprobs, "finish_reason": c.finish.and_then(openai::finish_reason)})
            })
            .collect();
        json!({"id": id, "object": "text_completion", "created": created(), "model": model,
               "choices": ch, "usage": usage})
    };
    Ok(Json(body).into_response())
}

/// Counts tokens and stores a completed deterministic request in the response cache.
fn finish_bookkeeping(st: &AppState, job: &Job, choices: &[Choice], events: &[Event]) {
    let c = &st.counters;
    let prompt: usize = choices
        .iter()
        .step_by(job.n.max(1))
        .map(|c| c.usage.prompt_tokens)
        .sum();
    c.prompt_tokens.fetch_add(prompt as u64, Ordering::Relaxed);
    let generated: usize = choices.iter().map(|c| c.usage.completion_tokens).sum();
    c.generated_tokens
        .fetch_add(generated as u64, Ordering::Relaxed);
    let complete = choices
        .iter()
        .all(|c| c.finish.and_then(openai::finish_reason).is_some());
    if let (Some(k), true) = (&job.key, complete) {
        if let Ok(mut cache) = st.cache.lock() {
            cache.insert(k.clone(), events.to_vec(), st.now());
        }
    }
}

struct StreamState {
    timer: Timer,
    st: Arc<AppState>,
    job: Job,
    source: Source,
    id: String,
    pending: VecDeque<String>,
    events: Vec<Event>,
    finished: usize,
    started: bool,
    done: bool,
}

fn stream_response(
    st: Arc<AppState>,
    job: Job,
    source: Source,
    id: String,
    timer: Timer,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let s = StreamState {
        timer,
        st,
        job,
        source,
        id,
        pending: VecDeque::new(),
        events: Vec::new(),
        finished: 0,
        started: false,
        done: false,
    };
    Sse::new(stream::unfold(s, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.done {
                return None;
            }
            s.fill().await;
        }
    }))
}

impl StreamState {
    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> String {
        let object = if self.job.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut v = json!({"id": self.id, "object": object, "created": created(),
                           "model": self.st.cfg.model_name, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v.to_string()
    }

    fn delta(&self, index: usize, text: &str, lp: Option<Value>, finish: Option<&str>) -> Value {
        if self.job.chat {
            json!({"index": index, "delta": {"content": text}, "logprobs": lp, "finish_reason": finish})
        } else {
            json!({"index": index, "text": text, "logprobs": lp, "finish_reason": finish})
        }
    }

    /// Ends the stream with an error object (what OpenAI sends when a stream fails after its
    /// head went out; the official clients raise it) and `[DONE]`.
    fn fail(&mut self, e: ApiError) {
        self.pending.push_back(e.body().to_string());
        self.pending.push_back("[DONE]".into());
        self.done = true;
    }

    /// Turns the next engine event into queued SSE chunks.
    async fn fill(&mut self) {
        if !self.started {
            self.started = true;
            for i in 0..self.job.choices() {
                let first = if self.job.chat {
                    json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})
                } else {
                    self.delta(i, self.job.echo_of(i), None, None)
                };
                let c = self.chunk(vec![first], None);
                self.pending.push_back(c);
            }
        }
        let Some(e) = self.source.next().await else {
            self.fail(ended_early());
            return;
        };
        self.timer.on_event(&e, &self.st.latencies);
        self.events.push(e.clone());
        match e {
            Event::PromptLogprobs { .. } => {}
            Event::Token {
                index,
                text,
                logprob,
                ..
            } => {
                let lp = logprob.map(|lp| {
                    if self.job.chat {
                        openai::chat_logprobs(&self.st.engine, std::slice::from_ref(&lp))
                    } else {
                        openai::completion_logprobs(&self.st.engine, &[Some(lp)], 0)
                    }
                });
                if !text.is_empty() || lp.is_some() {
                    let c = self.chunk(vec![self.delta(index, &text, lp, None)], None);
                    self.pending.push_back(c);
                }
            }
            Event::Finished {
                index,
                reason,
                text,
                ..
            } => {
                if let Some(err) = openai::failure(reason) {
                    self.fail(err);
                    return;
                }
                self.finished += 1;
                let last = self.finished >= self.job.choices();
                let d = self.delta(index, &text, None, openai::finish_reason(reason));
                if !last {
                    let c = self.chunk(vec![d], None);
                    self.pending.push_back(c);
                    return;
                }
                self.timer.done(&self.st.latencies);
                let (choices, _) = openai::collect(&self.events, self.job.choices());
                finish_bookkeeping(&self.st, &self.job, &choices, &self.events);
                let usage = openai::usage_json(&choices, self.job.n);
                if self.job.include_usage {
                    let c = self.chunk(vec![d], None);
                    self.pending.push_back(c);
                    let u = self.chunk(Vec::new(), Some(usage));
                    self.pending.push_back(u);
                } else {
                    // `usage` in every response, on a chunk that still has a choice, so
                    // clients that read `choices[0]` of every chunk keep working.
                    let c = self.chunk(vec![d], Some(usage));
                    self.pending.push_back(c);
                }
                self.pending.push_back("[DONE]".into());
                self.done = true;
            }
        }
    }
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_auth(&st, &headers) {
        return e.into_response();
    }
    Json(
        json!({"object": "list", "data": [{"id": st.cfg.model_name, "object": "model",
        "created": 0, "owned_by": "kiln"}]}),
    )
    .into_response()
}

/// Liveness: the process answers and its engine thread runs.
async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.engine_alive() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        let body = json!({"status": "error", "reason": "the engine thread is not running"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Readiness (for a load balancer): 503 while new requests would be refused.
async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match st.not_ready() {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(reason) => {
            let body = json!({"status": "not_ready", "reason": reason});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let s = st.stats.lock().map(|s| *s).unwrap_or_default();
    let cache = st.cache.lock().map(|c| c.stats()).unwrap_or_default();
    let c = &st.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let bs = s.block_size as u64;
    let mut text = format!(
        "# TYPE kiln_requests_total counter\n\
         kiln_requests_total{{status=\"ok\"}} {}\n\
         kiln_requests_total{{status=\"client_error\"}} {}\n\
         kiln_requests_total{{status=\"rejected\"}} {}\n\
         kiln_requests_total{{status=\"server_error\"}} {}\n\
         # TYPE kiln_prompt_tokens_total counter\nkiln_prompt_tokens_total {}\n\
         # TYPE kiln_generated_tokens_total counter\nkiln_generated_tokens_total {}\n\
         # TYPE kiln_running_sequences gauge\nkiln_running_sequences {}\n\
         # TYPE kiln_waiting_requests gauge\nkiln_waiting_requests {}\n\
         # TYPE kiln_kv_blocks_in_use gauge\nkiln_kv_blocks_in_use {}\n\
         # TYPE kiln_kv_blocks_total gauge\nkiln_kv_blocks_total {}\n\
         # TYPE kiln_prefix_cache_hit_tokens_total counter\nkiln_prefix_cache_hit_tokens_total {}\n\
         # TYPE kiln_prefix_cache_miss_tokens_total counter\nkiln_prefix_cache_miss_tokens_total {}\n\
         # TYPE kiln_response_cache_hits_total counter\nkiln_response_cache_hits_total {}\n\
         # TYPE kiln_response_cache_misses_total counter\nkiln_response_cache_misses_total {}\n",
        load(&c.ok),
        load(&c.client_errors),
        load(&c.rejected),
        load(&c.server_errors),
        load(&c.prompt_tokens),
        load(&c.generated_tokens),
        s.scheduler.running,
        s.scheduler.waiting,
        s.scheduler.blocks_in_use,
        s.scheduler.blocks_total,
        s.scheduler.prefix.hits * bs,
        s.scheduler.prefix.misses * bs,
        cache.hits,
        cache.misses,
    );
    st.latencies.render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
