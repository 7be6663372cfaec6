//! `kiln rt-bench`: latency, throughput and memory of a chain of real-time audio nets (every
//! `.json`/`.gguf` in a directory, in file-name order, each model feeding the next), measured
//! directly on one core and then through the real-time runner driven by a simulated audio
//! thread. `--write-example DIR` writes the five-model example pipeline.

use crate::common::write_atomic;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_audio::{Chain, Latency, Runner, RunnerConfig};
use kiln_models::rtnet::example::{pipeline, EXAMPLE_PIPELINE, EXAMPLE_SEED};
use kiln_models::rtnet::{gguf, RtNet};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct RtBenchArgs {
    /// Directory of models (`.json` or `.gguf`), run as a chain in file-name order.
    #[arg(long, required_unless_present_any = ["write_example", "layer"])]
    pub models: Option<PathBuf>,
    /// Frames to time.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Untimed frames first (caches, branch predictors).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Convert every model to INT8 (Q8_0) weights after loading (or write the example so).
    #[arg(long)]
    pub int8: bool,
    /// Period of the simulated audio thread in the real-time run, µs (0 skips that run).
    #[arg(long, default_value_t = 1000)]
    pub period_us: u64,
    /// Write the five-model example pipeline (fixed seed) as GGUF files into DIR and exit.
    #[arg(long, value_name = "DIR")]
    pub write_example: Option<PathBuf>,
    /// Seed of the example weights.
    #[arg(long, default_value_t = EXAMPLE_SEED)]
    pub seed: u64,
    /// Benchmark one layer with random weights instead (RTNeural's `layer_bench`): dense,
    /// lstm, gru or conv1d (kernel in-size − 1), one sample per forward at 48 kHz.
    #[arg(long, value_name = "TYPE")]
    pub layer: Option<String>,
    /// Input size of `--layer`.
    #[arg(long, default_value_t = 8)]
    pub in_size: usize,
    /// Output size of `--layer`.
    #[arg(long, default_value_t = 8)]
    pub out_size: usize,
    /// Seconds of 48 kHz signal `--layer` processes.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// `--layer` hands the net this many samples per call (`forward_block`, as an audio
    /// callback would) instead of one per `forward` call.
    #[arg(long, default_value_t = 1)]
    pub block: usize,
    /// `--layer` runs through a copy of the layer with compile-time sizes
    /// (`kiln_nn::rt::fixed`, RTNeural's templated layers' counterpart), one sample per call;
    /// RTNeural's benchmark shapes only (dense 4→4, 8→8, 16→16, 24→1; conv1d 4→4, 16→16;
    /// gru 4→4, 16→16; lstm 4→4, 16→16, 1→24).
    #[arg(long)]
    pub fixed: bool,
}

