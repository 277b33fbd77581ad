//! Keras weights, read with the pure-Rust `hdf5-reader`:
//!
//! - Keras 2 HDF5 weights (`model.save_weights('x.h5')`, Keras Applications'
//!   `*_tf_dim_ordering_tf_kernels[_notop].h5`) and full-model files (`model.save('x.h5')`,
//!   the same layout under `/model_weights`): the root has the attribute `layer_names`
//!   (split into `layer_names0`, `layer_names1`, … past 64 KiB); each layer is a group with
//!   the attribute `weight_names`, each weight a dataset at `<layer>/<weight name>`, e.g.
//!   `Conv1/Conv1/kernel:0`.
//! - Keras 3 `.weights.h5` (and `.keras`, a zip holding one as `model.weights.h5`):
//!   `/layers/<class>[_N]/vars/0..k`, the layer's own name in the `name` attribute of
//!   `vars` (group names follow creation order: `batch_normalization_10` sorts before
//!   `_2`, so only the attribute names a layer), the variables in the layer's order
//!   (Conv2D, DepthwiseConv2D, Dense: kernel, bias; BatchNormalization: gamma, beta,
//!   moving mean, moving variance).
//!
//! Tensors come out in PyTorch's conventions, so that every zoo architecture loads them the
//! same way: `<layer>.weight` / `.bias` / `.running_mean` / `.running_var`, convolution
//! kernels HWIO → OIHW, depthwise kernels (kh, kw, C, multiplier) → (C·multiplier, 1, kh,
//! kw), dense kernels (in, out) → (out, in). A BatchNormalization without `gamma` (scale
//! off) or `beta` (center off) gets ones or zeros, as Keras computes with.

pub(super) mod graph;

pub(crate) use graph::translate_value;

use std::collections::BTreeMap;

use hdf5_reader::Hdf5File;

use super::{DType, WeightTensor, WeightsError};

/// What a Keras file holds: its weights, and for a full model its architecture.
#[derive(Debug)]
pub struct KerasFile {
    pub tensors: BTreeMap<String, WeightTensor>,
    /// The model's config (`model_config` of an `.h5`, `config.json` of a `.keras`), JSON.
    pub config: Option<String>,
    /// The Keras version that wrote it (`2.15.0`, `3.6.0`), where the file says.
    pub keras_version: Option<String>,
}

pub const MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// Reads every layer's weights. `hdf5-reader` parses untrusted bytes; a panic inside it is
/// caught and reported as a corrupt file rather than taking the program down.
pub fn read(bytes: &[u8]) -> Result<KerasFile, WeightsError> {
    read_with(bytes, &Config::default())
}

fn read_with(bytes: &[u8], config: &Config) -> Result<KerasFile, WeightsError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_unguarded(bytes, config)
    }))
    .unwrap_or_else(|_| {
        Err(WeightsError::Corrupt(
            "the HDF5 structure is damaged (the reader gave up)".into(),
        ))
    })
}

fn corrupt(what: impl std::fmt::Display) -> WeightsError {
    WeightsError::Corrupt(format!("HDF5: {what}"))
}

/// What the model's config tells the weights reader: which BatchNormalizations lack `gamma`
/// or `beta` (a Keras 3 `.weights.h5` stores their variables by position only).
#[derive(Debug, Default)]
struct Config {
    /// Layer name → (center, scale), for every BatchNormalization in the config.
    batchnorms: BTreeMap<String, (bool, bool)>,
}

impl Config {
    fn of(json: Option<&str>) -> Self {
        let mut c = Self::default();
        if let Some(v) = json.and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()) {
            c.visit(&v, 0);
        }
        c
    }

    fn visit(&mut self, v: &serde_json::Value, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            serde_json::Value::Object(m) => {
                if m.get("class_name").and_then(|c| c.as_str()) == Some("BatchNormalization")
                    && let Some(cfg) = m.get("config")
                    && let Some(name) = cfg.get("name").and_then(|n| n.as_str())
                {
                    let flag = |k: &str| cfg.get(k).and_then(|b| b.as_bool()).unwrap_or(true);
                    self.batchnorms
                        .insert(name.to_owned(), (flag("center"), flag("scale")));
                }
                m.values().for_each(|x| self.visit(x, depth + 1));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| self.visit(x, depth + 1)),
            _ => {}
        }
    }
}

