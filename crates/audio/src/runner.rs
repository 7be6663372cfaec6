//! The real-time runner: the audio thread pushes input frames into a lock-free single-producer
//! ring (`rtrb`) and picks up the newest output frame from a second ring, never waiting; a
//! worker thread runs the `Chain` on every frame it finds. When the worker falls behind, the
//! input ring fills and further frames are dropped and counted instead of blocking the audio
//! thread.
//!
//! The audio side performs no allocation, lock or system call: ring operations are wait-free
//! atomics, counters are relaxed atomics, and the time it spends in each call is recorded into a
//! preallocated buffer (that duration bounds any waiting, and the report shows it).

use crate::chain::Chain;
use crate::stats::{Latency, Samples};
use crate::AudioError;
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runner settings.
#[derive(Debug, Clone, Copy)]
pub struct RunnerConfig {
    /// Input frames the ring holds before new ones are dropped.
    pub queue_frames: usize,
    /// Output frames the result ring holds (the audio side reads only the newest).
    pub result_frames: usize,
    /// Latency samples kept per model, for the pipeline and for the audio side.
    pub latency_capacity: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            queue_frames: 4,
            result_frames: 4,
            latency_capacity: 1 << 16,
        }
    }
}

struct Shared {
    stop: AtomicBool,
    dropped: AtomicU64,
    pushed: AtomicU64,
    result_overruns: AtomicU64,
}

/// The audio thread's end: push frames, read results, never wait.
pub struct AudioSide {
    input: Producer<f32>,
    output: Consumer<f32>,
    in_size: usize,
    out_size: usize,
    latest: Vec<f32>,
    has_latest: bool,
    shared: Arc<Shared>,
    calls: Samples,
}

impl AudioSide {
    pub fn in_size(&self) -> usize {
        self.in_size
    }

    pub fn out_size(&self) -> usize {
        self.out_size
    }

    /// Queues one input frame (`frame.len() == in_size()`; other lengths are dropped too).
    /// Returns false, counting a dropped frame, when the worker is behind and the ring is full.
    pub fn push_frame(&mut self, frame: &[f32]) -> bool {
        let start = Instant::now();
        let n = self.in_size;
        let ok = frame.len() == n
            && match self.input.write_chunk(n) {
                Ok(mut chunk) => {
                    let (a, b) = chunk.as_mut_slices();
                    let k = a.len();
                    a.copy_from_slice(&frame[..k]);
                    b.copy_from_slice(&frame[k..]);
                    chunk.commit_all();
                    true
                }
                Err(_) => false,
            };
        if ok {
            self.shared.pushed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.calls.record(start.elapsed().as_nanos() as u64);
        ok
    }

    /// The newest output frame the worker has finished (draining older ones), or the last one
    /// read before if nothing new arrived; `None` until the first result.
    pub fn read_latest(&mut self) -> Option<&[f32]> {
        let start = Instant::now();
        let n = self.out_size;
        while let Ok(chunk) = self.output.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            self.latest[..a.len()].copy_from_slice(a);
            self.latest[a.len()..].copy_from_slice(b);
            chunk.commit_all();
            self.has_latest = true;
        }
        self.calls.record(start.elapsed().as_nanos() as u64);
        self.has_latest.then_some(&self.latest[..])
    }

    /// Frames dropped so far because the worker was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Per model: name, latency, heap bytes.
    pub models: Vec<(String, Latency, usize)>,
    pub pipeline: Latency,
    pub memory_bytes: usize,
    pub frames_pushed: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    /// Results the audio side had not collected when the result ring was full.
    pub result_overruns: u64,
    /// Duration of each audio-side call (push or read): the bound on audio-thread waiting.
    pub audio_calls: Latency,
}

/// The worker thread running a chain.
pub struct Runner {
    handle: JoinHandle<(Chain, u64)>,
    shared: Arc<Shared>,
}

