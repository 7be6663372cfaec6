//! [`StreamDecoder`]: turns tokens into text one at a time, holding back the bytes of a UTF-8
//! character that is split across tokens until it is complete.

use crate::Tokenizer;

/// Incremental detokenizer for streaming output.
///
/// Each [`StreamDecoder::push`] returns only complete UTF-8; the concatenation of everything
/// pushed plus [`StreamDecoder::finish`] equals [`Tokenizer::decode`] of the same ids (invalid
/// bytes become U+FFFD exactly as there).
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds token `id` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.push_bytes(tok.token_bytes(id))
    }

    /// Adds raw bytes and returns the text that is now complete (possibly empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.pending[start..start + valid]) {
                        out.push_str(s);
                    }
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            start += valid;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Number of bytes held back (0..=3): the start of a character not yet complete.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Flushes what is held back (an incomplete character becomes U+FFFD) and resets.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters() {
        let mut d = StreamDecoder::new();
        let bytes = "a😀é".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&d.push_bytes(std::slice::from_ref(b)));
        }
        assert_eq!(out, "a😀é");
        assert_eq!(d.pending_len(), 0);
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_and_truncated() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push_bytes(&[b'x', 0xFF, b'y']), "x\u{FFFD}y");
        assert_eq!(d.push_bytes(&[0xF0, 0x9F]), "");
        assert_eq!(d.pending_len(), 2);
        // A new start byte makes the held bytes invalid.
        assert_eq!(d.push_bytes(b"z"), "\u{FFFD}z");
        assert_eq!(d.push_bytes(&[0xE2, 0x82]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.pending_len(), 0);
    }
}