fn read_unguarded(bytes: &[u8], config: &Config) -> Result<KerasFile, WeightsError> {
    let file = Hdf5File::from_bytes(bytes).map_err(|e| {
        let msg = e.to_string();
        if bytes.len() < 512 || msg.contains("EOF") || msg.contains("bounds") {
            WeightsError::Truncated(format!("HDF5: {msg}"))
        } else {
            corrupt(msg)
        }
    })?;
    let root = file.root_group().map_err(corrupt)?;
    let attribute_string = |name: &str| root.attribute(name).ok()?.read_string().ok();
    let model_config = attribute_string("model_config");
    let keras_version = attribute_string("keras_version");
    let (groups, _) = root.member_names().map_err(corrupt)?;
    let (base, prefix) = if groups.iter().any(|g| g == "model_weights") {
        (
            root.group("model_weights").map_err(corrupt)?,
            "/model_weights/",
        )
    } else {
        (root, "/")
    };
    let Some(layer_names) = string_list(|n| base.attribute(n), "layer_names")? else {
        if groups.iter().any(|g| g == "layers") {
            let mut layers = Vec::new();
            read_keras3(&file, "/layers", config, 0, &mut layers)?;
            return Ok(KerasFile {
                tensors: to_pytorch_conventions(layers)?,
                config: model_config,
                keras_version,
            });
        }
        return Err(WeightsError::Unsupported(
            "an HDF5 file that is neither a Keras 2 weights/model file (no `layer_names`) \
             nor a Keras 3 `.weights.h5` (no `layers` group)"
                .into(),
        ));
    };
    let mut layers = Vec::new();
    for layer in &layer_names {
        // By path from the root: a Keras 2 layer name may hold `/` (DenseNet's
        // `conv1/conv`), which HDF5 stores as nested groups.
        let g = file
            .group(&format!("{prefix}{layer}"))
            .map_err(|e| corrupt(format!("layer {layer}: {e}")))?;
        let names = string_list(|n| g.attribute(n), "weight_names")?.unwrap_or_default();
        let mut weights = Vec::new();
        for wname in names {
            if wname
                .rsplit('/')
                .next()
                .is_some_and(|w| w.starts_with("count"))
            {
                continue; // Normalization's sample count: an integer, not used
            }
            let at = |e: hdf5_reader::error::Error| corrupt(format!("{layer}/{wname}: {e}"));
            let ds = file
                .dataset(&format!("{prefix}{layer}/{wname}"))
                .map_err(at)?;
            let (dtype, shape, data) = read_floats(&ds, &format!("{layer}/{wname}"))?;
            weights.push(KerasWeight {
                name: wname,
                dtype,
                shape,
                data,
            });
        }
        layers.extend(split_nested_model(layer, weights));
    }
    Ok(KerasFile {
        tensors: to_pytorch_conventions(layers)?,
        config: model_config,
        keras_version,
    })
}

