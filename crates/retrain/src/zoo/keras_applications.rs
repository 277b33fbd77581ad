//! Keras Applications by their architecture as Keras itself writes it: every application
//! the zoo does not write by hand (`keras.rs`) is held as the model config Keras' own
//! `keras.applications` code produces, with and without top, and the shapes of its
//! variables (`keras_applications/<entry>.json.xz`, made by
//! `scripts/make_keras_applications.py`). A weights file of one of them (Keras 2 `.h5`,
//! Keras 3 `.weights.h5`, a TensorFlow checkpoint read into Keras' layer names) holds
//! no architecture of its own; it runs on the graph that the Keras full-model builder
//! (`weights/keras/graph.rs`) makes of the entry's config, its tensors bound by layer name.
//!
//! Until a weights file is read, an entry is described from its variables alone (parameters,
//! feature width, whether a file fits it): the graph is built only with the weights, since
//! the translator takes its shapes from them. [`KerasApplicationConfig::materialise`] turns
//! an entry and a file into the [`GraphConfig`] every command then runs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::family::{ClassifierSpec, Family, StageInfo};
use super::layers::BnSpec;
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, PixelScaling, Preprocess, ZooEntry};
use crate::graph::GraphConfig;
use crate::hub::Published;
use crate::weights::{WeightTensor, Weights};

/// One zoo entry: its name, the Keras class, the image size its weights were trained at,
/// the pixel scaling of its `preprocess_input`, and its architecture file.
struct Entry {
    name: &'static str,
    origin: &'static str,
    size: usize,
    scaling: PixelScaling,
    xz: &'static [u8],
}

macro_rules! entries {
    ($($name:literal $class:literal $size:literal $scaling:ident;)*) => {
        &[$(Entry {
            name: $name,
            origin: concat!("Keras Applications (", $class, ")"),
            size: $size,
            scaling: PixelScaling::$scaling,
            xz: include_bytes!(concat!("keras_applications/", $name, ".json.xz")),
        },)*]
    };
}

/// Keras' `preprocess_input` modes: `caffe` (VGG, ResNet), `tf` (−1..1: Xception,
/// Inception, ResNetV2, NASNet), `torch` (DenseNet); models that scale their own input
/// (MobileNetV3, EfficientNet, EfficientNetV2, ConvNeXt) take 0..255 pixels (`Raw`).
const ENTRIES: &[Entry] = entries! {
    "keras_xception" "Xception" 299 Tf;
    "keras_vgg19" "VGG19" 224 Caffe;
    "keras_resnet101" "ResNet101" 224 Caffe;
    "keras_resnet152" "ResNet152" 224 Caffe;
    "keras_resnet50_v2" "ResNet50V2" 224 Tf;
    "keras_resnet101_v2" "ResNet101V2" 224 Tf;
    "keras_resnet152_v2" "ResNet152V2" 224 Tf;
    "keras_inception_v3" "InceptionV3" 299 Tf;
    "keras_inception_resnet_v2" "InceptionResNetV2" 299 Tf;
    "keras_mobilenet_v3_small" "MobileNetV3Small" 224 Raw;
    "keras_mobilenet_v3_small_075" "MobileNetV3Small, alpha 0.75" 224 Raw;
    "keras_mobilenet_v3_small_minimalistic" "MobileNetV3Small, minimalistic" 224 Raw;
    "keras_mobilenet_v3_large" "MobileNetV3Large" 224 Raw;
    "keras_mobilenet_v3_large_075" "MobileNetV3Large, alpha 0.75" 224 Raw;
    "keras_mobilenet_v3_large_minimalistic" "MobileNetV3Large, minimalistic" 224 Raw;
    "keras_densenet121" "DenseNet121" 224 Torch;
    "keras_densenet169" "DenseNet169" 224 Torch;
    "keras_densenet201" "DenseNet201" 224 Torch;
    "keras_nasnet_mobile" "NASNetMobile" 224 Tf;
    "keras_nasnet_large" "NASNetLarge" 331 Tf;
    "keras_efficientnet_b1" "EfficientNetB1" 240 Raw;
    "keras_efficientnet_b2" "EfficientNetB2" 260 Raw;
    "keras_efficientnet_b3" "EfficientNetB3" 300 Raw;
    "keras_efficientnet_b4" "EfficientNetB4" 380 Raw;
    "keras_efficientnet_b5" "EfficientNetB5" 456 Raw;
    "keras_efficientnet_b6" "EfficientNetB6" 528 Raw;
    "keras_efficientnet_b7" "EfficientNetB7" 600 Raw;
    "keras_efficientnet_v2_b0" "EfficientNetV2B0" 224 Raw;
    "keras_efficientnet_v2_b1" "EfficientNetV2B1" 240 Raw;
    "keras_efficientnet_v2_b2" "EfficientNetV2B2" 260 Raw;
    "keras_efficientnet_v2_b3" "EfficientNetV2B3" 300 Raw;
    "keras_efficientnet_v2_s" "EfficientNetV2S" 384 Raw;
    "keras_efficientnet_v2_m" "EfficientNetV2M" 480 Raw;
    "keras_efficientnet_v2_l" "EfficientNetV2L" 480 Raw;
    "keras_convnext_tiny" "ConvNeXtTiny" 224 Raw;
    "keras_convnext_small" "ConvNeXtSmall" 224 Raw;
    "keras_convnext_base" "ConvNeXtBase" 224 Raw;
    "keras_convnext_large" "ConvNeXtLarge" 224 Raw;
    "keras_convnext_xlarge" "ConvNeXtXLarge" 224 Raw;
};

