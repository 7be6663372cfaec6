//! kiln-sampler: choosing the next token from logits — greedy, temperature, top-k, top-p,
//! min-p, llama.cpp/OpenAI penalties and a seeded RNG — plus log-softmax helpers.
//!
//! A plain state machine: no clock, no I/O, no other kiln crate. Typical use:
//!
//! ```
//! use kiln_sampler::{Sampler, SamplingParams};
//!
//! let mut sampler = Sampler::new(SamplingParams { seed: 42, ..SamplingParams::default() })?;
//! sampler.accept_all(&[1, 2, 3]); // the prompt, for the penalties
//! let logits = vec![0.1, 2.0, -1.0, 0.5];
//! let token = sampler.sample(&logits);
//! sampler.accept(token);
//! assert!(token < 4);
//! # Ok::<(), kiln_sampler::SamplerError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod logprobs;
mod math;
mod params;
mod penalty;
pub mod rng;
mod sampler;

pub use error::SamplerError;
pub use logprobs::{log_softmax_at, log_softmax_into, top_logprobs};
pub use params::{SamplingParams, DEFAULT_SEED};
pub use rng::Xoshiro256StarStar;
pub use sampler::Sampler;
