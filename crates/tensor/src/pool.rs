//! A persistent worker pool for per-operation parallelism: workers spin briefly, then park.
//!
//! One job hands the same closure to every participant (the caller is participant 0). No
//! thread is spawned per operation; between closely spaced operations (the matmuls of one
//! decode step) workers stay hot by spinning, and after a short idle period they sleep on a
//! condition variable so an idle process costs no CPU.
//!
//! Three kinds of job: `run` guarantees every participant runs the closure (static work
//! splits); `par_for` hands out items dynamically from one shared counter; `par_ranges` gives
//! each participant its own contiguous range, which it works through in pieces claimed in its
//! own cache line, and lets a participant that is done take pieces from the back of the
//! others' ranges. The last two do not wait for a worker that has not joined by the time all
//! work is claimed — so a worker the OS has descheduled (more threads than free cores) delays
//! nothing.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How many spin iterations a worker waits for the next job before parking.
const SPIN_ITERATIONS: u32 = 1 << 15;

type Job = dyn Fn(usize, usize) + Sync;

/// One participant's range in a [`ThreadPool::par_ranges`] job, alone in its cache line so that
/// its owner's claims stay in the owner's cache: `tag << 48 | front << 24 | back`, where a
/// `tag` other than the current job's means "not touched yet this job: the whole home range".
#[repr(align(64))]
struct RangeSlot(AtomicU64);

/// `par_ranges` work-unit counts must stay below this (24 bits per range end).
const RANGE_LIMIT: usize = 1 << 24;
const RANGE_MASK: u64 = (1 << 24) - 1;

/// What the caller writes to hand out a job, alone in its cache line, so that workers spinning
/// on it share it read-only until the next job.
#[repr(align(64))]
struct JobLine {
    /// Bumped once per job; workers compare it with the last generation they saw.
    generation: AtomicUsize,
    /// The generation whose job may still be joined (0: none).
    open: AtomicUsize,
    /// The current job; written only while no worker is registered for an open job.
    job: UnsafeCell<Option<*const Job>>,
}

/// One worker's progress, alone in its cache line and written only by that worker, so that a
/// hand-off moves two lines between cores (the job line there, this line back) instead of
/// every participant updating shared counters in one line: `2g + 1` while the worker is
/// registered for generation `g` (and may be running its job), `2g` once it is done with it.
#[repr(align(64))]
struct WorkerLine(AtomicUsize);

const fn busy(g: usize) -> usize {
    g.wrapping_mul(2) | 1
}

const fn done(g: usize) -> usize {
    g.wrapping_mul(2)
}

