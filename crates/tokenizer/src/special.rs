//! Special tokens: matching control and user-defined tokens in text, and working out which
//! tokens end generation.

use crate::vocab::{TokenType, Vocab};

/// A stretch of input: text still to be tokenized, or a special token matched whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The special tokens of a vocabulary, longest text first (ties by id), which is the order
/// they are matched in.
pub(crate) fn special_tokens_by_length(vocab: &Vocab) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..vocab.len())
        .filter_map(|i| u32::try_from(i).ok())
        .filter(|&id| vocab.token_type(id).is_some_and(TokenType::is_special))
        .collect();
    ids.sort_by_key(|&id| (std::cmp::Reverse(vocab.text(id).map_or(0, str::len)), id));
    ids
}

/// Splits `text` at the special tokens it contains.
///
/// Tokens are taken one at a time, longest first, and each splits every text fragment still
/// left at all its (non-overlapping, leftmost-first) occurrences, as llama.cpp does. Control
/// and unknown tokens take part only when `parse_special`; user-defined tokens always do.
pub(crate) fn partition<'a>(
    text: &'a str,
    specials: &[u32],
    vocab: &Vocab,
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(text));
    let mut next = Vec::new();
    for &id in specials {
        let (Some(tok), Some(ty)) = (vocab.text(id), vocab.token_type(id)) else {
            continue;
        };
        if !parse_special && ty != TokenType::UserDefined {
            continue;
        }
        if tok.is_empty() || !text.contains(tok) {
            continue;
        }
        next.clear();
        for frag in &frags {
            let Fragment::Text(s) = *frag else {
                next.push(*frag);
                continue;
            };
            let mut rest = 0;
            for (at, _) in s.match_indices(tok) {
                if at > rest {
                    next.push(Fragment::Text(&s[rest..at]));
                }
                next.push(Fragment::Token(id));
                rest = at + tok.len();
            }
            if rest < s.len() {
                next.push(Fragment::Text(&s[rest..]));
            }
        }
        std::mem::swap(&mut frags, &mut next);
    }
    frags
}

/// Token texts that end a turn (llama.cpp's end-of-turn detection, for models whose metadata
/// names no `eot_token_id`).
const EOT_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Token texts that end generation whatever the metadata says.
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle tokens that llama.cpp also treats as end of generation (a model that
/// emits them has left the document it was writing).
const FIM_EOG_NAMES: &[&str] = &[
    // pad
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    // repo
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    // file separator
    "<|file_sep|>",
];

/// End-of-generation facts derived from the vocabulary and the metadata ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndOfGeneration {
    /// `eot_token_id`, or the end-of-turn token found by name (in `EOT_NAMES` order).
    pub(crate) eot: Option<u32>,
    /// `eom_token_id`, or `<|eom_id|>`.
    pub(crate) eom: Option<u32>,
    /// Every id that ends generation, sorted.
    pub(crate) ids: Vec<u32>,
}

/// Works out the end-of-generation set and marks the tokens involved as control tokens (a
/// converted model sometimes types them as normal, which would let plain text produce them).
pub(crate) fn end_of_generation(
    vocab: &mut Vocab,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
) -> EndOfGeneration {
    let find = |vocab: &Vocab, names: &[&str]| -> Vec<u32> {
        let mut ids: Vec<u32> = names.iter().filter_map(|n| vocab.id(n)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let eot = eot.or_else(|| EOT_NAMES.iter().find_map(|n| vocab.id(n)));
    let eom = eom.or_else(|| vocab.id("<|eom_id|>"));

    let mut ids = find(vocab, EOG_NAMES);
    ids.extend(find(vocab, FIM_EOG_NAMES));
    ids.extend(eos);
    ids.extend(eot);
    ids.extend(eom);
    ids.retain(|&id| (id as usize) < vocab.len());
    ids.sort_unstable();
    ids.dedup();

    // gpt-oss / solar-open use `<|end|>` between messages, not at the end of the reply.
    let has = |ids: &[u32], n: &str| vocab.id(n).is_some_and(|id| ids.contains(&id));
    let harmony = (has(&ids, "<|return|>") && has(&ids, "<|call|>"))
        || (has(&ids, "<|calls|>") && has(&ids, "<|flush|>"));
    if harmony {
        if let Some(end) = vocab.id("<|end|>") {
            ids.retain(|&id| id != end);
        }
    }
    // Gemma 4 uses `</s>` inside tool responses.
    if has(&ids, "<|tool_response>") {
        if let Some(s) = vocab.id("</s>") {
            ids.retain(|&id| id != s);
        }
    }

    for &id in ids.iter().chain(eot.iter()).chain(eom.iter()) {
        if let Some(t) = vocab.types.get_mut(id as usize) {
            if !matches!(t, TokenType::Control | TokenType::UserDefined) {
                *t = TokenType::Control;
            }
        }
    }
    EndOfGeneration { eot, eom, ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(texts: &[&str], types: &[i32]) -> Vocab {
        Vocab::new(texts.iter().map(|s| s.to_string()).collect(), types, &[])
    }

    #[test]
    fn partition_longest_first() {
        let v = vocab(&["a", "<|x|>", "<|x|>y", "<u>"], &[1, 3, 3, 4]);
        let sp = special_tokens_by_length(&v);
        assert_eq!(sp, [2, 1, 3]);
        let f = partition("a<|x|>y b<|x|><u>", &sp, &v, true);
        assert_eq!(
            f,
            [
                Fragment::Text("a"),
                Fragment::Token(2),
                Fragment::Text(" b"),
                Fragment::Token(1),
                Fragment::Token(3)
            ]
        );
        // Without special parsing only the user-defined token is matched.
        let f = partition("a<|x|>y<u>", &sp, &v, false);
        assert_eq!(f, [Fragment::Text("a<|x|>y"), Fragment::Token(3)]);
        assert!(partition("", &sp, &v, true).is_empty());
    }

    #[test]
    fn eog_by_name_and_id() {
        let mut v = vocab(
            &[
                "<|endoftext|>",
                "<|im_start|>",
                "<|im_end|>",
                "<reponame>",
                "hi",
            ],
            &[1, 3, 3, 3, 1],
        );
        let e = end_of_generation(&mut v, Some(2), None, None);
        assert_eq!(e.ids, [0, 2, 3]);
        assert_eq!(e.eot, Some(2));
        // The end-of-text token was typed normal; it is now a control token.
        assert_eq!(v.token_type(0), Some(TokenType::Control));
    }
}
