//! OpenAI request bodies (completions and chat completions) and the JSON that answers them:
//! parsing with clear 400s, the mapping onto an engine `Request`, and response/chunk shapes.

use kiln_engine::{Engine, Event, FinishReason, SamplingParams, TokenLogprob, Usage};
use serde::Deserialize;
use serde_json::{json, Value};

/// An error in OpenAI's shape with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param,
            retry_after: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": Value::Null}})
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A completions `prompt`: text, token ids, or a batch of either (one choice group each).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// One prompt of a request, as the client gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPart {
    Text(String),
    Tokens(Vec<u32>),
}

impl Prompt {
    /// The prompts of the body, at least one and at most `max`.
    pub fn parts(self, max: usize) -> Result<Vec<PromptPart>, ApiError> {
        let parts: Vec<PromptPart> = match self {
            Prompt::Text(s) => vec![PromptPart::Text(s)],
            Prompt::Texts(v) => v.into_iter().map(PromptPart::Text).collect(),
            Prompt::Tokens(t) => vec![PromptPart::Tokens(t)],
            Prompt::TokenLists(v) => v.into_iter().map(PromptPart::Tokens).collect(),
        };
        if parts.is_empty() {
            return Err(ApiError::invalid(
                "the prompt list is empty",
                Some("prompt"),
            ));
        }
        if parts.len() > max {
            return Err(ApiError::invalid(
                format!(
                    "{} prompts in one request; this server takes at most {max}",
                    parts.len()
                ),
                Some("prompt"),
            ));
        }
        Ok(parts)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(default)]
pub struct StreamOptions {
    /// Send a last chunk with no choices and the request's `usage` (OpenAI's layout); without
    /// it, `usage` rides on the chunk that finishes the last choice.
    pub include_usage: bool,
}

/// Fields shared by both endpoints.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub n: Option<usize>,
    pub stream: bool,
    pub stop: Option<OneOrMany>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stream_options: Option<StreamOptions>,
    /// kiln extension: higher is admitted first.
    pub priority: Option<u8>,
    /// Extension shared with llama-server and vLLM: never sample an end-of-generation token,
    /// so every choice runs to `max_tokens` (benchmarks).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionBody {
    pub prompt: Prompt,
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessageBody {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatBody {
    pub messages: Vec<ChatMessageBody>,
    #[serde(default)]
    pub logprobs: bool,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub common: Common,
}

/// Server-side limits applied to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_tokens: usize,
    pub max_n: usize,
    pub max_top_logprobs: usize,
    pub default_max_tokens: usize,
    /// Most prompts in one completions request (each is a group of `n` choices).
    pub max_prompts: usize,
}

/// Sampling parameters of a body; `fresh_seed` is used when the client gave none.
pub fn sampling(c: &Common, fresh_seed: u64) -> Result<SamplingParams, ApiError> {
    let p = SamplingParams {
        temperature: c.temperature.unwrap_or(1.0),
        top_k: c.top_k.unwrap_or(0),
        top_p: c.top_p.unwrap_or(1.0),
        min_p: c.min_p.unwrap_or(0.0),
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        seed: c.seed.unwrap_or(fresh_seed),
    };
    p.validate()
        .map_err(|e| ApiError::invalid(e.to_string(), None))?;
    Ok(p)
}

/// `max_tokens` and `n` of a body, checked against the limits.
pub fn counts(c: &Common, limits: &Limits) -> Result<(usize, usize), ApiError> {
    let max_tokens = c
        .max_completion_tokens
        .or(c.max_tokens)
        .unwrap_or(limits.default_max_tokens);
    if max_tokens > limits.max_tokens {
        return Err(ApiError::invalid(
            format!(
                "max_tokens {max_tokens} exceeds this server's limit of {}",
                limits.max_tokens
            ),
            Some("max_tokens"),
        ));
    }
    let n = c.n.unwrap_or(1);
    if n == 0 || n > limits.max_n {
        return Err(ApiError::invalid(
            format!("n must be between 1 and {}", limits.max_n),
            Some("n"),
        ));
    }
    Ok((max_tokens, n))
}

pub fn stops(c: &Common) -> Vec<String> {
    c.stop.clone().map(OneOrMany::into_vec).unwrap_or_default()
}

/// OpenAI's `finish_reason` of a choice that completed; `None` for an ending that is not a
/// completion at all (see [`failure`]).
pub fn finish_reason(r: FinishReason) -> Option<&'static str> {
    match r {
        FinishReason::Stop => Some("stop"),
        FinishReason::Length | FinishReason::ContextFull => Some("length"),
        FinishReason::Cancelled | FinishReason::TimedOut => None,
    }
}

