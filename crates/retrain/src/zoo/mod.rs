//! Model zoo: the architectures retrain knows, each with the preprocessing its weights were
//! trained with, built from a weights file by the origin framework's parameter names.

pub mod efficientnet;
pub mod imagenet;
pub mod keras;
pub mod layers;
pub mod loader;
pub mod mobilenet;
pub mod network;
pub mod resnet;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::weights::Weights;
use efficientnet::{EfficientNetConfig, EfficientNetLiteConfig};
use keras::{
    KerasEfficientNetConfig, KerasMobileNetConfig, KerasMobileNetV2Config, KerasResNetConfig,
    KerasVggConfig,
};
use loader::{LoadReport, WeightLoader};
use mobilenet::{MobileNetV2Config, MobileNetV3Config};
use network::{Classifier, Network};
use resnet::ResNetConfig;

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

/// An architecture family and its hyper-parameters; serialisable so a bundle or a fixture
/// can describe a reduced or custom variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ArchConfig {
    Resnet(ResNetConfig),
    MobilenetV2(MobileNetV2Config),
    MobilenetV3(MobileNetV3Config),
    Efficientnet(EfficientNetConfig),
    EfficientnetLite(EfficientNetLiteConfig),
    KerasMobilenetV2(KerasMobileNetV2Config),
    KerasMobilenet(KerasMobileNetConfig),
    KerasResnet(KerasResNetConfig),
    KerasVgg(KerasVggConfig),
    KerasEfficientnet(KerasEfficientNetConfig),
}

impl ArchConfig {
    pub fn stage_names(&self) -> Vec<String> {
        match self {
            ArchConfig::Resnet(c) => c.stage_names(),
            ArchConfig::MobilenetV2(c) => c.stage_names(),
            ArchConfig::MobilenetV3(c) => c.stage_names(),
            ArchConfig::Efficientnet(c) => c.stage_names(),
            ArchConfig::EfficientnetLite(c) => c.stage_names(),
            ArchConfig::KerasMobilenetV2(c) => c.stage_names(),
            ArchConfig::KerasMobilenet(c) => c.stage_names(),
            ArchConfig::KerasResnet(c) => c.stage_names(),
            ArchConfig::KerasVgg(c) => c.stage_names(),
            ArchConfig::KerasEfficientnet(c) => c.stage_names(),
        }
    }

    /// Length of the classifier's input vector (the default embedding).
    pub fn feature_dim(&self) -> usize {
        match self {
            ArchConfig::Resnet(c) => c.feature_dim(),
            ArchConfig::MobilenetV2(c) => c.feature_dim(),
            ArchConfig::MobilenetV3(c) => c.feature_dim(),
            ArchConfig::Efficientnet(c) => c.feature_dim(),
            ArchConfig::EfficientnetLite(c) => c.feature_dim(),
            ArchConfig::KerasMobilenetV2(c) => c.feature_dim(),
            ArchConfig::KerasMobilenet(c) => c.feature_dim(),
            ArchConfig::KerasResnet(c) => c.feature_dim(),
            ArchConfig::KerasVgg(c) => c.feature_dim(),
            ArchConfig::KerasEfficientnet(c) => c.feature_dim(),
        }
    }

    /// Parameter name prefixes of the classifier's layers: (hidden, output).
    pub fn classifier_prefixes(&self) -> (Option<&'static str>, &'static str) {
        match self {
            ArchConfig::Resnet(_) => (None, "fc"),
            ArchConfig::MobilenetV2(_) | ArchConfig::Efficientnet(_) => (None, "classifier.1"),
            ArchConfig::MobilenetV3(_) => (Some("classifier.0"), "classifier.3"),
            ArchConfig::EfficientnetLite(_) => (None, "_fc"),
            ArchConfig::KerasMobilenetV2(_) => (None, "predictions"),
            ArchConfig::KerasMobilenet(_) => (None, "conv_preds"),
            ArchConfig::KerasResnet(_)
            | ArchConfig::KerasVgg(_)
            | ArchConfig::KerasEfficientnet(_) => (None, "predictions"),
        }
    }

    fn hidden_width(&self) -> Option<usize> {
        match self {
            ArchConfig::MobilenetV3(c) => Some(c.last_channel),
            _ => None,
        }
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
        let empty = Weights::empty();
        let l = WeightLoader::dry_run(&empty, &Device::default());
        let (_, n) = self.build_with(&l, Some(num_classes));
        n
    }

