//! The `kiln` binary's contract: stdout carries only results, diagnostics go to stderr, bad
//! input exits non-zero with a clear message (never a panic).

use kiln_models::tiny::{write_tiny_llama, TinySpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env(
            "KILN_MODELS_DIR",
            std::env::temp_dir().join("kiln-cli-test-no-models"),
        )
        .output()
        .expect("kiln runs")
}

fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, write_tiny_llama(&TinySpec::default()).unwrap()).unwrap();
    path
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("error:"), "stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

#[test]
fn run_streams_only_generated_text_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let args = [
        "run",
        "--model",
        m,
        "--raw",
        "--prompt",
        "hello there",
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        "--threads",
        "2",
    ];
    let a = kiln(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = kiln(&args);
    assert_eq!(stdout(&a), stdout(&b), "greedy output is deterministic");
    assert!(
        stderr(&a).contains("tok/s"),
        "timing line on stderr: {}",
        stderr(&a)
    );
    assert!(
        !stdout(&a).contains("kiln:"),
        "diagnostics leaked to stdout"
    );

    // Seeded sampling is reproducible too.
    let seeded = [
        "run",
        "--model",
        m,
        "--prompt",
        "hi",
        "--temperature",
        "1.0",
        "--seed",
        "3",
        "--max-tokens",
        "8",
    ];
    assert_eq!(stdout(&kiln(&seeded)), stdout(&kiln(&seeded)));
}

#[test]
fn tokenize_prints_ids_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let o = kiln(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hello<|im_end|>",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let ids: Vec<u32> = out.trim().split(' ').map(|s| s.parse().unwrap()).collect();
    // "he" "ll" merge to "hell" (one token), then "o", then the control token as one id.
    assert_eq!(ids.len(), 3, "{out}");
    assert_eq!(out.lines().count(), 1);
}

#[test]
fn inspect_lists_metadata_tensors_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let o = kiln(&["inspect", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "general.architecture",
        "blk.1.ffn_down.weight",
        "q4_K",
        "parameters:",
        "bytes per type",
    ] {
        assert!(out.contains(needle), "inspect output lacks {needle}: {out}");
    }
}

#[test]
fn perplexity_prints_the_final_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(20),
    )
    .unwrap();
    let o = kiln(&[
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--file",
        text.to_str().unwrap(),
        "--ctx",
        "64",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last = stdout(&o).lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("PPL = ") && last.contains(" +/- "),
        "{last}"
    );
}

#[test]
fn bench_times_each_test_and_thread_count_and_compare_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let json = dir.path().join("bench.json");
    let o = kiln(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "-p",
        "8",
        "-n",
        "4",
        "-t",
        "1,2",
        "-r",
        "2",
        "-o",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert_eq!(table.matches("| pp8 |").count(), 2, "{table}");
    assert_eq!(table.matches("| tg4 |").count(), 2, "{table}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2, "{r}");
        let decode = r["n_gen"].as_u64() == Some(4);
        // Decode runs are each preceded by a bandwidth measurement; prefill runs are not.
        for field in ["bandwidth_utilisation", "read_bandwidth_gbs"] {
            assert_eq!(r[field].as_f64().is_some_and(|v| v > 0.0), decode, "{r}");
        }
    }
    let probed = report["machine"]["read_bandwidth_gbs"].as_array().unwrap();
    assert_eq!(probed.len(), 2, "{report}");
    // The probe streams what one decoded token reads: about the model's weights, not a fixed
    // buffer sized for a large model.
    let probe_bytes = report["machine"]["read_bandwidth_probe_bytes"]
        .as_u64()
        .unwrap();
    let model_bytes = std::fs::metadata(&model).unwrap().len();
    assert!(
        probe_bytes >= 8 << 10 && probe_bytes <= (8 << 10).max(2 * model_bytes),
        "probe {probe_bytes} bytes for a {model_bytes}-byte model"
    );
    // The probe's buffer is resident during the runs but is not the model's memory.
    let rss = report["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 0 && rss < 200 << 20, "peak RSS {rss}");

    let o = kiln(&["compare", json.to_str().unwrap(), json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("tg4"), "{}", stdout(&o));

    assert_clean_failure(
        &kiln(&["bench", "--model", model.to_str().unwrap(), "-t", "0"]),
        "--threads",
    );
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();

    assert_clean_failure(
        &kiln(&["run", "--model", "/no/such/file.gguf", "--prompt", "x"]),
        "no such file",
    );

    let bytes = std::fs::read(&model).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &kiln(&[
            "run",
            "--model",
            truncated.to_str().unwrap(),
            "--prompt",
            "x",
        ]),
        "truncated.gguf",
    );

    let not_gguf = dir.path().join("text.gguf");
    std::fs::write(&not_gguf, "this is not a model").unwrap();
    assert_clean_failure(&kiln(&["inspect", not_gguf.to_str().unwrap()]), "error");

    let long_prompt = "word ".repeat(400);
    assert_clean_failure(
        &kiln(&[
            "run",
            "--model",
            m,
            "--raw",
            "--prompt",
            &long_prompt,
            "--ctx",
            "64",
        ]),
        "context",
    );

    assert_clean_failure(
        &kiln(&["perplexity", "--model", m, "--file", "/no/such/text"]),
        "/no/such/text",
    );
}

fn real_model() -> PathBuf {
    let path = std::env::var_os("KILN_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.exists(),
        "the real model is missing at {} — run `kiln pull` first",
        path.display()
    );
    path
}

#[test]
fn real_model_raw_greedy_run_matches_llama_cpp_start() {
    let model = real_model();
    let o = kiln(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--raw",
        "--prompt",
        "The capital of France is",
        "--temperature",
        "0",
        "--max-tokens",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // llama.cpp's greedy continuation starts " Paris.\n\n" (reference greedy.jsonl).
    assert_eq!(
        stdout(&o),
        " Paris.\n\n\n",
        "stdout carries only the generated text plus a final newline"
    );
    let o = kiln(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
    ]);
    assert_eq!(stdout(&o).trim(), "504 3575 282 4649 314");
}

#[test]
fn chat_keeps_the_kv_cache_between_turns() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "chat",
            "--model",
            model.to_str().unwrap(),
            "--verbose",
            "--temperature",
            "0",
            "--max-tokens",
            "5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nhow are you\n/exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let timings: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.contains("cached)"))
        .map(str::to_string)
        .collect();
    assert_eq!(timings.len(), 2, "{}", stderr(&o));
    assert!(timings[0].contains("(0 cached)"), "{}", timings[0]);
    assert!(
        !timings[1].contains("(0 cached)"),
        "second turn reuses the cache: {}",
        timings[1]
    );
}

