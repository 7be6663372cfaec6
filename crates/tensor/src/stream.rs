//! How a streaming kernel prefetches ahead of its reads: one distance and one cache level,
//! shared by the packed matmul kernels and by the bandwidth probe that is their yardstick.

/// How far ahead of its reads a stream prefetches. At 4 KiB ahead into L1 (the kernels' first
/// setting) single-token decode kept too few misses in flight; 16 KiB ahead into L2 made tg128
/// 1.05–1.18× faster on the project's VM (medians of alternating rounds per type and thread
/// count; numbers in the commit message and docs/PERFORMANCE.md).
pub const STREAM_PREFETCH_BYTES: usize = 16 * 1024;

/// Asks for the cache line holding `addr` to be brought into L2, for a stream that reaches it
/// [`STREAM_PREFETCH_BYTES`] from now. A hint: it never faults, whatever `addr` is.
#[inline(always)]
pub fn prefetch_stream_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing architecturally and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
