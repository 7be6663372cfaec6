//! The crate's error type: every way building a tokenizer or rendering a chat template can fail.

/// Everything that can go wrong in `kiln-tokenizer`.
///
/// Encoding and decoding never fail (unknown ids decode to nothing); errors come from reading
/// the vocabulary metadata, from an inconsistent [`crate::TokenizerSpec`], and from chat
/// templates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey {
        /// The key that was looked up.
        key: String,
    },

    /// A GGUF metadata key holds a value of the wrong type (or an array with a bad element).
    #[error("GGUF metadata key `{key}` has the wrong type: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What the tokenizer needs.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },

    /// `tokenizer.ggml.model` names a tokenizer kind this crate does not implement.
    #[error("unsupported tokenizer model `{0}` (supported: gpt2, llama)")]
    UnsupportedModel(String),

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported pre-tokenizer `{0}`")]
    UnsupportedPreTokenizer(String),

    /// The vocabulary has no tokens.
    #[error("the vocabulary is empty")]
    EmptyVocab,

    /// A per-token array (`token_type`, `scores`) is shorter than the vocabulary.
    #[error("`{what}` has {found} entries but the vocabulary has {n_vocab} tokens")]
    LengthMismatch {
        /// Which array.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// A token id given in the metadata (BOS, EOS...) is outside the vocabulary.
    #[error("`{what}` token id {id} is outside the vocabulary of {n_vocab} tokens")]
    TokenOutOfRange {
        /// Which special token.
        what: &'static str,
        /// The id found.
        id: u64,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// The chat template failed to render (a syntax error in a template passed explicitly, an
    /// error raised by the template with `raise_exception`, a bad value...).
    #[error("chat template error: {0}")]
    Template(String),
}

impl From<minijinja::Error> for TokenizerError {
    fn from(e: minijinja::Error) -> Self {
        // Include the chain of causes: minijinja puts the useful detail in the source.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        TokenizerError::Template(msg)
    }
}
