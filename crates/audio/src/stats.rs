//! Latency samples recorded without allocating (a buffer sized up front) and their summary
//! (p50/p99/max), computed off the real-time path.

/// Up to `capacity` durations in nanoseconds; later samples are counted but not kept.
#[derive(Debug, Clone)]
pub struct Samples {
    ns: Vec<u64>,
    seen: u64,
}

impl Samples {
    /// A buffer for `capacity` samples whose pages are already written once: a fresh
    /// allocation is mapped lazily, and the first `record` on each page would otherwise take a
    /// page fault (a trip into the kernel) on the audio thread.
    pub fn with_capacity(capacity: usize) -> Samples {
        let mut ns = Vec::with_capacity(capacity);
        ns.resize(capacity, u64::MAX);
        ns.clear();
        Samples { ns, seen: 0 }
    }

    /// Records one duration; never allocates (drops it once the buffer is full).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.seen += 1;
        if self.ns.len() < self.ns.capacity() {
            self.ns.push(ns);
        }
    }

    /// Samples recorded (including those not kept).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn clear(&mut self) {
        self.ns.clear();
        self.seen = 0;
    }

    /// Percentiles of the kept samples (allocates; not for the real-time path).
    pub fn summary(&self) -> Latency {
        let mut v = self.ns.clone();
        v.sort_unstable();
        let pick = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest-rank percentile.
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        Latency {
            count: v.len() as u64,
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            max_us: v.last().map_or(0.0, |&m| m as f64 / 1000.0),
            mean_us: if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0
            },
        }
    }
}

/// Summary of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s = Samples::with_capacity(100);
        for i in (1..=100).rev() {
            s.record(i * 1000);
        }
        let l = s.summary();
        assert_eq!(
            (l.p50_us, l.p99_us, l.max_us, l.count),
            (50.0, 99.0, 100.0, 100)
        );
        let mut full = Samples::with_capacity(2);
        for i in 0..5 {
            full.record(i);
        }
        assert_eq!((full.summary().count, full.seen()), (2, 5));
        assert_eq!(Samples::with_capacity(0).summary(), Latency::default());
    }
}
