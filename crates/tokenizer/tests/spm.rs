//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`) on a tiny hand-made vocabulary laid out
//! like TinyLlama's / Llama 2's: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then scored pieces.

use kiln_tokenizer::{StreamDecoder, TokenType, Tokenizer, TokenizerSpec};
use proptest::prelude::*;

const PIECES: &[(&str, f32)] = &[
    ("▁", -1.0),
    ("h", -3.0),
    ("e", -3.0),
    ("l", -3.0),
    ("o", -3.0),
    ("w", -3.0),
    ("r", -3.0),
    ("d", -3.0),
    ("he", -1.5),
    ("ll", -1.6),
    ("llo", -2.0),
    ("▁he", -2.5),
    ("▁hello", -2.8),
    ("▁w", -2.0),
    ("or", -2.2),
    ("▁wor", -2.4),
    ("ld", -2.6),
    ("▁world", -2.7),
];

/// Id of the first piece (after `<unk>`, `<s>`, `</s>` and the 256 byte tokens).
const FIRST_PIECE: u32 = 259;

fn spec() -> TokenizerSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (p, s) in PIECES {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(*s);
    }
    tokens.push("<|user|>".into());
    types.push(4);
    scores.push(0.0);
    TokenizerSpec {
        model: "llama".into(),
        tokens,
        token_types: types,
        scores,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_bos: true,
        ..Default::default()
    }
}

fn tok() -> Tokenizer {
    Tokenizer::from_spec(spec()).unwrap()
}

fn piece(t: &Tokenizer, text: &str) -> u32 {
    t.token_id(text)
        .unwrap_or_else(|| panic!("no piece {text}"))
}

fn texts(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| t.token_text(i).unwrap().to_owned())
        .collect()
}

#[test]
fn layout() {
    let t = tok();
    assert_eq!(t.model(), "llama");
    assert_eq!(t.pre_tokenizer(), None);
    assert_eq!(t.token_id("▁"), Some(FIRST_PIECE));
    assert_eq!(t.token_type(3), Some(TokenType::Byte));
    assert!(t.add_bos());
    assert!(t.is_eog(2));
}

#[test]
fn words_with_space_prefix_and_bos() {
    let t = tok();
    let ids = t.encode("hello world", true, false);
    assert_eq!(texts(&t, &ids), ["<s>", "▁hello", "▁world"]);
    assert_eq!(t.decode(&ids), "<s> hello world");
    assert_eq!(t.decode(&ids[1..]), " hello world");
    let ids = t.encode("hello world", false, false);
    assert_eq!(ids, [piece(&t, "▁hello"), piece(&t, "▁world")]);
}

#[test]
fn no_space_prefix_when_metadata_says_so() {
    let t = Tokenizer::from_spec(TokenizerSpec {
        add_space_prefix: Some(false),
        ..spec()
    })
    .unwrap();
    let ids = t.encode("hello world", false, false);
    assert_eq!(texts(&t, &ids), ["he", "llo", "▁world"]);
}

#[test]
fn byte_fallback_for_unknown_characters() {
    let t = tok();
    let ids = t.encode("hé😀", false, false);
    assert_eq!(
        texts(&t, &ids),
        ["▁", "h", "<0xC3>", "<0xA9>", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    );
    assert_eq!(t.decode(&ids), " hé😀");
    assert_eq!(t.token_bytes(ids[2]), [0xC3]);
    // Streaming holds back the partial characters.
    let mut s = StreamDecoder::new();
    let pieces: Vec<String> = ids.iter().map(|&i| s.push(&t, i)).collect();
    assert_eq!(pieces, [" ", "h", "", "é", "", "", "", "😀"]);
}

#[test]
fn special_tokens_and_space_prefix_after_them() {
    let t = tok();
    let ids = t.encode("<s>hello</s>world", false, true);
    assert_eq!(texts(&t, &ids), ["<s>", "▁hello", "</s>", "▁world"]);
    // Without special parsing `<s>` is text (here: bytes), but user-defined tokens still match.
    let ids = t.encode("<s><|user|>", false, false);
    assert!(!ids.contains(&1));
    assert_eq!(*ids.last().unwrap(), piece(&t, "<|user|>"));
    assert_eq!(t.decode(&ids), " <s><|user|>");
}

#[test]
fn add_eos_and_empty_text() {
    let t = Tokenizer::from_spec(TokenizerSpec {
        add_eos: true,
        ..spec()
    })
    .unwrap();
    assert_eq!(t.encode("", true, false), [1, 2]);
    assert!(t.encode("", false, false).is_empty());
    assert_eq!(
        texts(&t, &t.encode("world", true, false)),
        ["<s>", "▁world", "</s>"]
    );
}

#[test]
fn unknown_token_without_byte_pieces() {
    let t = Tokenizer::from_spec(TokenizerSpec {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "<s>".into(), "</s>".into(), "▁a".into()],
        token_types: vec![2, 3, 3, 1],
        scores: vec![0.0, 0.0, 0.0, -1.0],
        unk: Some(0),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(t.encode("a b", false, false), [3, 0, 0]); // "▁" and "b" are one unknown each
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trips_with_leading_space(s in "[hello wrd\u{e9}\u{4e2d}\u{1F600}!\n]{0,24}") {
        let t = tok();
        let ids = t.encode(&s, false, false);
        let want = if s.is_empty() { String::new() } else { format!(" {s}") };
        prop_assert_eq!(t.decode(&ids), want);
    }

    #[test]
    fn never_panics(s in "\\PC{0,40}", parse in any::<bool>()) {
        let t = tok();
        let ids = t.encode(&s, true, parse);
        prop_assert!(ids.iter().all(|&i| (i as usize) < t.n_vocab()));
    }
}

/// A SentencePiece BPE model trained on GPL-3 and the `sentencepiece` library's own encodings
/// (`tests/data/gen_spm.py`).
#[test]
fn matches_sentencepiece_library() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spm_reference.json");
    let data = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    let t = Tokenizer::from_spec(TokenizerSpec {
        model: "llama".into(),
        tokens: strs("tokens"),
        token_types: v["token_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect(),
        scores: v["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect(),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_bos: true,
        ..Default::default()
    })
    .unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(t.encode(text, false, false), want, "{text:?}");
        let ids = t.encode(text, true, false);
        assert_eq!(ids.first(), Some(&1));
        let want_text = if text.is_empty() {
            String::new()
        } else {
            format!(" {text}")
        };
        assert_eq!(t.decode(&ids[1..]), want_text);
    }
}
