//! A persistent worker pool for per-operation parallelism: workers spin briefly, then park.
//!
//! (Implementation pending; the API is the contract the kernels use.)

/// Fixed set of worker threads; `run` executes one closure on all of them.
pub struct ThreadPool {
    n_threads: usize,
}

impl ThreadPool {
    /// A pool with `n_threads` participants (the calling thread counts as one). `0` means 1.
    pub fn new(n_threads: usize) -> ThreadPool {
        ThreadPool {
            n_threads: n_threads.max(1),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `f(thread_index, n_threads)` once for every index in `0..n_threads` concurrently
    /// (index 0 on the caller) and returns when all calls have returned.
    pub fn run<F: Fn(usize, usize) + Sync>(&self, f: F) {
        for i in 0..self.n_threads {
            f(i, self.n_threads);
        }
    }
}
