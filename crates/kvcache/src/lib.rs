//! kiln-kvcache.
