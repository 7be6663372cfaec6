//! Calibration: runs the model over a text in chunks (as `llama-imatrix` does) and collects, for
//! every matmul weight, the sum of squares of each input channel, giving an importance matrix.

use crate::{Engine, EngineError};
use kiln_kvcache::KvDtype;
use kiln_models::imatrix::Imatrix;
use kiln_models::{LogitsMode, MatmulObserver};
use std::sync::{Arc, Mutex};

/// How to run a calibration.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Tokens per chunk (each chunk starts from an empty cache).
    pub n_ctx: usize,
    /// Stop after this many chunks (0 = all).
    pub max_chunks: usize,
    pub kv: KvDtype,
    /// Name of the calibration text, stored in the matrix.
    pub dataset: String,
}

/// Accumulates observed inputs into a shared matrix; the first error is kept.
struct Collector {
    m: Arc<Mutex<(Imatrix, Option<String>)>>,
}

impl MatmulObserver for Collector {
    fn observe(&mut self, weights: &[&str], x: &[f32], cols: usize) {
        let Ok(mut g) = self.m.lock() else { return };
        let (m, err) = &mut *g;
        for w in weights {
            if let Err(e) = m.accumulate(w, x, cols) {
                err.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl Engine {
    /// Runs `tokens` through the model in chunks of `opts.n_ctx` (the first token of each chunk
    /// replaced by BOS when the model wants one, as in perplexity) and returns the importance
    /// matrix. `progress(done, total)` is called after each chunk.
    pub fn calibrate(
        &self,
        tokens: &[u32],
        opts: &CalibrateOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Imatrix, EngineError> {
        let n_ctx = opts.n_ctx;
        if n_ctx < 2 {
            return Err(EngineError::Invalid(format!(
                "context {n_ctx} is too small for calibration"
            )));
        }
        let mut n_chunks = tokens.len() / n_ctx;
        if opts.max_chunks > 0 {
            n_chunks = n_chunks.min(opts.max_chunks);
        }
        if n_chunks == 0 {
            return Err(EngineError::Invalid(format!(
                "the calibration text has {} tokens; it needs at least one chunk of {n_ctx}",
                tokens.len()
            )));
        }
        let shared = Arc::new(Mutex::new((Imatrix::default(), None)));
        let mut session = self.new_session(n_ctx, opts.kv)?;
        session.state_mut().set_observer(Some(Box::new(Collector {
            m: Arc::clone(&shared),
        })));
        let bos = self
            .tokenizer()
            .bos()
            .filter(|_| self.tokenizer().add_bos());
        let mut logits = Vec::new();
        let mut chunk_tokens = Vec::with_capacity(n_ctx);
        for chunk in 0..n_chunks {
            chunk_tokens.clear();
            chunk_tokens.extend_from_slice(&tokens[chunk * n_ctx..(chunk + 1) * n_ctx]);
            if let Some(b) = bos {
                chunk_tokens[0] = b;
            }
            session.clear();
            self.model().forward(
                self.pool(),
                session.state_mut(),
                &chunk_tokens,
                LogitsMode::Last,
                &mut logits,
            )?;
            progress(chunk + 1, n_chunks);
        }
        session.state_mut().set_observer(None);
        let (mut m, err) = std::mem::take(
            &mut *shared
                .lock()
                .map_err(|_| EngineError::Invalid("calibration state poisoned".into()))?,
        );
        if let Some(e) = err {
            return Err(EngineError::Invalid(format!("calibration: {e}")));
        }
        m.datasets = vec![opts.dataset.clone()];
        m.chunk_count = n_chunks as u32;
        m.chunk_size = n_ctx as u32;
        Ok(m)
    }
}
