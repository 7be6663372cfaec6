//! kiln-models.
