//! kiln-quant.
