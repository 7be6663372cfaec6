//! Shared, read-only byte storage for weights: a memory-mapped file region or an owned buffer.

use std::sync::Arc;

/// Anything that can lend a stable, read-only byte slice for as long as it lives.
pub trait ByteSource: Send + Sync {
    fn bytes(&self) -> &[u8];

    /// Hints that the bytes were copied elsewhere and will rarely be read again, so resident
    /// memory backing them may be given back (a memory map drops its pages; the bytes stay
    /// readable). The default does nothing.
    fn release_resident(&self) {}
}

impl ByteSource for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A cheaply clonable handle to weight bytes, shared by every layer that reads them
/// (e.g. a tied embedding used as both input table and output projection).
#[derive(Clone)]
pub struct SharedBytes {
    source: Arc<dyn ByteSource>,
}

impl SharedBytes {
    pub fn new(source: Arc<dyn ByteSource>) -> SharedBytes {
        SharedBytes { source }
    }

    pub fn from_vec(v: Vec<u8>) -> SharedBytes {
        SharedBytes {
            source: Arc::new(v),
        }
    }

    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        self.source.bytes()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// See [`ByteSource::release_resident`].
    pub fn release_resident(&self) {
        self.source.release_resident()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}
