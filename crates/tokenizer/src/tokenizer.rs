//! [`Tokenizer`]: text → token ids and back, for byte-level BPE (`gpt2`) and SentencePiece BPE
//! (`llama`) vocabularies, with special-token handling as llama.cpp does it.

use crate::bpe::Bpe;
use crate::bytelevel;
use crate::pretokenize::PreTokenizer;
use crate::special::{self, EndOfGeneration, Fragment};
use crate::spm::{self, Spm};
use crate::vocab::{TokenType, Vocab};
use crate::{TokenizerError, TokenizerSpec};

#[derive(Debug, Clone)]
enum Model {
    Bpe(Bpe),
    Spm(Spm),
}

/// A tokenizer built from a [`TokenizerSpec`] (usually read from GGUF metadata).
///
/// Immutable once built and `Send + Sync`: share one between threads.
#[derive(Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    model_name: String,
    /// Special tokens, longest text first.
    specials: Vec<u32>,
    /// The bytes each token stands for, concatenated; token `i` is
    /// `piece_bytes[piece_offs[i]..piece_offs[i + 1]]`.
    piece_bytes: Vec<u8>,
    piece_offs: Vec<usize>,
    eog: EndOfGeneration,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model_name)
            .field("pre", &self.pre_tokenizer())
            .field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog.ids)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// Parses a byte-fallback token text `<0xAB>`.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn check_len(what: &'static str, found: usize, n_vocab: usize) -> Result<(), TokenizerError> {
    if found != 0 && found < n_vocab {
        return Err(TokenizerError::LengthMismatch {
            what,
            found,
            n_vocab,
        });
    }
    Ok(())
}

fn check_id(what: &'static str, id: Option<u32>, n_vocab: usize) -> Result<(), TokenizerError> {
    match id {
        Some(i) if i as usize >= n_vocab => Err(TokenizerError::TokenOutOfRange {
            what,
            id: u64::from(i),
            n_vocab,
        }),
        _ => Ok(()),
    }
}