/// A model used as a layer of another (a transfer-learning model: `MobileNetV2` inside a
/// `Functional` with a new head) is one entry of `layer_names` holding every inner layer's
/// weights, named `Conv1/kernel`, `bn_Conv1/gamma`, …: split it into those inner layers.
/// A plain layer's weights all share one scope and keep the layer's own name.
fn split_nested_model(layer: &str, weights: Vec<KerasWeight>) -> Vec<(String, Vec<KerasWeight>)> {
    let scope = |w: &KerasWeight| w.name.rsplit_once('/').map(|(s, _)| s.to_owned());
    let scopes: std::collections::BTreeSet<Option<String>> = weights.iter().map(scope).collect();
    if scopes.len() <= 1 || scopes.contains(&None) {
        return vec![(layer.to_owned(), weights)];
    }
    let mut inner: Vec<(String, Vec<KerasWeight>)> = Vec::new();
    for w in weights {
        let s = scope(&w).unwrap_or_default();
        // Keras 2 prefixes the inner layer with the nested model's name in some versions.
        let s = s
            .strip_prefix(&format!("{layer}/"))
            .map(str::to_owned)
            .unwrap_or(s);
        match inner.iter_mut().find(|(n, _)| *n == s) {
            Some((_, ws)) => ws.push(w),
            None => inner.push((s, vec![w])),
        }
    }
    inner
}

/// Keras 3 `.weights.h5`: one group per layer under `/layers`, variables by position; a
/// nested model's layers under its own `layers` group.
fn read_keras3(
    file: &Hdf5File,
    path: &str,
    config: &Config,
    depth: usize,
    layers: &mut Vec<(String, Vec<KerasWeight>)>,
) -> Result<(), WeightsError> {
    if depth > 32 {
        return Err(corrupt("models nested more than 32 deep"));
    }
    let layers_group = file.group(path).map_err(corrupt)?;
    let (groups, _) = layers_group.member_names().map_err(corrupt)?;
    for g in groups {
        let at = |e: hdf5_reader::error::Error| corrupt(format!("{path}/{g}: {e}"));
        let group = layers_group.group(&g).map_err(at)?;
        let (children, _) = group.member_names().map_err(at)?;
        if children.iter().any(|c| c == "layers") {
            read_keras3(
                file,
                &format!("{path}/{g}/layers"),
                config,
                depth + 1,
                layers,
            )?;
        }
        if !children.iter().any(|c| c == "vars") {
            continue;
        }
        let vars = group.group("vars").map_err(at)?;
        let (_, datasets) = vars.member_names().map_err(at)?;
        if datasets.is_empty() {
            continue; // a layer without weights (activation, add, pooling, …)
        }
        let name = vars
            .attribute("name")
            .ok()
            .and_then(|a| a.read_string().ok())
            .unwrap_or_else(|| g.clone());
        // The class, from the group name: `batch_normalization_10` → `batch_normalization`.
        let class = g
            .rsplit_once('_')
            .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
            .map_or(g.as_str(), |(c, _)| c);
        let bn_flags = config.batchnorms.get(&name).copied();
        let kinds: &[&str] = match (class, datasets.len()) {
            ("conv2d", _) | ("dense", _) => &["kernel", "bias"],
            ("depthwise_conv2d", _) => &["depthwise_kernel", "bias"],
            ("separable_conv2d", _) => &["depthwise_kernel", "pointwise_kernel", "bias"],
            ("p_re_lu", 1) => &["alpha"],
            ("batch_normalization", 4) => &["gamma", "beta", "moving_mean", "moving_variance"],
            ("batch_normalization", 3) => match bn_flags {
                Some((true, false)) => &["beta", "moving_mean", "moving_variance"],
                Some((false, true)) => &["gamma", "moving_mean", "moving_variance"],
                _ => {
                    return Err(WeightsError::Unsupported(format!(
                        "Keras 3 layer {name}: a BatchNormalization with 3 variables, without \
                         the model's config to tell whether it lacks gamma or beta (load the \
                         .keras file instead)"
                    )));
                }
            },
            ("batch_normalization", 2) => &["moving_mean", "moving_variance"],
            ("normalization", 3) => &["mean", "variance", "count"],
            ("layer_normalization", 2) => &["gamma", "beta"],
            ("layer_scale", 1) => &["gamma"],
            _ => {
                return Err(WeightsError::Unsupported(format!(
                    "Keras 3 layer {name} ({class}, {} variables) has no counterpart in \
                     retrain's zoo",
                    datasets.len()
                )));
            }
        };
        let mut weights = Vec::new();
        for i in 0..datasets.len() {
            let var = format!("{path}/{g}/vars/{i}");
            let kind = kinds.get(i).ok_or_else(|| {
                WeightsError::Unsupported(format!("layer {name}: unexpected variable {i}"))
            })?;
            if *kind == "count" {
                continue;
            }
            let ds = file.dataset(&var).map_err(at)?;
            let (dtype, shape, data) = read_floats(&ds, &format!("{name}/{kind}"))?;
            weights.push(KerasWeight {
                name: format!("{name}/{kind}"),
                dtype,
                shape,
                data,
            });
        }
        layers.push((name, weights));
    }
    Ok(())
}

