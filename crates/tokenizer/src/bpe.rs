//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): each pre-tokenized word starts as one
//! symbol per byte and the adjacent pair with the lowest merge rank is merged until no ranked
//! pair is left (ties: leftmost first).
//!
//! Merges are looked up by the pair of token ids in a hash map, and each word is merged with a
//! binary heap of candidate pairs over a linked list of symbols, so a word of n bytes costs
//! O(n log n) rather than the O(n²) of rescanning for the best pair.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::bytelevel;
use crate::pretokenize::PreTokenizer;
use crate::vocab::Vocab;

/// A symbol with no token (a byte the vocabulary lacks): never merged, never emitted.
const MISSING: u32 = u32::MAX;
/// A symbol merged into its left neighbour.
const DEAD: u32 = u32::MAX - 1;
/// No neighbour.
const NONE: usize = usize::MAX;

/// Hasher for packed `(left, right)` id pairs: one multiply-xorshift, far cheaper than SipHash
/// for keys that are not attacker-chosen in any way that matters (the vocabulary is fixed).
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let x = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

type PairMap = HashMap<u64, Merge, BuildHasherDefault<PairHasher>>;

#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    merged: u32,
}

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// A byte-level BPE model over a vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    merges: PairMap,
    /// The token of each single byte (its byte-level character), or `MISSING`.
    byte_tokens: [u32; 256],
    byte_chars: [char; 256],
    pub(crate) pre: PreTokenizer,
}

#[derive(Clone, Copy, Debug)]
struct Sym {
    id: u32,
    prev: usize,
    next: usize,
}

/// Reusable buffers for encoding many words.
#[derive(Default)]
pub(crate) struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>>,
    word: String,
}

