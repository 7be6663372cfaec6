//! Quality gates for a quantized model: perplexity plus the KL divergence of its next-token
//! distribution from a reference model's (mean, median, p99), the share of positions where both
//! pick the same top token, and the ratio of the two perplexities. The reference is either
//! another loaded model run in lockstep or a logits file saved earlier.

use crate::logits_file::{LogitsHeader, LogitsReader, LogitsWriter};
use crate::perplexity::PerplexityOptions;
use crate::{Engine, EngineError, PerplexityReport};
use kiln_models::LogitsMode;
use std::path::Path;

/// Where the reference distribution comes from.
pub enum KlReference<'a> {
    /// Run this model on the same chunks.
    Model(&'a Engine),
    /// Read the rows saved by `--save-logits`.
    Logits(LogitsReader),
}

/// KL divergence `KL(reference ‖ model)` statistics over every scored position.
#[derive(Debug, Clone, PartialEq)]
pub struct KlReport {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    /// Share of positions where the two argmax tokens agree.
    pub same_top: f64,
    /// Perplexity of the reference on the same positions.
    pub reference_ppl: f64,
    /// This model's perplexity over the reference's.
    pub ppl_ratio: f64,
    pub n: usize,
}

/// Per-position values collected while scoring.
#[derive(Default)]
struct KlSums {
    kl: Vec<f64>,
    same: usize,
    ref_nll: f64,
}