/// A dataset's values as f32 (stored as 32- or 64-bit floats), with its shape.
fn read_floats(
    ds: &hdf5_reader::Dataset,
    what: &str,
) -> Result<(DType, Vec<usize>, Vec<f32>), WeightsError> {
    let at = |e: hdf5_reader::error::Error| corrupt(format!("{what}: {e}"));
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
                "{what} holds {other:?}, not 32- or 64-bit floats"
            )));
        }
    };
    if data.len() != shape.iter().product::<usize>() {
        return Err(corrupt(format!("{what}: wrong number of values")));
    }
    Ok((dtype, shape, data))
}

fn open_archive(bytes: &[u8]) -> Option<zip::ZipArchive<std::io::Cursor<&[u8]>>> {
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    zip::ZipArchive::with_config(config, std::io::Cursor::new(bytes)).ok()
}

/// A zip archive with a `model.weights.h5`: a Keras 3 `.keras` file.
pub fn is_keras_archive(bytes: &[u8]) -> bool {
    open_archive(bytes).is_some_and(|a| a.index_for_name("model.weights.h5").is_some())
}

/// Reads a `.keras` archive: its `config.json` and `metadata.json`, and the weights of its
/// `model.weights.h5`.
pub fn read_keras_archive(bytes: &[u8]) -> Result<KerasFile, WeightsError> {
    use std::io::Read;
    let mut archive = open_archive(bytes).ok_or_else(|| corrupt("unreadable .keras archive"))?;
    let mut member = |name: &str, required: bool| -> Result<Option<Vec<u8>>, WeightsError> {
        let mut f = match archive.by_name(name) {
            Ok(f) => f,
            Err(_) if !required => return Ok(None),
            Err(e) => {
                return Err(corrupt(format!(
                    "cannot open {name} in the .keras archive ({e})"
                )));
            }
        };
        if f.size() > bytes.len() as u64 * 1024 {
            return Err(corrupt(format!("{name} declares an impossible size")));
        }
        let mut out = Vec::with_capacity(f.size().min(1 << 30) as usize);
        f.read_to_end(&mut out)
            .map_err(|e| corrupt(format!("cannot unpack {name} ({e})")))?;
        Ok(Some(out))
    };
    let text = |b: Option<Vec<u8>>| b.and_then(|b| String::from_utf8(b).ok());
    let config = text(member("config.json", false)?);
    let keras_version = text(member("metadata.json", false)?)
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m.get("keras_version")?.as_str().map(str::to_owned));
    let inner = member("model.weights.h5", true)?.unwrap_or_default();
    let mut file = read_with(&inner, &Config::of(config.as_deref()))?;
    file.config = config;
    file.keras_version = keras_version;
    Ok(file)
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
pub(super) struct KerasWeight {
    /// `Conv1/kernel:0`, `bn_Conv1/moving_mean:0`, …
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `kernel`, `depthwise_kernel`, `bias`, `gamma`, … of a variable's stored name (no scope,
/// no `:0`).
fn variable_kind(name: &str) -> &str {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.split(':').next().unwrap_or(base)
}

/// Permutes a row-major tensor: output axis `i` is input axis `perm[i]`.
pub(super) fn permute(data: &[f32], shape: &[usize], perm: &[usize]) -> (Vec<f32>, Vec<usize>) {
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

/// How a Keras variable is laid out in PyTorch's conventions.
#[derive(Debug, Clone, Copy)]
enum Layout {
    AsIs,
    /// Output axis `i` is Keras' axis `perm[i]`.
    Permute(&'static [usize]),
    /// (kh, kw, C, m) → (C, m, kh, kw) → (C·m, 1, kh, kw).
    Depthwise,
}

impl Layout {
    fn shape(self, shape: &[usize]) -> Vec<usize> {
        match self {
            Layout::AsIs => shape.to_vec(),
            Layout::Permute(perm) => perm.iter().map(|&p| shape[p]).collect(),
            Layout::Depthwise => vec![shape[2] * shape[3], 1, shape[0], shape[1]],
        }
    }

    fn apply(self, data: &[f32], shape: &[usize]) -> Vec<f32> {
        match self {
            Layout::AsIs => data.to_vec(),
            Layout::Permute(perm) => permute(data, shape, perm).0,
            Layout::Depthwise => permute(data, shape, &[2, 3, 0, 1]).0,
        }
    }
}

/// The PyTorch-convention suffix and layout of a Keras variable of kind `kind` (`kernel`,
/// `moving_mean`, …) and rank `rank`; `separable`: its layer is a SeparableConv2D (a
/// depthwise then a pointwise convolution, one bias). `None`: no counterpart.
fn convention(kind: &str, rank: usize, separable: bool) -> Option<(&'static str, Layout)> {
    Some(match (kind, rank) {
        ("kernel", 4) => ("weight", Layout::Permute(&[3, 2, 0, 1])),
        ("pointwise_kernel", 4) => ("pointwise.weight", Layout::Permute(&[3, 2, 0, 1])),
        ("depthwise_kernel", 4) if separable => ("depthwise.weight", Layout::Depthwise),
        ("depthwise_kernel", 4) => ("weight", Layout::Depthwise),
        // PReLU's slopes, per element of an (h, w, c) map → (c, h, w).
        ("alpha", 3) => ("weight", Layout::Permute(&[2, 0, 1])),
        ("alpha", _) => ("weight", Layout::AsIs),
        ("kernel", 2) => ("weight", Layout::Permute(&[1, 0])),
        ("bias", _) => ("bias", Layout::AsIs),
        // BatchNormalization's, LayerNormalization's, ConvNeXt's LayerScale's (which a
        // legacy .h5 names by Keras' default, `variable`).
        ("gamma", _) => ("weight", Layout::AsIs),
        (kind, _) if is_unnamed(kind) => ("weight", Layout::AsIs),
        ("beta", _) => ("bias", Layout::AsIs),
        ("moving_mean", _) => ("running_mean", Layout::AsIs),
        ("moving_variance", _) => ("running_var", Layout::AsIs),
        // Normalization (EfficientNet's input): kept under its own names.
        ("mean", _) => ("mean", Layout::AsIs),
        ("variance", _) => ("variance", Layout::AsIs),
        _ => return None,
    })
}

/// The tensors a layer's Keras variables become, by PyTorch-convention name: for each
/// variable its (Keras name, shape) and where it goes; a BatchNormalization without
/// `gamma` or `beta` gets ones or zeros of its channel count, as Keras computes with.
/// Normalization's sample `count` is not a tensor here.
fn layer_conventions(
    layer: &str,
    variables: &[(&str, &[usize])],
) -> Result<Vec<Converted>, WeightsError> {
    let separable = variables
        .iter()
        .any(|(n, _)| variable_kind(n) == "pointwise_kernel");
    let mut out = Vec::new();
    for (i, &(name, shape)) in variables.iter().enumerate() {
        let k = variable_kind(name);
        if k == "count" {
            continue;
        }
        let Some((suffix, layout)) = convention(k, shape.len(), separable) else {
            return Err(WeightsError::Unsupported(format!(
                "layer {layer}: weight {name} ({k}, rank {}) has no PyTorch counterpart here",
                shape.len()
            )));
        };
        out.push(Converted {
            name: format!("{layer}.{suffix}"),
            shape: layout.shape(shape),
            source: Some((i, layout)),
        });
    }
    let is_bn = variables
        .iter()
        .any(|(n, _)| matches!(variable_kind(n), "moving_mean" | "moving_variance"));
    let channels = variables
        .iter()
        .find(|(n, _)| variable_kind(n) == "moving_mean")
        .map(|(_, s)| s.iter().product::<usize>());
    if let (true, Some(c)) = (is_bn, channels) {
        for (missing, suffix) in [("gamma", "weight"), ("beta", "bias")] {
            if !variables.iter().any(|(n, _)| variable_kind(n) == missing) {
                out.push(Converted {
                    name: format!("{layer}.{suffix}"),
                    shape: vec![c],
                    source: None,
                });
            }
        }
    }
    Ok(out)
}

/// One tensor in PyTorch's conventions: its name, shape, and the Keras variable (index in
/// the layer's list) and layout it comes from; `None`: a BatchNorm's implicit scale (ones,
/// `.weight`) or centre (zeros, `.bias`).
struct Converted {
    name: String,
    shape: Vec<usize>,
    source: Option<(usize, Layout)>,
}

/// Tensors by name with their shapes, in order.
pub type NamedShapes = Vec<(String, Vec<usize>)>;

/// The PyTorch-convention names and shapes of layers' Keras variables, given as (layer,
/// [(variable, Keras shape)]): what [`to_pytorch_conventions`] makes of a file holding
/// them, without their values; and which of those tensors are no Keras variable (a
/// BatchNormalization's implicit scale or centre).
#[allow(clippy::type_complexity)]
pub(crate) fn shapes_in_pytorch_conventions(
    layers: &[(String, Vec<(String, Vec<usize>)>)],
) -> Result<
    (
        Vec<(String, Vec<usize>)>,
        std::collections::BTreeSet<String>,
    ),
    WeightsError,
> {
    let mut out = Vec::new();
    let mut implicit = std::collections::BTreeSet::new();
    for (layer, variables) in layers {
        let vars: Vec<(&str, &[usize])> = variables
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        for c in layer_conventions(layer, &vars)? {
            if c.source.is_none() {
                implicit.insert(c.name.clone());
            }
            out.push((c.name, c.shape));
        }
    }
    Ok((out, implicit))
}

pub(super) fn to_pytorch_conventions(
    layers: Vec<(String, Vec<KerasWeight>)>,
) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    let mut out = BTreeMap::new();
    for (layer, weights) in layers {
        let vars: Vec<(&str, &[usize])> = weights
            .iter()
            .map(|w| (w.name.as_str(), w.shape.as_slice()))
            .collect();
        for c in layer_conventions(&layer, &vars)? {
            let (dtype, data) = match c.source {
                Some((i, layout)) => {
                    let w = &weights[i];
                    (w.dtype, layout.apply(&w.data, &w.shape))
                }
                None => {
                    let n = c.shape[0];
                    let fill = if c.name.ends_with(".weight") {
                        1.0
                    } else {
                        0.0
                    };
                    (DType::F32, vec![fill; n])
                }
            };
            out.insert(
                c.name,
                WeightTensor {
                    dtype,
                    shape: c.shape,
                    data,
                    strided: false,
                },
            );
        }
    }
    Ok(out)
}

/// A variable Keras named by its default (`variable`, `variable_3`): a layer's only weight
/// added without a name.
fn is_unnamed(kind: &str) -> bool {
    kind.strip_prefix("variable").is_some_and(|n| {
        n.is_empty()
            || n.strip_prefix('_')
                .is_some_and(|d| d.chars().all(|c| c.is_ascii_digit()))
    })
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
