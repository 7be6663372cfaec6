//! `MatmulObserver`: an optional hook that sees the input rows of every matmul of a forward
//! pass, by weight name (calibration collects per-channel mean squares through it).

use kiln_nn::Linear;

/// Receives each matmul input during a forward pass.
pub trait MatmulObserver: Send {
    /// `weights` are the names of the weights that multiply `x` (rows of `cols` values).
    fn observe(&mut self, weights: &[&str], x: &[f32], cols: usize);
}

/// Calls the observer, if any, with the names of `layers`.
#[inline]
pub(crate) fn observe(
    observer: &mut Option<Box<dyn MatmulObserver>>,
    layers: &[&Linear],
    x: &[f32],
    cols: usize,
) {
    if let Some(o) = observer.as_mut() {
        let names: Vec<&str> = layers.iter().map(|l| l.name()).collect();
        o.observe(&names, x, cols);
    }
}