/// The ImageNet weights (with top) Keras publishes for an entry: the file name `get_file`
/// caches it under, its URL (relative to the Keras Applications bucket unless absolute) and
/// its `file_hash`, as `keras/src/applications/<family>.py` gives them.
fn keras_weights(name: &str) -> Option<Published> {
    let (file, url, hash) = match name {
        "keras_xception" => (
            "xception_weights_tf_dim_ordering_tf_kernels.h5",
            "xception/",
            "0a58e3b7378bc2990ea3b43d5981f1f6",
        ),
        "keras_vgg19" => (
            "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "vgg19/",
            "cbe5617147190e668d6c5d5026f83318",
        ),
        "keras_resnet101" => (
            "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet/",
            "f1aeb4b969a6efcfb50fad2f0c20cfc5",
        ),
        "keras_resnet152" => (
            "resnet152_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet/",
            "100835be76be38e30d865e96f2aaae62",
        ),
        "keras_resnet50_v2" => (
            "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet/",
            "3ef43a0b657b3be2300d5770ece849e0",
        ),
        "keras_resnet101_v2" => (
            "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet/",
            "6343647c601c52e1368623803854d971",
        ),
        "keras_resnet152_v2" => (
            "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet/",
            "a49b44d1979771252814e80f8ec446f9",
        ),
        "keras_inception_v3" => (
            "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "inception_v3/",
            "9a0d58056eeedaa3f26cb7ebd46da564",
        ),
        "keras_inception_resnet_v2" => (
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
            "inception_resnet_v2/",
            "e693bd0210a403b3192acc6073ad2e96",
        ),
        "keras_mobilenet_v3_small" => (
            "weights_mobilenet_v3_small_224_1.0_float.h5",
            "mobilenet_v3/",
            "8768d4c2e7dee89b9d02b2d03d65d862",
        ),
        "keras_mobilenet_v3_small_075" => (
            "weights_mobilenet_v3_small_224_0.75_float.h5",
            "mobilenet_v3/",
            "cb65d4e5be93758266aa0a7f2c6708b7",
        ),
        "keras_mobilenet_v3_small_minimalistic" => (
            "weights_mobilenet_v3_small_minimalistic_224_1.0_float.h5",
            "mobilenet_v3/",
            "99cd97fb2fcdad2bf028eb838de69e37",
        ),
        "keras_mobilenet_v3_large" => (
            "weights_mobilenet_v3_large_224_1.0_float.h5",
            "mobilenet_v3/",
            "59e551e166be033d707958cf9e29a6a7",
        ),
        "keras_mobilenet_v3_large_075" => (
            "weights_mobilenet_v3_large_224_0.75_float.h5",
            "mobilenet_v3/",
            "765b44a33ad4005b3ac83185abf1d0eb",
        ),
        "keras_mobilenet_v3_large_minimalistic" => (
            "weights_mobilenet_v3_large_minimalistic_224_1.0_float.h5",
            "mobilenet_v3/",
            "675e7b876c45c57e9e63e6d90a36599c",
        ),
        "keras_densenet121" => (
            "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
            "densenet/",
            "9d60b8095a5708f2dcce2bca79d332c7",
        ),
        "keras_densenet169" => (
            "densenet169_weights_tf_dim_ordering_tf_kernels.h5",
            "densenet/",
            "d699b8f76981ab1b30698df4c175e90b",
        ),
        "keras_densenet201" => (
            "densenet201_weights_tf_dim_ordering_tf_kernels.h5",
            "densenet/",
            "1ceb130c1ea1b78c3bf6114dbdfd8807",
        ),
        // NASNet's files are cached under another name than the URL's.
        "keras_nasnet_mobile" => (
            "nasnet_mobile.h5",
            "nasnet/NASNet-mobile.h5",
            "020fb642bf7360b370c678b08e0adf61",
        ),
        "keras_nasnet_large" => (
            "nasnet_large.h5",
            "nasnet/NASNet-large.h5",
            "11577c9a518f0070763c2b964a382f17",
        ),
        // EfficientNet's files are in another bucket.
        "keras_efficientnet_b1" => (
            "efficientnetb1.h5",
            EFFICIENTNET,
            "1d254153d4ab51201f1646940f018540",
        ),
        "keras_efficientnet_b2" => (
            "efficientnetb2.h5",
            EFFICIENTNET,
            "b15cce36ff4dcbd00b6dd88e7857a6ad",
        ),
        "keras_efficientnet_b3" => (
            "efficientnetb3.h5",
            EFFICIENTNET,
            "ffd1fdc53d0ce67064dc6a9c7960ede0",
        ),
        "keras_efficientnet_b4" => (
            "efficientnetb4.h5",
            EFFICIENTNET,
            "18c95ad55216b8f92d7e70b3a046e2fc",
        ),
        "keras_efficientnet_b5" => (
            "efficientnetb5.h5",
            EFFICIENTNET,
            "ace28f2a6363774853a83a0b21b9421a",
        ),
        "keras_efficientnet_b6" => (
            "efficientnetb6.h5",
            EFFICIENTNET,
            "165f6e37dce68623721b423839de8be5",
        ),
        "keras_efficientnet_b7" => (
            "efficientnetb7.h5",
            EFFICIENTNET,
            "8c03f828fec3ef71311cd463b6759d99",
        ),
        "keras_efficientnet_v2_b0" => (
            "efficientnetv2-b0.h5",
            "efficientnet_v2/",
            "21ecbf6da12460d5c40bb2f29ceb2188",
        ),
        "keras_efficientnet_v2_b1" => (
            "efficientnetv2-b1.h5",
            "efficientnet_v2/",
            "069f0534ff22adf035c89e2d9547a9dc",
        ),
        "keras_efficientnet_v2_b2" => (
            "efficientnetv2-b2.h5",
            "efficientnet_v2/",
            "424e49f28180edbde1e94797771950a7",
        ),
        "keras_efficientnet_v2_b3" => (
            "efficientnetv2-b3.h5",
            "efficientnet_v2/",
            "1f1fc43bd98a6e4fd8fdfd551e02c7a0",
        ),
        "keras_efficientnet_v2_s" => (
            "efficientnetv2-s.h5",
            "efficientnet_v2/",
            "e1d88a8495beba45748fedd0cecbe016",
        ),
        "keras_efficientnet_v2_m" => (
            "efficientnetv2-m.h5",
            "efficientnet_v2/",
            "a3bf6aa3276309f4fc6a34aa114c95cd",
        ),
        "keras_efficientnet_v2_l" => (
            "efficientnetv2-l.h5",
            "efficientnet_v2/",
            "27e6d408b53c7ebc868fefa357689935",
        ),
        // ConvNeXt publishes SHA-256s.
        "keras_convnext_tiny" => (
            "convnext_tiny.h5",
            "convnext/",
            "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
        ),
        "keras_convnext_small" => (
            "convnext_small.h5",
            "convnext/",
            "ce1277d8f1ee5a0ef0e171469089c18f5233860ceaf9b168049cb9263fd7483c",
        ),
        "keras_convnext_base" => (
            "convnext_base.h5",
            "convnext/",
            "52cbb006d3dadd03f6e095a8ca1aca47aecdd75acb4bc74bce1f5c695d0086e6",
        ),
        "keras_convnext_large" => (
            "convnext_large.h5",
            "convnext/",
            "070c5ed9ed289581e477741d3b34beffa920db8cf590899d6d2c67fba2a198a6",
        ),
        "keras_convnext_xlarge" => (
            "convnext_xlarge.h5",
            "convnext/",
            "c1f5ccab661354fc3a79a10fa99af82f0fbf10ec65cb894a3ae0815f17a889ee",
        ),
        _ => return None,
    };
    let url = if url.starts_with("https://") {
        format!("{url}{file}")
    } else if url.ends_with('/') {
        format!("{}{url}{file}", super::keras::KERAS_WEIGHTS)
    } else {
        format!("{}{url}", super::keras::KERAS_WEIGHTS)
    };
    Some(Published::keras(file, &url, hash))
}

