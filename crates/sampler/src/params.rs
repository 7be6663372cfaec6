//! `SamplingParams`: the knobs of the sampling chain, their defaults and their validation.

use crate::SamplerError;

/// Settings for one [`Sampler`](crate::Sampler); each stage has a value that disables it.
///
/// The chain runs in this order: penalties, top-k, temperature-scaled softmax, top-p, min-p,
/// then a seeded draw. With `temperature == 0` the draw is replaced by argmax (greedy).
///
/// Temperature comes before top-p and min-p (as in Hugging Face transformers and vLLM), so
/// both act on the distribution that is actually sampled. llama.cpp's default chain applies
/// temperature last instead (top-p and min-p then see the temperature-1 distribution); the
/// two orders give identical results at temperature 1, and top-k is unaffected either way.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature, `>= 0`. `0` means greedy: argmax of the penalized logits, ties go
    /// to the lowest token id.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits (ties broken towards the lower id). `0` disables.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest most-probable prefix whose mass is `>= top_p`.
    /// Must lie in `(0, 1]`; `1.0` disables.
    pub top_p: f32,
    /// Keep tokens whose probability is `>= min_p * p_max`. Must lie in `[0, 1]`; `0.0` disables.
    pub min_p: f32,
    /// llama.cpp repetition penalty, `> 0`: for every distinct token among the last
    /// `repeat_last_n` accepted ones, a positive logit is divided by it and a non-positive one
    /// multiplied by it. `1.0` disables.
    pub repeat_penalty: f32,
    /// How many of the most recently accepted tokens all three penalties look at. `0` disables
    /// every penalty; `usize::MAX` means the whole history (memory then grows with it).
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every token present in the penalty window (OpenAI
    /// semantics, counted over the same `repeat_last_n` window as llama.cpp). `0.0` disables;
    /// negative values encourage repetition.
    pub presence_penalty: f32,
    /// Subtracted `count` times from the logit of every token in the penalty window, where
    /// `count` is its number of occurrences there. `0.0` disables.
    pub frequency_penalty: f32,
    /// Seed of the sampler's random generator; the same seed and the same logits give the same
    /// tokens on every run and platform.
    pub seed: u64,
}

/// The seed used by [`SamplingParams::default`] and [`SamplingParams::greedy`].
pub const DEFAULT_SEED: u64 = 0x5EED;

impl Default for SamplingParams {
    /// llama.cpp's defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalties
    /// (window 64), seed [`DEFAULT_SEED`].
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: DEFAULT_SEED,
        }
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding: temperature 0, every truncation and penalty disabled.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Checks every field's range; the first offending field is reported.
    ///
    /// `temperature` finite and `>= 0`; `top_p` in `(0, 1]`; `min_p` in `[0, 1]`;
    /// `repeat_penalty` finite and `> 0`; `presence_penalty` and `frequency_penalty` finite.
    /// `top_k`, `repeat_last_n` and `seed` accept every value.
    pub fn validate(&self) -> Result<(), SamplerError> {
        check(
            "temperature",
            self.temperature,
            "a finite value >= 0",
            |v| v >= 0.0,
        )?;
        check("top_p", self.top_p, "a finite value in (0, 1]", |v| {
            v > 0.0 && v <= 1.0
        })?;
        check("min_p", self.min_p, "a finite value in [0, 1]", |v| {
            (0.0..=1.0).contains(&v)
        })?;
        check(
            "repeat_penalty",
            self.repeat_penalty,
            "a finite value > 0",
            |v| v > 0.0,
        )?;
        check(
            "presence_penalty",
            self.presence_penalty,
            "a finite value",
            |_| true,
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            "a finite value",
            |_| true,
        )?;
        Ok(())
    }

    /// True when any of the three penalties would change a logit.
    pub(crate) fn penalties_active(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

fn check(
    name: &'static str,
    value: f32,
    expected: &'static str,
    ok: impl Fn(f32) -> bool,
) -> Result<(), SamplerError> {
    if value.is_finite() && ok(value) {
        Ok(())
    } else {
        Err(SamplerError::InvalidParameter {
            name,
            value,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(p: &SamplingParams) -> &'static str {
        match p.validate() {
            Err(SamplerError::InvalidParameter { name, .. }) => name,
            Ok(()) => "accepted",
        }
    }

    #[test]
    fn defaults_and_greedy_are_valid() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().temperature, 0.0);
        assert_eq!(SamplingParams::default().seed, DEFAULT_SEED);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let base = SamplingParams::default();
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams {
                    temperature: -0.1,
                    ..base.clone()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..base.clone()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::INFINITY,
                    ..base.clone()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..base.clone()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..base.clone()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: f32::NAN,
                    ..base.clone()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    min_p: -0.01,
                    ..base.clone()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    min_p: 1.01,
                    ..base.clone()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repeat_penalty: 0.0,
                    ..base.clone()
                },
                "repeat_penalty",
            ),
            (
                SamplingParams {
                    repeat_penalty: -1.0,
                    ..base.clone()
                },
                "repeat_penalty",
            ),
            (
                SamplingParams {
                    presence_penalty: f32::NAN,
                    ..base.clone()
                },
                "presence_penalty",
            ),
            (
                SamplingParams {
                    frequency_penalty: f32::NEG_INFINITY,
                    ..base.clone()
                },
                "frequency_penalty",
            ),
        ];
        for (params, field) in cases {
            assert_eq!(rejected(&params), field, "{params:?}");
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        let base = SamplingParams::default();
        let ok = [
            SamplingParams {
                temperature: 0.0,
                ..base.clone()
            },
            SamplingParams {
                top_p: 1.0,
                ..base.clone()
            },
            SamplingParams {
                top_p: f32::MIN_POSITIVE,
                ..base.clone()
            },
            SamplingParams {
                min_p: 0.0,
                ..base.clone()
            },
            SamplingParams {
                min_p: 1.0,
                ..base.clone()
            },
            SamplingParams {
                presence_penalty: -2.0,
                frequency_penalty: 2.0,
                ..base.clone()
            },
            SamplingParams {
                top_k: usize::MAX,
                repeat_last_n: usize::MAX,
                ..base
            },
        ];
        for params in ok {
            assert_eq!(params.validate(), Ok(()), "{params:?}");
        }
    }

    #[test]
    fn error_message_names_field_and_range() {
        let p = SamplingParams {
            top_p: 2.0,
            ..SamplingParams::default()
        };
        let msg = p
            .validate()
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(msg.contains("top_p") && msg.contains("(0, 1]"), "{msg}");
    }
}
