//! Weights in: reading pretrained weight files from any supported zoo format into one
//! neutral map of named tensors. Formats are detected by content, never by extension.
//!
//! A weights file is untrusted input: every reader here is bounded by the file's length,
//! refuses what it does not understand with an error, and never executes anything.

mod cntk;
pub(crate) mod keras;
pub mod onnx;
mod pickle;
mod safetensors_file;
mod tf_bundle;
mod tflite;
mod torch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use pickle::PickleError;

/// Each reader on its own, for the fuzz targets in `fuzz/` (feature `fuzzing`). Not a
/// stable API: [`Weights`] is how a program reads weights.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod readers {
    pub use super::keras::{read as keras_h5, read_keras_archive};
    pub use super::pickle::parse as pickle;
    pub use super::safetensors_file::read as safetensors;
    pub use super::tf_bundle::{BundleFiles, read as tf_bundle};
    pub use super::tflite::read as tflite;
    pub use super::torch::{read_legacy, read_zip};
}

/// Element type of a tensor as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// Converts one little-endian element to f32 (integers exactly where they fit).
    pub(crate) fn to_f32(self, b: &[u8]) -> f32 {
        match self {
            DType::F32 => f32::from_le_bytes(b.try_into().unwrap()),
            DType::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::F16 => half::f16::from_le_bytes(b.try_into().unwrap()).to_f32(),
            DType::BF16 => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32(),
            DType::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::I16 => i16::from_le_bytes(b.try_into().unwrap()) as f32,
            DType::I8 => b[0] as i8 as f32,
            DType::U8 => b[0] as f32,
            DType::Bool => (b[0] != 0) as u8 as f32,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).unwrap();
        write!(f, "{}", s.as_str().unwrap_or("?"))
    }
}

/// One tensor read from a file, converted to row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// The file stored it as a strided (non-contiguous) view.
    pub strided: bool,
}

impl WeightTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The container a weights file was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsFormat {
    /// torch.save of PyTorch 1.6+ (zip archive holding data.pkl).
    TorchZip,
    /// torch.save of PyTorch before 1.6 (a stream of pickles).
    TorchLegacy,
    Safetensors,
    /// Keras 2 HDF5 weights or full-model file, or Keras 3 `.weights.h5` (converted to
    /// PyTorch's conventions).
    KerasH5,
    /// Keras 3 `.keras` archive (its `model.weights.h5`).
    Keras,
    /// TensorFlow 2 checkpoint or SavedModel `variables/` (tensor bundle: `.index` + data
    /// shards), named by its object graph.
    TfCheckpoint,
    /// TensorFlow Lite flatbuffer: convolution and dense weights (BatchNorm folded in),
    /// dequantised from int8/uint8/float16.
    Tflite,
    /// ONNX model (`ModelProto`): the graph and its initializers.
    Onnx,
    /// CNTK 2 model (`Function.save`: a protobuf Dictionary): the graph and its parameters.
    CntkV2,
    /// CNTK 1 / BrainScript model (also CNTK 2's legacy format): the graph and its
    /// parameters.
    CntkV1,
}

impl fmt::Display for WeightsFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightsFormat::TorchZip => "torch.save zip (PyTorch >= 1.6)",
            WeightsFormat::TorchLegacy => "torch.save legacy (PyTorch < 1.6)",
            WeightsFormat::Safetensors => "safetensors",
            WeightsFormat::KerasH5 => "Keras HDF5 (.h5 / .weights.h5)",
            WeightsFormat::Keras => "Keras 3 archive (.keras)",
            WeightsFormat::TfCheckpoint => "TensorFlow checkpoint (.index + .data shards)",
            WeightsFormat::Tflite => "TensorFlow Lite (.tflite, BatchNorm folded)",
            WeightsFormat::Onnx => "ONNX model (.onnx)",
            WeightsFormat::CntkV2 => "CNTK v2 model (protobuf Dictionary)",
            WeightsFormat::CntkV1 => "CNTK v1 model (BrainScript network)",
        })
    }
}

