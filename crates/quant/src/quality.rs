//! Quantization error statistics: RMSE, maximum absolute error, SNR in dB and the
//! importance-weighted relative error, accumulated row by row and mergeable across threads.

/// Running error statistics of a dequantized tensor against its original values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    /// Elements compared.
    pub n: u64,
    /// `Σ (x − x̂)²`.
    pub sum_sq_err: f64,
    /// `Σ x²`.
    pub sum_sq_ref: f64,
    /// `max |x − x̂|`.
    pub max_abs: f64,
    /// `Σ wⱼ (x − x̂)²` with the per-column importance `w` (1 when none is given).
    pub weighted_sq_err: f64,
    /// `Σ wⱼ x²`.
    pub weighted_sq_ref: f64,
}

impl ErrorStats {
    /// Adds one row: `orig` and `deq` of equal length, `importance` (if any) one value per
    /// column. Extra elements of the longer slice are ignored.
    pub fn add_row(&mut self, orig: &[f32], deq: &[f32], importance: Option<&[f32]>) {
        for (j, (&x, &y)) in orig.iter().zip(deq).enumerate() {
            let e = x as f64 - y as f64;
            let w = importance.and_then(|w| w.get(j)).map_or(1.0, |&w| w as f64);
            self.n += 1;
            self.sum_sq_err += e * e;
            self.sum_sq_ref += x as f64 * x as f64;
            self.max_abs = self.max_abs.max(e.abs());
            self.weighted_sq_err += w * e * e;
            self.weighted_sq_ref += w * x as f64 * x as f64;
        }
    }

    /// Combines statistics of disjoint parts.
    pub fn merge(&mut self, o: &ErrorStats) {
        self.n += o.n;
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq_ref += o.sum_sq_ref;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.weighted_sq_err += o.weighted_sq_err;
        self.weighted_sq_ref += o.weighted_sq_ref;
    }

    /// Root mean squared error (0 for no elements).
    pub fn rmse(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        (self.sum_sq_err / self.n as f64).sqrt()
    }

    /// Signal-to-noise ratio `10·log10(Σx² / Σ(x−x̂)²)`; infinite for an exact copy.
    pub fn snr_db(&self) -> f64 {
        if self.sum_sq_err == 0.0 {
            return f64::INFINITY;
        }
        10.0 * (self.sum_sq_ref / self.sum_sq_err).log10()
    }

    /// `Σ w (x − x̂)² / Σ w x²`: the error `--max-tensor-error` bounds (0 for an exact copy or
    /// an all-zero tensor).
    pub fn weighted_rel_error(&self) -> f64 {
        if self.weighted_sq_err == 0.0 {
            return 0.0;
        }
        if self.weighted_sq_ref == 0.0 {
            return f64::INFINITY;
        }
        self.weighted_sq_err / self.weighted_sq_ref
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_rows() {
        let mut s = ErrorStats::default();
        s.add_row(&[1.0, -2.0, 3.0], &[1.0, -2.5, 3.0], Some(&[1.0, 4.0, 0.0]));
        assert_eq!(s.n, 3);
        assert!((s.rmse() - (0.25f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.max_abs, 0.5);
        assert!((s.snr_db() - 10.0 * (14.0f64 / 0.25).log10()).abs() < 1e-9);
        assert!((s.weighted_rel_error() - 1.0 / (1.0 + 16.0)).abs() < 1e-12);
        let mut t = ErrorStats::default();
        t.add_row(&[2.0], &[2.0], None);
        t.merge(&s);
        assert_eq!(t.n, 4);
        assert!(ErrorStats::default().snr_db().is_infinite());
    }
}
