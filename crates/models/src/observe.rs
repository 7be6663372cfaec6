//! `MatmulObserver`: an optional hook that sees the input rows of every matmul of a forward
//! pass, by weight name (calibration collects per-channel mean squares through it).

/// Receives each matmul input during a forward pass.
pub trait MatmulObserver: Send {
    /// `weights` are the names of the weights that multiply `x` (rows of `cols` values).
    fn observe(&mut self, weights: &[&str], x: &[f32], cols: usize);
}

/// Calls the observer, if any, with the names of the weights that multiply `x`.
#[inline]
pub(crate) fn observe<'a>(
    observer: &mut Option<Box<dyn MatmulObserver>>,
    weights: impl IntoIterator<Item = &'a str>,
    x: &[f32],
    cols: usize,
) {
    if let Some(o) = observer.as_mut() {
        let names: Vec<&str> = weights.into_iter().collect();
        o.observe(&names, x, cols);
    }
}
