//! Pre-tokenizers for byte-level BPE: split text into the words BPE merges within, as the
//! regex chain that `tokenizer.ggml.pre` names would.
//!
//! A pre-tokenizer is a chain of passes. Each pass splits every piece the previous pass left
//! into smaller pieces: what a pattern matches and the gaps between matches both become
//! pieces, and a pass never looks across the edge of its piece (so in `smollm`, once digits
//! are split off, `\s+(?!\S)` sees the end of the piece where a digit followed).
//!
//! The GPT-2 and Llama-3 patterns (which need the `(?!\S)` lookahead that the `regex` crate
//! lacks) are hand-written scanners over the text's characters; the few lookahead-free passes
//! of the `default` and `falcon` chains use `regex`.

use crate::unicode::{self, LETTER, NUMBER, WHITESPACE};
use crate::TokenizerError;

/// Set on every position inside the piece being scanned, so "not a letter, number or space"
/// can be told apart from "past the end of the piece".
const IN: u8 = 8;

/// One pass of a pre-tokenizer chain.
#[derive(Debug, Clone)]
enum Pass {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,k}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` with `k = max_digits`
    /// (3 for Llama 3, 1 for Qwen 2).
    Llama3 { max_digits: usize },
    /// `\p{N}`: every number character alone.
    EachDigit,
    /// A lookahead-free pattern.
    Regex(regex::Regex),
}

/// A pre-tokenizer: the pass chain plus the BPE options that go with its name.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizer {
    name: String,
    passes: Vec<Pass>,
    /// Llama-3 style: a word that is itself a token is emitted whole, without merging.
    pub(crate) ignore_merges: bool,
    /// Whether BOS is added when `add_bos_token` is absent from the metadata.
    pub(crate) default_add_bos: bool,
}

fn regex_pass(pattern: &str) -> Result<Pass, TokenizerError> {
    regex::Regex::new(pattern)
        .map(Pass::Regex)
        .map_err(|e| TokenizerError::UnsupportedPreTokenizer(format!("bad pattern {pattern}: {e}")))
}

impl PreTokenizer {
    /// The pre-tokenizer `tokenizer.ggml.pre` names (`None`: llama.cpp's `default` chain).
    pub(crate) fn from_name(name: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
        const PUNCT: &str = r"[\p{P}\$\+<=>\^~\|]+";
        const THREE_DIGITS: &str = "[0-9][0-9][0-9]";
        let key = name.unwrap_or("default");
        let mut ignore_merges = false;
        let mut default_add_bos = false;
        let passes = match key {
            "default" => vec![
                regex_pass(PUNCT)?,
                Pass::Gpt2,
                regex_pass(r"\p{N}+")?,
                regex_pass(THREE_DIGITS)?,
            ],
            "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion"
            | "granite-docling" | "exaone4" | "jina-es" | "jina-de" | "jina-v2-es"
            | "jina-v2-de" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "gigachat"
            | "a.x-4.0" | "mellum" | "modern-bert" => vec![Pass::Gpt2],
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => vec![Pass::EachDigit, Pass::Gpt2],
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => {
                ignore_merges = true;
                default_add_bos = true;
                vec![Pass::Llama3 { max_digits: 3 }]
            }
            "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" => vec![Pass::Llama3 { max_digits: 3 }],
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez"
            | "hunyuan" | "solar-open" | "grok-2" => vec![Pass::Llama3 { max_digits: 1 }],
            "falcon" => vec![regex_pass(PUNCT)?, Pass::Gpt2, regex_pass(THREE_DIGITS)?],
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_owned())),
        };
        Ok(PreTokenizer {
            name: key.to_owned(),
            passes,
            ignore_merges,
            default_add_bos,
        })
    }

    /// The name this pre-tokenizer was built from.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Splits `text` into words, in order; the words concatenate back to `text`.
    pub(crate) fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let cps = Chars::new(text);
        let mut pieces = vec![(0, cps.len())];
        let mut next = Vec::with_capacity(text.len() / 3 + 1);
        for pass in &self.passes {
            next.clear();
            for &(a, b) in &pieces {
                if a < b {
                    pass.apply(&cps, text, a, b, &mut next);
                }
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces
            .iter()
            .filter(|&&(a, b)| a < b)
            .map(|&(a, b)| &text[cps.offs[a]..cps.offs[b]])
            .collect()
    }
}

/// The text as characters with their class bits and byte offsets (`offs` has one extra entry,
/// the text length).
struct Chars {
    chars: Vec<char>,
    flags: Vec<u8>,
    offs: Vec<usize>,
}

impl Chars {
    fn new(text: &str) -> Chars {
        let n = text.len();
        let mut chars = Vec::with_capacity(n);
        let mut flags = Vec::with_capacity(n);
        let mut offs = Vec::with_capacity(n + 1);
        for (i, c) in text.char_indices() {
            chars.push(c);
            flags.push(unicode::flags(c) | IN);
            offs.push(i);
        }
        offs.push(n);
        Chars { chars, flags, offs }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }
}

/// A scanner over one piece `[start, end)` that emits consecutive sub-pieces.
struct Scan<'a> {
    cps: &'a Chars,
    end: usize,
    prev: usize,
    out: &'a mut Vec<(usize, usize)>,
}

impl Scan<'_> {
    /// Class bits at `pos`, or 0 past the end of the piece.
    #[inline]
    fn fl(&self, pos: usize) -> u8 {
        if pos < self.end {
            self.cps.flags[pos]
        } else {
            0
        }
    }

    /// The character at `pos`, or `None` past the end of the piece.
    #[inline]
    fn ch(&self, pos: usize) -> Option<char> {
        if pos < self.end {
            Some(self.cps.chars[pos])
        } else {
            None
        }
    }

    /// Ends the current sub-piece at `end`.
    #[inline]
    fn emit(&mut self, end: usize) {
        if end > self.prev {
            self.out.push((self.prev, end));
        }
        self.prev = end;
    }

    /// Length of an English contraction (`'s`, `'re`...) starting at `pos`, or 0.
    fn contraction(&self, pos: usize, fold_case: bool) -> usize {
        if self.ch(pos) != Some('\'') {
            return 0;
        }
        let lower = |c: Option<char>| c.map(|c| if fold_case { c.to_ascii_lowercase() } else { c });
        let c1 = lower(self.ch(pos + 1));
        if matches!(c1, Some('s' | 't' | 'm' | 'd')) {
            return 2;
        }
        let c2 = lower(self.ch(pos + 2));
        match (c1, c2) {
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
            _ => 0,
        }
    }

    /// Number of whitespace characters from `pos` on.
    fn whitespace_run(&self, pos: usize) -> usize {
        let mut n = 0;
        while self.fl(pos + n) & WHITESPACE != 0 {
            n += 1;
        }
        n
    }

    fn gpt2(&mut self, start: usize) {
        let mut pos = start;
        while pos < self.end {
            let c = self.cps.chars[pos];
            let f = self.cps.flags[pos];
            let k = self.contraction(pos, false);
            if k > 0 {
                pos += k;
                self.emit(pos);
                continue;
            }
            // ` ?X+` for X in letters, numbers, other: the optional space joins the run.
            let f2 = if c == ' ' { self.fl(pos + 1) } else { f };
            let class = if f2 & LETTER != 0 {
                Some(LETTER)
            } else if f2 & NUMBER != 0 {
                Some(NUMBER)
            } else if f2 & IN != 0 && f2 & (LETTER | NUMBER | WHITESPACE) == 0 {
                Some(0)
            } else {
                None
            };
            if let Some(class) = class {
                if c == ' ' {
                    pos += 1;
                }
                while self.same_class(pos, class) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            let n_ws = self.whitespace_run(pos);
            if n_ws > 1 && pos + n_ws < self.end {
                // `\s+(?!\S)`: leave the last space to join the word after it.
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            self.emit(pos);
        }
    }

    /// Whether `pos` is inside the piece and of `class` (`LETTER`, `NUMBER`, or 0 for
    /// "neither letter, number nor whitespace").
    #[inline]
    fn same_class(&self, pos: usize, class: u8) -> bool {
        let f = self.fl(pos);
        if class == 0 {
            f & IN != 0 && f & (LETTER | NUMBER | WHITESPACE) == 0
        } else {
            f & class != 0
        }
    }

    fn llama3(&mut self, start: usize, max_digits: usize) {
        let is_nl = |c: Option<char>| matches!(c, Some('\r' | '\n'));
        let mut pos = start;
        while pos < self.end {
            let c = self.cps.chars[pos];
            let f = self.cps.flags[pos];
            let k = self.contraction(pos, true);
            if k > 0 {
                pos += k;
                self.emit(pos);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(c == '\r' || c == '\n' || f & NUMBER != 0)
                && (f & LETTER != 0 || self.fl(pos + 1) & LETTER != 0)
            {
                pos += 1;
                while self.fl(pos) & LETTER != 0 {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            // `\p{N}{1,k}`
            if f & NUMBER != 0 {
                let mut run_start = pos;
                while self.fl(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - run_start >= max_digits {
                        self.emit(pos);
                        run_start = pos;
                    }
                }
                self.emit(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let f2 = if c == ' ' { self.fl(pos + 1) } else { f };
            if f2 & (LETTER | NUMBER | WHITESPACE) == 0 {
                if c == ' ' {
                    pos += 1;
                }
                while self.same_class(pos, 0) {
                    pos += 1;
                }
                while is_nl(self.ch(pos)) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            // `\s*[\r\n]+`, then `\s+(?!\S)`, then `\s+`.
            let n_ws = self.whitespace_run(pos);
            let last_nl = (0..n_ws).rev().find(|&i| is_nl(self.ch(pos + i)));
            if let Some(i) = last_nl {
                pos += i + 1;
            } else if n_ws > 1 && pos + n_ws < self.end {
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            self.emit(pos);
        }
    }
}

impl Pass {
    fn apply(&self, cps: &Chars, text: &str, a: usize, b: usize, out: &mut Vec<(usize, usize)>) {
        match self {
            Pass::Gpt2 | Pass::Llama3 { .. } => {
                let mut scan = Scan {
                    cps,
                    end: b,
                    prev: a,
                    out,
                };
                match *self {
                    Pass::Llama3 { max_digits } => scan.llama3(a, max_digits.max(1)),
                    _ => scan.gpt2(a),
                }
            }
            Pass::EachDigit => {
                let mut prev = a;
                for i in a..b {
                    if cps.flags[i] & NUMBER != 0 {
                        if prev < i {
                            out.push((prev, i));
                        }
                        out.push((i, i + 1));
                        prev = i + 1;
                    }
                }
                if prev < b {
                    out.push((prev, b));
                }
            }
            Pass::Regex(re) => {
                let base = cps.offs[a];
                let sub = &text[base..cps.offs[b]];
                let to_char = |byte: usize| cps.offs.partition_point(|&o| o < base + byte);
                let mut prev = a;
                for m in re.find_iter(sub) {
                    let (s, e) = (to_char(m.start()), to_char(m.end()));
                    if s == e {
                        continue;
                    }
                    if prev < s {
                        out.push((prev, s));
                    }
                    out.push((s, e));
                    prev = e;
                }
                if prev < b {
                    out.push((prev, b));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str, text: &str) -> Vec<String> {
        let pre = PreTokenizer::from_name(Some(name)).unwrap();
        let words = pre.split(text);
        assert_eq!(words.concat(), text);
        words.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn gpt2_basic() {
        assert_eq!(
            split("gpt2", "Hello world's  end!!  "),
            ["Hello", " world", "'s", " ", " end", "!!", "  "]
        );
        assert_eq!(split("gpt2", "a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(split("gpt2", "x   y"), ["x", "  ", " y"]);
        assert_eq!(split("gpt2", "x \ty"), ["x", " ", "\t", "y"]);
        assert_eq!(split("gpt2", "it'S"), ["it", "'", "S"]);
        assert_eq!(split("gpt2", "abc123 456"), ["abc", "123", " 456"]);
        assert_eq!(split("gpt2", " "), [" "]);
        assert!(split("gpt2", "").is_empty());
    }

    #[test]
    fn smollm_splits_digits() {
        assert_eq!(
            split("smollm", "about 311 million"),
            ["about", " ", "3", "1", "1", " million"]
        );
        // The digit split ends the piece, so the trailing spaces are not shortened.
        assert_eq!(split("smollm", "a  1"), ["a", "  ", "1"]);
        assert_eq!(split("smollm", "x²"), ["x", "²"]);
    }

    #[test]
    fn unicode_words() {
        assert_eq!(split("gpt2", "héllo wörld"), ["héllo", " wörld"]);
        assert_eq!(split("gpt2", "日本語 テキスト"), ["日本語", " テキスト"]);
        assert_eq!(split("gpt2", "hi 😀😀 ok"), ["hi", " 😀😀", " ok"]);
        // A combining mark is not a letter: it splits the word, as in llama.cpp.
        assert_eq!(split("gpt2", "e\u{301}t"), ["e", "\u{301}", "t"]);
        assert_eq!(
            split("gpt2", "a\u{3000}\u{3000}b"),
            ["a", "\u{3000}", "\u{3000}", "b"]
        );
    }

    #[test]
    fn llama3_and_qwen2() {
        assert_eq!(
            split("llama3", "Hello, WORLD'S 1234567\n\n  x"),
            ["Hello", ",", " WORLD", "'S", " ", "123", "456", "7", "\n\n", " ", " x"]
        );
        assert_eq!(split("qwen2", "ab12"), ["ab", "1", "2"]);
        assert_eq!(split("llama3", "...\n\nx"), ["...\n\n", "x"]);
        assert_eq!(split("llama3", "  \n x"), ["  \n", " x"]);
    }

    #[test]
    fn default_chain() {
        assert_eq!(
            split("default", "hi, 12345!"),
            ["hi", ",", " ", "123", "45", "!"]
        );
    }

    /// Splits of random strings by Hugging Face `tokenizers` (Oniguruma regexes with real
    /// lookahead): `tests/data/gen_splits.py`.
    #[test]
    fn matches_hf_regex_splits() {
        let data = include_str!("../tests/data/pretokenize_hf_reference.json");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let mut n = 0;
        for name in ["gpt2", "smollm", "llama3", "qwen2"] {
            for case in v[name].as_array().unwrap() {
                let text = case[0].as_str().unwrap();
                let want: Vec<&str> = case[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap())
                    .collect();
                assert_eq!(split(name, text), want, "{name}: {text:?}");
                n += 1;
            }
        }
        assert_eq!(n, 800);
    }

    #[test]
    fn unknown_name_is_an_error() {
        assert!(PreTokenizer::from_name(Some("no-such-pre")).is_err());
        assert_eq!(PreTokenizer::from_name(None).unwrap().name(), "default");
    }
}
