//! The penalty window: the last `repeat_last_n` accepted tokens, their counts, and how the
//! llama.cpp repetition, presence and frequency penalties change logits.

use std::collections::VecDeque;

/// The most recent accepted tokens (at most `window` of them) with per-token counts.
///
/// Counts live in a small vector sorted by token id rather than a hash map: it holds at most
/// `window` entries, iterates in a fixed order and needs no hasher state.
#[derive(Clone, Debug)]
pub(crate) struct PenaltyWindow {
    window: usize,
    tokens: VecDeque<u32>,
    counts: Vec<(u32, u32)>,
}

/// Upper bound on the capacity reserved up front; a larger window grows on demand.
const PREALLOCATE_MAX: usize = 4096;

impl PenaltyWindow {
    /// An empty window remembering at most `window` tokens (`0` remembers nothing).
    pub(crate) fn new(window: usize) -> Self {
        let cap = window.min(PREALLOCATE_MAX);
        PenaltyWindow {
            window,
            tokens: VecDeque::with_capacity(cap),
            counts: Vec::with_capacity(cap),
        }
    }

    /// Appends `token`, evicting the oldest one once the window is full.
    pub(crate) fn push(&mut self, token: u32) {
        if self.window == 0 {
            return;
        }
        if self.tokens.len() == self.window {
            if let Some(old) = self.tokens.pop_front() {
                self.decrement(old);
            }
        }
        self.tokens.push_back(token);
        match self.counts.binary_search_by_key(&token, |&(t, _)| t) {
            Ok(i) => self.counts[i].1 += 1,
            Err(i) => self.counts.insert(i, (token, 1)),
        }
    }

    fn decrement(&mut self, token: u32) {
        if let Ok(i) = self.counts.binary_search_by_key(&token, |&(t, _)| t) {
            if self.counts[i].1 <= 1 {
                self.counts.remove(i);
            } else {
                self.counts[i].1 -= 1;
            }
        }
    }

    /// Forgets every token (capacity is kept).
    pub(crate) fn clear(&mut self) {
        self.tokens.clear();
        self.counts.clear();
    }

    /// The remembered tokens, oldest first.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.tokens.iter().copied()
    }

    /// `(token, occurrences)` for every distinct token in the window, by ascending token id.
    pub(crate) fn counts(&self) -> &[(u32, u32)] {
        &self.counts
    }
}

/// The penalized value of one logit that occurs `count > 0` times in the window.
///
/// llama.cpp semantics: a positive logit is divided by `repeat`, a non-positive one multiplied
/// (both move it down for `repeat > 1`); then `count * frequency + presence` is subtracted.
#[inline]
pub(crate) fn penalize(logit: f32, count: u32, repeat: f32, presence: f32, frequency: f32) -> f32 {
    let scaled = if logit <= 0.0 {
        logit * repeat
    } else {
        logit / repeat
    };
    scaled - (count as f32 * frequency + presence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_evicts_oldest_and_keeps_counts() {
        let mut w = PenaltyWindow::new(3);
        for t in [5, 7, 5, 9] {
            w.push(t);
        }
        assert_eq!(w.tokens().collect::<Vec<_>>(), vec![7, 5, 9]);
        assert_eq!(w.counts(), &[(5, 1), (7, 1), (9, 1)]);
        w.push(9);
        assert_eq!(w.counts(), &[(5, 1), (9, 2)]);
        w.clear();
        assert!(w.counts().is_empty());
        assert_eq!(w.tokens().count(), 0);
    }

    #[test]
    fn zero_window_remembers_nothing() {
        let mut w = PenaltyWindow::new(0);
        w.push(1);
        assert!(w.counts().is_empty());
    }

    #[test]
    fn counts_match_a_naive_recount() {
        let mut w = PenaltyWindow::new(10);
        let mut all = Vec::new();
        for i in 0..200u32 {
            let t = (i * 7 + i / 3) % 13;
            w.push(t);
            all.push(t);
            let tail = &all[all.len().saturating_sub(10)..];
            let mut naive: Vec<(u32, u32)> = Vec::new();
            for &x in tail {
                match naive.iter_mut().find(|(t, _)| *t == x) {
                    Some(e) => e.1 += 1,
                    None => naive.push((x, 1)),
                }
            }
            naive.sort_unstable();
            assert_eq!(w.counts(), naive.as_slice());
        }
    }

    #[test]
    fn penalize_follows_llama_cpp_rules() {
        assert_eq!(penalize(2.0, 1, 2.0, 0.0, 0.0), 1.0);
        assert_eq!(penalize(-2.0, 1, 2.0, 0.0, 0.0), -4.0);
        assert_eq!(penalize(0.0, 1, 2.0, 0.0, 0.0), 0.0);
        assert_eq!(penalize(1.0, 3, 1.0, 0.5, 0.25), 1.0 - 0.75 - 0.5);
        assert_eq!(
            penalize(f32::NEG_INFINITY, 2, 1.3, 0.1, 0.1),
            f32::NEG_INFINITY
        );
    }
}