/// Rarely written state, kept off the hand-off's lines.
#[repr(align(64))]
struct Idle {
    /// Workers blocked (or about to block) on `wake`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

struct Shared {
    line: JobLine,
    /// Indexed by participant (entry 0, the caller's, is unused).
    workers: Box<[WorkerLine]>,
    idle: Idle,
    /// One range per participant for `par_ranges`.
    ranges: Box<[RangeSlot]>,
    /// `par_ranges` jobs started (their tags).
    range_jobs: AtomicU64,
    n_threads: usize,
}

// SAFETY: `job` is written only by the thread holding `ThreadPool::run_lock`, before it
// publishes the job's generation. A worker reads it only after storing `busy(g)` in its line
// and then observing `open == g` (both SeqCst). Before the closure is invalidated or `job`
// written again, the writer either sees every worker `done(g)` (a job every worker must run:
// each takes a generation once) or closes `open` and sees no worker `busy(g)`; a worker that
// registers after the close sees it closed and does not read `job`.
unsafe impl Sync for Shared {}
// SAFETY: see the Sync impl; the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// Fixed set of worker threads; `run` and `par_for` execute one closure on all of them.
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
            line: JobLine {
                generation: AtomicUsize::new(0),
                open: AtomicUsize::new(0),
                job: UnsafeCell::new(None),
            },
            workers: (0..n_threads)
                .map(|_| WorkerLine(AtomicUsize::new(done(0))))
                .collect(),
            idle: Idle {
                sleepers: AtomicUsize::new(0),
                shutdown: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
                lock: Mutex::new(()),
                wake: Condvar::new(),
            },
            ranges: (0..n_threads)
                .map(|_| RangeSlot(AtomicU64::new(0)))
                .collect(),
            range_jobs: AtomicU64::new(0),
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
        self.run_job(&f, true);
    }

    /// Calls `f(item)` for every item in `0..n_items`, spreading items over the participants
    /// as they become free; returns when all items are done.
    pub fn par_for<F: Fn(usize) + Sync>(&self, n_items: usize, f: F) {
        if n_items == 0 {
            return;
        }
        if self.shared.n_threads == 1 || n_items == 1 {
            (0..n_items).for_each(f);
            return;
        }
        let next = AtomicUsize::new(0);
        self.run_job(
            &|_, _| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_items {
                    break;
                }
                f(i);
            },
            false,
        );
    }

    /// Calls `f(units, prefetch_end)` over disjoint ranges of units that together cover
    /// `0..n`, and returns when every unit is done. Participant `i` works through its own
    /// contiguous share of `0..n` front to back, claiming half of what is left of it at a time
    /// (at least `piece` units) in its own cache line: its weight stream stays a few long
    /// calls, and its claims cost no cross-core traffic. A participant whose share is done
    /// takes half of what is left of another share, from its back, until every share is
    /// claimed: one exchange per steal, and the participants finish about a piece apart however
    /// late one of them joined. A pool of one thread makes one call over all of `0..n`.
    /// `prefetch_end` is where the caller's stream is expected to end (the rest of its share,
    /// or the stolen range's end), for kernels that prefetch ahead.
    pub fn par_ranges<F: Fn(Range<usize>, usize) + Sync>(&self, n: usize, piece: usize, f: F) {
        let sh = &*self.shared;
        let nth = sh.n_threads;
        let piece = piece.max(1);
        if n == 0 {
            return;
        }
        if nth == 1 || n <= piece {
            f(0..n, n);
            return;
        }
        if n >= RANGE_LIMIT {
            self.par_for(n.div_ceil(piece), |c| {
                let r = c * piece..((c + 1) * piece).min(n);
                f(r.clone(), r.end)
            });
            return;
        }
        // Tags (never 0, the slots' initial tag) repeat after 65535 jobs; every job writes its
        // tag into every slot (its caller touches them all, and a first touch claims the
        // slot for the job), so a slot is never more than one job old and an old tag never
        // matches.
        let tag = sh.range_jobs.fetch_add(1, Ordering::Relaxed) % 0xffff + 1;
        self.run_job(
            &|index, nth| {
                let home = |i: usize| split_range(n, nth, i, 1);
                while let Some((r, back)) =
                    claim(&sh.ranges[index].0, tag, home(index), piece, false)
                {
                    f(r, back);
                }
                for k in 1..nth {
                    let other = (index + k) % nth;
                    while let Some((r, _)) =
                        claim(&sh.ranges[other].0, tag, home(other), piece, true)
                    {
                        let end = r.end;
                        f(r, end);
                    }
                }
            },
            false,
        );
    }

    fn run_job(&self, f: &(dyn Fn(usize, usize) + Sync + '_), must_run: bool) {
        let sh = &*self.shared;
        let n = sh.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        let _guard = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: lifetime erasure only; the pointer is not used once every worker is done with
        // this job or kept out of it, which happens before this function returns.
        let job_ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync + '_), &'static Job>(f) };
        // SAFETY: no worker is registered for an open job (the previous job drained).
        unsafe { *sh.line.job.get() = Some(job_ptr) };
        let g = sh
            .line
            .generation
            .load(Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        sh.line.open.store(g, Ordering::SeqCst);
        sh.line.generation.store(g, Ordering::SeqCst);
        if sh.idle.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.idle.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.idle.wake.notify_all();
        }
        let caller = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        let workers = &sh.workers[1..];
        if must_run {
            // Every worker runs this job (it stays open until they have); once each is done
            // with generation `g`, none can come back to it.
            workers
                .iter()
                .for_each(|w| wait_until(|| w.0.load(Ordering::Acquire) == done(g)));
        } else {
            sh.line.open.store(0, Ordering::SeqCst);
            // A worker that registered before the close may be running (or about to read) the
            // job; one that registers after it sees `open` closed and leaves the job alone.
            workers
                .iter()
                .for_each(|w| wait_until(|| w.0.load(Ordering::SeqCst) != busy(g)));
        }
        // SAFETY: every worker is done with the job or kept out of it.
        unsafe { *sh.line.job.get() = None };
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if sh.idle.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kiln worker thread panicked while running a pool job");
        }
    }

    /// Splits `data` into consecutive chunks of `chunk_len` elements (the last may be shorter)
    /// and calls `f(chunk_index, chunk)` for each, spreading chunks over the pool's threads as
    /// [`ThreadPool::par_ranges`] does (each thread starts on its own consecutive chunks).
    pub fn par_chunks_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: F,
    ) {
        let chunk_len = chunk_len.max(1);
        let n_chunks = data.len().div_ceil(chunk_len);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.par_ranges(n_chunks, 1, |chunks, _| {
            for c in chunks {
                let start = c * chunk_len;
                let end = (start + chunk_len).min(len);
                let base = &base;
                // SAFETY: each chunk index is handed out exactly once, chunks are disjoint
                // sub-ranges of `data`, and `data` is mutably borrowed for the whole call, which
                // returns only after every chunk is done.
                let chunk =
                    unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
                f(c, chunk);
            }
        });
    }
}

