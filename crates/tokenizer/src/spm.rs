//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`): spaces become `▁`, the text
//! starts as one symbol per character, and the adjacent pair whose joined text is a token with
//! the highest score is merged until no such pair is left (ties: leftmost first). A character
//! that never became a token is written as byte-fallback tokens `<0xAB>` (or, for a vocabulary
//! without them, as the unknown token).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::vocab::Vocab;

/// The character SentencePiece writes for a space.
pub(crate) const SPACE: char = '\u{2581}';

const NONE: usize = usize::MAX;

/// A SentencePiece BPE model.
#[derive(Debug, Clone)]
pub(crate) struct Spm {
    /// Whether a space is put before text that starts the input or follows a special token.
    pub(crate) add_space_prefix: bool,
    /// The token for each byte: `<0xAB>`, else the one-byte text, else none.
    byte_tokens: [Option<u32>; 256],
    unk: Option<u32>,
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge; the max-heap pops the highest score, then the leftmost pair.
#[derive(Clone, Copy, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| Reverse(self.left).cmp(&Reverse(other.left)))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Spm {
    pub(crate) fn new(vocab: &Vocab, add_space_prefix: bool, unk: Option<u32>) -> Spm {
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
                let byte = [u8::try_from(b).unwrap_or(0)];
                std::str::from_utf8(&byte).ok().and_then(|s| vocab.id(s))
            });
        }
        Spm {
            add_space_prefix,
            byte_tokens,
            unk,
        }
    }

    /// Encodes one stretch of plain text, appending ids to `out`. `prefix_space`: put a
    /// space before it (the caller decides from `add_space_prefix` and what came before).
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, prefix_space: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if prefix_space {
            escaped.push(SPACE);
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { SPACE } else { c });
        }
        if escaped.is_empty() {
            return;
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(escaped.len());
        for (i, c) in escaped.char_indices() {
            let idx = syms.len();
            syms.push(Sym {
                start: i,
                len: c.len_utf8(),
                prev: if idx == 0 { NONE } else { idx - 1 },
                next: idx + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = NONE;
        }
        let mut heap = BinaryHeap::new();
        for i in 1..syms.len() {
            try_add(vocab, &escaped, &syms, i - 1, i, &mut heap);
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size || l.next != bg.right {
                continue; // stale
            }
            syms[bg.left].len += r.len;
            syms[bg.left].next = r.next;
            syms[bg.right].len = 0;
            if r.next != NONE {
                syms[r.next].prev = bg.left;
            }
            if l.prev != NONE {
                try_add(vocab, &escaped, &syms, l.prev, bg.left, &mut heap);
            }
            if r.next != NONE {
                try_add(vocab, &escaped, &syms, bg.left, r.next, &mut heap);
            }
        }
        let mut i = 0;
        while i != NONE {
            let s = syms[i];
            let piece = &escaped[s.start..s.start + s.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    // Byte fallback; a character whose bytes lack tokens is one unknown token.
                    let mut buf = [0u8; 4];
                    for c in piece.chars() {
                        let bytes = c.encode_utf8(&mut buf).as_bytes();
                        let ids: Option<Vec<u32>> = bytes
                            .iter()
                            .map(|&b| self.byte_tokens[usize::from(b)])
                            .collect();
                        match ids {
                            Some(ids) => out.extend(ids),
                            None => out.extend(self.unk),
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}

fn try_add(
    vocab: &Vocab,
    text: &str,
    syms: &[Sym],
    left: usize,
    right: usize,
    heap: &mut BinaryHeap<Bigram>,
) {
    let (l, r) = (syms[left], syms[right]);
    let size = l.len + r.len;
    let Some(piece) = text.get(l.start..l.start + size) else {
        return;
    };
    if let Some(id) = vocab.id(piece) {
        heap.push(Bigram {
            score: vocab.score(id),
            left,
            right,
            size,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Llama-style vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then pieces.
    fn vocab(pieces: &[(&str, f32)]) -> Vocab {
        let mut texts = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..256 {
            texts.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (p, s) in pieces {
            texts.push(p.to_string());
            types.push(1);
            scores.push(*s);
        }
        Vocab::new(texts, &types, &scores)
    }

    fn enc(v: &Vocab, text: &str, prefix: bool) -> Vec<String> {
        let spm = Spm::new(v, true, Some(0));
        let mut out = Vec::new();
        spm.encode(v, text, prefix, &mut out);
        out.iter().map(|&i| v.text(i).unwrap().to_owned()).collect()
    }

    #[test]
    fn merges_by_score() {
        let v = vocab(&[
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("▁h", -3.0),
            ("el", -3.5),
            ("ll", -1.5),
            ("lo", -4.0),
            ("▁he", -5.0),
            ("llo", -2.5),
            ("▁hello", -6.0),
            ("he", -0.5),
        ]);
        // "he" (-0.5) and "ll" (-1.5) go first, then "llo", then "▁he"... "▁hello".
        assert_eq!(enc(&v, "hello", true), ["▁hello"]);
        assert_eq!(enc(&v, "hello", false), ["he", "llo"]);
        assert_eq!(enc(&v, "", false), Vec::<String>::new());
    }

    #[test]
    fn byte_fallback() {
        let v = vocab(&[("▁", -1.0), ("a", -1.0)]);
        assert_eq!(enc(&v, "a é", false), ["a", "▁", "<0xC3>", "<0xA9>"]);
    }

    #[test]
    fn unk_when_no_byte_tokens() {
        let v = Vocab::new(vec!["<unk>".into(), "a".into()], &[2, 1], &[0.0, -1.0]);
        assert_eq!(enc(&v, "ab", false), ["a", "<unk>"]);
    }
}
