//! What a family of architectures tells the zoo: its stages (the cut and freeze points),
//! its classifier, its BatchNorm, how its files are named, and how to build it. One record
//! per configuration, in the spirit of timm's `feature_info` and `pretrained_cfg`.

use serde::{Deserialize, Serialize};

use super::ZooEntry;
use super::layers::{Act, BnSpec};
use super::loader::WeightLoader;
use super::network::Stage;
use crate::weights::Weights;

/// Whose parameter names a configuration's files carry: torchvision and timm publish the
/// same architectures (ResNet, EfficientNet, ConvNeXt, RegNet, Swin) under their own
/// names. Torchvision's is the default, so specs and bundles written before timm's
/// entries read as they did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    #[default]
    Torchvision,
    Timm,
}

impl Naming {
    /// For `skip_serializing_if`: a spec only says `"naming"` when it is not torchvision's.
    pub fn is_torchvision(&self) -> bool {
        *self == Naming::Torchvision
    }

    /// `torchvision` or `timm` for the one name, picked by the naming.
    pub fn pick<'a>(self, torchvision: &'a str, timm: &'a str) -> &'a str {
        match self {
            Naming::Torchvision => torchvision,
            Naming::Timm => timm,
        }
    }
}

/// One stage of a network: a point it can be cut or frozen at, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageInfo {
    pub name: String,
    /// Channels of the stage's output.
    pub channels: usize,
    /// Total reduction of the input's height and width at the stage's output.
    pub stride: usize,
}

/// A stage list built in order, each stage giving its own stride; totals accumulate.
#[derive(Debug, Default)]
pub struct StageList {
    stages: Vec<StageInfo>,
}

impl StageList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a stage that reduces the resolution by `stride` more.
    pub fn then(mut self, name: impl Into<String>, channels: usize, stride: usize) -> Self {
        let total = self.stages.last().map_or(1, |s| s.stride) * stride;
        self.stages.push(StageInfo {
            name: name.into(),
            channels,
            stride: total,
        });
        self
    }

    /// `stage1`…`stageN` from (channels, stride) per stage.
    pub fn numbered(self, stages: impl IntoIterator<Item = (usize, usize)>) -> Self {
        self.named(|i| format!("stage{}", i + 1), stages)
    }

    /// Stages named `name(i)` for the i-th (from 0), from (channels, stride) per stage.
    pub fn named(
        self,
        name: impl Fn(usize) -> String,
        stages: impl IntoIterator<Item = (usize, usize)>,
    ) -> Self {
        stages
            .into_iter()
            .enumerate()
            .fold(self, |list, (i, (c, s))| list.then(name(i), c, s))
    }

    pub fn done(self) -> Vec<StageInfo> {
        self.stages
    }
}

/// The MobileNet/EfficientNet layout: a stride-2 `stem`, `stage1`…`stageN` from (channels,
/// stride) per stage, and a 1x1 `head` of `head` channels.
pub fn stem_stages_head(
    stem: usize,
    stages: impl IntoIterator<Item = (usize, usize)>,
    head: usize,
) -> Vec<StageInfo> {
    StageList::new()
        .then("stem", stem, 2)
        .numbered(stages)
        .then("head", head, 1)
        .done()
}

/// The classifier on the pooled features, by the origin's parameter names.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSpec {
    /// A hidden layer before the output (MobileNetV3), if any.
    pub hidden: Option<HiddenLayer>,
    /// Parameter prefix of the output layer (`<prefix>.weight`, `<prefix>.bias`).
    pub out: String,
    /// The origin's output layer has a bias (MaxViT's has none; a file that gives it one,
    /// a retrained head, is read with it).
    pub bias: bool,
    /// The origin's output layer is a 1x1 convolution + ReLU on the last feature map,
    /// pooled after (SqueezeNet). A file that holds it as a convolution (a 4-D weight) runs
    /// it so, giving the origin's logits; a head of 2-D weight (a new head, as a bundle
    /// stores it) is a Linear on the pooled features like any other family's.
    pub on_map: bool,
}

impl ClassifierSpec {
    /// One linear layer named `out`.
    pub fn linear(out: impl Into<String>) -> Self {
        Self {
            hidden: None,
            out: out.into(),
            bias: true,
            on_map: false,
        }
    }

    /// The output layer without a bias.
    pub fn without_bias(self) -> Self {
        Self {
            bias: false,
            ..self
        }
    }

    /// SqueezeNet's: a 1x1 convolution named `out`, then ReLU, on the last feature map.
    pub fn conv_on_map(out: impl Into<String>) -> Self {
        Self {
            on_map: true,
            ..Self::linear(out)
        }
    }
}

/// A classifier's hidden layer: its parameter prefix, width and activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HiddenLayer {
    pub prefix: &'static str,
    pub width: usize,
    pub act: Act,
}

/// An architecture family: everything the zoo needs of one configuration. A new family
/// implements this next to its config and is registered once in `families!` (zoo/mod.rs).
pub trait Family {
    /// The stages the network is built as, in order.
    fn stages(&self) -> Vec<StageInfo>;

    fn stage_names(&self) -> Vec<String> {
        self.stages().into_iter().map(|s| s.name).collect()
    }

    /// Length of the classifier's input vector (the default embedding).
    fn feature_dim(&self) -> usize;

    fn classifier(&self) -> ClassifierSpec;

    /// The BatchNorm every unit uses, as the origin sets it (none: no BatchNorm).
    fn batchnorm(&self) -> Option<BnSpec>;

    /// A tensor every file in this family's naming has: identifying a file only tries the
    /// families whose key it holds.
    fn naming_key(&self) -> &'static str;

    /// Whether `weights` are named as this family names its tensors (identifying a file
    /// tries only the families that say so): by default, the file has the naming key.
    fn fits_naming(&self, weights: &Weights) -> bool {
        weights.get(self.naming_key()).is_some()
    }

    /// The stages, one [`Stage`] per entry of [`stages`](Self::stages), loaded through `l`.
    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage>;

    /// The zoo's named entries of this family, in the order `retrain models` lists them.
    fn entries() -> Vec<ZooEntry>
    where
        Self: Sized;
}