pub fn main(args: RtBenchArgs) -> Result<()> {
    if let Some(dir) = &args.write_example {
        return write_example(dir, args.seed, args.int8);
    }
    if let Some(kind) = &args.layer {
        return layer_bench(&args, kind);
    }
    let Some(dir) = &args.models else {
        bail!("--models DIR is required");
    };
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .json or .gguf models", dir.display());
    }
    let mut models = Vec::new();
    let mut loads = Vec::new();
    for f in &files {
        let t0 = Instant::now();
        let mut net = RtNet::load(f).with_context(|| format!("loading {}", f.display()))?;
        if args.int8 {
            net = net.to_q8_0();
        }
        loads.push(t0.elapsed());
        let name = f
            .file_stem()
            .map_or("?".into(), |s| s.to_string_lossy().into_owned());
        models.push((name, net));
    }
    let weights: Vec<&'static str> = models.iter().map(|(_, n)| weight_kind(n)).collect();
    let params: Vec<usize> = models.iter().map(|(_, n)| n.n_params()).collect();
    let mut chain = Chain::new(models, args.iterations)?;
    let n_in = chain.in_size();
    let input = |t: usize| -> Vec<f32> {
        (0..n_in)
            .map(|i| ((t * 7 + i) as f32 * 0.01).sin())
            .collect()
    };

    // Direct: one thread, frame after frame.
    for t in 0..args.warmup {
        chain.run(&input(t));
    }
    chain.clear_stats();
    chain.reset();
    let frames: Vec<Vec<f32>> = (0..args.iterations).map(input).collect();
    let t0 = Instant::now();
    for x in &frames {
        chain.run(x);
    }
    let wall = t0.elapsed();
    let pipe = chain.pipeline_latency().summary();
    let model_json: Vec<Value> = chain
        .stages()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = lat_json(&s.latency.summary());
            v["name"] = json!(s.name);
            v["file"] = json!(files[i].display().to_string());
            v["params"] = json!(params[i]);
            v["weights"] = json!(weights[i]);
            v["memory_bytes"] = json!(s.net.memory_bytes());
            v["load_ms"] = json!(loads[i].as_secs_f64() * 1e3);
            v
        })
        .collect();
    let mut pipe_json = lat_json(&pipe);
    pipe_json["models"] = json!(files.len());
    pipe_json["params"] = json!(params.iter().sum::<usize>());
    pipe_json["memory_bytes"] = json!(chain.memory_bytes());
    pipe_json["throughput_fps"] = json!(args.iterations as f64 / wall.as_secs_f64());
    pipe_json["load_ms"] = json!(loads.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1e3);
    pipe_json["iterations"] = json!(args.iterations);
    pipe_json["kernels"] = json!(kiln_tensor::cpu::kernel_choice().name());

    println!(
        "{:<24} {:>9} {:>7} {:>10} {:>10} {:>10} {:>12}",
        "model", "params", "weights", "p50_us", "p99_us", "max_us", "memory_bytes"
    );
    for m in &model_json {
        println!(
            "{:<24} {:>9} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>12}",
            m["name"].as_str().unwrap_or("?"),
            m["params"],
            m["weights"].as_str().unwrap_or("?"),
            m["p50_us"].as_f64().unwrap_or(0.0),
            m["p99_us"].as_f64().unwrap_or(0.0),
            m["max_us"].as_f64().unwrap_or(0.0),
            m["memory_bytes"]
        );
    }
    println!(
        "{:<24} {:>9} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>12}   {:.0} frames/s",
        "pipeline",
        pipe_json["params"],
        "",
        pipe.p50_us,
        pipe.p99_us,
        pipe.max_us,
        pipe_json["memory_bytes"],
        pipe_json["throughput_fps"].as_f64().unwrap_or(0.0)
    );

    let mut report = json!({ "pipeline": pipe_json, "models": model_json });
    if args.period_us > 0 {
        chain.reset();
        chain.clear_stats();
        let rt = realtime(chain, &frames, Duration::from_micros(args.period_us))?;
        println!(
            "real-time run (period {} us): {} pushed, {} processed, {} dropped; pipeline p99 {:.2} us; audio-thread calls p99 {:.3} us, max {:.3} us; the OS preempted the audio thread around {} of its frames{}",
            args.period_us,
            rt["frames_pushed"],
            rt["frames_processed"],
            rt["frames_dropped"],
            rt["pipeline"]["p99_us"].as_f64().unwrap_or(0.0),
            rt["audio_calls"]["p99_us"].as_f64().unwrap_or(0.0),
            rt["audio_calls"]["max_us"].as_f64().unwrap_or(0.0),
            rt["audio_frames_preempted"],
            if rt["slowest_audio_frame_preempted"].as_bool() == Some(true) {
                " (the slowest among them)"
            } else {
                ""
            }
        );
        report["realtime"] = rt;
    }
    if let Some(out) = &args.output {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}

fn weight_kind(net: &RtNet) -> &'static str {
    let types: Vec<_> = net
        .layers()
        .iter()
        .flat_map(|l| l.matrices())
        .map(|(_, m)| m.ty())
        .collect();
    let q = types
        .iter()
        .filter(|t| **t == kiln_quant::QuantType::Q8_0)
        .count();
    match q {
        0 => "f32",
        n if n == types.len() => "q8_0",
        _ => "mixed",
    }
}

fn lat_json(l: &Latency) -> Value {
    json!({ "p50_us": l.p50_us, "p99_us": l.p99_us, "max_us": l.max_us, "mean_us": l.mean_us, "count": l.count })
}