impl KlSums {
    /// Adds one position: `reference` log-probs, this model's log-probs, the target token.
    fn add(&mut self, reference: &[f32], model: &[f32], target: u32) {
        let mut kl = 0.0f64;
        for (&r, &m) in reference.iter().zip(model) {
            let p = f64::from(r).exp();
            if p > 0.0 {
                kl += p * (f64::from(r) - f64::from(m));
            }
        }
        self.kl.push(kl.max(0.0));
        if argmax(reference) == argmax(model) {
            self.same += 1;
        }
        let r = reference
            .get(target as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        self.ref_nll -= f64::from(r);
    }

    fn report(mut self, ppl: f64) -> KlReport {
        let n = self.kl.len();
        let mean = self.kl.iter().sum::<f64>() / n.max(1) as f64;
        self.kl.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((n - 1) as f64 * q).round() as usize;
            self.kl[i.min(n - 1)]
        };
        let reference_ppl = (self.ref_nll / n.max(1) as f64).exp();
        KlReport {
            mean,
            median: at(0.5),
            p99: at(0.99),
            max: self.kl.last().copied().unwrap_or(0.0),
            same_top: self.same as f64 / n.max(1) as f64,
            reference_ppl,
            ppl_ratio: ppl / reference_ppl,
            n,
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

impl Engine {
    /// Perplexity like [`Engine::perplexity`], optionally saving this model's log-probs to the
    /// file `save` (written atomically when the run completes) and comparing with `reference`.
    pub fn perplexity_gated(
        &self,
        tokens: &[u32],
        opts: &PerplexityOptions,
        mut reference: Option<KlReference<'_>>,
        save: Option<&Path>,
        progress: impl FnMut(usize, usize, f64),
    ) -> Result<(PerplexityReport, Option<KlReport>), EngineError> {
        let n_vocab = self.model().config().n_vocab;
        let first = opts.n_ctx / 2;
        let mut ref_session = None;
        match &reference {
            Some(KlReference::Model(base)) => {
                if base.model().config().n_vocab != n_vocab {
                    return Err(EngineError::Invalid(format!(
                        "the reference model has {} tokens, this one {n_vocab}",
                        base.model().config().n_vocab
                    )));
                }
                ref_session = Some(base.new_session(opts.n_ctx, opts.kv)?);
            }
            Some(KlReference::Logits(r)) => {
                let h = r.header();
                if h.n_vocab as usize != n_vocab || h.n_ctx as usize != opts.n_ctx {
                    return Err(EngineError::Invalid(format!(
                        "the logits file has vocabulary {} and context {}, this run {n_vocab} and {}",
                        h.n_vocab, h.n_ctx, opts.n_ctx
                    )));
                }
            }
            None => {}
        }
        let mut writer: Option<LogitsWriter> = None;
        let mut sums = KlSums::default();
        let (mut ref_rows, mut ref_logits, mut mine) = (Vec::new(), Vec::new(), Vec::new());
        let rows = opts.n_ctx - 1 - first;
        let report =
            self.perplexity_with(tokens, opts, progress, |chunk, n_chunks, toks, logits| {
                mine.resize(rows * n_vocab, 0.0);
                for (dst, src) in mine
                    .chunks_exact_mut(n_vocab)
                    .zip(logits.chunks_exact(n_vocab))
                {
                    kiln_sampler::log_softmax_into(src, dst);
                }
                if let Some(path) = save {
                    if chunk == 0 {
                        let header = LogitsHeader {
                            n_vocab: n_vocab as u32,
                            n_ctx: opts.n_ctx as u32,
                            n_chunks: n_chunks as u32,
                            first: first as u32,
                        };
                        writer = Some(LogitsWriter::create(path, header)?);
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write_chunk(toks, &mine)?;
                    }
                }
                match reference.as_mut() {
                    None => return Ok(()),
                    Some(KlReference::Logits(r)) => {
                    if chunk == 0 && (r.header().n_chunks as usize) < n_chunks {
                        return Err(EngineError::Invalid(format!(
                            "the logits file holds {} chunks, this run scores {n_chunks} (use --chunks)",
                            r.header().n_chunks
                        )));
                    }
                    r.read_chunk(toks, &mut ref_rows)?
                }
                    Some(KlReference::Model(base)) => {
                        let s = ref_session
                            .as_mut()
                            .ok_or_else(|| EngineError::Invalid("no reference session".into()))?;
                        s.clear();
                        base.model().forward(
                            base.pool(),
                            s.state_mut(),
                            toks,
                            LogitsMode::From(first),
                            &mut ref_logits,
                        )?;
                        ref_rows.resize(rows * n_vocab, 0.0);
                        for (dst, src) in ref_rows
                            .chunks_exact_mut(n_vocab)
                            .zip(ref_logits.chunks_exact(n_vocab))
                        {
                            kiln_sampler::log_softmax_into(src, dst);
                        }
                    }
                }
                for j in 0..rows {
                    let r = j * n_vocab..(j + 1) * n_vocab;
                    sums.add(&ref_rows[r.clone()], &mine[r], toks[first + j + 1]);
                }
                Ok(())
            })?;
        if let Some(w) = writer {
            w.finish()?;
        }
        let kl = reference.map(|_| sums.report(report.ppl));
        Ok((report, kl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_have_zero_kl() {
        let lp = [(0.7f32).ln(), (0.2f32).ln(), (0.1f32).ln()];
        let mut s = KlSums::default();
        s.add(&lp, &lp, 0);
        let r = s.report(1.0 / 0.7);
        assert!(r.mean.abs() < 1e-9);
        assert_eq!(r.same_top, 1.0);
        assert!((r.reference_ppl - 1.0 / 0.7).abs() < 1e-5);
    }

    #[test]
    fn kl_of_known_pair() {
        let p = [0.5f32, 0.5];
        let q = [0.9f32, 0.1];
        let lp: Vec<f32> = p.iter().map(|v| v.ln()).collect();
        let lq: Vec<f32> = q.iter().map(|v| v.ln()).collect();
        let mut s = KlSums::default();
        s.add(&lp, &lq, 1);
        let expected = 0.5 * (0.5f64 / 0.9).ln() + 0.5 * (0.5f64 / 0.1).ln();
        let r = s.report(2.0);
        assert!((r.mean - expected).abs() < 1e-6, "{} vs {expected}", r.mean);
        assert_eq!(r.same_top, 1.0, "ties pick the first index in both");
        assert!((r.ppl_ratio - 1.0).abs() < 1e-6);
    }
}
