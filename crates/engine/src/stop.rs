//! Stop strings over streamed text: text is released only once it can no longer be the start
//! of a stop string, so a client never sees part of a stop string that later completes.

/// Holds back the tail of the generated text that could still begin a stop string.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds generated text; returns the text now safe to release and whether a stop string
    /// was found (the released text then ends just before it, and nothing more follows).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Longest suffix of `pending` that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in self.pending.char_indices() {
                let tail = &self.pending[i..];
                if tail.len() < s.len() && s.starts_with(tail) {
                    hold = hold.max(tail.len());
                    break;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The held-back text, released when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stop_split_across_pushes_is_never_released() {
        let mut m = StopMatcher::new(&["END".to_string(), "\n\n".to_string()]);
        assert_eq!(m.push("abc E"), ("abc ".to_string(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("D tail"), (String::new(), true));
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("EN"), (String::new(), false));
        assert_eq!(m.push("x"), ("ENx".to_string(), false));
        assert_eq!(m.push("E"), (String::new(), false));
        assert_eq!(m.finish(), "E");
    }

    proptest! {
        /// Released text plus the remainder is the input cut at the first stop string.
        #[test]
        fn released_text_is_the_input_up_to_the_first_stop(
            pieces in proptest::collection::vec("[ab\n]{0,4}", 0..12),
            stop in "[ab\n]{1,3}",
        ) {
            let mut m = StopMatcher::new(std::slice::from_ref(&stop));
            let whole: String = pieces.concat();
            let mut out = String::new();
            let mut stopped = false;
            for p in &pieces {
                let (t, hit) = m.push(p);
                out.push_str(&t);
                if hit {
                    stopped = true;
                    break;
                }
            }
            if !stopped {
                out.push_str(&m.finish());
            }
            match whole.find(&stop) {
                Some(at) => {
                    prop_assert!(stopped);
                    prop_assert_eq!(&out, &whole[..at]);
                }
                None => {
                    prop_assert!(!stopped);
                    prop_assert_eq!(&out, &whole);
                }
            }
        }
    }
}