/// Drives the runner from this thread as the audio thread: one frame per period, the newest
/// result read after every push.
fn realtime(chain: Chain, frames: &[Vec<f32>], period: Duration) -> Result<Value> {
    let cfg = RunnerConfig {
        latency_capacity: frames.len() * 2 + 16,
        ..RunnerConfig::default()
    };
    let (runner, mut audio) = Runner::start(chain, cfg)?;
    let start = Instant::now();
    let mut checksum = 0.0f64;
    let (mut preempted_frames, mut slowest) = (0u64, (Duration::ZERO, false));
    for (i, x) in frames.iter().enumerate() {
        let deadline = start + period * i as u32;
        // Sleep most of the way, then spin: an audio callback arrives on time.
        let now = Instant::now();
        if deadline > now + Duration::from_micros(200) {
            std::thread::sleep(deadline - now - Duration::from_micros(150));
        }
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        // The calls' own durations are recorded inside them; around them this thread only
        // notes whether the OS preempted it meanwhile, which explains a rare slow call.
        let before = preemptions();
        let t = Instant::now();
        audio.push_frame(x);
        if let Some(y) = audio.read_latest() {
            checksum += y.first().copied().unwrap_or(0.0) as f64;
        }
        let took = t.elapsed();
        let preempted = matches!((before, preemptions()), (Some(a), Some(b)) if b > a);
        preempted_frames += preempted as u64;
        if took >= slowest.0 {
            slowest = (took, preempted);
        }
    }
    // Give the worker one period to finish the last frame before stopping.
    std::thread::sleep(period);
    let r = runner.stop(audio)?;
    let models: Vec<Value> = r
        .models
        .iter()
        .map(|(name, l, mem)| {
            let mut v = lat_json(l);
            v["name"] = json!(name);
            v["memory_bytes"] = json!(mem);
            v
        })
        .collect();
    Ok(json!({
        "period_us": period.as_micros() as u64,
        "frames_pushed": r.frames_pushed,
        "frames_processed": r.frames_processed,
        "frames_dropped": r.frames_dropped,
        "result_overruns": r.result_overruns,
        "pipeline": lat_json(&r.pipeline),
        "models": models,
        "memory_bytes": r.memory_bytes,
        "audio_calls": lat_json(&r.audio_calls),
        "audio_frames_preempted": preempted_frames,
        "slowest_audio_frame_us": slowest.0.as_secs_f64() * 1e6,
        "slowest_audio_frame_preempted": slowest.1,
        "checksum": checksum,
    }))
}

/// Involuntary context switches of the calling thread so far (`None` where the OS does not
/// say): a push or read that took long while this count rose was descheduled, not waiting.
fn preemptions() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

fn write_example(dir: &Path, seed: u64, int8: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, (name, net)) in pipeline(seed)?.into_iter().enumerate() {
        let net = if int8 { net.to_q8_0() } else { net };
        let path = dir.join(format!("{}_{name}.gguf", i + 1));
        gguf::save(&net, &path).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{}: {} parameters ({} expected), {} bytes in memory",
            path.display(),
            net.n_params(),
            EXAMPLE_PIPELINE[i].params,
            net.memory_bytes()
        );
    }
    Ok(())
}

