//! Measures this machine's memory read bandwidth (a streaming sum over a buffer much larger
//! than the caches), the denominator of decode bandwidth utilisation.

use crate::pool::{split_range, ThreadPool};
use crate::stream::{prefetch_stream_line, STREAM_PREFETCH_BYTES};
use std::time::Instant;

/// Sums `data` with independent accumulators so loads, not adds, limit the speed.
#[inline(always)]
fn sum_chunk(data: &[u64]) -> u64 {
    let mut acc = [0u64; 16];
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &b| a.wrapping_add(b));
    acc.iter().fold(tail, |a, &b| a.wrapping_add(b))
}

/// The two software prefetches a pass of the AVX-512 probe can use; the probe keeps the faster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefetch {
    /// The packed matmul kernels' ([`prefetch_stream_line`]).
    Stream,
    /// 4 KiB ahead into L1, their previous setting: the faster of the two for a bare sum on
    /// one thread of this project's VM, while the kernels gain from the L2 stream.
    NearL1,
}

/// How far ahead [`Prefetch::NearL1`] reads.
const NEAR_L1_BYTES: usize = 4096;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_chunk_avx512(data: &[u64], prefetch: Prefetch) -> u64 {
    use std::arch::x86_64::*;
    let mut chunks = data.chunks_exact(32);
    let mut acc = [_mm512_setzero_si512(); 4];
    for c in &mut chunks {
        // On this class of VM the hardware prefetchers alone leave much of the bandwidth
        // unused, and the probe must measure what a well-written stream can read, or
        // utilisation exceeds 100%.
        let at = c.as_ptr() as usize;
        for line in 0..4 {
            match prefetch {
                Prefetch::Stream => prefetch_stream_line(at + STREAM_PREFETCH_BYTES + 64 * line),
                Prefetch::NearL1 => {
                    _mm_prefetch::<_MM_HINT_T0>((at + NEAR_L1_BYTES + 64 * line) as *const i8)
                }
            }
        }
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 32 u64s, so 8 at offset 8k are in bounds; unaligned load.
            let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(8 * k).cast()) };
            *a = _mm512_add_epi64(*a, v);
        }
    }
    let total = _mm512_add_epi64(
        _mm512_add_epi64(acc[0], acc[1]),
        _mm512_add_epi64(acc[2], acc[3]),
    );
    let tail = sum_chunk(chunks.remainder());
    (_mm512_reduce_add_epi64(total) as u64).wrapping_add(tail)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_chunk_avx2(data: &[u64]) -> u64 {
    sum_chunk(data)
}

fn sum_fast(data: &[u64], prefetch: Prefetch) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let f = crate::cpu::features();
        if f.avx512f {
            // SAFETY: the CPU supports AVX-512F (checked at run time above).
            return unsafe { sum_chunk_avx512(data, prefetch) };
        }
        if f.avx2 {
            // SAFETY: the CPU supports AVX2 (checked at run time above).
            return unsafe { sum_chunk_avx2(data) };
        }
    }
    sum_chunk(data)
}

/// A buffer much larger than the caches, written once, for measuring read bandwidth as often
/// as needed (next to every timed run on a machine whose bandwidth drifts).
pub struct ReadProbe {
    data: Vec<u64>,
}

impl ReadProbe {
    /// A probe over `bytes` bytes (at least 8 KiB); every page is written here, so it is
    /// resident from now on and the first pass is not a page-fault test.
    pub fn new(bytes: usize) -> ReadProbe {
        let n = (bytes / 8).max(1024);
        // Distinct non-zero values so no page is shared copy-on-write zero memory.
        ReadProbe {
            data: (0..n as u64).collect(),
        }
    }

    /// Passes to measure a working-set probe with (the best counts): where the working set
    /// fits in a large L3, the first pass only warms it, as a warm-up run warms it for the
    /// workload.
    pub const WORKING_SET_PASSES: usize = 3;

    /// The largest working set [`ReadProbe::for_working_set`] reads: past 1 GiB a working set
    /// streams from DRAM on every CPU kiln targets (the largest L3s hold about 1 GiB), and a
    /// capped probe that still reads from cache only reads faster, which lowers a utilisation
    /// taken against it rather than inflating it — and a large model's benchmark does not
    /// double its memory.
    pub const MAX_WORKING_SET_BYTES: usize = 1 << 30;

    /// A probe as large as what one pass of a streaming workload reads (one decoded token's
    /// weights and KV, say), at most [`ReadProbe::MAX_WORKING_SET_BYTES`]: its figure is the
    /// limit for that working set on this machine, from memory where the caches are small
    /// and partly from L3 where a large L3 keeps part of it. (On a VM with 480 MiB of L3 a
    /// fixed 256 MiB buffer read 1.4× slower than a 128 MiB one, and Q8_0 decode of a 138 MiB
    /// model "used" 125–140% of it.)
    pub fn for_working_set(bytes: usize) -> ReadProbe {
        ReadProbe::new(bytes.min(Self::MAX_WORKING_SET_BYTES))
    }

    /// Bytes the probe holds (and keeps resident).
    pub fn bytes(&self) -> usize {
        self.data.len() * 8
    }

    /// Read bandwidth in bytes per second with all of `pool`'s threads streaming disjoint
    /// parts of the buffer: the best of `passes` passes with each [`Prefetch`] (AVX-512).
    pub fn measure(&self, pool: &ThreadPool, passes: usize) -> f64 {
        let data = &self.data;
        let mut best = f64::MAX;
        let sink = std::sync::atomic::AtomicU64::new(0);
        // Only the AVX-512 sum prefetches; the others would sweep the same way twice.
        let styles: &[Prefetch] = if crate::cpu::features().avx512f {
            &[Prefetch::Stream, Prefetch::NearL1]
        } else {
            &[Prefetch::Stream]
        };
        for _ in 0..passes.max(1) {
            for &prefetch in styles {
                let start = Instant::now();
                pool.run(|i, nt| {
                    let r = split_range(data.len(), nt, i, 64);
                    let s = sum_fast(&data[r], prefetch);
                    sink.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
                });
                best = best.min(start.elapsed().as_secs_f64());
            }
        }
        std::hint::black_box(sink.into_inner());
        self.bytes() as f64 / best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_agree_and_bandwidth_is_positive() {
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(sum_chunk(&v), 999 * 1000 / 2);
        for prefetch in [Prefetch::Stream, Prefetch::NearL1] {
            assert_eq!(sum_fast(&v, prefetch), 999 * 1000 / 2);
        }
        let probe = ReadProbe::new(1 << 20);
        assert_eq!(probe.bytes(), 1 << 20);
        for threads in [1, 2] {
            let bw = probe.measure(&ThreadPool::new(threads), 2);
            assert!(bw.is_finite() && bw > 0.0);
        }
    }
}
