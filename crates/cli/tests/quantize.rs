//! `kiln quantize`, `kiln calibrate` and the perplexity quality flags as a user runs them:
//! the report table and JSON, an imatrix made by calibrate and used by quantize, and bad input
//! (unknown type, regex matching nothing, not GGUF, missing output directory) failing with a
//! clear message and no output file.

use kiln_models::tiny::{write_tiny_llama, TinySpec};
use std::path::Path;
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn calibrate_then_quantize_with_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, write_tiny_llama(&TinySpec::default()).unwrap()).unwrap();
    let text = dir.path().join("calib.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let imat = dir.path().join("imatrix.gguf");
    let o = kiln(&[
        "calibrate",
        "-m",
        m,
        "--text",
        text.to_str().unwrap(),
        "-c",
        "32",
        "--chunks",
        "2",
        "-t",
        "2",
        "-o",
        imat.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("q4.gguf");
    let report = dir.path().join("report.json");
    let o = kiln(&[
        "quantize",
        m,
        out.to_str().unwrap(),
        "--type",
        "q4_0",
        "--imatrix",
        imat.to_str().unwrap(),
        "--tensor-type",
        "ffn_down=q8_0",
        "--clip-percentile",
        "99.9",
        "--report",
        report.to_str().unwrap(),
        "-t",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("snr_db") && table.contains("total:"),
        "{table}"
    );
    assert!(stderr(&o).contains("warning:"), "re-quantization warns");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let tensors = json["tensors"].as_array().unwrap();
    assert!(tensors
        .iter()
        .any(|t| t["used_imatrix"] == true && t["final_type"] == "q4_0"));
    assert!(tensors
        .iter()
        .filter(|t| t["name"].as_str().unwrap().contains("ffn_down"))
        .all(|t| t["final_type"] == "q8_0"));
    assert!(json["compression_ratio"].as_f64().unwrap() > 1.0);

    // The output runs, and the KL gate compares it with the source.
    let o = kiln(&[
        "perplexity",
        "-m",
        out.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "32",
        "--kl-reference",
        m,
        "-t",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("KL divergence") && s.contains("same top token"),
        "{s}"
    );
}

#[test]
fn bad_input_fails_cleanly_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, write_tiny_llama(&TinySpec::default()).unwrap()).unwrap();
    let m = model.to_str().unwrap();
    let out = dir.path().join("out.gguf");
    let o = out.to_str().unwrap();
    let before = names(dir.path());
    fails_with(
        &kiln(&["quantize", m, o, "--type", "q3_xs"]),
        "unknown type",
    );
    fails_with(
        &kiln(&[
            "quantize",
            m,
            o,
            "--type",
            "q4_0",
            "--tensor-type",
            "nothing_here=q8_0",
        ]),
        "matches no",
    );
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not gguf").unwrap();
    fails_with(
        &kiln(&["quantize", junk.to_str().unwrap(), o, "--type", "q4_0"]),
        "GGUF",
    );
    std::fs::remove_file(&junk).unwrap();
    let missing = dir.path().join("missing/out.gguf");
    fails_with(
        &kiln(&["quantize", m, missing.to_str().unwrap(), "--type", "q4_0"]),
        "does not exist",
    );
    fails_with(
        &kiln(&["quantize", m, o, "--type", "q4_0", "--imatrix", m]),
        "not an importance matrix",
    );
    assert_eq!(names(dir.path()), before, "no partial output");
}