fn rtneural(path: &str) -> String {
    format!(
        "{}/../../../shared/conformance/rtneural/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn rt_run_reproduces_a_reference_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.csv");
    let o = kiln(&[
        "rt-run",
        "--model",
        &rtneural("models/lstm.json"),
        "--input",
        &rtneural("test_data/lstm_x_python.csv"),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = std::fs::read_to_string(&out).unwrap();
    let want = std::fs::read_to_string(rtneural("test_data/lstm_y_python.csv")).unwrap();
    let (g, w): (Vec<f32>, Vec<f32>) = (
        got.lines().map(|l| l.parse().unwrap()).collect(),
        want.lines().map(|l| l.parse().unwrap()).collect(),
    );
    assert_eq!(g.len(), w.len());
    for (a, b) in g.iter().zip(&w) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }

    // A row of the wrong width: clean error, no output file.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "0.1\n0.2,0.3\n").unwrap();
    let out2 = dir.path().join("y2.csv");
    let o = kiln(&[
        "rt-run",
        "--model",
        &rtneural("models/lstm.json"),
        "--input",
        bad.to_str().unwrap(),
        "--output",
        out2.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "row 2 has 2 values");
    assert!(!out2.exists());
    std::fs::write(&bad, "0.1\nabc\n").unwrap();
    let o = kiln(&[
        "rt-run",
        "--model",
        &rtneural("models/lstm.json"),
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "line 2, column 1");
    let o = kiln(&[
        "rt-run",
        "--model",
        &rtneural("models/bad_lstm.json"),
        "--input",
        &rtneural("test_data/lstm_x_python.csv"),
    ]);
    assert_clean_failure(&o, "layer 0 (lstm)");
}

#[test]
fn quantize_makes_an_int8_audio_net_and_reports_its_cost_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("lstm-q8.gguf");
    let report = dir.path().join("report.json");
    let x = rtneural("test_data/lstm_x_python.csv");
    let o = kiln(&[
        "quantize",
        &rtneural("models/lstm.json"),
        q8.to_str().unwrap(),
        "--type",
        "q8_0",
        "--frames",
        &x,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // One line per layer on stdout, the LSTM's weights INT8, a measured (non-zero) error.
    let table = stdout(&o);
    let lstm_line = table
        .lines()
        .find(|l| l.contains(" lstm "))
        .unwrap_or_else(|| panic!("no lstm line in {table}"));
    assert!(lstm_line.contains("q8_0"), "{lstm_line}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 4);
    assert_eq!(v["frames"], 100);
    let rel = v["output_error"]["relative_rms"].as_f64().unwrap();
    assert!(rel > 0.0 && rel < 0.05, "relative rms {rel}");

    // The INT8 file runs and stays close to the f32 reference outputs.
    let o = kiln(&["rt-run", "--model", q8.to_str().unwrap(), "--input", &x]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = std::fs::read_to_string(rtneural("test_data/lstm_y_python.csv")).unwrap();
    let got = stdout(&o);
    let (mut n, mut exact) = (0, 0);
    for (g, w) in got.lines().zip(want.lines()) {
        let (g, w): (f32, f32) = (g.parse().unwrap(), w.parse().unwrap());
        assert!((g - w).abs() < 1e-2, "{g} vs {w}");
        n += 1;
        exact += (g == w) as usize;
    }
    assert_eq!(n, want.lines().count());
    assert!(exact < n, "INT8 outputs should differ from f32 somewhere");

    // Types and options that make no sense for an audio net are refused.
    let out = dir.path().join("never.gguf");
    let o = kiln(&[
        "quantize",
        q8.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q4_0",
    ]);
    assert_clean_failure(&o, "q8_0 (INT8) or f32, not q4_0");
    let o = kiln(&[
        "quantize",
        &rtneural("models/lstm.json"),
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--imatrix",
        "x.gguf",
    ]);
    assert_clean_failure(&o, "--imatrix applies to LLM files");
    assert!(!out.exists());
}

#[test]
fn rt_bench_writes_the_example_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let o = kiln(&[
        "rt-bench",
        "--write-example",
        models.to_str().unwrap(),
        "--int8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json_path = dir.path().join("bench.json");
    let o = kiln(&[
        "rt-bench",
        "--models",
        models.to_str().unwrap(),
        "--iterations",
        "20",
        "--warmup",
        "2",
        "--period-us",
        "200",
        "--output",
        json_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v["pipeline"]["params"], 1_016_880);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 5);
    for m in models.iter().chain([&v["pipeline"]]) {
        for k in ["p50_us", "p99_us", "max_us", "memory_bytes"] {
            assert!(m[k].as_f64().is_some(), "{k} missing in {m}");
        }
    }
    let rt = &v["realtime"];
    assert_eq!(
        rt["frames_pushed"].as_u64().unwrap() + rt["frames_dropped"].as_u64().unwrap(),
        20
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = kiln(&["rt-bench", "--models", empty.to_str().unwrap()]);
    assert_clean_failure(&o, "no .json or .gguf");
}

#[test]
fn rt_bench_times_one_layer_per_sample_or_per_block_with_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut checksums = Vec::new();
    for block in ["1", "16"] {
        let json = dir.path().join(format!("layer-{block}.json"));
        let o = kiln(&[
            "rt-bench",
            "--layer",
            "lstm",
            "--in-size",
            "3",
            "--out-size",
            "5",
            "--seconds",
            "0.01",
            "--block",
            block,
            "--output",
            json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = stdout(&o);
        checksums.push(
            line.split("checksum ")
                .nth(1)
                .unwrap_or_default()
                .to_string(),
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(v["block"].as_u64(), Some(block.parse().unwrap()), "{v}");
        assert!(v["ns_per_sample"].as_f64().unwrap() > 0.0, "{v}");
    }
    // 480 frames through a stateful layer: blocks of 16 give the per-sample outputs.
    assert_eq!(checksums[0], checksums[1]);
    let o = kiln(&["rt-bench", "--layer", "dense", "--block", "0"]);
    assert_clean_failure(&o, "--block");
}

#[test]
fn rt_bench_runs_compile_time_sized_copies_of_the_benchmark_shapes() {
    let checksum = |args: &[&str]| -> f64 {
        let o = kiln(args);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = stdout(&o);
        let tail = line.split("checksum ").nth(1).unwrap_or_default();
        tail.trim().trim_end_matches(')').parse().unwrap()
    };
    for (kind, i, o) in [("dense", "24", "1"), ("conv1d", "4", "4")] {
        let base = [
            "rt-bench",
            "--layer",
            kind,
            "--in-size",
            i,
            "--out-size",
            o,
            "--seconds",
            "0.01",
        ];
        let run_time = checksum(&base);
        let fixed = checksum(&[&base[..], &["--fixed"]].concat());
        // The same layer and signal; only the order of the sums differs.
        assert!(
            (fixed - run_time).abs() <= 1e-4 * (1.0 + run_time.abs()),
            "{kind}: {fixed} vs {run_time}"
        );
    }
    let o = kiln(&["rt-bench", "--layer", "dense", "--in-size", "5", "--fixed"]);
    assert_clean_failure(&o, "benchmark shapes");
    let o = kiln(&[
        "rt-bench",
        "--layer",
        "dense",
        "--in-size",
        "4",
        "--out-size",
        "4",
        "--fixed",
        "--block",
        "4",
    ]);
    assert_clean_failure(&o, "one sample per call");
}