impl Bpe {
    /// Builds the model. Each merge is `"left right"` (split at the first space after the
    /// first byte) and ranks by its position; a merge whose left, right or merged text is not
    /// in the vocabulary can never apply and is dropped, and a repeated pair keeps its first
    /// rank.
    pub(crate) fn new(vocab: &Vocab, merges: &[String], pre: PreTokenizer) -> Bpe {
        let byte_chars = bytelevel::byte_to_char_table();
        let mut byte_tokens = [MISSING; 256];
        let mut buf = [0u8; 4];
        for (b, &c) in byte_chars.iter().enumerate() {
            if let Some(id) = vocab.id(c.encode_utf8(&mut buf)) {
                byte_tokens[b] = id;
            }
        }
        let mut map = PairMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let Ok(rank) = u32::try_from(rank) else { break };
            let Some(sp) = m.as_bytes().iter().skip(1).position(|&b| b == b' ') else {
                continue;
            };
            let (l, r) = (&m[..sp + 1], &m[sp + 2..]);
            joined.clear();
            joined.push_str(l);
            joined.push_str(r);
            if let (Some(li), Some(ri), Some(mi)) = (vocab.id(l), vocab.id(r), vocab.id(&joined)) {
                map.entry(pair_key(li, ri))
                    .or_insert(Merge { rank, merged: mi });
            }
        }
        Bpe {
            merges: map,
            byte_tokens,
            byte_chars,
            pre,
        }
    }

    /// Encodes a stretch of plain text (no special tokens in it), appending ids to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut scratch = Scratch::default();
        for word in self.pre.split(text) {
            self.encode_word(vocab, word, &mut scratch, out);
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &str, s: &mut Scratch, out: &mut Vec<u32>) {
        let bytes = word.as_bytes();
        if self.pre.ignore_merges && bytes.len() > 1 {
            s.word.clear();
            s.word
                .extend(bytes.iter().map(|&b| self.byte_chars[usize::from(b)]));
            if let Some(id) = vocab.id(&s.word) {
                out.push(id);
                return;
            }
        }
        if let [b] = bytes {
            let id = self.byte_tokens[usize::from(*b)];
            if id != MISSING {
                out.push(id);
            }
            return;
        }
        s.syms.clear();
        s.heap.clear();
        let n = bytes.len();
        s.syms.extend(bytes.iter().enumerate().map(|(i, &b)| Sym {
            id: self.byte_tokens[usize::from(b)],
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
        }));
        for i in 1..n {
            self.push_pair(s, i - 1);
        }
        while let Some(Reverse((_, left, left_id, right_id))) = s.heap.pop() {
            let l = s.syms[left];
            if l.id != left_id || l.next == NONE || s.syms[l.next].id != right_id {
                continue; // stale: one side has changed since the pair was queued
            }
            let Some(m) = self.merges.get(&pair_key(left_id, right_id)) else {
                continue;
            };
            let right = l.next;
            let after = s.syms[right].next;
            s.syms[left].id = m.merged;
            s.syms[left].next = after;
            s.syms[right].id = DEAD;
            if after != NONE {
                s.syms[after].prev = left;
            }
            if l.prev != NONE {
                self.push_pair(s, l.prev);
            }
            self.push_pair(s, left);
        }
        let mut i = 0;
        while i != NONE {
            let id = s.syms[i].id;
            if id != MISSING && id != DEAD {
                out.push(id);
            }
            i = s.syms[i].next;
        }
    }

    /// Queues the pair starting at symbol `left` if the merge table ranks it.
    #[inline]
    fn push_pair(&self, s: &mut Scratch, left: usize) {
        let l = s.syms[left];
        if l.next == NONE {
            return;
        }
        let r = s.syms[l.next].id;
        if let Some(m) = self.merges.get(&pair_key(l.id, r)) {
            s.heap.push(Reverse((m.rank, left, l.id, r)));
        }
    }

    /// Number of usable merges.
    #[cfg(test)]
    fn n_merges(&self) -> usize {
        self.merges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of all 256 byte characters plus `extra`, with `merges`.
    fn model(extra: &[&str], merges: &[&str], pre: &str) -> (Vocab, Bpe) {
        let table = bytelevel::byte_to_char_table();
        let mut texts: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        texts.extend(extra.iter().map(|s| s.to_string()));
        let vocab = Vocab::new(texts, &[], &[]);
        let merges: Vec<String> = merges.iter().map(|s| s.to_string()).collect();
        let pre = PreTokenizer::from_name(Some(pre)).unwrap();
        let bpe = Bpe::new(&vocab, &merges, pre);
        (vocab, bpe)
    }

    fn texts(vocab: &Vocab, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| vocab.text(i).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn merges_by_rank_leftmost_first() {
        let (v, bpe) = model(&["aa", "aaa", "ab"], &["a a", "aa a", "a b"], "gpt2");
        let mut out = Vec::new();
        bpe.encode(&v, "aaa", &mut out);
        assert_eq!(texts(&v, &out), ["aaa"]);
        out.clear();
        // "a a" (rank 0) beats "a b" (rank 2); after it no "aa b" merge exists.
        bpe.encode(&v, "aab", &mut out);
        assert_eq!(texts(&v, &out), ["aa", "b"]);
        out.clear();
        // Every rank-0 merge applies before any rank-1 merge.
        bpe.encode(&v, "aaaa", &mut out);
        assert_eq!(texts(&v, &out), ["aa", "aa"]);
        assert_eq!(bpe.n_merges(), 3);
    }

    #[test]
    fn byte_level_space_and_multibyte() {
        let (v, bpe) = model(&["Ġh", "Ġhi", "Ã©"], &["Ġ h", "Ġh i", "Ã ©"], "gpt2");
        let mut out = Vec::new();
        bpe.encode(&v, "hi hi é", &mut out);
        assert_eq!(texts(&v, &out), ["h", "i", "Ġhi", "Ġ", "Ã©"]);
    }

    #[test]
    fn bad_merges_are_ignored() {
        let (v, bpe) = model(&["ab"], &["", "nospace", "a b", "x zz"], "gpt2");
        assert_eq!(bpe.n_merges(), 1);
        let mut out = Vec::new();
        bpe.encode(&v, "ab", &mut out);
        assert_eq!(texts(&v, &out), ["ab"]);
    }

    #[test]
    fn ignore_merges_takes_whole_words() {
        // "abc" is a token but no merge path reaches it.
        let (v, bpe) = model(&["abc"], &[], "llama3");
        let mut out = Vec::new();
        bpe.encode(&v, "abc", &mut out);
        assert_eq!(texts(&v, &out), ["abc"]);
    }
}
