//! `kiln chat`: an interactive conversation; each turn re-renders the chat template and the
//! session reuses the KV cache of everything already said.

use crate::common::{encode_prompt, load_engine, ContextArgs, ModelArgs, SamplingArgs};
use anyhow::{Context, Result};
use clap::Args;
use kiln_engine::GenerateOptions;
use kiln_tokenizer::{ChatMessage, ChatTemplate};
use std::io::{BufRead, Write};
use std::ops::ControlFlow;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message for the conversation (default: the template's own, if any).
    #[arg(long)]
    pub system: Option<String>,
    /// Print timings after every reply.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub ctx: ContextArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn main(args: ChatArgs) -> Result<()> {
    let engine = load_engine(&args.model)?;
    let template = ChatTemplate::from_tokenizer(engine.tokenizer());
    let mut session = engine.new_session(args.ctx.ctx, args.ctx.kv_type)?;
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let params = args.sampling.params();
    eprintln!(
        "kiln: chat ready (seed {}); /reset clears the conversation, /exit or end of input quits",
        params.seed
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.retain(|m| m.role == "system");
                session.clear();
                eprintln!("kiln: conversation cleared");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: input.to_string(),
        });
        let text = template.render(&messages, true)?;
        let prompt = encode_prompt(&engine, &text);
        if prompt.len() >= session.n_ctx() {
            messages.pop();
            eprintln!(
                "kiln: the conversation ({} tokens) no longer fits the context of {}; /reset to start over",
                prompt.len(),
                session.n_ctx()
            );
            continue;
        }
        let opts = GenerateOptions {
            max_tokens: args.sampling.max_tokens,
            sampling: kiln_sampler::SamplingParams {
                seed: params.seed.wrapping_add(messages.len() as u64),
                ..params.clone()
            },
        };
        let mut reply = String::new();
        let mut out = stdout.lock();
        let stats = engine.generate(&mut session, &prompt, &opts, |piece| {
            reply.push_str(piece);
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            ControlFlow::Continue(())
        })?;
        let _ = writeln!(out);
        if args.verbose {
            crate::run::print_timings(&stats);
        }
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: reply,
        });
    }
    Ok(())
}
