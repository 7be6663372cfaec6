//! kiln-gguf.