/// Spins (then yields) until `ready()`.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < SPIN_ITERATIONS {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Claims half of what is left of the range in `slot` (first setting it to its `home` units if
/// it has not been touched in job `tag`), but at least `piece` units, from its front or from
/// its back; returns them and the range's end before the claim, or `None` once the range is
/// empty.
fn claim(
    slot: &AtomicU64,
    tag: u64,
    home: Range<usize>,
    piece: usize,
    from_back: bool,
) -> Option<(Range<usize>, usize)> {
    let mut cur = slot.load(Ordering::Relaxed);
    loop {
        if cur >> 48 != tag {
            // First touch this job: the whole home range, tagged even if it is empty.
            let fresh = slot_value(tag, home.start, home.end);
            match slot.compare_exchange_weak(cur, fresh, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => cur = fresh,
                Err(seen) => cur = seen,
            }
            continue;
        }
        let (front, back) = (
            ((cur >> 24) & RANGE_MASK) as usize,
            (cur & RANGE_MASK) as usize,
        );
        if front >= back {
            return None;
        }
        // Half of what is left, at least a piece: an owner's stream stays a few long calls and
        // ends in pieces, and one steal splits another share's rest evenly.
        let left = back - front;
        let take = left.div_ceil(2).max(piece).min(left);
        let (front2, back2, units) = if from_back {
            (front, back - take, back - take..back)
        } else {
            (front + take, back, front..front + take)
        };
        let new = slot_value(tag, front2, back2);
        match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some((units, back)),
            Err(seen) => cur = seen,
        }
    }
}

