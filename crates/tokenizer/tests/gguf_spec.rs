//! Reading [`TokenizerSpec`] from GGUF metadata: tiny files written with kiln's own writer.

use kiln_gguf::{GgufFile, GgufWriter, Value};
use kiln_tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerError, TokenizerSpec};

fn file(meta: Vec<(&str, Value)>) -> GgufFile {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::from("llama"));
    for (k, v) in meta {
        w.add_metadata(k, v);
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::from(*s)).collect())
}

fn bpe_meta() -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.model", Value::from("gpt2")),
        ("tokenizer.ggml.pre", Value::from("smollm")),
        (
            "tokenizer.ggml.tokens",
            strings(&[
                "<|endoftext|>",
                "<|im_start|>",
                "<|im_end|>",
                "a",
                "b",
                "ab",
                "Ġ",
                "1",
            ]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::from(vec![3i32, 3, 3, 1, 1, 1, 1, 1]),
        ),
        ("tokenizer.ggml.merges", strings(&["a b"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(99)), // outside: ignored
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        (
            "tokenizer.chat_template",
            Value::from("{{ messages[0]['content'] }}!"),
        ),
    ]
}

#[test]
fn reads_bpe_metadata() {
    let f = file(bpe_meta());
    let spec = TokenizerSpec::from_gguf(&f).unwrap();
    assert_eq!(spec.model, "gpt2");
    assert_eq!(spec.pre.as_deref(), Some("smollm"));
    assert_eq!(spec.tokens.len(), 8);
    assert_eq!(spec.token_types[0], 3);
    assert!(spec.scores.is_empty());
    assert_eq!(spec.merges, ["a b"]);
    assert_eq!(
        (spec.bos, spec.eos, spec.pad, spec.unk),
        (Some(1), Some(2), Some(2), None)
    );
    assert_eq!((spec.eot, spec.eom), (None, None));
    assert!(!spec.add_bos && !spec.add_eos);
    assert_eq!(spec.add_space_prefix, None);

    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.encode("<|im_start|>ab 1", true, true), [1, 5, 6, 7]);
    assert_eq!(t.decode(&[1, 5, 6, 7]), "<|im_start|>ab 1");
    assert!(t.is_eog(0) && t.is_eog(2) && !t.is_eog(1));
    let out = ChatTemplate::from_tokenizer(&t)
        .render(&[ChatMessage::user("hey")], true)
        .unwrap();
    assert_eq!(out, "hey!");
}

#[test]
fn llama_defaults() {
    let f = file(vec![
        ("tokenizer.ggml.model", Value::from("llama")),
        (
            "tokenizer.ggml.tokens",
            strings(&["<unk>", "<s>", "</s>", "▁a"]),
        ),
        (
            "tokenizer.ggml.scores",
            Value::from(vec![0.0f32, 0.0, 0.0, -1.0]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::from(vec![2i32, 3, 3, 1]),
        ),
    ]);
    let spec = TokenizerSpec::from_gguf(&f).unwrap();
    assert_eq!((spec.bos, spec.eos, spec.unk), (Some(1), Some(2), Some(0)));
    assert!(spec.add_bos);
    assert_eq!(spec.scores, [0.0, 0.0, 0.0, -1.0]);
    let t = Tokenizer::from_spec(spec).unwrap();
    assert_eq!(t.encode("a", true, false), [1, 3]);
    assert_eq!(t.decode(&[1, 3, 2]), "<s> a</s>");
}

#[test]
fn llama3_pre_adds_bos_by_default() {
    let mut meta = bpe_meta();
    meta.retain(|(k, _)| *k != "tokenizer.ggml.add_bos_token" && *k != "tokenizer.ggml.pre");
    meta.push(("tokenizer.ggml.pre", Value::from("llama-bpe")));
    let spec = TokenizerSpec::from_gguf(&file(meta)).unwrap();
    assert!(spec.add_bos);
}

#[test]
fn missing_and_mistyped_keys() {
    let mut meta = bpe_meta();
    meta.retain(|(k, _)| *k != "tokenizer.ggml.model");
    let err = TokenizerSpec::from_gguf(&file(meta)).unwrap_err();
    assert!(matches!(err, TokenizerError::MissingKey { ref key } if key == "tokenizer.ggml.model"));

    let mut meta = bpe_meta();
    meta.retain(|(k, _)| *k != "tokenizer.ggml.tokens");
    assert!(matches!(
        TokenizerSpec::from_gguf(&file(meta)),
        Err(TokenizerError::MissingKey { .. })
    ));

    for (key, bad) in [
        ("tokenizer.ggml.tokens", Value::from(vec![1u32, 2])),
        ("tokenizer.ggml.model", Value::U32(3)),
        ("tokenizer.ggml.add_bos_token", Value::from("yes")),
        ("tokenizer.ggml.bos_token_id", Value::from("one")),
        ("tokenizer.ggml.token_type", Value::from("3")),
        ("tokenizer.ggml.scores", strings(&["x"])),
    ] {
        let mut meta = bpe_meta();
        meta.retain(|(k, _)| *k != key);
        meta.push((key, bad));
        let err = TokenizerSpec::from_gguf(&file(meta)).unwrap_err();
        assert!(
            matches!(err, TokenizerError::WrongType { .. }),
            "{key}: {err}"
        );
    }
}

#[test]
fn unsupported_model_and_pre() {
    let mut meta = bpe_meta();
    meta.retain(|(k, _)| *k != "tokenizer.ggml.pre");
    meta.push(("tokenizer.ggml.pre", Value::from("made-up")));
    assert!(matches!(
        Tokenizer::from_gguf(&file(meta)),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
    let mut meta = bpe_meta();
    meta.retain(|(k, _)| *k != "tokenizer.ggml.model");
    meta.push(("tokenizer.ggml.model", Value::from("bert")));
    assert!(matches!(
        Tokenizer::from_gguf(&file(meta)),
        Err(TokenizerError::UnsupportedModel(_))
    ));
}
