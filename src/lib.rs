//! retrain: transfer learning from pretrained ImageNet models, without Python.
//!
//! The pipeline, one module per step:
//! weights in ([`weights`]) → model zoo ([`zoo`]) → data ([`data`]) → outputs ([`outputs`]),
//! with [`inference`] running a model over images and [`cli`] the command-line program.

pub mod cli;
pub mod data;
pub mod inference;
pub mod outputs;
pub mod weights;
pub mod zoo;

/// The compute device: burn's pure-Rust CPU backend unless a GPU backend is compiled in
/// and selected with `BURN_DEVICE`.
pub fn default_device() -> burn::prelude::Device {
    burn::prelude::Device::default()
}