/// The error a request gets when one of its choices ended without completing: the server's
/// per-request timeout (408, which clients may retry) or a cancellation by the server itself
/// (503: shutting down, or the engine failed).
pub fn failure(r: FinishReason) -> Option<ApiError> {
    let (status, kind, message) = match r {
        FinishReason::TimedOut => (
            408,
            "timeout_error",
            "the request did not finish within this server's per-request timeout",
        ),
        FinishReason::Cancelled => (
            503,
            "server_error",
            "the request was cancelled by the server",
        ),
        _ => return None,
    };
    Some(ApiError {
        status,
        kind,
        message: message.into(),
        param: None,
        retry_after: None,
    })
}

fn token_text(engine: &Engine, id: u32) -> String {
    String::from_utf8_lossy(engine.tokenizer().token_bytes(id)).into_owned()
}

/// Completions-style logprobs of a list of (optional) token logprobs.
pub fn completion_logprobs(engine: &Engine, lps: &[Option<TokenLogprob>], offset0: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = offset0;
    for lp in lps {
        match lp {
            Some(lp) => {
                let t = token_text(engine, lp.token);
                offsets.push(offset);
                offset += t.len();
                tokens.push(t);
                token_logprobs.push(json!(lp.logprob));
                let m: serde_json::Map<String, Value> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| (token_text(engine, id), json!(l)))
                    .collect();
                top.push(Value::Object(m));
            }
            None => {
                offsets.push(offset);
                tokens.push(String::new());
                token_logprobs.push(Value::Null);
                top.push(Value::Null);
            }
        }
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
}

/// Chat-style logprobs (`{"content": [...]}`).
pub fn chat_logprobs(engine: &Engine, lps: &[TokenLogprob]) -> Value {
    let entry = |id: u32, l: f32| {
        let t = token_text(engine, id);
        let bytes: Vec<u8> = engine.tokenizer().token_bytes(id).to_vec();
        (t, bytes, l)
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let (t, b, l) = entry(lp.token, lp.logprob);
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|&(id, l)| {
                    let (t, b, l) = entry(id, l);
                    json!({"token": t, "logprob": l, "bytes": b})
                })
                .collect();
            json!({"token": t, "logprob": l, "bytes": b, "top_logprobs": top})
        })
        .collect();
    json!({ "content": content })
}

/// Everything one choice produced.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<FinishReason>,
    pub usage: Usage,
}

/// Prompt log-probabilities of one prompt (the first token has none).
pub type PromptLogprobs = Vec<Option<TokenLogprob>>;

/// Folds a request's events into its `n_choices` choices and the prompt log-probabilities of
/// each of its prompts. Events carry request-wide choice indices and, in `PromptLogprobs`,
/// the prompt's number as `req` (see `routes::Source`).
pub fn collect(events: &[Event], n_choices: usize) -> (Vec<Choice>, Vec<Option<PromptLogprobs>>) {
    let mut choices = vec![Choice::default(); n_choices];
    let mut prompts: Vec<Option<PromptLogprobs>> = Vec::new();
    for e in events {
        match e {
            Event::PromptLogprobs { req, logprobs } => {
                let k = *req as usize;
                if k < n_choices {
                    if prompts.len() <= k {
                        prompts.resize(k + 1, None);
                    }
                    prompts[k] = Some(logprobs.clone());
                }
            }
            Event::Token {
                index,
                text,
                logprob,
                ..
            } => {
                if let Some(c) = choices.get_mut(*index) {
                    c.text.push_str(text);
                    c.logprobs.extend(logprob.clone());
                }
            }
            Event::Finished {
                index,
                reason,
                text,
                usage,
                ..
            } => {
                if let Some(c) = choices.get_mut(*index) {
                    c.text.push_str(text);
                    c.finish = Some(*reason);
                    c.usage = *usage;
                }
            }
        }
    }
    (choices, prompts)
}

/// `usage` of a request whose choices come in groups of `n` per prompt: each prompt counted
/// once, every choice's completion tokens.
pub fn usage_json(choices: &[Choice], n: usize) -> Value {
    let firsts = choices.iter().step_by(n.max(1));
    let prompt: usize = firsts.clone().map(|c| c.usage.prompt_tokens).sum();
    let cached: usize = firsts.map(|c| c.usage.cached_tokens).sum();
    let completion: usize = choices.iter().map(|c| c.usage.completion_tokens).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}
