//! kiln-engine: a loaded model with its tokenizer and threads — sessions, the generate loop
//! with streaming, chat turns that reuse the KV cache, and perplexity evaluation.
#![forbid(unsafe_code)]

pub mod batch;
pub mod bench;
pub mod calibrate;
pub mod generate;
pub mod kl;
pub mod logits_file;
pub mod perplexity;
pub mod response_cache;
pub mod scheduler;
mod stop;

pub use batch::{
    BatchConfig, BatchEngine, BatchStats, Event, Request, StepOutput, TokenLogprob, Usage,
};
pub use calibrate::CalibrateOptions;
pub use generate::{GenerateOptions, GenerationStats, Session, StopReason};
pub use kiln_sampler::SamplingParams;
pub use kl::{KlReference, KlReport};
pub use logits_file::LogitsReader;
/// Tiny random models for tests of crates above the engine (they write their own model).
pub mod testing {
    pub use kiln_models::tiny::{write_tiny_llama, TinySpec};
}
pub use kiln_tokenizer::{ChatMessage, ChatTemplate};
pub use perplexity::{PerplexityOptions, PerplexityReport};
pub use response_cache::{is_deterministic, CacheStats, ResponseCache};
pub use scheduler::{
    FinishReason, RequestId, Scheduler, SchedulerConfig, SchedulerStats, SeqId, SeqRequest,
    StepItem, StepPlan, SubmitError,
};

use kiln_gguf::GgufFile;
use kiln_kvcache::KvDtype;
use kiln_models::{Llama, ModelError};
use kiln_tensor::ThreadPool;
use kiln_tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: kiln_gguf::GgufError,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] kiln_tokenizer::TokenizerError),
    #[error(transparent)]
    Sampler(#[from] kiln_sampler::SamplerError),
    #[error("the prompt has {prompt} tokens but the context holds {n_ctx} (use a larger --ctx or a shorter prompt)")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// A model ready to run: weights, tokenizer and the worker threads that compute with them.
pub struct Engine {
    model: Arc<Llama>,
    tokenizer: Arc<Tokenizer>,
    pool: ThreadPool,
}

impl Engine {
    /// Opens a GGUF file (memory-mapped) and builds model and tokenizer; `threads` = 0 uses
    /// every available core.
    pub fn load(path: &Path, threads: usize) -> Result<Engine, EngineError> {
        let file = GgufFile::open(path).map_err(|source| EngineError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_gguf(Arc::new(file), threads)
    }

    /// Builds the engine from a GGUF image in memory (tiny test models, embedded files).
    pub fn from_bytes(bytes: Vec<u8>, threads: usize) -> Result<Engine, EngineError> {
        let file = GgufFile::from_bytes(bytes).map_err(|source| EngineError::Open {
            path: "<memory>".into(),
            source,
        })?;
        Self::from_gguf(Arc::new(file), threads)
    }

    pub fn from_gguf(file: Arc<GgufFile>, threads: usize) -> Result<Engine, EngineError> {
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let model = Llama::load(file)?;
        if tokenizer.n_vocab() > model.config().n_vocab {
            return Err(EngineError::Invalid(format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.n_vocab(),
                model.config().n_vocab
            )));
        }
        Ok(Engine {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            pool: ThreadPool::new(threads),
        })
    }

    pub fn model(&self) -> &Llama {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Tokenizes a prompt (special tokens parsed), adding BOS where the vocabulary wants it
    /// unless the text (e.g. a rendered chat template) already starts with it.
    pub fn encode_prompt(&self, text: &str) -> Vec<u32> {
        let tok = self.tokenizer();
        let starts_with_bos = tok
            .bos()
            .map(|b| {
                let bos_text = String::from_utf8_lossy(tok.token_bytes(b)).into_owned();
                !bos_text.is_empty() && text.starts_with(&bos_text)
            })
            .unwrap_or(false);
        tok.encode(text, !starts_with_bos, true)
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// A new conversation/sequence with room for `n_ctx` tokens (0 = the model's training
    /// context).
    pub fn new_session(&self, n_ctx: usize, kv: KvDtype) -> Result<Session, EngineError> {
        let n_ctx = if n_ctx == 0 {
            self.model.config().n_ctx_train
        } else {
            n_ctx
        };
        Ok(Session::new(self.model.new_state(n_ctx, kv)?))
    }
}
