//! [`TokenizerSpec`]: everything a tokenizer is built from, as plain data, and reading it from
//! a GGUF file's `tokenizer.*` metadata.

use kiln_gguf::{GgufFile, Value};

use crate::TokenizerError;

/// The vocabulary and options a [`crate::Tokenizer`] is built from, named after the GGUF keys
/// `tokenizer.ggml.*` they come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerSpec {
    /// `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece BPE).
    pub model: String,
    /// The pre-tokenizer for `gpt2` models (`"smollm"`, `"llama3"`, `"qwen2"`...); `None`
    /// means llama.cpp's `"default"`. Ignored for `llama` models.
    pub pre: Option<String>,
    /// Token texts, by id. Byte-level BPE texts are in GPT-2's byte alphabet (`Ġ` for space).
    pub tokens: Vec<String>,
    /// `token_type` codes by id (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte); empty means all normal.
    pub token_types: Vec<i32>,
    /// SentencePiece scores by id (higher merges first); may be empty for BPE.
    pub scores: Vec<f32>,
    /// BPE merges `"left right"`, highest priority first.
    pub merges: Vec<String>,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// End-of-turn token.
    pub eot: Option<u32>,
    /// End-of-message token (Llama 3.1 tool calls).
    pub eom: Option<u32>,
    /// Padding token.
    pub pad: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Put BOS first when encoding with `add_special`.
    pub add_bos: bool,
    /// Put EOS last when encoding with `add_special`.
    pub add_eos: bool,
    /// SentencePiece: put a space before the text (`None`: yes).
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}

const PREFIX: &str = "tokenizer.ggml.";

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn wrong(key: &str, expected: &'static str, found: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.type_name().to_owned(),
    }
}

fn get_str(f: &GgufFile, key: &str) -> Result<Option<String>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| wrong(key, "string", v)),
    }
}

fn get_bool(f: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(key, "bool", v)),
    }
}

fn get_id(f: &GgufFile, key: &str) -> Result<Option<u64>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        // llama.cpp stores "no token" as -1 in some converted files.
        Some(v) if v.as_i64().is_some_and(|i| i < 0) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(key, "unsigned integer", v)),
    }
}

fn get_array<'f>(f: &'f GgufFile, key: &str) -> Result<Option<&'f [Value]>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_array().map(Some).ok_or_else(|| wrong(key, "array", v)),
    }
}

fn str_array(f: &GgufFile, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(arr) = get_array(f, key)? else {
        return Ok(None);
    };
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(key, "array of strings", v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl TokenizerSpec {
    /// Reads the tokenizer from GGUF metadata.
    ///
    /// Required: `tokenizer.ggml.model` and `tokenizer.ggml.tokens`. Defaults follow
    /// llama.cpp: `llama` models get BOS 1, EOS 2, UNK 0 and `add_bos` unless the metadata
    /// says otherwise; `gpt2` models add BOS only for pre-tokenizers that expect it (Llama 3).
    /// A special-token id outside the vocabulary is ignored (the default is kept).
    pub fn from_gguf(f: &GgufFile) -> Result<TokenizerSpec, TokenizerError> {
        let model_key = key("model");
        let model = get_str(f, &model_key)?.ok_or(TokenizerError::MissingKey { key: model_key })?;
        let pre = get_str(f, &key("pre"))?;
        let tokens_key = key("tokens");
        let tokens =
            str_array(f, &tokens_key)?.ok_or(TokenizerError::MissingKey { key: tokens_key })?;
        let n_vocab = tokens.len();

        let type_key = key("token_type");
        let token_types = match get_array(f, &type_key)? {
            None => Vec::new(),
            Some(arr) => arr
                .iter()
                .map(|v| {
                    v.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| wrong(&type_key, "array of i32", v))
                })
                .collect::<Result<_, _>>()?,
        };
        let score_key = key("scores");
        let scores = match get_array(f, &score_key)? {
            None => Vec::new(),
            Some(arr) => arr
                .iter()
                .map(|v| {
                    v.as_f32()
                        .ok_or_else(|| wrong(&score_key, "array of f32", v))
                })
                .collect::<Result<_, _>>()?,
        };
        let merges = str_array(f, &key("merges"))?.unwrap_or_default();

        let is_spm = model == "llama";
        let in_vocab = |id: Option<u64>| {
            id.and_then(|i| u32::try_from(i).ok())
                .filter(|&i| (i as usize) < n_vocab)
        };
        let default_id = |id: u32| is_spm.then_some(id).filter(|&i| (i as usize) < n_vocab);
        let id_or = |name: &str, default: Option<u32>| -> Result<Option<u32>, TokenizerError> {
            Ok(in_vocab(get_id(f, &key(name))?).or(default))
        };
        let bos = id_or("bos_token_id", default_id(1))?;
        let eos = id_or("eos_token_id", default_id(2))?;
        let unk = id_or("unknown_token_id", default_id(0))?;
        let eot = id_or("eot_token_id", None)?;
        let eom = id_or("eom_token_id", None)?;
        let pad = id_or("padding_token_id", None)?;

        let default_add_bos = is_spm
            || crate::pretokenize::PreTokenizer::from_name(pre.as_deref())
                .map(|p| p.default_add_bos)
                .unwrap_or(false);
        let add_bos = get_bool(f, &key("add_bos_token"))?.unwrap_or(default_add_bos);
        let add_eos = get_bool(f, &key("add_eos_token"))?.unwrap_or(false);
        let add_space_prefix = get_bool(f, &key("add_space_prefix"))?;
        let chat_template = get_str(f, "tokenizer.chat_template")?;

        Ok(TokenizerSpec {
            model,
            pre,
            tokens,
            token_types,
            scores,
            merges,
            bos,
            eos,
            eot,
            eom,
            pad,
            unk,
            add_bos,
            add_eos,
            add_space_prefix,
            chat_template,
        })
    }
}
