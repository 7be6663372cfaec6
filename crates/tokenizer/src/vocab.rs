//! The vocabulary: token texts, types and scores, and the text → id index.

use std::collections::HashMap;

/// What kind of token an id is (`tokenizer.ggml.token_type`, as in llama.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// An ordinary piece of text (type 1; also used for unknown type codes).
    Normal,
    /// The unknown-token placeholder, e.g. `<unk>` (type 2).
    Unknown,
    /// A control token such as `<s>` or `<|im_start|>` (type 3): only matched in text when
    /// special parsing is on.
    Control,
    /// A user-defined token (type 4): always matched in text as a whole.
    UserDefined,
    /// An unused slot (type 5): never produced, decodes to nothing.
    Unused,
    /// A byte-fallback token `<0xAB>` (type 6).
    Byte,
}

impl TokenType {
    /// The type for a GGUF `token_type` code; codes outside 1..=6 count as normal.
    pub fn from_code(code: i32) -> TokenType {
        match code {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }

    /// Whether a token of this type is matched whole in text: user-defined tokens always,
    /// control and unknown tokens when special parsing is on.
    pub(crate) fn is_special(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

/// Token texts with their types and scores.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub(crate) texts: Vec<String>,
    pub(crate) types: Vec<TokenType>,
    /// One per token (0.0 where the metadata has none).
    pub(crate) scores: Vec<f32>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Builds the vocabulary. `types` and `scores` are either empty or at least as long as
    /// `texts` (the caller checks). An empty token text becomes `[EMPTY_<id>]` so that every
    /// id has a distinct, non-empty text; when a text repeats, the lowest id keeps it.
    pub(crate) fn new(texts: Vec<String>, type_codes: &[i32], scores: &[f32]) -> Vocab {
        let n = texts.len();
        let texts: Vec<String> = texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t
                }
            })
            .collect();
        let types = (0..n)
            .map(|i| TokenType::from_code(type_codes.get(i).copied().unwrap_or(1)))
            .collect();
        let scores = (0..n)
            .map(|i| scores.get(i).copied().unwrap_or(0.0))
            .collect();
        let mut index = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            if let Ok(id) = u32::try_from(i) {
                index.entry(t.clone()).or_insert(id);
            }
        }
        Vocab {
            texts,
            types,
            scores,
            index,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// The id of the token whose text is exactly `text`.
    #[inline]
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.index.get(text).copied()
    }

    pub(crate) fn text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub(crate) fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }
}
