//! Zero-copy weight access: tensors of a memory-mapped GGUF file as shared byte handles.

use crate::ModelError;
use kiln_gguf::{GgufFile, TensorInfo};
use kiln_quant::QuantType;
use kiln_tensor::{ByteSource, SharedBytes};
use std::sync::Arc;

/// One tensor's bytes inside a shared GGUF mapping.
struct TensorBytes {
    file: Arc<GgufFile>,
    index: usize,
}

impl ByteSource for TensorBytes {
    fn bytes(&self) -> &[u8] {
        match self.file.tensors().get(self.index) {
            Some(info) => self.file.tensor_data(info),
            None => &[],
        }
    }

    fn release_resident(&self) {
        if let Some(info) = self.file.tensors().get(self.index) {
            self.file.release_tensor_pages(info);
        }
    }
}

/// Looks up tensors by name in a GGUF file and hands out typed, shape-checked views.
pub struct WeightMap {
    file: Arc<GgufFile>,
}

impl WeightMap {
    pub fn new(file: Arc<GgufFile>) -> WeightMap {
        WeightMap { file }
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn info(&self, name: &str) -> Result<(usize, &TensorInfo), ModelError> {
        self.file
            .tensors()
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    }

    /// The tensor's bytes, storage type and dims, after checking the dims equal `expected`.
    pub fn get(
        &self,
        name: &str,
        expected: &[u64],
    ) -> Result<(SharedBytes, QuantType), ModelError> {
        let (index, info) = self.info(name)?;
        if info.dims != expected {
            return Err(ModelError::TensorShape {
                name: name.into(),
                got: info.dims.clone(),
                expected: expected.to_vec(),
            });
        }
        let ty = QuantType::from_ggml_id(info.ggml_type.id()).ok_or_else(|| {
            ModelError::UnsupportedType {
                name: name.into(),
                ty: info.ggml_type.name().into(),
            }
        })?;
        let bytes = SharedBytes::new(Arc::new(TensorBytes {
            file: Arc::clone(&self.file),
            index,
        }));
        Ok((bytes, ty))
    }

    /// The dims of a tensor, if present.
    pub fn dims(&self, name: &str) -> Option<&[u64]> {
        self.file.tensor(name).map(|t| t.dims.as_slice())
    }

    /// A 1-D tensor dequantized to f32 (norm weights).
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let (bytes, ty) = self.get(name, &[len as u64])?;
        let mut out = vec![0.0; len];
        kiln_quant::dequantize_row(ty, bytes.as_slice(), &mut out).map_err(|source| {
            kiln_nn::NnError::Quant {
                layer: name.into(),
                source,
            }
        })?;
        Ok(out)
    }
}
