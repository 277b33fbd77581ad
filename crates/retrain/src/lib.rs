//! retrain: transfer learning from pretrained ImageNet models, without Python.
//!
//! The pipeline, one module per step:
//! weights in ([`weights`]) → model zoo ([`zoo`]) → data ([`data`]) → outputs ([`outputs`]),
//! with [`inference`] running a model over images and [`cli`] the command-line program.

pub mod bundle;
pub mod data;
pub mod dataset;
pub mod inference;
pub mod metrics;
pub mod observe;
pub mod outputs;
pub mod plots;
pub mod rng;
pub mod strategy;
pub mod weights;
pub mod zoo;

/// The compute device: burn's pure-Rust CPU backend unless a GPU backend is compiled in
/// and selected with `BURN_DEVICE`.
pub fn default_device() -> burn::prelude::Device {
    burn::prelude::Device::default()
}

/// Keeps freed memory for reuse. Inference allocates and frees the same large activation
/// buffers batch after batch; glibc's malloc serves each with a fresh mmap by default and
/// returns it on free, so every batch page-faults its whole working set again (this halved
/// throughput on a 2-core machine). Call once at start-up, before threads are spawned.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