/// Why a weights file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "unrecognised weights format (expected a torch.save .pt/.pth file, .safetensors, a Keras .h5/.keras, a TensorFlow checkpoint or SavedModel folder, a .tflite, an .onnx, a CNTK .model/.dnn)"
    )]
    UnknownFormat,
    #[error("weights file is truncated: {0}; download or copy it again")]
    Truncated(String),
    #[error("weights file is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported weights file: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Pickle(#[from] PickleError),
}

/// All tensors of a weights file, by name, with `module.` prefixes removed.
#[derive(Debug, Clone)]
pub struct Weights {
    pub format: WeightsFormat,
    pub source: Option<PathBuf>,
    /// SHA-256 of the bytes read (all files of a multi-file checkpoint, in order), hex.
    pub sha256: String,
    pub tensors: BTreeMap<String, WeightTensor>,
    /// The format folded every BatchNorm into the convolution before it (TFLite): the file
    /// has the convolution's bias and no BatchNorm tensors.
    pub batchnorm_folded: bool,
    /// Tensors a file of this format cannot hold, with why: (tensor name, explanation).
    pub absent: &'static [(&'static str, &'static str)],
    /// The file's own graph, for a format that holds one (ONNX, TFLite, a Keras full model):
    /// it runs as that graph.
    pub graph: Option<Box<crate::graph::Graph>>,
    /// Why a file that holds its architecture has no `graph` (a Keras config that cannot be
    /// translated): the weights are still there for `--model`.
    pub graph_refused: Option<String>,
}

impl Weights {
    /// Reads a weights file, detecting its format from its content. A TensorFlow checkpoint
    /// is named by its prefix, its `.index` file, or (SavedModel) its folder.
    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        if let Some(prefix) = tf_bundle::prefix_of(path) {
            let files = tf_bundle::BundleFiles::open(&prefix)?;
            let tensors = tf_bundle::read(&files)?;
            let mut h = Sha256::new();
            h.update(&files.index);
            files.shards.iter().for_each(|s| h.update(s));
            return Ok(Self {
                format: WeightsFormat::TfCheckpoint,
                source: Some(path.to_owned()),
                sha256: hex(&h.finalize()),
                tensors,
                batchnorm_folded: false,
                absent: &[],
                graph: None,
                graph_refused: None,
            });
        }
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut w = Self::from_bytes_in(&bytes, path.parent())?;
        w.source = Some(path.to_owned());
        Ok(w)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WeightsError> {
        Self::from_bytes_in(bytes, None)
    }

    /// Like [`from_bytes`](Self::from_bytes) for a file in `dir`, where an ONNX model's
    /// external data files are.
    fn from_bytes_in(bytes: &[u8], dir: Option<&Path>) -> Result<Self, WeightsError> {
        let format = detect(bytes)?;
        let (mut batchnorm_folded, mut absent) = (false, &[][..]);
        let (mut graph, mut graph_refused) = (None, None);
        let tensors = match format {
            WeightsFormat::TorchZip => torch::read_zip(bytes)?,
            WeightsFormat::TorchLegacy => torch::read_legacy(bytes)?,
            WeightsFormat::Safetensors => safetensors_file::read(bytes)?,
            WeightsFormat::KerasH5 | WeightsFormat::Keras => {
                let file = if format == WeightsFormat::Keras {
                    keras::read_keras_archive(bytes)?
                } else {
                    keras::read(bytes)?
                };
                let mut tensors = file.tensors;
                if let Some(config) = &file.config {
                    match keras::graph::translate(
                        config,
                        file.keras_version.as_deref(),
                        &mut tensors,
                    ) {
                        Ok(g) => graph = Some(Box::new(g)),
                        Err(e) => graph_refused = Some(e.to_string()),
                    }
                }
                tensors
            }
            WeightsFormat::Tflite => {
                batchnorm_folded = true;
                absent = tflite::ABSENT;
                let (tensors, g) = tflite::read(bytes)?;
                graph = Some(Box::new(g));
                tensors
            }
            WeightsFormat::Onnx => {
                let (tensors, g) = onnx::read(bytes, onnx::ExternalData { dir })?;
                graph = Some(Box::new(g));
                tensors
            }
            WeightsFormat::CntkV2 | WeightsFormat::CntkV1 => {
                let (tensors, g) = cntk::read(bytes, format)?;
                graph = Some(Box::new(g));
                tensors
            }
            WeightsFormat::TfCheckpoint => {
                return Err(WeightsError::Unsupported(
                    "a TensorFlow checkpoint index alone: load it by path, beside its .data shards"
                        .into(),
                ));
            }
        };
        Ok(Self {
            format,
            source: None,
            sha256: hex(&Sha256::digest(bytes)),
            tensors: strip_data_parallel_prefix(tensors),
            batchnorm_folded,
            absent,
            graph,
            graph_refused,
        })
    }

