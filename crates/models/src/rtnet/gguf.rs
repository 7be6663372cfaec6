//! GGUF storage of `RtNet` (architecture "rtnet").
use super::{RtNet, RtNetError};
use std::path::Path;
/// Loads an rtnet GGUF file.
pub fn load(path: &Path) -> Result<RtNet, RtNetError> {
    Err(RtNetError::Format(format!("{}: not yet", path.display())))
}
