//! kiln-nn.