impl Tokenizer {
    /// Builds a tokenizer.
    ///
    /// Fails on an empty vocabulary, a `token_types`/`scores` array shorter than the
    /// vocabulary, a special-token id outside it, or an unsupported model or pre-tokenizer.
    pub fn from_spec(spec: TokenizerSpec) -> Result<Tokenizer, TokenizerError> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::LengthMismatch {
                what: "tokens (more than u32 ids)",
                found: n,
                n_vocab: n,
            });
        }
        check_len("token_type", spec.token_types.len(), n)?;
        check_len("scores", spec.scores.len(), n)?;
        for (what, id) in [
            ("bos", spec.bos),
            ("eos", spec.eos),
            ("eot", spec.eot),
            ("eom", spec.eom),
            ("pad", spec.pad),
            ("unk", spec.unk),
        ] {
            check_id(what, id, n)?;
        }
        let mut vocab = Vocab::new(spec.tokens, &spec.token_types, &spec.scores);
        let eog = special::end_of_generation(&mut vocab, spec.eos, spec.eot, spec.eom);
        let model = match spec.model.as_str() {
            "gpt2" => Model::Bpe(Bpe::new(
                &vocab,
                &spec.merges,
                PreTokenizer::from_name(spec.pre.as_deref())?,
            )),
            "llama" => Model::Spm(Spm::new(
                &vocab,
                spec.add_space_prefix.unwrap_or(true),
                spec.unk,
            )),
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        };
        let specials = special::special_tokens_by_length(&vocab);

        let mut piece_bytes = Vec::new();
        let mut piece_offs = Vec::with_capacity(n + 1);
        for (text, &ty) in vocab.texts.iter().zip(&vocab.types) {
            piece_offs.push(piece_bytes.len());
            match ty {
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                    piece_bytes.extend_from_slice(text.as_bytes());
                }
                TokenType::Unused => {}
                TokenType::Byte => match parse_byte_token(text) {
                    Some(b) => piece_bytes.push(b),
                    None => piece_bytes.extend_from_slice(text.as_bytes()),
                },
                TokenType::Normal => match &model {
                    Model::Bpe(_) => piece_bytes.extend(bytelevel::decode_token(text)),
                    Model::Spm(_) => match parse_byte_token(text) {
                        Some(b) => piece_bytes.push(b),
                        None => {
                            let mut buf = [0u8; 4];
                            for c in text.chars() {
                                let c = if c == spm::SPACE { ' ' } else { c };
                                piece_bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    },
                },
            }
        }
        piece_offs.push(piece_bytes.len());

        Ok(Tokenizer {
            vocab,
            model,
            model_name: spec.model,
            specials,
            piece_bytes,
            piece_offs,
            eog,
            bos: spec.bos,
            eos: spec.eos,
            pad: spec.pad,
            unk: spec.unk,
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
            chat_template: spec.chat_template,
        })
    }

    /// Reads the tokenizer from a GGUF file's metadata
    /// ([`TokenizerSpec::from_gguf`] then [`Tokenizer::from_spec`]).
    pub fn from_gguf(f: &kiln_gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_spec(TokenizerSpec::from_gguf(f)?)
    }

    /// Encodes `text` to token ids.
    ///
    /// `add_special`: put BOS first / EOS last where the metadata says to (`add_bos_token`,
    /// `add_eos_token`). `parse_special`: control tokens written in the text (e.g.
    /// `<|im_start|>`) become their token ids; otherwise they are tokenized as plain text.
    /// User-defined tokens always match whole.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let frags = special::partition(text, &self.specials, &self.vocab, parse_special);
        match &self.model {
            Model::Bpe(bpe) => {
                for frag in frags {
                    match frag {
                        Fragment::Text(s) => bpe.encode(&self.vocab, s, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm(spm) => {
                // SentencePiece puts a space before the text and before text that follows a
                // special token.
                let mut after_special = true;
                for frag in frags {
                    match frag {
                        Fragment::Text(s) => {
                            let prefix = spm.add_space_prefix && after_special;
                            spm.encode(&self.vocab, s, prefix, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Decodes ids to text: the concatenation of [`Tokenizer::token_bytes`], read as UTF-8
    /// with invalid sequences replaced by U+FFFD. Control tokens give their text; ids outside
    /// the vocabulary give nothing.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes token `id` stands for: byte-level characters decoded, `▁` as space,
    /// byte-fallback tokens as their byte, control and user-defined tokens as their text,
    /// unused tokens and ids outside the vocabulary as nothing. A byte-level token may be
    /// part of a UTF-8 character (see [`crate::StreamDecoder`]).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.piece_offs.get(i), self.piece_offs.get(i + 1)) {
            (Some(&a), Some(&b)) => self.piece_bytes.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The token's text as stored in the vocabulary (byte-level alphabet for BPE, `▁` for
    /// SentencePiece spaces).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }

    /// The id of the token whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The token's type; `None` outside the vocabulary.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.token_type(id)
    }

    /// Whether `id` is a control token (BOS, EOS, `<|im_start|>`...), which chat output
    /// usually hides.
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.token_type(id) == Some(TokenType::Control)
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (from the metadata, or found by name such as `<|im_end|>`).
    pub fn eot(&self) -> Option<u32> {
        self.eog.eot
    }

    /// End-of-message token.
    pub fn eom(&self) -> Option<u32> {
        self.eog.eom
    }

    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Whether generation stops at `id`: EOS, EOT, EOM, and the tokens llama.cpp treats as
    /// end of generation by name (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.ids.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog.ids
    }

    /// Whether [`Tokenizer::encode`] with `add_special` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether [`Tokenizer::encode`] with `add_special` puts EOS last.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// The model's Jinja chat template (`tokenizer.chat_template`).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// `"gpt2"` or `"llama"`.
    pub fn model(&self) -> &str {
        &self.model_name
    }

    /// The BPE pre-tokenizer's name (`None` for SentencePiece models).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        match &self.model {
            Model::Bpe(b) => Some(b.pre.name()),
            Model::Spm(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<crate::ChatTemplate>();
        check::<crate::StreamDecoder>();
        check::<TokenizerError>();
    }

    #[test]
    fn byte_token_texts() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("<0x0A"), None);
        assert_eq!(parse_byte_token("0x0A>"), None);
    }

    #[test]
    fn spec_errors() {
        let base = TokenizerSpec {
            model: "gpt2".into(),
            tokens: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert!(Tokenizer::from_spec(base.clone()).is_ok());
        let e = |s: TokenizerSpec| Tokenizer::from_spec(s).err().map(|e| e.to_string());
        assert!(e(TokenizerSpec {
            tokens: vec![],
            ..base.clone()
        })
        .is_some());
        assert!(e(TokenizerSpec {
            token_types: vec![1],
            ..base.clone()
        })
        .is_some());
        assert!(e(TokenizerSpec {
            scores: vec![0.0],
            ..base.clone()
        })
        .is_some());
        assert!(e(TokenizerSpec {
            bos: Some(2),
            ..base.clone()
        })
        .is_some());
        assert!(e(TokenizerSpec {
            model: "bert".into(),
            ..base.clone()
        })
        .is_some());
        assert!(e(TokenizerSpec {
            pre: Some("nope".into()),
            ..base
        })
        .is_some());
    }
}
