//! The server over real sockets with a tiny random model (written by the test): routes,
//! errors, API key, streaming, the response cache, a full queue, and 32 simultaneous streams.

use kiln_engine::testing::{write_tiny_llama, TinySpec};
use kiln_engine::{BatchConfig, Engine};
use kiln_server::{router, start, ServerConfig};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

fn serve(cfg: impl FnOnce(&mut ServerConfig, &mut BatchConfig)) -> SocketAddr {
    let bytes = write_tiny_llama(&TinySpec::default()).expect("tiny model");
    let engine = Arc::new(Engine::from_bytes(bytes, 2).expect("tiny model loads"));
    let mut server = ServerConfig::new("tiny", 256);
    server.api_key = Some("secret".into());
    let mut batch = BatchConfig::for_slots(8, 256);
    cfg(&mut server, &mut batch);
    let state = start(engine, batch, server).expect("server starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        rt.block_on(async move {
            let _ = axum::serve(listener, router(state)).await;
        })
    });
    addr
}

/// A minimal HTTP/1.1 client: returns (status, headers, body with chunking removed).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    let status: u16 = head[9..12].parse().expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The JSON chunks of a server-sent-event body, `[DONE]` left out.
fn sse_chunks(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("each chunk is JSON"))
        .collect()
}

fn post_stream(addr: SocketAddr, body: &Value) -> (u16, String) {
    let (s, _, text) = request(
        addr,
        "POST",
        "/v1/completions",
        Some("secret"),
        body.to_string().as_bytes(),
    );
    (s, text)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, String, Value) {
    let (status, head, body) = request(
        addr,
        "POST",
        path,
        Some("secret"),
        body.to_string().as_bytes(),
    );
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, head, v)
}

#[test]
fn completions_chat_models_and_errors() {
    let addr = serve(|_, _| {});
    let (s, _, body) = request(addr, "GET", "/health", None, b"");
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = request(addr, "GET", "/v1/models", Some("secret"), b"");
    assert_eq!(s, 200);
    assert!(body.contains("\"tiny\""));
    let (s, _, body) = request(addr, "GET", "/v1/models", Some("wrong"), b"");
    assert_eq!(s, 401);
    assert!(body.contains("\"error\""));

    let (s, _, v) = post(
        addr,
        "/v1/completions",
        &json!({"model": "tiny", "prompt": "hello there", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 5);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    let (s, _, v) = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "n": 2, "logprobs": true, "top_logprobs": 2, "seed": 3}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let lp = &v["choices"][0]["logprobs"]["content"];
    assert!(
        lp.as_array().is_some_and(
            |a| !a.is_empty() && a[0]["top_logprobs"].as_array().map(Vec::len) == Some(2)
        )
    );

    // Echo with prompt logprobs: the first prompt token has none.
    let (s, _, v) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "abc def", "max_tokens": 0, "echo": true, "logprobs": 1}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("abc def"));
    assert!(v["choices"][0]["logprobs"]["token_logprobs"][0].is_null());
    assert!(v["choices"][0]["logprobs"]["token_logprobs"][1].is_number());

    // Bad input gets a 4xx in OpenAI's shape, and the server keeps serving.
    let (s, _, body) = request(
        addr,
        "POST",
        "/v1/completions",
        Some("secret"),
        b"{not json",
    );
    assert_eq!(s, 400);
    assert!(body.contains("invalid_request_error"));
    let (s, _, _) = post(addr, "/v1/completions", &json!({"prompt": 5}));
    assert_eq!(s, 400);
    let (s, _, _) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": "many"}),
    );
    assert_eq!(s, 400);
    let (s, _, _) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "model": "gpt-9"}),
    );
    assert_eq!(s, 404);
    let (s, _, _) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 100000}),
    );
    assert_eq!(s, 400);
    let huge = vec![b'a'; 2 << 20];
    let (s, _, _) = request(addr, "POST", "/v1/completions", Some("secret"), &huge);
    assert_eq!(s, 413);
    let (s, _, _) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "still here", "max_tokens": 2}),
    );
    assert_eq!(s, 200);
}

#[test]
fn streams_end_with_usage_and_done_and_replays_come_from_the_cache() {
    let addr = serve(|_, _| {});
    let body = json!({"prompt": "stream me", "max_tokens": 6, "temperature": 0, "stream": true});
    let (s, head, text) = request(
        addr,
        "POST",
        "/v1/completions",
        Some("secret"),
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 200);
    assert!(head.to_ascii_lowercase().contains("text/event-stream"));
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"));
    let chunks = sse_chunks(&text);
    let usage = chunks.last().unwrap().clone();
    let streamed: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    let n_gen = usage["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=6).contains(&n_gen));
    // The same deterministic body without streaming is answered from the response cache.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let (s, _, v) = post(addr, "/v1/completions", &plain);
    assert_eq!(s, 200);
    assert_eq!(v["choices"][0]["text"].as_str(), Some(streamed.as_str()));
    let (_, _, metrics) = request(addr, "GET", "/metrics", None, b"");
    assert!(
        metrics.contains("kiln_response_cache_hits_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let addr = serve(|_, b| b.scheduler.max_queue = 0);
    let (s, head, v) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 2}),
    );
    assert_eq!(s, 429, "{v}");
    assert!(head.to_ascii_lowercase().contains("retry-after"));
}

