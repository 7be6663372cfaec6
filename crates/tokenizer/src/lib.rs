//! kiln-tokenizer: text ↔ token ids from GGUF metadata (byte-level BPE and SentencePiece BPE,
//! as llama.cpp tokenizes them), streaming detokenization, and chat templates.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_tokenizer::{ChatMessage, ChatTemplate, StreamDecoder, Tokenizer};
//! let file = kiln_gguf::GgufFile::open("model.gguf".as_ref())?;
//! let tok = Tokenizer::from_gguf(&file)?;
//! let prompt = ChatTemplate::from_tokenizer(&tok)
//!     .render(&[ChatMessage::user("Hi!")], true)?;
//! let ids = tok.encode(&prompt, true, true);
//! let mut stream = StreamDecoder::new();
//! for &id in &ids {
//!     print!("{}", stream.push(&tok, id));
//! }
//! print!("{}", stream.finish());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod bpe;
mod bytelevel;
mod chat;
mod error;
mod pretokenize;
mod spec;
mod special;
mod spm;
mod stream;
mod tokenizer;
mod unicode;
mod vocab;

pub use chat::{ChatMessage, ChatTemplate, CHATML_TEMPLATE};
pub use error::TokenizerError;
pub use spec::TokenizerSpec;
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
pub use vocab::TokenType;
