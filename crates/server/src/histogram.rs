//! Latency histograms in Prometheus' cumulative-bucket form (lock-free counters), and the
//! per-request timer that feeds them: time to first token, inter-token latency, end to end.

use kiln_engine::Event;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds of the buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        for (b, &bound) in self.buckets.iter().zip(&BOUNDS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// Appends the histogram `name` in Prometheus text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(&BOUNDS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The server's latency histograms.
#[derive(Debug, Default)]
pub struct Latencies {
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub end_to_end: Histogram,
    pub queue: Histogram,
}

impl Latencies {
    pub fn render(&self, out: &mut String) {
        self.ttft.render(
            "kiln_time_to_first_token_seconds",
            "Request arrival to its first generated token.",
            out,
        );
        self.inter_token.render(
            "kiln_inter_token_latency_seconds",
            "Gap between consecutive tokens of a sequence.",
            out,
        );
        self.end_to_end.render(
            "kiln_request_duration_seconds",
            "Request arrival to its last sequence finishing.",
            out,
        );
        self.queue.render(
            "kiln_queue_time_seconds",
            "Time a request waited for admission to the running batch.",
            out,
        );
    }
}

/// Times one request from its arrival.
pub struct Timer {
    start: Instant,
    first: bool,
    last: Vec<Option<Instant>>,
    /// Choices per engine request (`n`).
    group: usize,
}

impl Timer {
    /// A timer for `choices` choices in groups of `group` per engine request.
    pub fn new(choices: usize, group: usize) -> Timer {
        Timer {
            start: Instant::now(),
            first: true,
            last: vec![None; choices],
            group: group.max(1),
        }
    }

    pub fn on_event(&mut self, e: &Event, h: &Latencies) {
        if let Event::Finished {
            index,
            queue_time: Some(q),
            ..
        } = e
        {
            // Every sequence of an engine request reports the same wait: count its first.
            if index % self.group == 0 {
                h.queue.observe(q.as_secs_f64());
            }
        }
        if let Event::Token { index, .. } = e {
            let now = Instant::now();
            if self.first {
                self.first = false;
                h.ttft.observe((now - self.start).as_secs_f64());
            }
            if let Some(slot) = self.last.get_mut(*index) {
                if let Some(prev) = slot.replace(now) {
                    h.inter_token.observe((now - prev).as_secs_f64());
                }
            }
        }
    }

    pub fn done(&self, h: &Latencies) {
        h.end_to_end.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_kept() {
        let h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(500.0);
        let mut s = String::new();
        h.render("x", "test", &mut s);
        assert!(s.contains("x_bucket{le=\"0.005\"} 1\n"));
        assert!(s.contains("x_bucket{le=\"0.25\"} 2\n"));
        assert!(s.contains("x_bucket{le=\"120\"} 2\n"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(s.contains("x_count 3\n"));
    }
}
