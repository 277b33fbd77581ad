//! Keras 2 HDF5 weights (`model.save_weights('x.h5')`, Keras Applications'
//! `*_tf_dim_ordering_tf_kernels[_notop].h5`) and full-model files (`model.save('x.h5')`,
//! the same layout under `/model_weights`), read with the pure-Rust `hdf5-reader`.
//!
//! Layout: the root (or `/model_weights`) has the attribute `layer_names` (split into
//! `layer_names0`, `layer_names1`, … when it outgrows 64 KiB); each layer is a group with
//! the attribute `weight_names`, and each weight a dataset at `<layer>/<weight name>`, e.g.
//! `Conv1/Conv1/kernel:0`.
//!
//! Tensors come out in PyTorch's conventions, so that every zoo architecture loads them the
//! same way: `<layer>.weight` / `.bias` / `.running_mean` / `.running_var`, convolution
//! kernels HWIO → OIHW, depthwise kernels (kh, kw, C, multiplier) → (C·multiplier, 1, kh,
//! kw), dense kernels (in, out) → (out, in). A BatchNormalization without `gamma` (scale
//! off) or `beta` (center off) gets ones or zeros, as Keras computes with.

use std::collections::BTreeMap;

use hdf5_reader::Hdf5File;

use super::{DType, WeightTensor, WeightsError};

pub const MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// Reads every layer's weights. `hdf5-reader` parses untrusted bytes; a panic inside it is
/// caught and reported as a corrupt file rather than taking the program down.
pub fn read(bytes: &[u8]) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_unguarded(bytes))).unwrap_or_else(
        |_| {
            Err(WeightsError::Corrupt(
                "the HDF5 structure is damaged (the reader gave up)".into(),
            ))
        },
    )
}

fn corrupt(what: impl std::fmt::Display) -> WeightsError {
    WeightsError::Corrupt(format!("HDF5: {what}"))
}

fn read_unguarded(bytes: &[u8]) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    let file = Hdf5File::from_bytes(bytes).map_err(|e| {
        let msg = e.to_string();
        if bytes.len() < 512 || msg.contains("EOF") || msg.contains("bounds") {
            WeightsError::Truncated(format!("HDF5: {msg}"))
        } else {
            corrupt(msg)
        }
    })?;
    let root = file.root_group().map_err(corrupt)?;
    let (groups, _) = root.member_names().map_err(corrupt)?;
    let (base, prefix) = if groups.iter().any(|g| g == "model_weights") {
        (
            root.group("model_weights").map_err(corrupt)?,
            "/model_weights/",
        )
    } else {
        (root, "/")
    };
    let layer_names = string_list(|n| base.attribute(n), "layer_names")?.ok_or_else(|| {
        WeightsError::Unsupported(
            "an HDF5 file without Keras `layer_names`: not a Keras 2 weights or model file \
             (Keras 3 `.weights.h5` files are not read yet)"
                .into(),
        )
    })?;
    let mut layers = Vec::new();
    for layer in &layer_names {
        let g = base
            .group(layer)
            .map_err(|e| corrupt(format!("layer {layer}: {e}")))?;
        let names = string_list(|n| g.attribute(n), "weight_names")?.unwrap_or_default();
        let mut weights = Vec::new();
        for wname in names {
            let at = |e: hdf5_reader::error::Error| corrupt(format!("{layer}/{wname}: {e}"));
            let ds = file
                .dataset(&format!("{prefix}{layer}/{wname}"))
                .map_err(at)?;
            let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
            let (dtype, data): (DType, Vec<f32>) = match ds.dtype() {
                hdf5_reader::Datatype::FloatingPoint { size: 8, .. } => (
                    DType::F64,
                    ds.read_array::<f64>()
                        .map_err(at)?
                        .iter()
                        .map(|&v| v as f32)
                        .collect(),
                ),
                hdf5_reader::Datatype::FloatingPoint { size: 4, .. } => (
                    DType::F32,
                    ds.read_array::<f32>()
                        .map_err(at)?
                        .iter()
                        .copied()
                        .collect(),
                ),
                other => {
                    return Err(WeightsError::Unsupported(format!(
                        "{layer}/{wname} holds {other:?}, not 32- or 64-bit floats"
                    )));
                }
            };
            if data.len() != shape.iter().product::<usize>() {
                return Err(corrupt(format!("{layer}/{wname}: wrong number of values")));
            }
            weights.push(KerasWeight {
                name: wname,
                dtype,
                shape,
                data,
            });
        }
        layers.push((layer.clone(), weights));
    }
    to_pytorch_conventions(layers)
}