impl Runner {
    /// Starts the worker; returns it with the audio side to hand to the audio thread.
    pub fn start(chain: Chain, cfg: RunnerConfig) -> Result<(Runner, AudioSide), AudioError> {
        let (in_size, out_size) = (chain.in_size(), chain.out_size());
        let (mut in_p, mut in_c) = RingBuffer::<f32>::new(in_size * cfg.queue_frames.max(1));
        let (mut out_p, mut out_c) = RingBuffer::<f32>::new(out_size * cfg.result_frames.max(1));
        prefault(&mut in_p, &mut in_c);
        prefault(&mut out_p, &mut out_c);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            result_overruns: AtomicU64::new(0),
        });
        let worker_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("kiln-rt-worker".into())
            .spawn(move || worker(chain, in_c, out_p, &worker_shared))
            .map_err(AudioError::Thread)?;
        let audio = AudioSide {
            input: in_p,
            output: out_c,
            in_size,
            out_size,
            // Not zeros: a zeroed allocation's pages are mapped lazily, at the first write.
            latest: vec![f32::NAN; out_size],
            has_latest: false,
            shared: shared.clone(),
            calls: Samples::with_capacity(cfg.latency_capacity),
        };
        Ok((Runner { handle, shared }, audio))
    }

    /// Lets the worker finish the queued frames, stops it and reports.
    pub fn stop(self, audio: AudioSide) -> Result<RunReport, AudioError> {
        self.shared.stop.store(true, Ordering::Release);
        let (chain, processed) = self.handle.join().map_err(|_| AudioError::WorkerPanicked)?;
        Ok(RunReport {
            models: chain
                .stages()
                .iter()
                .map(|s| (s.name.clone(), s.latency.summary(), s.net.memory_bytes()))
                .collect(),
            pipeline: chain.pipeline_latency().summary(),
            memory_bytes: chain.memory_bytes(),
            frames_pushed: self.shared.pushed.load(Ordering::Relaxed),
            frames_processed: processed,
            frames_dropped: self.shared.dropped.load(Ordering::Relaxed),
            result_overruns: self.shared.result_overruns.load(Ordering::Relaxed),
            audio_calls: audio.calls.summary(),
        })
    }
}

/// Idle polls spun before the worker starts sleeping between polls.
const SPIN_POLLS: u32 = 2000;
/// Sleep between polls when idle (off the audio thread, so sleeping is fine).
const IDLE_SLEEP: Duration = Duration::from_micros(20);

/// Writes the whole ring once and reads it back, so its pages are mapped before the audio
/// thread's first push (a first write to a fresh page is a page fault).
fn prefault(p: &mut Producer<f32>, c: &mut Consumer<f32>) {
    let n = p.slots();
    if let Ok(mut chunk) = p.write_chunk(n) {
        let (a, b) = chunk.as_mut_slices();
        a.fill(f32::NAN);
        b.fill(f32::NAN);
        chunk.commit_all();
    }
    if let Ok(chunk) = c.read_chunk(n) {
        chunk.commit_all();
    }
}

fn worker(
    mut chain: Chain,
    mut input: Consumer<f32>,
    mut output: Producer<f32>,
    shared: &Shared,
) -> (Chain, u64) {
    let (n_in, n_out) = (chain.in_size(), chain.out_size());
    let mut frame = vec![0.0f32; n_in];
    let mut processed = 0u64;
    let mut idle = 0u32;
    loop {
        match input.read_chunk(n_in) {
            Ok(chunk) => {
                let (a, b) = chunk.as_slices();
                frame[..a.len()].copy_from_slice(a);
                frame[a.len()..].copy_from_slice(b);
                chunk.commit_all();
                idle = 0;
                let y = chain.run(&frame);
                processed += 1;
                match output.write_chunk(n_out) {
                    Ok(mut c) => {
                        let (a, b) = c.as_mut_slices();
                        let k = a.len();
                        a.copy_from_slice(&y[..k]);
                        b.copy_from_slice(&y[k..]);
                        c.commit_all();
                    }
                    Err(_) => {
                        shared.result_overruns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                if shared.stop.load(Ordering::Acquire) {
                    break;
                }
                idle += 1;
                if idle < SPIN_POLLS {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(IDLE_SLEEP);
                }
            }
        }
    }
    (chain, processed)
}
