//! Example pipeline.
