//! kiln-audio: running small audio nets in real time — a chain of `RtNet`s with preallocated
//! buffers, driven from an audio thread through lock-free `rtrb` rings, with latency statistics.
#![forbid(unsafe_code)]

pub mod chain;
pub mod runner;
pub mod stats;

pub use chain::Chain;
pub use runner::{AudioSide, RunReport, Runner, RunnerConfig};
pub use stats::{Latency, Samples};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AudioError {
    #[error(
        "model {index} ({name}) takes {expected} values per frame but model {prev} gives {got}"
    )]
    ChainMismatch {
        index: usize,
        name: String,
        prev: usize,
        expected: usize,
        got: usize,
    },
    #[error("the pipeline has no models")]
    Empty,
    #[error("could not start the worker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the worker thread panicked")]
    WorkerPanicked,
}
