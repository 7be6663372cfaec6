//! `kiln tokenize`: token ids of a text on one line (control tokens in the text honoured; BOS
//! only if the model's metadata asks for it).

use crate::common::{resolve_model, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use kiln_gguf::GgufFile;
use kiln_tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Also print each token's text.
    #[arg(long)]
    pub pieces: bool,
}

pub fn main(args: TokenizeArgs) -> Result<()> {
    let path = resolve_model(args.model.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&args.prompt, true, true);
    let line: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    crate::common::print_stdout(&format!("{}\n", line.join(" ")))?;
    if args.pieces {
        for id in ids {
            eprintln!("{id:>8} {:?}", String::from_utf8_lossy(tok.token_bytes(id)));
        }
    }
    Ok(())
}