/// EfficientNet's own bucket (`efficientnet.py`'s `BASE_WEIGHTS_PATH`).
const EFFICIENTNET: &str = "https://storage.googleapis.com/keras-applications/";

pub use crate::weights::keras::NamedShapes;

/// Layers' variables as Keras holds them: (layer, [(variable, Keras shape)]).
pub type Variables = Vec<(String, NamedShapes)>;

/// A Keras model, with and without its top: the configs `model.to_json()` wrote and the
/// variables of each, as the zoo's architecture files hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub top: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notop: Option<Json>,
    pub weights: VariantVariables,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantVariables {
    pub top: Variables,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notop: Option<Variables>,
}

const NO_BASE: &str = "the architecture has no variant without top";

impl Architecture {
    /// The config of the model with or without its top.
    fn config(&self, top: bool) -> Result<&Json, String> {
        if top {
            Ok(&self.top)
        } else {
            self.notop.as_ref().ok_or_else(|| NO_BASE.to_owned())
        }
    }
}

impl VariantVariables {
    /// The variables of the model with or without its top.
    fn of(&self, top: bool) -> Result<&Variables, String> {
        if top {
            Ok(&self.top)
        } else {
            self.notop.as_ref().ok_or_else(|| NO_BASE.to_owned())
        }
    }
}

