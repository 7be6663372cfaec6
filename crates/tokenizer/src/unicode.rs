//! Unicode character classes the hand-written pre-tokenizers test: letter (`\p{L}`), number
//! (`\p{N}`) and whitespace (`\s`, the White_Space property), with an ASCII fast path.

use std::sync::OnceLock;

/// General category L (Lu, Ll, Lt, Lm, Lo).
pub(crate) const LETTER: u8 = 1;
/// General category N (Nd, Nl, No).
pub(crate) const NUMBER: u8 = 2;
/// The White_Space property (what `\s` matches in Rust and Python regexes).
pub(crate) const WHITESPACE: u8 = 4;

const fn ascii_table() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            NUMBER
        } else if matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
            WHITESPACE
        } else {
            0
        };
        i += 1;
    }
    t
}

static ASCII: [u8; 128] = ascii_table();

/// Sorted, non-overlapping inclusive ranges of `\p{L}`, taken from the tables `regex` itself
/// uses so that the hand-written and regex-based passes agree on what a letter is.
fn letter_ranges() -> &'static [(u32, u32)] {
    static RANGES: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    RANGES.get_or_init(|| unicode_class(r"\p{L}"))
}

fn unicode_class(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return Vec::new();
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        _ => Vec::new(),
    }
}

fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    let i = ranges.partition_point(|&(_, end)| end < c);
    ranges.get(i).is_some_and(|&(start, _)| start <= c)
}

/// The class bits of `c`: any of [`LETTER`], [`NUMBER`], [`WHITESPACE`], or 0 for every other
/// character (punctuation, symbols, marks, controls, unassigned).
#[inline]
pub(crate) fn flags(c: char) -> u8 {
    let u = u32::from(c);
    if u < 128 {
        return ASCII[u as usize];
    }
    if c.is_whitespace() {
        WHITESPACE
    } else if c.is_numeric() {
        // `char::is_numeric` is exactly general category N.
        NUMBER
    } else if in_ranges(letter_ranges(), u) {
        LETTER
    } else {
        0
    }
}

#[cfg(test)]
fn is_letter(c: char) -> bool {
    flags(c) & LETTER != 0
}

#[cfg(test)]
fn is_number(c: char) -> bool {
    flags(c) & NUMBER != 0
}

#[cfg(test)]
fn is_whitespace(c: char) -> bool {
    flags(c) & WHITESPACE != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes() {
        assert!(is_letter('a') && is_letter('Z'));
        assert!(is_number('0') && is_number('9'));
        for c in [' ', '\t', '\n', '\r', '\x0b', '\x0c'] {
            assert!(is_whitespace(c), "{c:?}");
        }
        for c in ['!', '_', '\'', '\0', '~'] {
            assert_eq!(flags(c), 0, "{c:?}");
        }
    }

    #[test]
    fn unicode_classes() {
        // Letters from several scripts, including Lm and Lo.
        for c in ['é', 'ß', 'Ж', 'あ', '中', 'ʰ', 'ﬁ'] {
            assert!(is_letter(c), "{c:?}");
        }
        // Combining marks (Mn) are not letters, though `char::is_alphabetic` says they are.
        assert!(!is_letter('\u{0301}'));
        assert!(!is_letter('\u{093F}'));
        // Numbers: Nd, Nl, No.
        for c in ['٣', 'Ⅳ', '½', '²', '①'] {
            assert!(is_number(c), "{c:?}");
        }
        for c in ['\u{a0}', '\u{3000}', '\u{2028}', '\u{85}', '\u{2009}'] {
            assert!(is_whitespace(c), "{c:?}");
        }
        for c in ['😀', '€', '—', '\u{200b}'] {
            assert_eq!(flags(c), 0, "{c:?}");
        }
    }
}
