//! retrain: transfer learning from pretrained ImageNet models, without Python.
//!
//! The pipeline, one module per step: model files in ([`weights`], and the zoo entries'
//! published weights found in caches or downloaded: [`hub`]) → architectures
//! ([`zoo`]) → images ([`data`], [`dataset`]) → running a model ([`inference`]) → reusing
//! it for new classes ([`strategy`], [`bundle`]) → files any tool reads ([`outputs`]).
//! Long runs report through an [`observe::Observer`] and stop through an
//! [`observe::Interrupter`]; the library never prints.
//!
//! Embed a folder of labelled images, then fit a probe for its classes and keep the
//! trained model in memory:
//!
//! ```
//! use retrain::inference::{self, RunOptions};
//! use retrain::observe::{Interrupter, Silent};
//! use retrain::strategy::{self, FitOptions, Strategy, Validation};
//! use retrain::{weights::Weights, zoo};
//! # let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
//! # let tmp = tempfile::tempdir()?;
//! # let data = tmp.path().join("data");
//! # for (class, files) in [("round", ["rgb.png", "rgb.bmp", "rgb.webp"]), ("square", ["gray.png", "cmyk.jpg", "palette.gif"])] {
//! #     std::fs::create_dir_all(data.join(class))?;
//! #     for f in files { std::fs::copy(fixtures.join("images").join(f), data.join(class).join(f))?; }
//! # }
//! # let model_json = fixtures.join("mobilenet_v2/model.json");
//! # let weights_file = fixtures.join("mobilenet_v2/weights.safetensors");
//! let device = retrain::default_device();
//! let spec = zoo::resolve(model_json.to_str().unwrap())?; // or a zoo name: "mobilenet_v2"
//! let model = zoo::Model::from_spec(&spec, &Weights::load(&weights_file)?, &device)?;
//!
//! // One vector per image (the classifier's input), written for numpy.
//! let images = retrain::data::collect_images(&[data.clone()])?;
//! let out = inference::run(&model.for_inference(), &images, &RunOptions::default(), &Silent, &device)?;
//! retrain::outputs::write_embeddings(&tmp.path().join("f.npy"), &out.paths, &out.features, out.dim)?;
//!
//! // A softmax head for the folder's classes.
//! let opts = FitOptions {
//!     strategy: Strategy::Probe { c: None, folds: 3 },
//!     val: Validation::Folder(data.clone()),
//!     ..FitOptions::new(spec, &weights_file, &data, tmp.path().join("bundle"))
//! };
//! let fitted = strategy::train_model(&opts, &Silent, &Interrupter::new(), &device)?;
//! let classifier = fitted.model(&device)?; // predicts "round" / "square"
//! assert_eq!(fitted.summary.classes, ["round", "square"]);
//! # let _ = classifier;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod bundle;
pub mod data;
pub mod dataset;
pub mod embed_job;
pub mod export;
pub mod graph;
pub mod hub;
pub mod inference;
pub mod kernels;
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