/// Translates a Keras config into the runtime's graph, the shapes (and small values) of
/// its variables given under the config's names.
fn translate(
    config: &Json,
    tensors: &mut BTreeMap<String, WeightTensor>,
) -> Result<crate::graph::Graph, String> {
    let version = config.get("keras_version").and_then(Json::as_str);
    crate::weights::keras::translate_value(config, version, tensors).map_err(|e| e.to_string())
}

/// A Keras Application by its zoo entry; `architecture` replaces the entry's own (a reduced
/// or custom variant described in a model spec file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KerasApplicationConfig {
    pub application: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Box<Architecture>>,
}

/// A variant's tensors in PyTorch's conventions, and which of them are not trained.
#[derive(Debug)]
struct Described {
    /// (name, shape) in the order Keras holds them.
    tensors: NamedShapes,
    /// Tensors that are no Keras variable: a BatchNormalization's scale or centre where it
    /// has none (`scale=False`: InceptionV3), ones or zeros. Keras does not count them.
    implicit: std::collections::BTreeSet<String>,
    /// The classifier's parameter prefix (the last layer with a kernel), for the top.
    classifier: Option<String>,
    feature_dim: usize,
    /// Normalization layers whose statistics are variables (each also counts its samples).
    adapted_normalizations: usize,
}

fn is_statistic(name: &str) -> bool {
    [".running_mean", ".running_var", ".mean", ".variance"]
        .iter()
        .any(|s| name.ends_with(s))
}