    fn build_with(&self, l: &WeightLoader, num_classes: Option<usize>) -> (Network, usize) {
        let stages = match self {
            ArchConfig::Resnet(c) => c.build_stages(l),
            ArchConfig::MobilenetV2(c) => c.build_stages(l),
            ArchConfig::MobilenetV3(c) => c.build_stages(l),
            ArchConfig::Efficientnet(c) => c.build_stages(l),
            ArchConfig::EfficientnetLite(c) => c.build_stages(l),
            ArchConfig::KerasMobilenetV2(c) => c.build_stages(l),
            ArchConfig::KerasMobilenet(c) => c.build_stages(l),
            ArchConfig::KerasResnet(c) => c.build_stages(l),
            ArchConfig::KerasVgg(c) => c.build_stages(l),
            ArchConfig::KerasEfficientnet(c) => c.build_stages(l),
        };
        let (hidden, out) = self.classifier_prefixes();
        let out_w = format!("{out}.weight");
        if num_classes.is_none() && hidden.is_none() && !l.has(&out_w) {
            l.adopt_classifier(out, self.feature_dim());
        }
        let classes = match num_classes {
            Some(n) => (n > 0).then_some(n),
            None => l.shape_of(&out_w).and_then(|s| s.first().copied()),
        };
        let classifier = classes.map(|classes| {
            let mut din = self.feature_dim();
            // A retrained head (a bundle) replaces the hidden layer too: load it only when
            // the file has it.
            let hidden = hidden
                .filter(|h| num_classes.is_some() || l.has(&format!("{h}.weight")))
                .zip(self.hidden_width())
                .map(|(name, width)| {
                    let h = layers::load_linear(l, name, din, width);
                    din = width;
                    h
                });
            Classifier {
                hidden,
                hidden_act: layers::Act::Hardswish,
                out: layers::load_linear(l, out, din, classes),
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
}

/// Every architecture retrain can load.
pub fn catalogue() -> Vec<ZooEntry> {
    use Interpolation::{Bicubic, Bilinear};
    let tv = "torchvision";
    let mut v = Vec::new();
    let resnets: [(&str, bool, [usize; 4]); 5] = [
        ("resnet18", false, [2, 2, 2, 2]),
        ("resnet34", false, [3, 4, 6, 3]),
        ("resnet50", true, [3, 4, 6, 3]),
        ("resnet101", true, [3, 4, 23, 3]),
        ("resnet152", true, [3, 8, 36, 3]),
    ];
    for (name, bottleneck, layers) in resnets {
        v.push(ZooEntry {
            name,
            origin: tv,
            config: ArchConfig::Resnet(ResNetConfig::new(bottleneck, layers)),
            preprocess: Preprocess::imagenet(256, 224, Bilinear),
        });
    }
    v.push(ZooEntry {
        name: "mobilenet_v2",
        origin: tv,
        config: ArchConfig::MobilenetV2(MobileNetV2Config::standard(1.0)),
        preprocess: Preprocess::imagenet(256, 224, Bilinear),
    });
    v.push(ZooEntry {
        name: "keras_resnet50",
        origin: "Keras Applications (ResNet50)",
        config: ArchConfig::KerasResnet(KerasResNetConfig {
            blocks: [3, 4, 6, 3],
            width: 64,
        }),
        preprocess: Preprocess::caffe(224),
    });
    v.push(ZooEntry {
        name: "keras_efficientnet_b0",
        origin: "Keras Applications (EfficientNetB0)",
        config: ArchConfig::KerasEfficientnet(KerasEfficientNetConfig {
            width: 1.0,
            depth: 1.0,
            input_size: 224,
            imagenet_rescaling: true,
        }),
        // The model normalises its own input: it takes 0..255 pixels.
        preprocess: Preprocess {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            ..Preprocess::imagenet(224, 224, Bilinear)
        },
    });
    for (name, top) in [("keras_vgg16", true), ("keras_vgg16_notop", false)] {
        v.push(ZooEntry {
            name,
            origin: "Keras Applications (VGG16)",
            config: ArchConfig::KerasVgg(KerasVggConfig::vgg16(top)),
            preprocess: Preprocess::caffe(224),
        });
    }
    for (name, alpha) in [
        ("keras_mobilenet_025", 0.25),
        ("keras_mobilenet_050", 0.5),
        ("keras_mobilenet_075", 0.75),
        ("keras_mobilenet", 1.0),
    ] {
        v.push(ZooEntry {
            name,
            origin: "Keras Applications (MobileNet v1)",
            config: ArchConfig::KerasMobilenet(KerasMobileNetConfig { alpha }),
            preprocess: Preprocess {
                mean: [0.5; 3],
                std: [0.5; 3],
                ..Preprocess::imagenet(224, 224, Bilinear)
            },
        });
    }
    // Keras Applications' MobileNetV2 widths (the `alpha` of its weight files).
    let keras_v2: [(&str, f64); 6] = [
        ("keras_mobilenet_v2_035", 0.35),
        ("keras_mobilenet_v2_050", 0.5),
        ("keras_mobilenet_v2_075", 0.75),
        ("keras_mobilenet_v2", 1.0),
        ("keras_mobilenet_v2_130", 1.3),
        ("keras_mobilenet_v2_140", 1.4),
    ];
    for (name, alpha) in keras_v2 {
        v.push(ZooEntry {
            name,
            origin: "Keras Applications (MobileNetV2)",
            config: ArchConfig::KerasMobilenetV2(KerasMobileNetV2Config {
                alpha,
                input_size: 224,
            }),
            // Keras' "tf" mode: x / 127.5 - 1.
            preprocess: Preprocess {
                mean: [0.5; 3],
                std: [0.5; 3],
                ..Preprocess::imagenet(224, 224, Bilinear)
            },
        });
    }
    v.push(ZooEntry {
        name: "mobilenet_v3_small",
        origin: tv,
        config: ArchConfig::MobilenetV3(MobileNetV3Config::small()),
        preprocess: Preprocess::imagenet(256, 224, Bilinear),
    });
    v.push(ZooEntry {
        name: "mobilenet_v3_large",
        origin: tv,
        config: ArchConfig::MobilenetV3(MobileNetV3Config::large()),
        preprocess: Preprocess::imagenet(256, 224, Bilinear),
    });
    let lites: [(&str, f64, f64, usize); 5] = [
        ("efficientnet_lite0", 1.0, 1.0, 224),
        ("efficientnet_lite1", 1.0, 1.1, 240),
        ("efficientnet_lite2", 1.1, 1.2, 260),
        ("efficientnet_lite3", 1.2, 1.4, 280),
        ("efficientnet_lite4", 1.4, 1.8, 300),
    ];
    for (name, w, d, size) in lites {
        v.push(ZooEntry {
            name,
            origin: "efficientnet_lite_pytorch (TF EfficientNet-Lite)",
            config: ArchConfig::EfficientnetLite(EfficientNetLiteConfig::lite(w, d, size)),
            preprocess: Preprocess::lite(size),
        });
    }
    // torchvision's IMAGENET1K_V1 transforms for each B variant.
    let bs: [(&str, f64, f64, f64, usize, usize); 8] = [
        ("efficientnet_b0", 1.0, 1.0, 1e-5, 256, 224),
        ("efficientnet_b1", 1.0, 1.1, 1e-5, 256, 240),
        ("efficientnet_b2", 1.1, 1.2, 1e-5, 288, 288),
        ("efficientnet_b3", 1.2, 1.4, 1e-5, 320, 300),
        ("efficientnet_b4", 1.4, 1.8, 1e-5, 384, 380),
        ("efficientnet_b5", 1.6, 2.2, 1e-3, 456, 456),
        ("efficientnet_b6", 1.8, 2.6, 1e-3, 528, 528),
        ("efficientnet_b7", 2.0, 3.1, 1e-3, 600, 600),
    ];
    for (name, w, d, eps, resize, crop) in bs {
        v.push(ZooEntry {
            name,
            origin: tv,
            config: ArchConfig::Efficientnet(EfficientNetConfig::b(w, d, eps)),
            preprocess: Preprocess::imagenet(resize, crop, Bicubic),
        });
    }
    v
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
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.name.to_owned(),
            config: self.config.clone(),
            preprocess: self.preprocess,
        }
    }
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

/// Looks an architecture up by name (case-insensitive, `-` and `_` alike).
pub fn find(name: &str) -> Option<ZooEntry> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let want = norm(name);
    catalogue().into_iter().find(|e| norm(e.name) == want)
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
        let (network, report, _) = config.build(weights, device);
        if !report.is_clean() {
            let folded_input = weights.format == crate::weights::WeightsFormat::Tflite
                && report.missing.iter().any(|m| m == "normalization.mean");
            let hint = match identify(weights, device).first() {
                _ if folded_input => " TFLite folds EfficientNet's input Normalization into \
                    graph constants, which retrain does not read: use the model's .h5 or .keras"
                    .to_owned(),
                Some((other, _)) if other != name => {
                    format!(" the file looks like `{other}`; pass --model {other}")
                }
                _ => " check that --model names the architecture these weights were saved from"
                    .to_owned(),
            };
            return Err(MismatchError {
                arch: name.to_owned(),
                report,
                hint,
            });
        }
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
    let mut hits = Vec::new();
    for e in catalogue() {
        let family_key = match &e.config {
            ArchConfig::Resnet(_) => "layer1.0.conv1.weight",
            ArchConfig::MobilenetV2(_) => "features.1.conv.0.0.weight",
            ArchConfig::MobilenetV3(_) => "features.1.block.0.0.weight",
            ArchConfig::Efficientnet(_) => "features.1.0.block.0.0.weight",
            ArchConfig::EfficientnetLite(_) => "_conv_stem.weight",
            ArchConfig::KerasMobilenetV2(_) => "expanded_conv_depthwise.weight",
            ArchConfig::KerasMobilenet(_) => "conv_dw_1.weight",
            ArchConfig::KerasResnet(_) => "conv2_block1_1_conv.weight",
            ArchConfig::KerasVgg(_) => "block1_conv1.weight",
            ArchConfig::KerasEfficientnet(_) => "block1a_dwconv.weight",
        };
        if weights.get(family_key).is_none() {
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
