//! f32 kernels used by the layers: norms, softmax, activations, dot products.
