//! `kiln run`: one prompt in, generated text streamed to stdout, timings on stderr.

use crate::common::{encode_prompt, load_engine, ContextArgs, ModelArgs, SamplingArgs};
use anyhow::{Context, Result};
use clap::Args;
use kiln_engine::{GenerateOptions, GenerationStats};
use kiln_tokenizer::{ChatMessage, ChatTemplate};
use std::io::Write;
use std::ops::ControlFlow;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (one user turn, unless --raw).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Feed the prompt as-is: plain continuation, no chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub ctx: ContextArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn main(args: RunArgs) -> Result<()> {
    let engine = load_engine(&args.model)?;
    let text = if args.raw {
        args.prompt.clone()
    } else {
        let template = ChatTemplate::from_tokenizer(engine.tokenizer());
        template
            .render(
                &[ChatMessage {
                    role: "user".into(),
                    content: args.prompt.clone(),
                }],
                true,
            )
            .context("rendering the chat template")?
    };
    let prompt = encode_prompt(&engine, &text);
    let mut session = engine.new_session(args.ctx.ctx, args.ctx.kv_type)?;
    let params = args.sampling.params();
    eprintln!(
        "kiln: prompt {} tokens, seed {}, context {}",
        prompt.len(),
        params.seed,
        session.n_ctx()
    );
    let opts = GenerateOptions {
        max_tokens: args.sampling.max_tokens,
        sampling: params,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    let stats = engine.generate(&mut session, &prompt, &opts, |piece| {
        match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = write_error {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    let _ = writeln!(out);
    print_timings(&stats);
    Ok(())
}

pub fn print_timings(stats: &GenerationStats) {
    eprintln!(
        "kiln: prompt {} tokens ({} cached) {:.1} tok/s | generation {} tokens {:.1} tok/s | stop: {:?}",
        stats.prompt_tokens,
        stats.cached_tokens,
        stats.prompt_tokens_per_second(),
        stats.generated_tokens,
        stats.generation_tokens_per_second(),
        stats.stop,
    );
}
