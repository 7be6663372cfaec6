//! The `kiln` command: argument parsing and wiring of the library crates; exit codes.
#![forbid(unsafe_code)]

mod bench;
mod bench_serve;
mod calibrate;
mod chat;
mod common;
mod compare;
mod inspect;
mod perplexity;
mod pull;
mod quantize;
mod rt_bench;
mod rt_run;
mod run;
mod serve;
mod tokenize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Run, measure and shrink LLMs on ordinary CPUs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a known model into the model cache.
    Pull(pull::PullArgs),
    /// Generate text for one prompt (stdout: only the generated text).
    Run(run::RunArgs),
    /// Interactive multi-turn chat that keeps the KV cache between turns.
    Chat(chat::ChatArgs),
    /// Serve the model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(serve::ServeArgs),
    /// Print the token ids of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Perplexity of a text file (llama-perplexity protocol).
    Perplexity(perplexity::PerplexityArgs),
    /// Show a GGUF file's metadata and tensors.
    Inspect(inspect::InspectArgs),
    /// Measure prompt-processing and generation speed (llama-bench style).
    Bench(bench::BenchArgs),
    /// Load an OpenAI-compatible server and report latency percentiles and throughput.
    BenchServe(bench_serve::BenchServeArgs),
    /// Quantize a GGUF model with a per-tensor error report.
    Quantize(quantize::QuantizeArgs),
    /// Collect an importance matrix (imatrix GGUF) by running a model over a text.
    Calibrate(calibrate::CalibrateArgs),
    /// Compare benchmark JSON files (kiln bench, llama-bench -o json) side by side.
    Compare(compare::CompareArgs),
    /// Run a real-time audio net (RTNeural JSON or rtnet GGUF) over the frames of a CSV.
    RtRun(rt_run::RtRunArgs),
    /// Latency, throughput and memory of a chain of real-time audio nets.
    RtBench(rt_bench::RtBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pull(a) => pull::main(a),
        Command::Run(a) => run::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Tokenize(a) => tokenize::main(a),
        Command::Perplexity(a) => perplexity::main(a),
        Command::Inspect(a) => inspect::main(a),
        Command::Bench(a) => bench::main(a),
        Command::BenchServe(a) => bench_serve::main(a),
        Command::Compare(a) => compare::main(a),
        Command::Quantize(a) => quantize::main(a),
        Command::Calibrate(a) => calibrate::main(a),
        Command::RtRun(a) => rt_run::main(a),
        Command::RtBench(a) => rt_bench::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, each said once: library errors name their path
/// and include their cause (so they read well alone), which the chain would otherwise repeat
/// after the command's own context ("loading X: X: No such file …: No such file …").
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        let last = out.rsplit(' ').next().unwrap_or("");
        let text = match text.strip_prefix(last).and_then(|t| t.strip_prefix(": ")) {
            Some(rest) if !last.is_empty() => rest.to_string(),
            _ => text,
        };
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn error_chains_say_each_part_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let lib = anyhow::Error::new(io).context("/m.json: No such file");
        let e = lib.context("loading /m.json");
        assert_eq!(error_chain(&e), "loading /m.json: No such file");
        let plain = anyhow::anyhow!("bad").context("parsing x");
        assert_eq!(error_chain(&plain), "parsing x: bad");
    }
}