/// A string-list attribute, joined across Keras' `name0`, `name1`, … chunks.
fn string_list<E: std::fmt::Display>(
    attribute: impl Fn(&str) -> Result<hdf5_reader::Attribute, E>,
    name: &str,
) -> Result<Option<Vec<String>>, WeightsError> {
    if let Ok(a) = attribute(name) {
        return strings(&a, name).map(Some);
    }
    let mut all = Vec::new();
    for i in 0.. {
        match attribute(&format!("{name}{i}")) {
            Ok(a) => all.extend(strings(&a, name)?),
            Err(_) if i == 0 => return Ok(None),
            Err(_) => break,
        }
    }
    Ok(Some(all))
}

fn strings(a: &hdf5_reader::Attribute, name: &str) -> Result<Vec<String>, WeightsError> {
    // Layers without weights store an empty float array as their `weight_names`.
    if a.num_elements().unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    a.read_strings()
        .map_err(|e| corrupt(format!("attribute {name}: {e}")))
}

/// One weight of a Keras layer as stored (Keras layout).
struct KerasWeight {
    /// `Conv1/kernel:0`, `bn_Conv1/moving_mean:0`, …
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl KerasWeight {
    /// `kernel`, `depthwise_kernel`, `bias`, `gamma`, … (no scope, no `:0`).
    fn kind(&self) -> &str {
        let base = self.name.rsplit('/').next().unwrap_or(&self.name);
        base.split(':').next().unwrap_or(base)
    }
}

/// Permutes a row-major tensor: output axis `i` is input axis `perm[i]`.
fn permute(data: &[f32], shape: &[usize], perm: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut in_strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..n {
        out.push(data[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (out, out_shape)
}

fn to_pytorch_conventions(
    layers: Vec<(String, Vec<KerasWeight>)>,
) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    let mut out = BTreeMap::new();
    let mut put = |name: String, dtype, shape: Vec<usize>, data: Vec<f32>| {
        out.insert(
            name,
            WeightTensor {
                dtype,
                shape,
                data,
                strided: false,
            },
        );
    };
    for (layer, weights) in layers {
        let is_bn = weights
            .iter()
            .any(|w| matches!(w.kind(), "moving_mean" | "moving_variance"));
        let channels = weights
            .iter()
            .find(|w| w.kind() == "moving_mean")
            .map(|w| w.numel());
        for w in &weights {
            let (suffix, (data, shape)) = match (w.kind(), w.shape.len()) {
                ("kernel", 4) => ("weight", permute(&w.data, &w.shape, &[3, 2, 0, 1])),
                ("depthwise_kernel", 4) => {
                    // (kh, kw, C, m) → (C, m, kh, kw) → (C·m, 1, kh, kw)
                    let (d, s) = permute(&w.data, &w.shape, &[2, 3, 0, 1]);
                    ("weight", (d, vec![s[0] * s[1], 1, s[2], s[3]]))
                }
                ("kernel", 2) => ("weight", permute(&w.data, &w.shape, &[1, 0])),
                ("bias", _) => ("bias", (w.data.clone(), w.shape.clone())),
                ("gamma", _) if is_bn => ("weight", (w.data.clone(), w.shape.clone())),
                ("beta", _) if is_bn => ("bias", (w.data.clone(), w.shape.clone())),
                ("moving_mean", _) => ("running_mean", (w.data.clone(), w.shape.clone())),
                ("moving_variance", _) => ("running_var", (w.data.clone(), w.shape.clone())),
                (kind, rank) => {
                    return Err(WeightsError::Unsupported(format!(
                        "layer {layer}: weight {} ({kind}, rank {rank}) has no PyTorch counterpart here",
                        w.name
                    )));
                }
            };
            put(format!("{layer}.{suffix}"), w.dtype, shape, data);
        }
        if let (true, Some(c)) = (is_bn, channels) {
            if !weights.iter().any(|w| w.kind() == "gamma") {
                put(format!("{layer}.weight"), DType::F32, vec![c], vec![1.0; c]);
            }
            if !weights.iter().any(|w| w.kind() == "beta") {
                put(format!("{layer}.bias"), DType::F32, vec![c], vec![0.0; c]);
            }
        }
    }
    Ok(out)
}

impl KerasWeight {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutes_like_numpy_transpose() {
        // 2×3 → transpose
        let (d, s) = permute(&[1., 2., 3., 4., 5., 6.], &[2, 3], &[1, 0]);
        assert_eq!(s, vec![3, 2]);
        assert_eq!(d, vec![1., 4., 2., 5., 3., 6.]);
        // HWIO (1,1,2,3) → OIHW (3,2,1,1): element [0,0,i,o] goes to [o,i,0,0]
        let hwio: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let (d, s) = permute(&hwio, &[1, 1, 2, 3], &[3, 2, 0, 1]);
        assert_eq!(s, vec![3, 2, 1, 1]);
        assert_eq!(d, vec![0., 3., 1., 4., 2., 5.]);
    }
}