/// A [`RangeSlot`]'s value for range `front..back` of job `tag`.
fn slot_value(tag: u64, front: usize, back: usize) -> u64 {
    tag << 48 | (front as u64) << 24 | back as u64
}

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint sub-slices of one `&mut [T]` to pool participants.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn worker_loop(sh: &Shared, index: usize) {
    let me = &sh.workers[index];
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let g = loop {
            let g = sh.line.generation.load(Ordering::Acquire);
            if g != seen || sh.idle.shutdown.load(Ordering::Relaxed) {
                break g;
            }
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            sh.idle.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut guard = sh.idle.lock.lock().unwrap_or_else(|e| e.into_inner());
            while sh.line.generation.load(Ordering::SeqCst) == seen
                && !sh.idle.shutdown.load(Ordering::SeqCst)
            {
                guard = sh.idle.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            drop(guard);
            sh.idle.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        };
        if sh.idle.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = g;
        me.0.store(busy(g), Ordering::SeqCst);
        if sh.line.open.load(Ordering::SeqCst) == g {
            // SAFETY: registered as busy in `g` and the job of generation `g` is open, so the
            // slot holds that job and stays valid until we report done.
            if let Some(job) = unsafe { *sh.line.job.get() } {
                // SAFETY: as above; the closure outlives this call.
                let f = unsafe { &*job };
                if catch_unwind(AssertUnwindSafe(|| f(index, sh.n_threads))).is_err() {
                    sh.idle.panicked.store(true, Ordering::SeqCst);
                }
            }
        }
        me.0.store(done(g), Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let idle = &self.shared.idle;
        idle.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = idle.lock.lock().unwrap_or_else(|e| e.into_inner());
            idle.wake.notify_all();
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
    fn par_for_runs_every_item_once_even_when_oversubscribed() {
        // More busy threads than cores: late workers must not lose or repeat items.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let pool = ThreadPool::new(3);
                    for round in 0..200usize {
                        let n = round % 37;
                        let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                        pool.par_for(n, |i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                        // Static jobs interleaved with dynamic ones still reach every index.
                        let seen = AtomicU64::new(0);
                        pool.run(|i, _| {
                            seen.fetch_or(1 << i, Ordering::Relaxed);
                        });
                        assert_eq!(seen.load(Ordering::Relaxed), 0b111);
                    }
                });
            }
        });
    }

    #[test]
    fn split_range_covers_everything_aligned() {
        for n in [0, 1, 15, 16, 17, 100, 576, 49152] {
            for parts in 1..6 {
                let mut next = 0;
                for i in 0..parts {
                    let r = split_range(n, parts, i, 16);
                    assert_eq!(r.start, next);
                    assert!(r.start.is_multiple_of(16) || r.start == n);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    fn check_ranges(pool: &ThreadPool, n: usize, piece: usize) {
        let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
        pool.par_ranges(n, piece, |r, prefetch_end| {
            assert!(r.start < r.end && r.end <= n);
            assert!(prefetch_end >= r.end && prefetch_end <= n);
            for h in &hits[r] {
                h.fetch_add(1, Ordering::Relaxed);
            }
        });
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(
                h.load(Ordering::Relaxed),
                1,
                "unit {i} of {n} (piece {piece})"
            );
        }
    }

    #[test]
    fn par_ranges_covers_every_unit_once() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 16, 61, 300] {
                for piece in [0, 1, 3, 16, 1000] {
                    check_ranges(&pool, n, piece);
                }
            }
        }
    }

    #[test]
    fn par_ranges_never_mistakes_a_slot_left_alone_for_a_whole_tag_cycle() {
        // With three threads and two units the third share is empty: its slot must still be
        // claimed for every job, or 65535 jobs later the tag comes round and its old,
        // drained state would pass for the new job's.
        let pool = ThreadPool::new(3);
        check_ranges(&pool, 9, 1);
        for _ in 1..0xffff {
            check_ranges(&pool, 2, 1);
        }
        // The first job's tag is back.
        check_ranges(&pool, 9, 1);
    }

    #[test]
    fn par_ranges_survives_tag_wraparound_and_oversubscription() {
        // More jobs than there are tags, on more busy threads than cores: stale slots from
        // 2^16 jobs ago must never be mistaken for the current job's.
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let pool = ThreadPool::new(2);
                    for job in 0..(1usize << 16) + 50 {
                        check_ranges(&pool, 2 + job % 9, 1 + job % 3);
                    }
                });
            }
        });
    }
}
