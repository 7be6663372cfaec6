//! kiln-tokenizer.