impl Described {
    fn of(vars: &Variables, top: bool) -> Result<Self, String> {
        let (tensors, implicit) = crate::weights::keras::shapes_in_pytorch_conventions(vars)
            .map_err(|e| e.to_string())?;
        let kernel = |layer: &str| {
            tensors
                .iter()
                .find(|(n, _)| *n == format!("{layer}.weight"))
                .map(|(_, s)| s.clone())
        };
        let (classifier, feature_dim) = if top {
            let (layer, shape) = vars
                .iter()
                .rev()
                .find_map(|(l, _)| kernel(l).map(|s| (l.clone(), s)))
                .ok_or("the model has no layer with weights")?;
            (Some(layer), shape.get(1).copied().unwrap_or(0))
        } else {
            // The last layer's per-channel tensors (a bias, a BatchNorm's): the channels of
            // the map the features are pooled from.
            let width = tensors
                .iter()
                .rev()
                .find(|(_, s)| s.len() == 1)
                .map_or(0, |(_, s)| s[0]);
            (None, width)
        };
        let adapted_normalizations = vars
            .iter()
            .filter(|(_, v)| v.iter().any(|(k, _)| k == "count"))
            .count();
        Ok(Self {
            tensors,
            implicit,
            classifier,
            feature_dim,
            adapted_normalizations,
        })
    }
}

fn entry(name: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.name == name)
}

/// A zoo entry's architecture file, decompressed.
fn decompressed(name: &str) -> Result<(&'static Entry, Vec<u8>), String> {
    let e = entry(name).ok_or_else(|| format!("`{name}` is not a Keras Application of the zoo"))?;
    let mut text = Vec::new();
    lzma_rs::xz_decompress(&mut std::io::Cursor::new(e.xz), &mut text)
        .map_err(|err| format!("the architecture of {name} is damaged: {err}"))?;
    Ok((e, text))
}

/// The architecture of a zoo entry, parsed anew: its configs are large (tens of MB as JSON
/// values) and wanted only while a graph is built.
fn embedded(name: &str) -> Result<Architecture, String> {
    let (_, text) = decompressed(name)?;
    serde_json::from_slice(&text)
        .map_err(|err| format!("the architecture of {name} is damaged: {err}"))
}

/// The variables of a zoo entry (its configs skipped), read once per process: what
/// describing, counting and matching files need.
fn embedded_variables(name: &str) -> Result<Arc<VariantVariables>, String> {
    #[derive(Deserialize)]
    struct VariablesOnly {
        weights: VariantVariables,
    }
    static CACHE: OnceLock<Mutex<BTreeMap<&'static str, Arc<VariantVariables>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().map_err(|_| "poisoned")?.get(name) {
        return Ok(v.clone());
    }
    let (e, text) = decompressed(name)?;
    let only: VariablesOnly = serde_json::from_slice(&text)
        .map_err(|err| format!("the architecture of {name} is damaged: {err}"))?;
    let v = Arc::new(only.weights);
    cache
        .lock()
        .map_err(|_| "poisoned")?
        .insert(e.name, v.clone());
    Ok(v)
}

/// Layer names as Keras 2 (the official weight files) and Keras 3 (the architectures here)
/// write them differ in case and separators: DenseNet's `conv1/conv` is `conv1_conv`,
/// MobileNetV3's `expanded_conv/depthwise/BatchNorm` is `expanded_conv_depthwise_bn`.
/// Names compare lower-cased, `/BatchNorm` read as `_bn` and `/` as `_`.
fn loose(name: &str) -> String {
    name.to_lowercase()
        .replace("/batchnorm", "_bn")
        .replace('/', "_")
}

impl KerasApplicationConfig {
    pub fn new(application: &str) -> Self {
        Self {
            application: application.to_owned(),
            architecture: None,
        }
    }

