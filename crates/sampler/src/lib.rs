//! kiln-sampler.
