//! GPT-2's byte-level alphabet: every byte 0..=255 stands for one printable Unicode character,
//! so that byte-level BPE vocabularies can be stored as text.
//!
//! Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68
//! bytes (controls, space, DEL, NBSP, soft hyphen) take U+0100, U+0101... in byte order, so a
//! space is `Ġ` (U+0120) and a newline `Ċ` (U+010A).

fn stands_for_itself(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character each byte is written as.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[usize::from(b)] = if stands_for_itself(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    table
}

/// The byte a character of the byte-level alphabet stands for, or `None` for a character
/// outside it.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let u = u32::from(c);
    if u < 256 {
        let b = u as u8;
        return stands_for_itself(b).then_some(b);
    }
    // The n-th byte (in order) that does not stand for itself is written U+0100 + n.
    let n = usize::try_from(u - 256).ok()?;
    SHIFTED.get(n).copied()
}

/// The bytes that do not stand for themselves, in order (68 of them).
const SHIFTED: [u8; 68] = shifted_bytes();

const fn shifted_bytes() -> [u8; 68] {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        let x = b as u8;
        let itself = (x >= b'!' && x <= b'~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        if !itself && n < 68 {
            out[n] = x;
            n += 1;
        }
        b += 1;
    }
    out
}

/// Decodes a byte-level token text to the raw bytes it stands for. Characters outside the
/// alphabet (which a well-formed vocabulary never has) are kept as their own UTF-8.
pub(crate) fn decode_token(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_characters() {
        let t = byte_to_char_table();
        assert_eq!(t[usize::from(b' ')], 'Ġ');
        assert_eq!(t[usize::from(b'\n')], 'Ċ');
        assert_eq!(t[usize::from(b'\t')], 'ĉ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[usize::from(b'a')], 'a');
        assert_eq!(t[0xAD], 'Ń');
        assert_eq!(t[0xFF], 'ÿ');
    }

    #[test]
    fn bijection() {
        let t = byte_to_char_table();
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = t[usize::from(b)];
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
        assert_eq!(decode_token("ĠHello"), b" Hello");
        assert_eq!(decode_token("âĢ¦"), vec![0xE2, 0x80, 0xA6]);
    }
}