    fn architecture(&self) -> Result<Cow<'_, Architecture>, String> {
        match &self.architecture {
            Some(a) => Ok(Cow::Borrowed(a)),
            None => embedded(&self.application).map(Cow::Owned),
        }
    }

    fn variables(&self) -> Result<Arc<VariantVariables>, String> {
        match &self.architecture {
            Some(a) => Ok(Arc::new(a.weights.clone())),
            None => embedded_variables(&self.application),
        }
    }

    /// The entry's image size and preprocessing (ImageNet's for a custom architecture).
    pub fn preprocess(&self) -> Preprocess {
        let (size, scaling) =
            entry(&self.application).map_or((224, PixelScaling::Tf), |e| (e.size, e.scaling));
        Preprocess::imagenet(size, size, Interpolation::Bilinear).scaled(scaling)
    }

    /// Whether `weights` hold the top (a layer that only the top has), and the variant's
    /// description.
    fn variant(&self, weights: &Weights) -> Result<(bool, Described), String> {
        let v = self.variables()?;
        // The top unless the file holds the base's tensors and none of a layer that only
        // the top has (a file of none of them, say no file, describes the whole model).
        let top = match &v.notop {
            None => true,
            Some(notop) => {
                let base: std::collections::BTreeSet<String> =
                    notop.iter().map(|(l, _)| loose(l)).collect();
                let file: std::collections::BTreeSet<String> = weights
                    .tensors
                    .keys()
                    .filter_map(|k| k.rsplit_once('.').map(|(l, _)| loose(l)))
                    .collect();
                let top_only = v
                    .top
                    .iter()
                    .any(|(l, _)| !base.contains(&loose(l)) && file.contains(&loose(l)));
                top_only || base.is_disjoint(&file)
            }
        };
        Ok((top, Described::of(v.of(top)?, top)?))
    }

    fn describe_top(&self) -> Result<Described, String> {
        Described::of(&self.variables()?.top, true)
    }

    /// (trainable, non-trainable) parameters of the architecture with or without its top, as
    /// Keras counts them (a Normalization's sample count is one non-trainable value).
    pub fn parameter_counts(&self, top: bool) -> Result<(usize, usize), String> {
        let d = Described::of(self.variables()?.of(top)?, top)?;
        let size = |s: &[usize]| s.iter().product::<usize>();
        let frozen: usize = d
            .tensors
            .iter()
            .filter(|(n, _)| is_statistic(n))
            .map(|(_, s)| size(s))
            .sum();
        let all: usize = d
            .tensors
            .iter()
            .filter(|(n, _)| !d.implicit.contains(n))
            .map(|(_, s)| size(s))
            .sum();
        Ok((all - frozen, frozen + d.adapted_normalizations))
    }

    /// The graph of the architecture with or without top, translated from its variables'
    /// shapes alone (no values: not to be run), and those variables in PyTorch's
    /// conventions: what checks that the translator builds exactly Keras' variables.
    pub fn translate_shapes(
        &self,
        top: bool,
    ) -> Result<(crate::graph::Graph, NamedShapes), String> {
        let a = self.architecture()?;
        let d = Described::of(a.weights.of(top)?, top)?;
        let mut shapes: BTreeMap<String, WeightTensor> = d
            .tensors
            .iter()
            .map(|(n, s)| {
                let fill = if n.ends_with(".variance") || n.ends_with(".running_var") {
                    1.0
                } else {
                    0.0
                };
                let data = if s.len() <= 1 {
                    vec![fill; s.iter().product()]
                } else {
                    Vec::new()
                };
                let t = WeightTensor {
                    dtype: crate::weights::DType::F32,
                    shape: s.clone(),
                    data,
                    strided: false,
                };
                (n.clone(), t)
            })
            .collect();
        Ok((translate(a.config(top)?, &mut shapes)?, d.tensors))
    }

    /// The file's name for each of `names` it holds, by exact or loose name.
    fn file_names<'n>(
        names: impl IntoIterator<Item = &'n String>,
        weights: &Weights,
    ) -> BTreeMap<String, String> {
        let loose_file: BTreeMap<String, &String> =
            weights.tensors.keys().map(|k| (loose(k), k)).collect();
        names
            .into_iter()
            .filter_map(|n| {
                if weights.tensors.contains_key(n) {
                    Some((n.clone(), n.clone()))
                } else {
                    loose_file.get(&loose(n)).map(|f| (n.clone(), (*f).clone()))
                }
            })
            .collect()
    }

    /// The graph this architecture is with `weights`: the top's or the base's config (the
    /// file decides), translated with the file's shapes and analysed at the entry's size
    /// (`size` for a base, whose input size is free), its parameters under the file's names.
    pub fn materialise(
        &self,
        weights: &Weights,
        size: Option<usize>,
        device: &Device,
    ) -> Result<GraphConfig, String> {
        let (top, d) = self.variant(weights)?;
        let a = self.architecture()?;
        let names = Self::file_names(d.tensors.iter().map(|(n, _)| n), weights);
        // The translator reads shapes, and the values of small tensors only (Normalization's
        // statistics, biases): the kernels stay in the file.
        let mut shapes: BTreeMap<String, WeightTensor> = names
            .iter()
            .map(|(arch, file)| {
                let t = &weights.tensors[file];
                let data = if t.shape.len() <= 1 {
                    t.data.clone()
                } else {
                    Vec::new()
                };
                let placeholder = WeightTensor {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data,
                    strided: false,
                };
                (arch.clone(), placeholder)
            })
            .collect();
        let mut graph = translate(a.config(top)?, &mut shapes)?;
        graph.producer = format!("{}, as zoo entry {}", graph.producer, self.application);
        rename_params(&mut graph, &names);
        let size = size.or_else(|| entry(&self.application).map(|e| e.size));
        crate::graph::analyse(&graph, weights, size, device).map_err(|e| e.to_string())
    }
}