#[test]
fn thirty_two_simultaneous_streams_all_complete_with_correct_usage() {
    let addr = serve(|_, _| {});
    let handles: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"prompt": format!("client {i} says"), "max_tokens": 8, "stream": true, "seed": i});
                let (s, _, text) = request(addr, "POST", "/v1/completions", Some("secret"), body.to_string().as_bytes());
                assert_eq!(s, 200);
                let datas: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                assert_eq!(datas.last(), Some(&"[DONE]"), "{text}");
                let usage: Value = serde_json::from_str(datas[datas.len() - 2]).unwrap();
                let finish = datas
                    .iter()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|v| v["choices"][0]["finish_reason"].as_str().map(str::to_string))
                    .count();
                assert_eq!(finish, 1);
                usage["usage"]["completion_tokens"].as_u64().unwrap()
            })
        })
        .collect();
    for h in handles {
        let n = h.join().expect("client thread");
        assert!((1..=8).contains(&n));
    }
    let (_, _, metrics) = request(addr, "GET", "/metrics", None, b"");
    assert!(metrics.contains("kiln_kv_blocks_in_use 0"), "{metrics}");
    assert!(
        metrics.contains("kiln_time_to_first_token_seconds_count 32\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_request_duration_seconds_count 32\n"),
        "{metrics}"
    );
}

#[test]
fn prompt_lists_token_prompts_and_ignore_eos() {
    let addr = serve(|_, _| {});
    let tokens_of = |p: &str| {
        let (_, _, v) = post(
            addr,
            "/v1/completions",
            &json!({"prompt": p, "max_tokens": 0}),
        );
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    let (pa, pb) = (tokens_of("one two"), tokens_of("three four five"));
    let body = json!({"prompt": ["one two", "three four five"], "n": 2, "max_tokens": 7,
                      "ignore_eos": true, "temperature": 0, "echo": true});
    let (s, _, v) = post(addr, "/v1/completions", &body);
    assert_eq!(s, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let prompt = if i < 2 { "one two" } else { "three four five" };
        assert!(c["text"].as_str().unwrap().starts_with(prompt), "{c}");
        assert_eq!(c["finish_reason"], "length");
    }
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(pa + pb));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(4 * 7));
    // The same as a stream: every choice index appears and finishes once.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["seed"] = json!(1); // a different body, so not a response-cache replay
    let (s, text) = post_stream(addr, &streamed);
    assert_eq!(s, 200);
    let chunks = sse_chunks(&text);
    let mut finished: Vec<u64> = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    finished.sort_unstable();
    assert_eq!(finished, vec![0, 1, 2, 3]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(28), "{text}");
    // Token-id prompts, alone and in a list.
    let (s, _, v) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": [[5, 6, 7], [8, 9]], "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(5));
    let (s, _, v) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": [5, 6, 7], "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(3));
    // Bad prompt lists are refused without disturbing anything.
    for bad in [
        json!([]),
        json!([[1, 2], []]),
        json!([1_000_000]),
        json!(vec!["x"; 17]),
    ] {
        let (s, _, v) = post(
            addr,
            "/v1/completions",
            &json!({"prompt": bad, "max_tokens": 2}),
        );
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let (_, _, metrics) = request(addr, "GET", "/metrics", None, b"");
    assert!(metrics.contains("kiln_kv_blocks_in_use 0"), "{metrics}");
}

#[test]
fn include_usage_sends_a_last_chunk_without_choices() {
    let addr = serve(|_, _| {});
    let body = json!({"prompt": "x y", "max_tokens": 3, "stream": true,
                      "stream_options": {"include_usage": true}});
    let (s, text) = post_stream(addr, &body);
    assert_eq!(s, 200);
    let chunks = sse_chunks(&text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().map(Vec::len), Some(0), "{text}");
    assert!(last["usage"]["completion_tokens"].as_u64().is_some());
    let with_usage = chunks.iter().filter(|c| c.get("usage").is_some()).count();
    assert_eq!(with_usage, 1, "{text}");
}

#[test]
fn a_request_past_its_timeout_gets_408_and_a_stream_ends_with_an_error() {
    let addr = serve(|s, _| s.request_timeout = Some(std::time::Duration::from_millis(1)));
    let long = json!({"prompt": "a long one", "max_tokens": 200, "ignore_eos": true});
    let (s, _, v) = post(addr, "/v1/completions", &long);
    assert_eq!(s, 408, "{v}");
    assert_eq!(v["error"]["type"], "timeout_error");
    let mut streamed = long.clone();
    streamed["stream"] = json!(true);
    let (s, text) = post_stream(addr, &streamed);
    assert_eq!(s, 200);
    let chunks = sse_chunks(&text);
    assert_eq!(
        chunks.last().unwrap()["error"]["type"],
        "timeout_error",
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let (_, _, metrics) = request(addr, "GET", "/metrics", None, b"");
    assert!(metrics.contains("kiln_kv_blocks_in_use 0"), "{metrics}");
    assert!(
        metrics.contains("kiln_requests_total{status=\"client_error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn health_readiness_and_queue_time_metrics() {
    let addr = serve(|_, _| {});
    let (s, _, body) = request(addr, "GET", "/ready", None, b"");
    assert_eq!((s, body.contains("\"ready\"")), (200, true), "{body}");
    let (s, _, v) = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "q", "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{v}");
    let (_, _, metrics) = request(addr, "GET", "/metrics", None, b"");
    assert!(
        metrics.contains("kiln_queue_time_seconds_count 1\n"),
        "{metrics}"
    );
    // A server whose queue takes nothing is alive but not ready.
    let full = serve(|_, b| b.scheduler.max_queue = 0);
    let (s, _, _) = request(full, "GET", "/health", None, b"");
    assert_eq!(s, 200);
    let (s, _, body) = request(full, "GET", "/health/ready", None, b"");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("queue"), "{body}");
}