    /// No tensors at all (for counting an architecture's parameters).
    pub fn empty() -> Self {
        Self {
            format: WeightsFormat::Safetensors,
            source: None,
            sha256: hex(&Sha256::digest([])),
            tensors: BTreeMap::new(),
            batchnorm_folded: false,
            absent: &[],
            graph: None,
            graph_refused: None,
        }
    }

    pub fn get(&self, name: &str) -> Option<&WeightTensor> {
        self.tensors.get(name)
    }

    /// Why a tensor a model asked for is not in the file, when its format cannot hold it.
    pub fn hint_for_missing(&self, name: &str) -> Option<&'static str> {
        self.absent
            .iter()
            .find(|(tensor, _)| *tensor == name)
            .map(|(_, why)| *why)
    }

    /// Number of trainable values: tensors other than BatchNorm's running statistics and
    /// `num_batches_tracked`. (Integer tensors count only where they are quantised weights:
    /// the one integer buffer of the other formats is `num_batches_tracked`.)
    pub fn parameter_count(&self) -> usize {
        self.tensors
            .iter()
            .filter(|(k, t)| {
                (t.dtype.is_float() || self.format == WeightsFormat::Tflite)
                    && !k.ends_with(".running_mean")
                    && !k.ends_with(".running_var")
            })
            .map(|(_, t)| t.numel())
            .sum()
    }
}

/// Tells the container from the first bytes of the file.
pub fn detect(bytes: &[u8]) -> Result<WeightsFormat, WeightsError> {
    if bytes.starts_with(b"PK\x03\x04") {
        if keras::is_keras_archive(bytes) {
            return Ok(WeightsFormat::Keras);
        }
        return Ok(WeightsFormat::TorchZip);
    }
    if torch::is_legacy(bytes) {
        return Ok(WeightsFormat::TorchLegacy);
    }
    if bytes.starts_with(keras::MAGIC) {
        return Ok(WeightsFormat::KerasH5);
    }
    if tflite::looks_like(bytes) {
        return Ok(WeightsFormat::Tflite);
    }
    if tf_bundle::is_index(bytes) {
        return Ok(WeightsFormat::TfCheckpoint);
    }
    if safetensors_file::looks_like(bytes) {
        return Ok(WeightsFormat::Safetensors);
    }
    // Before ONNX: a v2 file's first field is a small version number too.
    if let Some(format) = cntk::detect(bytes) {
        return Ok(format);
    }
    if onnx::looks_like(bytes) {
        return Ok(WeightsFormat::Onnx);
    }
    if bytes.is_empty() {
        return Err(WeightsError::Truncated("the file is empty".into()));
    }
    Err(WeightsError::UnknownFormat)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `nn.DataParallel` saves every name under `module.`; the models know them without it.
fn strip_data_parallel_prefix(
    tensors: BTreeMap<String, WeightTensor>,
) -> BTreeMap<String, WeightTensor> {
    if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with("module.")) {
        tensors
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_owned(), v))
            .collect()
    } else {
        tensors
    }
}

pub use safetensors_file::write as write_safetensors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_explains_the_tensors_it_cannot_hold() {
        let tflite = Weights {
            format: WeightsFormat::Tflite,
            batchnorm_folded: true,
            absent: tflite::ABSENT,
            ..Weights::empty()
        };
        let why = tflite.hint_for_missing("normalization.mean").unwrap();
        assert!(why.starts_with("TFLite folds EfficientNet's input Normalization"));
        assert_eq!(tflite.hint_for_missing("stem_conv.weight"), None);
        assert_eq!(
            Weights::empty().hint_for_missing("normalization.mean"),
            None
        );
    }
}
