//! A persistent worker pool for per-operation parallelism: workers spin briefly, then park.
//!
//! One `run` call hands the same closure to every participant (the caller is participant 0)
//! and returns when all have finished. No thread is spawned per operation; between closely
//! spaced operations (the matmuls of one decode step) workers stay hot by spinning, and after
//! a short idle period they sleep on a condition variable so an idle process costs no CPU.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How many spin iterations a worker waits for the next job before parking.
const SPIN_ITERATIONS: u32 = 1 << 16;

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Bumped once per `run`; workers compare it with the last generation they served.
    generation: AtomicUsize,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// Workers blocked (or about to block) on `wake`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// The current job, valid from a generation bump until `pending` returns to zero.
    job: UnsafeCell<Option<*const Job>>,
    lock: Mutex<()>,
    wake: Condvar,
    n_threads: usize,
}

// SAFETY: `job` is written only by the thread holding `ThreadPool::run_lock`, before the
// generation bump (release) that publishes it, and read by workers only after observing that
// bump (acquire) and before decrementing `pending`; `run` does not return (and so does not
// invalidate the closure or write `job` again) until `pending` is zero.
unsafe impl Sync for Shared {}
// SAFETY: see the Sync impl; the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// Fixed set of worker threads; `run` executes one closure on all of them.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool with `n_threads` participants (the calling thread counts as one). `0` means the
    /// number of available cores.
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = if n_threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n_threads
        };
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            n_threads,
        });
        let workers = (1..n_threads)
            .filter_map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{index}"))
                    .spawn(move || worker_loop(&shared, index))
                    .ok()
            })
            .collect::<Vec<_>>();
        if workers.len() + 1 != n_threads {
            // The OS refused a thread: release the ones we got and run serially.
            shared.shutdown.store(true, Ordering::SeqCst);
            drop(ThreadPool {
                shared,
                workers,
                run_lock: Mutex::new(()),
            });
            return ThreadPool::new(1);
        }
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Number of participants, including the calling thread.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Calls `f(thread_index, n_threads)` once for every index in `0..n_threads` concurrently
    /// (index 0 on the caller) and returns when all calls have returned. A panic in any call is
    /// re-raised here after all participants finished.
    pub fn run<F: Fn(usize, usize) + Sync>(&self, f: F) {
        let n = self.shared.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        let _guard = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let job: &(dyn Fn(usize, usize) + Sync + '_) = &f;
        // SAFETY: lifetime erasure only; the pointer is not used after `pending` reaches zero,
        // which happens before this function returns (see the Sync impl on Shared).
        let job_ptr: *const Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize, usize) + Sync + '_), &'static Job>(job)
        };
        // SAFETY: no worker reads `job` until the generation bump below.
        unsafe { *self.shared.job.get() = Some(job_ptr) };
        self.shared.pending.store(n - 1, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        let caller = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: all workers are done with the job.
        unsafe { *self.shared.job.get() = None };
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if self.shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kiln worker thread panicked while running a pool job");
        }
    }
}

impl ThreadPool {
    /// Splits `data` into consecutive chunks of `chunk_len` elements (the last may be shorter)
    /// and calls `f(chunk_index, chunk)` for each, spreading chunks over the pool's threads.
    pub fn par_chunks_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: F,
    ) {
        let chunk_len = chunk_len.max(1);
        let n_chunks = data.len().div_ceil(chunk_len);
        if n_chunks == 0 {
            return;
        }
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        let next = AtomicUsize::new(0);
        self.run(|_, _| loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= n_chunks {
                break;
            }
            let start = c * chunk_len;
            let end = (start + chunk_len).min(len);
            let base = &base;
            // SAFETY: each chunk index is claimed by exactly one participant (atomic counter),
            // chunks are disjoint sub-ranges of `data`, and `data` is mutably borrowed for the
            // whole `run`, which returns only after every participant finished.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
            f(c, chunk);
        });
    }
}

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint sub-slices of one `&mut [T]` to pool participants.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let generation = loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen || shared.shutdown.load(Ordering::Acquire) {
                break g;
            }
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            while shared.generation.load(Ordering::SeqCst) == seen
                && !shared.shutdown.load(Ordering::SeqCst)
            {
                guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            drop(guard);
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        };
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = generation;
        // SAFETY: the generation bump published `job`; it stays valid until we decrement
        // `pending` below.
        let job = unsafe { *shared.job.get() };
        if let Some(job) = job {
            // SAFETY: see above; the closure outlives this call.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(index, shared.n_threads))).is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Splits `0..n` into `parts` contiguous ranges whose starts are multiples of `align`
/// (except that the last range ends at `n`); returns range `index`.
pub fn split_range(n: usize, parts: usize, index: usize, align: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let parts = parts.max(1);
    let units = n.div_ceil(align);
    let per = units / parts;
    let extra = units % parts;
    let start_u = index * per + index.min(extra);
    let end_u = start_u + per + usize::from(index < extra);
    (start_u * align).min(n)..(end_u * align).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_index_runs_once_per_call() {
        for n in [1, 2, 3] {
            let pool = ThreadPool::new(n);
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..200 {
                pool.run(|i, nt| {
                    assert_eq!(nt, n);
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), 200);
            }
        }
    }

    #[test]
    fn wakes_after_parking() {
        let pool = ThreadPool::new(2);
        let count = AtomicU64::new(0);
        pool.run(|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        pool.run(|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn worker_panic_is_reported_to_caller() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(|i, _| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let count = AtomicU64::new(0);
        pool.run(|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn par_chunks_mut_touches_every_element_once() {
        let pool = ThreadPool::new(3);
        let mut v = vec![0u32; 1001];
        pool.par_chunks_mut(&mut v, 7, |c, chunk| {
            for (j, x) in chunk.iter_mut().enumerate() {
                *x += (c * 7 + j) as u32 + 1;
            }
        });
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, i as u32 + 1);
        }
    }

    #[test]
    fn split_range_covers_everything_aligned() {
        for n in [0, 1, 15, 16, 17, 100, 576, 49152] {
            for parts in 1..6 {
                let mut next = 0;
                for i in 0..parts {
                    let r = split_range(n, parts, i, 16);
                    assert_eq!(r.start, next);
                    assert!(r.start % 16 == 0 || r.start == n);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
