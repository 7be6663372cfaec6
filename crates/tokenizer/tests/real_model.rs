//! The real SmolLM2-135M-Instruct tokenizer (`gpt2` BPE, pre-tokenizer `smollm`) against
//! llama.cpp's prompt ids and outputs (`shared/reference/llamacpp/greedy.jsonl`) and against
//! Hugging Face `tokenizers` (`tests/data/smollm2_hf_reference.json`).

mod common;

use common::{gpl3_text, greedy_cases, hf_reference, smollm2};
use kiln_tokenizer::{StreamDecoder, TokenType};

#[test]
fn metadata() {
    let t = smollm2();
    assert_eq!(t.n_vocab(), 49152);
    assert_eq!(t.model(), "gpt2");
    assert_eq!(t.pre_tokenizer(), Some("smollm"));
    assert_eq!(t.bos(), Some(1));
    assert_eq!(t.eos(), Some(2));
    assert_eq!(t.pad(), Some(2));
    assert!(!t.add_bos());
    assert!(!t.add_eos());
    assert_eq!(t.token_text(1), Some("<|im_start|>"));
    assert_eq!(t.token_type(1), Some(TokenType::Control));
    assert_eq!(t.token_type(100), Some(TokenType::Normal));
    assert_eq!(t.token_type(49152), None);
    assert!(t
        .chat_template()
        .is_some_and(|s| s.contains("<|im_start|>")));
}

#[test]
fn prompt_ids_match_llama_cpp() {
    let t = smollm2();
    for case in greedy_cases() {
        let ids = t.encode(&case.prompt, true, true);
        assert_eq!(
            ids, case.prompt_token_ids,
            "prompt ids differ for {}",
            case.name
        );
        assert_eq!(
            t.decode(&ids),
            case.prompt,
            "prompt round trip for {}",
            case.name
        );
    }
}

#[test]
fn outputs_decode_to_llama_cpp_text() {
    let t = smollm2();
    for case in greedy_cases() {
        assert_eq!(
            t.decode(&case.output_token_ids),
            case.output_text,
            "decoded output differs for {}",
            case.name
        );
        let mut stream = StreamDecoder::new();
        let mut text: String = case
            .output_token_ids
            .iter()
            .map(|&id| stream.push(t, id))
            .collect();
        text.push_str(&stream.finish());
        assert_eq!(
            text, case.output_text,
            "streamed output differs for {}",
            case.name
        );
    }
}

#[test]
fn matches_hf_tokenizers_on_tricky_text() {
    let t = smollm2();
    let reference = hf_reference();
    assert!(reference.cases.len() > 30);
    for (text, want) in &reference.cases {
        let got = t.encode(text, false, true);
        assert_eq!(&got, want, "ids differ for {text:?}");
        assert_eq!(&t.decode(&got), text, "round trip of {text:?}");
    }
}

#[test]
fn gpl3_matches_hf_tokenizers_and_llama_cpp_count() {
    let t = smollm2();
    let text = gpl3_text();
    let ids = t.encode(&text, true, false);
    // llama-perplexity reports 7,639 tokens for this file (shared/reference/llamacpp/README.md).
    assert_eq!(ids.len(), 7639);
    assert_eq!(ids, hf_reference().gpl3_ids);
    assert_eq!(t.decode(&ids), text);
}

#[test]
fn empty_and_whitespace() {
    let t = smollm2();
    assert!(t.encode("", true, true).is_empty());
    assert!(t.encode("", false, false).is_empty());
    assert_eq!(t.decode(&[]), "");
    for text in [
        " ",
        "   ",
        "\n\n",
        "a   b",
        "a\t \tb",
        "x \n\n  y  ",
        "\u{3000} \u{a0}",
    ] {
        let ids = t.encode(text, false, false);
        assert!(!ids.is_empty());
        assert_eq!(t.decode(&ids), text, "{text:?}");
    }
    // `\s+(?!\S)`: of four spaces before a word, three form one token and the fourth joins it.
    let ids = t.encode("a    b", false, false);
    assert_eq!(t.decode(&ids[1..2]), "   ");
    assert_eq!(t.decode(&ids[2..]), " b");
}

#[test]
fn digits_split_one_by_one() {
    let t = smollm2();
    let ids = t.encode("year 2024: 1234567890", false, false);
    let pieces: Vec<String> = ids.iter().map(|&i| t.decode(&[i])).collect();
    assert_eq!(
        pieces,
        [
            "year", " ", "2", "0", "2", "4", ":", " ", "1", "2", "3", "4", "5", "6", "7", "8", "9",
            "0"
        ]
    );
}

#[test]
fn control_tokens() {
    let t = smollm2();
    assert_eq!(t.encode("<|im_start|>", false, true), [1]);
    assert_eq!(t.encode("<|im_end|><|endoftext|>", true, true), [2, 0]);
    // Without special parsing the same text is ordinary text.
    let plain = t.encode("<|im_start|>", false, false);
    assert!(plain.len() > 1 && !plain.contains(&1));
    assert_eq!(t.decode(&plain), "<|im_start|>");
    // Control tokens decode to their text.
    assert_eq!(t.token_bytes(2), b"<|im_end|>");
    assert_eq!(t.decode(&[1, 9690, 2]), "<|im_start|>system<|im_end|>");
    assert!(t.is_control(1) && !t.is_control(9690));
}

#[test]
fn end_of_generation() {
    let t = smollm2();
    assert!(t.is_eog(2), "<|im_end|> (EOS)");
    assert!(t.is_eog(0), "<|endoftext|>");
    assert!(!t.is_eog(1), "<|im_start|>");
    // llama.cpp also stops at fill-in-the-middle repository markers such as `<reponame>`.
    assert!(t.is_eog(4), "<reponame>");
    assert_eq!(t.eog_ids(), [0, 2, 4]);
    assert!(!t.is_eog(504));
    assert!(!t.is_eog(u32::MAX));
    assert_eq!(t.eot(), Some(2));
}

#[test]
fn multibyte_round_trip_and_streaming() {
    let t = smollm2();
    for text in [
        "naïve café, Ærøskøbing, São Paulo",
        "日本語のテキストと中文和한국어",
        "emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷",
        "math: ∀x ∈ ℝ, x² ≥ 0 — “quotes” …",
        "Ελληνικά и русский текст",
    ] {
        let ids = t.encode(text, false, false);
        assert_eq!(t.decode(&ids), text);
        let mut stream = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(t, id);
            // Only complete characters come out.
            assert!(!piece.contains('\u{FFFD}'), "{text:?}");
            out.push_str(&piece);
        }
        assert_eq!(stream.pending_len(), 0);
        out.push_str(&stream.finish());
        assert_eq!(out, text);
    }
    // Some of those emoji take several byte-level tokens: a token alone is not valid UTF-8.
    let ids = t.encode("😀", false, false);
    assert!(ids.len() > 1);
    assert!(std::str::from_utf8(t.token_bytes(ids[0])).is_err());
}

#[test]
fn out_of_range_ids_decode_to_nothing() {
    let t = smollm2();
    assert_eq!(t.token_bytes(49152), b"");
    assert_eq!(t.token_bytes(u32::MAX), b"");
    assert_eq!(t.decode(&[504, u32::MAX, 3575]), t.decode(&[504, 3575]));
    let mut s = StreamDecoder::new();
    assert_eq!(s.push(t, u32::MAX), "");
}