/// Times `pass` (one pass over the signal, returning its checksum) three times: the best
/// duration in seconds and the checksum.
fn best_of_three(mut pass: impl FnMut() -> Result<f32>) -> Result<(f64, f32)> {
    let (mut best, mut sink) = (f64::INFINITY, 0.0);
    for _ in 0..3 {
        let t0 = Instant::now();
        sink = pass()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok((best, sink))
}

/// [`best_of_three`] for a compile-time-sized copy of the single-layer `net`
/// (`kiln_nn::rt::fixed`), one sample per call, for the shapes RTNeural's layer bench runs.
fn fixed_passes(
    net: &RtNet,
    kind: &str,
    n_in: usize,
    n_out: usize,
    signal: &[f32],
) -> Result<(f64, f32)> {
    use kiln_nn::rt::fixed::{Conv1dT, DenseT, FixedNet, GruT, LstmT};
    macro_rules! passes {
        ($t:ty, $i:literal) => {{
            let mut f = FixedNet::<$t>::from_layers(net.layers())?;
            best_of_three(|| {
                f.reset();
                let mut sink = 0.0f32;
                for x in signal.chunks_exact($i) {
                    let x: &[f32; $i] = x.try_into().expect("chunks of the input size");
                    sink += f.forward(x)[0];
                }
                Ok(sink)
            })
        }};
    }
    match (kind, n_in, n_out) {
        ("dense", 4, 4) => passes!(DenseT<4, 4>, 4),
        ("dense", 8, 8) => passes!(DenseT<8, 8>, 8),
        ("dense", 16, 16) => passes!(DenseT<16, 16>, 16),
        ("dense", 24, 1) => passes!(DenseT<24, 1>, 24),
        ("conv1d", 4, 4) => passes!(Conv1dT<4, 4, 3, 1>, 4),
        ("conv1d", 16, 16) => passes!(Conv1dT<16, 16, 15, 1>, 16),
        ("gru", 4, 4) => passes!(GruT<4, 4, 12>, 4),
        ("gru", 16, 16) => passes!(GruT<16, 16, 48>, 16),
        ("lstm", 4, 4) => passes!(LstmT<4, 4, 16>, 4),
        ("lstm", 16, 16) => passes!(LstmT<16, 16, 64>, 16),
        ("lstm", 1, 24) => passes!(LstmT<1, 24, 96>, 1),
        _ => bail!(
            "--fixed has compile-time copies of RTNeural's benchmark shapes only: dense 4→4, \
             8→8, 16→16, 24→1; conv1d 4→4, 16→16; gru 4→4, 16→16; lstm 4→4, 16→16, 1→24"
        ),
    }
}

/// Times `forward` of one layer over `seconds` of 48 kHz samples, as RTNeural's layer bench
/// does (same signal shape: uniform values in [-1, 1)), best of three runs.
fn layer_bench(args: &RtBenchArgs, kind: &str) -> Result<()> {
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    let mut net =
        kiln_models::rtnet::example::single_layer(kind, args.in_size, args.out_size, args.seed)?;
    if args.int8 {
        net = net.to_q8_0();
    }
    if !(1..=1 << 16).contains(&args.block) {
        bail!("--block must be in 1..=65536");
    }
    let n = (48_000.0 * args.seconds) as usize;
    let signal = crate::common::noise(n * args.in_size, args.seed);
    let mut out = vec![0.0f32; args.block * args.out_size];
    let (best, sink) = if args.fixed {
        if args.block != 1 || args.int8 {
            bail!("--fixed runs f32 weights one sample per call (no --block, no --int8)");
        }
        fixed_passes(&net, kind, args.in_size, args.out_size, &signal)?
    } else {
        best_of_three(|| {
            net.reset();
            let mut sink = 0.0f32;
            if args.block == 1 {
                for x in signal.chunks_exact(args.in_size) {
                    sink += net.forward(x)[0];
                }
            } else {
                for xs in signal.chunks(args.block * args.in_size) {
                    let ys = &mut out[..xs.len() / args.in_size * args.out_size];
                    net.forward_block(xs, ys)?;
                    // The same checksum as one call per sample: every frame's first output.
                    sink += ys.iter().step_by(args.out_size).sum::<f32>();
                }
            }
            Ok(sink)
        })?
    };
    let ns = best * 1e9 / n as f64;
    let per_call = match (args.block, args.fixed) {
        (_, true) => ", compile-time sizes".to_string(),
        (1, _) => String::new(),
        (b, _) => format!(", {b} per call"),
    };
    println!(
        "{kind} {}->{} ({}{per_call}): {:.3} s of signal in {:.4} s, {:.1}x real-time, {:.1} ns/sample (checksum {sink:.3})",
        args.in_size,
        args.out_size,
        weight_kind(&net),
        args.seconds,
        best,
        args.seconds / best,
        ns
    );
    if let Some(out) = &args.output {
        let v = json!({
            "layer": kind, "in_size": args.in_size, "out_size": args.out_size, "weights": weight_kind(&net),
            "seconds": args.seconds, "block": args.block, "fixed": args.fixed, "duration_s": best, "realtime_factor": args.seconds / best, "ns_per_sample": ns,
            "kernels": kiln_tensor::cpu::kernel_choice().name(),
        });
        write_atomic(out, (serde_json::to_string_pretty(&v)? + "\n").as_bytes())?;
    }
    Ok(())
}