/// Renames the graph's parameters from the architecture's names to the file's.
fn rename_params(g: &mut crate::graph::Graph, names: &BTreeMap<String, String>) {
    let renamed: BTreeMap<&String, &String> = names.iter().filter(|(a, f)| a != f).collect();
    if renamed.is_empty() {
        return;
    }
    let to_file = |n: &mut String| {
        if let Some(f) = renamed.get(n) {
            *n = (*f).clone();
        }
    };
    g.params = std::mem::take(&mut g.params)
        .into_iter()
        .map(|(mut k, v)| {
            to_file(&mut k);
            (k, v)
        })
        .collect();
    g.nodes
        .iter_mut()
        .flat_map(|n| n.inputs.iter_mut())
        .for_each(to_file);
    g.weights_in_constants.iter_mut().for_each(to_file);
}

impl Family for KerasApplicationConfig {
    /// The stages are the graph's cut points, known once a weights file is read
    /// (`materialise`); until then an entry lists none.
    fn stages(&self) -> Vec<StageInfo> {
        Vec::new()
    }

    fn feature_dim(&self) -> usize {
        self.describe_top().map_or(0, |d| d.feature_dim)
    }

    fn classifier(&self) -> ClassifierSpec {
        let out = self
            .describe_top()
            .ok()
            .and_then(|d| d.classifier)
            .unwrap_or_else(|| "predictions".into());
        ClassifierSpec::linear(out)
    }

    /// BatchNorms come from the graph's own layers.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        ""
    }

    /// Files of Keras' own formats only (Keras HDF5 and archives, TensorFlow checkpoints):
    /// identifying a PyTorch file reads no architecture here.
    fn fits_naming(&self, weights: &Weights) -> bool {
        use crate::weights::WeightsFormat::{Keras, KerasH5, TfCheckpoint};
        if !matches!(weights.format, Keras | KerasH5 | TfCheckpoint) {
            return false;
        }
        let Ok(d) = self.describe_top() else {
            return false;
        };
        !Self::file_names(d.tensors.first().map(|(n, _)| n), weights).is_empty()
    }

    /// Checks the file's tensors against the variant's (the classifier is the caller's):
    /// no stages are built until the graph is made from the file (`materialise`).
    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let weights = l.weights();
        let (_, d) = match self.variant(weights) {
            Ok(v) => v,
            Err(why) => {
                l.report_broken(&self.application, &why);
                return Vec::new();
            }
        };
        if !l.is_dry_run() {
            l.report_broken(
                &self.application,
                "a Keras Application is built from its weights file (zoo::Model::load)",
            );
            return Vec::new();
        }
        let names = Self::file_names(d.tensors.iter().map(|(n, _)| n), weights);
        let head = d.classifier.as_deref().map(|c| format!("{c}."));
        for (n, shape) in &d.tensors {
            if head.as_deref().is_some_and(|h| n.starts_with(h)) {
                continue;
            }
            let file = names.get(n).unwrap_or(n);
            let trainable = (!d.implicit.contains(n)).then_some(!is_statistic(n));
            l.check_shape(file, shape, trainable);
        }
        l.count_frozen(d.adapted_normalizations);
        Vec::new()
    }

    fn entries() -> Vec<ZooEntry> {
        ENTRIES
            .iter()
            .map(|e| {
                let config = Self::new(e.name);
                let preprocess = config.preprocess();
                let entry = ZooEntry::new(e.name, e.origin, config, preprocess);
                match keras_weights(e.name) {
                    Some(file) => entry.published(file),
                    None => entry,
                }
            })
            .collect()
    }
}
