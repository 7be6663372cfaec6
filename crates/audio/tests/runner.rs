//! The real-time runner: results equal a direct chain run, drops are counted, chains are
//! checked, and the audio side never allocates.

use kiln_audio::{Chain, Runner, RunnerConfig};
use kiln_models::rtnet::example::{build, EXAMPLE_PIPELINE, EXAMPLE_SEED};
use kiln_models::rtnet::RtNet;
use kiln_tensor::alloc_count::{count_allocations, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The last two example models (320 → 352 → 45), small enough for a quick test.
fn models() -> Vec<(String, RtNet)> {
    EXAMPLE_PIPELINE[3..]
        .iter()
        .map(|s| (s.name.to_string(), build(s, EXAMPLE_SEED).unwrap()))
        .collect()
}

fn frame(t: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| ((t * 13 + i) as f32 * 0.1).sin()).collect()
}

#[test]
fn results_match_a_direct_run_and_the_audio_side_never_allocates() {
    let mut direct = Chain::new(models(), 16).unwrap();
    let (runner, mut audio) =
        Runner::start(Chain::new(models(), 1024).unwrap(), RunnerConfig::default()).unwrap();
    let n_in = audio.in_size();
    let frames: Vec<Vec<f32>> = (0..50).map(|t| frame(t, n_in)).collect();
    let mut got = vec![0.0f32; audio.out_size()];
    for x in &frames {
        // One frame at a time, so none is dropped and every result can be compared.
        let (pushed, allocs) = count_allocations(|| audio.push_frame(x));
        assert!(pushed);
        assert_eq!(allocs, 0, "push_frame allocated");
        let before = audio.read_latest().map(|v| v.to_vec());
        loop {
            let (ready, allocs) = count_allocations(|| match audio.read_latest() {
                Some(v) if Some(v) != before.as_deref() => {
                    got.copy_from_slice(v);
                    true
                }
                _ => false,
            });
            assert_eq!(allocs, 0, "read_latest allocated");
            if ready {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(
            got,
            direct.run(x),
            "runner output differs from a direct run"
        );
    }
    let report = runner.stop(audio).unwrap();
    assert_eq!(
        (
            report.frames_pushed,
            report.frames_processed,
            report.frames_dropped
        ),
        (50, 50, 0)
    );
    assert_eq!(report.models.len(), 2);
    assert_eq!(report.pipeline.count, 50);
    assert!(report.memory_bytes > 0 && report.audio_calls.count >= 100);
}

#[test]
fn frames_are_dropped_and_counted_never_blocked() {
    let cfg = RunnerConfig {
        queue_frames: 1,
        ..RunnerConfig::default()
    };
    let (runner, mut audio) = Runner::start(Chain::new(models(), 4096).unwrap(), cfg).unwrap();
    let x = frame(0, audio.in_size());
    let attempts = 500;
    let mut accepted = 0;
    for _ in 0..attempts {
        accepted += audio.push_frame(&x) as u64;
    }
    // A frame of the wrong length is always dropped.
    assert!(!audio.push_frame(&x[1..]));
    let report = runner.stop(audio).unwrap();
    assert_eq!(report.frames_pushed, accepted);
    assert_eq!(report.frames_dropped, attempts + 1 - accepted);
    assert_eq!(
        report.frames_processed, accepted,
        "every accepted frame is processed"
    );
}

#[test]
fn mismatched_chains_are_rejected() {
    let mut m = models();
    m.swap(0, 1);
    let e = Chain::new(m, 1).err().unwrap().to_string();
    assert!(e.contains("model 1") && e.contains("320"), "{e}");
    assert!(Chain::new(Vec::new(), 1).is_err());
}
